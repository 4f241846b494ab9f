"""Training stack: a short fit learns, recipes are checked, checkpoints rebuild their model."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from conftest import RECIPE

import simsurrogate
from simsurrogate.checkpoint import CheckpointError
from simsurrogate.cli import main
from simsurrogate.data.nbody import NBodyDataModule, systems_to_graph
from simsurrogate.models import EGNN
from simsurrogate.tasks import ParticleDynamicsTask


def _val_mse(task: ParticleDynamicsTask, dm: NBodyDataModule) -> float:
    task.eval()
    with torch.no_grad():
        losses = [task._losses(g)["mse"] for g in dm.val_dataloader()]
    return float(torch.stack(losses).mean())


def test_short_fit_lowers_the_loss(nbody_dir: Path) -> None:
    L.seed_everything(0)
    dm = NBodyDataModule(root=str(nbody_dir), batch_size=16, max_train_samples=64)
    dm.setup("fit")
    task = ParticleDynamicsTask(EGNN(hidden=32, n_layers=2), lr=3e-3)
    before = _val_mse(task, dm)
    trainer = L.Trainer(
        max_epochs=25,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        check_val_every_n_epoch=100,
    )
    trainer.fit(task, datamodule=dm)
    after = _val_mse(task, dm)
    assert after < 0.6 * before, (before, after)


def test_checkpoint_alone_rebuilds_the_model(trained: Path, nbody_dir: Path) -> None:
    raw = torch.load(trained, weights_only=True)
    meta = raw["simsurrogate"]
    assert meta["version"] == simsurrogate.__version__
    assert meta["model"]["class"] == "EGNN"
    assert meta["model"]["args"]["hidden"] == 16
    assert meta["frame_stride"] == 10
    model = simsurrogate.load(trained)
    assert isinstance(model, EGNN) and not model.training
    dm = NBodyDataModule(root=str(nbody_dir), batch_size=8)
    dm.setup("test")
    graph = next(iter(dm.test_dataloader()))
    state = {k.removeprefix("model."): v for k, v in raw["state_dict"].items()}
    reference = EGNN(**meta["model"]["args"])
    reference.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(model(graph)["pos"], reference.eval()(graph)["pos"])


@pytest.mark.parametrize("command, prefix", [("test", "test"), ("validate", "val")])
def test_cli_evaluation_writes_metrics(
    command: str, prefix: str, trained: Path, nbody_dir: Path, tmp_path: Path
) -> None:
    main(
        [
            command,
            "--config",
            str(RECIPE),
            "--trainer.logger",
            "false",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.default_root_dir",
            str(tmp_path),
            "--trainer.callbacks",
            "[]",
            "--trainer.callbacks+=simsurrogate.tasks.callbacks.MetricsJSON",
            "--model.init_args.model.init_args.hidden",
            "16",
            "--model.init_args.model.init_args.predict_velocity",
            "true",
            "--data.init_args.root",
            str(nbody_dir),
            "--ckpt_path",
            str(trained),
        ]
    )
    metrics = json.loads((tmp_path / f"{prefix}_metrics.json").read_text())
    assert 0 < metrics[f"{prefix}/mse"] < 10


def test_unknown_recipe_key_is_named_before_data_is_read(tmp_path: Path, capsys) -> None:
    config = yaml.safe_load(RECIPE.read_text())
    config["trainer"]["max_epoch"] = 3  # misspelt
    config["data"]["init_args"]["root"] = str(tmp_path / "does-not-exist")
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as exc:
        main(["fit", "--config", str(recipe)])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "max_epoch" in err
    assert "does-not-exist" not in err


def test_unknown_flag_is_named(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(RECIPE), "--model.init_args.learning_rate", "1"])
    assert "learning_rate" in capsys.readouterr().err


class _Evil:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_checkpoint_needing_arbitrary_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.ckpt"
    torch.save({"simsurrogate": {}, "state_dict": {}, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match="arbitrary code"):
        simsurrogate.load(path)


def test_checkpoint_without_metadata_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match="metadata"):
        simsurrogate.load(path)
    with pytest.raises(CheckpointError, match="no such file"):
        simsurrogate.load(tmp_path / "missing.ckpt")


def test_checkpoint_of_unknown_model_class_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "unknown.ckpt"
    torch.save(
        {"simsurrogate": {"model": {"class": "os.system", "args": {}}}, "state_dict": {}}, path
    )
    with pytest.raises(CheckpointError, match="unknown model class"):
        simsurrogate.load(path)


def test_graph_batches_move_to_device(nbody_dir: Path) -> None:
    dm = NBodyDataModule(root=str(nbody_dir), batch_size=4)
    dm.setup("test")
    g = next(iter(dm.test_dataloader()))
    assert g.num_graphs == 4 and g.num_nodes == 20 and g.num_edges == 80
    assert g.to("cpu", torch.float64).nodes["pos"].dtype == torch.float64
    assert systems_to_graph({"pos": torch.zeros(2, 3, 3)}).edge_index.shape == (2, 12)


def test_exported_checkpoint_is_smaller_and_rebuilds_the_same_model(
    trained: Path, tmp_path: Path
) -> None:
    from simsurrogate.checkpoint import export, read_checkpoint

    small = export(trained, tmp_path / "model.ckpt", command="simsurrogate fit ...")
    assert small.stat().st_size < trained.stat().st_size
    assert read_checkpoint(small)["simsurrogate"]["provenance"]["command"].startswith("simsurr")
    a, b = simsurrogate.load(trained), simsurrogate.load(small)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_export_cli_records_provenance_and_training_step(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from simsurrogate.checkpoint import read_checkpoint
    from simsurrogate.cli import main

    dest = tmp_path / "shipped.ckpt"
    assert main(["export", str(trained), str(dest), "--provenance", "data=d.h5", "note=a=b"]) == 0
    provenance = read_checkpoint(dest)["simsurrogate"]["provenance"]
    assert provenance["data"] == "d.h5" and provenance["note"] == "a=b"
    assert provenance["step"] == read_checkpoint(trained)["global_step"] > 0
    assert main(["export", str(trained), str(dest), "--provenance", "no-equals"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_float64_weights_load_as_float64(tmp_path: Path) -> None:
    """A model saved in float64 comes back in float64 with the same outputs, not rounded."""
    from simsurrogate.checkpoint import save_model

    torch.manual_seed(0)
    model = EGNN(hidden=8, n_layers=1).double()
    path = save_model(model, tmp_path / "f64.ckpt", task="ParticleDynamicsTask")
    loaded = simsurrogate.load(path)
    assert {p.dtype for p in loaded.parameters()} == {torch.float64}
    for (name, x), y in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    f32 = save_model(EGNN(hidden=8, n_layers=1), tmp_path / "f32.ckpt", "ParticleDynamicsTask")
    assert {p.dtype for p in simsurrogate.load(f32).parameters()} == {torch.float32}


def _checkpoint_callbacks(recipe: dict) -> list[dict]:
    return [
        cb.get("init_args", {})
        for cb in recipe.get("trainer", {}).get("callbacks", [])
        if cb["class_path"].endswith("ModelCheckpoint")
    ]


@pytest.mark.parametrize("path", sorted((RECIPE.parents[1]).glob("*/*.yaml")), ids=lambda p: p.stem)
def test_recipes_keep_a_fresh_last_checkpoint(path: Path) -> None:
    """Lightning >= 2.6 writes ``save_last`` only when a monitored checkpoint improves, so a
    recipe that relied on it would resume from a stale state: each recipe that checkpoints
    writes ``last.ckpt`` with an unmonitored callback instead."""
    callbacks = _checkpoint_callbacks(yaml.safe_load(path.read_text()))
    if not callbacks or path.stem == "demo":  # demo.yaml only overrides nbody_egnn.yaml
        return
    assert not [cb for cb in callbacks if cb.get("save_last")], path
    last = [cb for cb in callbacks if cb.get("filename") == "last" and not cb.get("monitor")]
    assert len(last) == 1, path
    assert {cb["dirpath"] for cb in callbacks} == {last[0]["dirpath"]}, path


@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_recipe_last_checkpoint_is_the_final_state(nbody_dir: Path, tmp_path: Path) -> None:
    """With the learning rate at zero the validation loss never improves after the first
    epoch, so only a last checkpoint written every validation holds the final step; a run
    resumed from it goes on from that step."""
    config = yaml.safe_load(RECIPE.read_text())
    for cb in config["trainer"]["callbacks"]:
        if "dirpath" in cb.get("init_args", {}):
            cb["init_args"]["dirpath"] = str(tmp_path / "ckpt")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(config))
    args = [
        "--config",
        str(recipe),
        "--trainer.check_val_every_n_epoch",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger",
        "false",
        "--model.init_args.model.init_args.hidden",
        "8",
        "--model.init_args.lr",
        "0",
        "--data.init_args.root",
        str(nbody_dir),
        "--data.init_args.max_train_samples",
        "16",
        "--data.init_args.batch_size",
        "8",
    ]
    main(["fit", *args, "--trainer.max_epochs", "3"])
    best = torch.load(tmp_path / "ckpt" / "best.ckpt", weights_only=True)
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] > best["global_step"]
    main(
        ["fit", *args, "--trainer.max_epochs", "5", "--ckpt_path", str(tmp_path / "ckpt/last.ckpt")]
    )
    resumed = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 4 and resumed["global_step"] == last["global_step"] * 5 // 3
