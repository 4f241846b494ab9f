"""Fine-tuning as recipe data: each trainable mode trains exactly its parameters, per-group
rates reach the optimizer, the reference-energy refit removes an offset, new elements are an
error or get fresh rows, replay mixes the asked fraction, LoRA starts as the identity and merges
exactly, checkpoints record their origin, and bad input fails before training."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from potential_checks import quiet_trainer

from simsurrogate import checkpoint
from simsurrogate.checkpoint import KEY, CheckpointError, make_metadata
from simsurrogate.cli import main
from simsurrogate.data.atoms import (
    AtomsDataModule,
    AtomsDataset,
    farthest_point_sampling,
    structure_descriptors,
)
from simsurrogate.data.errors import DataError
from simsurrogate.data.importers.ase_import import atoms_to_fields
from simsurrogate.data.particles import write_frames
from simsurrogate.graph.atoms import atoms_graph
from simsurrogate.models import GNN, LennardJones, PaiNN
from simsurrogate.models.potentials.base import Potential
from simsurrogate.tasks.finetune import (
    FineTune,
    LoRALinear,
    add_lora,
    merge_lora_state,
    refit_reference_energies,
)
from simsurrogate.tasks.potential import PotentialTask

RC = 4.0
RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "potentials"
CU, AG, AU = 29, 47, 79


def _metal_frames(n: int, seed: int, symbols=("Cu", "Ag"), a: float = 3.8) -> list:
    """Rattled 4-atom fcc cells with random site occupations, labelled by ASE's EMT."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.set_chemical_symbols(list(rng.choice(symbols, len(atoms))))
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_stress()
        frames.append(atoms)
    return frames


def _write(path: Path, frames: list, units: dict | None = None, **replace) -> Path:
    fields = {**atoms_to_fields(frames), **replace}
    return write_frames(path, units=units, **fields)


def _pretrained(path: Path, elements=(CU, AG), seed: int = 0) -> Path:
    """A small 'pretrained' PaiNN checkpoint (random weights, nonzero reference energies)."""
    torch.manual_seed(seed)
    model = PaiNN(list(elements), cutoff=RC, hidden=8, n_interactions=1, n_rbf=4)
    model.set_reference_energies(-np.arange(1.0, len(elements) + 1))
    model.scale.fill_(0.5)
    meta = make_metadata(model, "PotentialTask", {"provenance": {"data": "pretraining set"}})
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, KEY: meta}, path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("finetune")
    return {
        "ckpt": _pretrained(root / "pre.ckpt"),
        "train": _write(root / "train.h5", _metal_frames(12, 0)),
        "valid": _write(root / "valid.h5", _metal_frames(4, 1)),
        "cuau": _write(root / "cuau.h5", _metal_frames(8, 2, ("Cu", "Au"))),
        "replay": _write(root / "replay.h5", _metal_frames(30, 3)),
    }


def _trainer(root: Path, steps: int, **kw) -> L.Trainer:
    kw.setdefault("enable_checkpointing", False)
    return quiet_trainer(root, max_steps=steps, num_sanity_val_steps=0, **kw)


def _fit(task: PotentialTask, dm: AtomsDataModule, root: Path, steps: int = 3, **kw):
    trainer = _trainer(root, steps, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, dm)
    return trainer


def _dm(files, train="train", **kw) -> AtomsDataModule:
    return AtomsDataModule(str(files[train]), str(files["valid"]), batch_size=4, **kw)


def _task(files, ema_decay=None, **finetune) -> PotentialTask:
    ft = FineTune(checkpoint=str(files["ckpt"]), **finetune)
    return PotentialTask(lr=1e-2, lr_schedule="constant", ema_decay=ema_decay, finetune=ft)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize(
    ("mode", "trained"),
    [
        ("all", ("embedding.", "interactions.", "readout.", "radial.")),
        ("no_interactions", ("embedding.", "readout.", "radial.")),
        ("readout", ("readout.",)),
        ("lora", ("lora_B",)),
    ],
)
def test_trainable_modes_train_exactly_their_parameters(files, tmp_path, mode, trained):
    """After a few steps (with the EMA on), the parameters a mode trains have moved and all
    others are bit-identical to the pretrained ones."""
    task = _task(files, ema_decay=0.9, trainable=mode, reference_energies="keep")
    before = _state(task.model)
    _fit(task, _dm(files), tmp_path, steps=3)
    after = {k.replace(".base.", "."): v for k, v in _state(task.model).items()}
    for name, value in after.items():
        moves = any(part in name for part in trained)
        if name.endswith("lora_A"):
            continue  # trains only once B is nonzero; checked below
        if moves:
            assert not torch.equal(value, before.get(name, torch.zeros_like(value))), name
        else:
            assert torch.equal(value, before[name]), name
    if mode == "lora":
        adapters = [m for m in task.model.modules() if isinstance(m, LoRALinear)]
        # PaiNN block: context (2), filter, U, V, gates (2); readout (2)
        assert len(adapters) == 9
        assert all(not m.base.weight.requires_grad for m in adapters)


def test_group_learning_rates_reach_the_optimizer(files, tmp_path):
    task = _task(files, trainable="all", lr={"embedding": 1e-5, "readout": 3e-3})
    trainer = _fit(task, _dm(files), tmp_path, steps=1)
    lrs = {g["name"]: g["lr"] for g in trainer.optimizers[0].param_groups}
    assert lrs == {"embedding": 1e-5, "interactions": 1e-2, "readout": 3e-3, "other": 1e-2}
    task = _task(files, trainable="lora", lr={"adapters": 5e-3})
    trainer = _fit(task, _dm(files), tmp_path, steps=1)
    groups = trainer.optimizers[0].param_groups
    assert [(g["name"], g["lr"]) for g in groups] == [("adapters", 5e-3)]
    assert len(groups[0]["params"]) == 2 * 9
    task = _task(files, trainable="readout", lr={"interactions": 1e-4})
    with pytest.raises(ValueError, match=r"rates for \['interactions'\], which have no train"):
        _fit(task, _dm(files), tmp_path, steps=1)


def test_refit_removes_an_energy_offset(files, tmp_path):
    """Labels = the pretrained model's energies + 0.3 eV per Cu - 0.7 eV per Ag: the refit
    finds exactly these shifts, after which the energy error vanishes for every composition;
    "keep" leaves the reference energies alone."""
    model = checkpoint.load(files["ckpt"])
    ds = AtomsDataset(files["train"], cutoff=RC)
    frames = np.arange(len(ds))
    base = model(ds.collate(list(frames)), forces=False)["energy"].numpy()
    n_cu = np.add.reduceat((ds.numbers == CU).astype(float), ds.offsets[:-1])
    n_ag = ds.n_atoms - n_cu
    assert 0 < n_cu.sum() and 0 < n_ag.sum() and len(set(n_cu.tolist())) > 2
    shifted = _write(
        tmp_path / "shifted.h5",
        _metal_frames(12, 0),
        energy=base + 0.3 * n_cu - 0.7 * n_ag,
        forces=np.zeros_like(ds.forces),
    )
    ref0 = model.reference_energies.clone()
    shift = refit_reference_energies(model, AtomsDataset(shifted, cutoff=RC), frames)
    np.testing.assert_allclose(shift, [0.3, -0.7], atol=1e-6)
    after = model(ds.collate(list(frames)), forces=False)["energy"].numpy()
    np.testing.assert_allclose(after, base + 0.3 * n_cu - 0.7 * n_ag, atol=1e-5)

    # through a recipe: the refit happens before the first step
    dm = _dm({**files, "shifted": shifted}, train="shifted")
    task = _task(files, trainable="readout", reference_energies="refit")
    task.force_weight = 0.0
    task.weights["stress"] = 0.0
    _fit(task, dm, tmp_path, steps=1)
    np.testing.assert_allclose(task.model.reference_energies - ref0, [0.3, -0.7], atol=1e-6)
    task = _task(files, trainable="readout", reference_energies="keep")
    _fit(task, dm, tmp_path, steps=1)
    assert torch.equal(task.model.reference_energies, ref0)


def test_new_elements_error_or_fresh_rows(files, tmp_path):
    dm = _dm(files, train="cuau")
    with pytest.raises(DataError, match=r"cuau.h5.*elements Au \(first in frame \d\).*Cu, Ag"):
        _fit(_task(files), dm, tmp_path)
    with pytest.raises(DataError, match=r"missing from the checkpoint .*pre.ckpt.*new_elements"):
        _fit(_task(files), dm, tmp_path)

    task = _task(files, trainable="readout", new_elements="add")
    old = task.model.embedding.weight.detach().clone()
    before = _state(task.model)
    dm = _dm(files, train="cuau")
    _fit(task, dm, tmp_path, steps=3, enable_checkpointing=True)
    model = task.model
    assert model.elements == [CU, AG, AU] and model.config["elements"] == [CU, AG, AU]
    emb = model.embedding.weight.detach()
    assert torch.equal(emb[:2], old)  # pretrained rows frozen (readout mode) ...
    assert model.embedding.weight.grad is not None and bool(emb[2].abs().sum() > 0)
    first = task.model.embedding.weight.detach()[2].clone()
    _fit(task, dm, tmp_path, steps=6)
    assert not torch.equal(task.model.embedding.weight.detach()[2], first)  # ... new row trains
    assert torch.equal(task.model.interactions[0].U.weight, before["interactions.0.U.weight"])
    # Au's reference energy comes from the refit: the Cu-Au energies are matched on average
    assert model.reference_energies[2].item() != 0.0
    saved = next((tmp_path / "checkpoints").glob("*.ckpt"))
    assert checkpoint.load(saved).elements == [CU, AG, AU]


def test_replay_fraction_and_farthest_point_sampling(files, tmp_path):
    dm = _dm(files, replay=str(files["replay"]), replay_fraction=0.5)
    dm.setup("fit")
    dm.set_cutoff(RC)
    loader = dm.train_dataloader()
    n_train = len(dm.dataset("train"))
    epochs = [list(loader.sampler) for _ in range(2)]
    for epoch in epochs:
        assert len(epoch) == 2 * n_train and len(set(epoch)) == len(epoch)
        assert sorted(i for i in epoch if i < n_train) == list(range(n_train))
    replayed = [{i for i in epoch if i >= n_train} for epoch in epochs]
    assert len(replayed[0]) == n_train and replayed[0] != replayed[1]  # fresh draw each epoch
    batch = next(iter(loader))
    assert batch.num_graphs == 4 and "forces" in batch.nodes

    # 12 near-copies of one Cu cell and two outliers (silver, compressed): FPS picks both
    frames = _metal_frames(12, 5, ("Cu",)) + _metal_frames(1, 6, ("Ag",))
    frames += _metal_frames(1, 7, ("Cu",), a=3.4)
    pool = _write(tmp_path / "pool.h5", frames)
    x = structure_descriptors(AtomsDataset(pool), cutoff=RC)
    assert set(farthest_point_sampling(x, 3).tolist()) >= {12, 13}
    dm = _dm(files, replay=str(pool), replay_fraction=0.2, replay_selection="fps", replay_pool=3)
    dm.set_cutoff(RC)
    assert set(dm.replay_frames().tolist()) >= {12, 13}


def test_lora_starts_as_identity_and_merges_exactly():
    torch.manual_seed(1)
    base = PaiNN([CU, AG], cutoff=RC, hidden=8, n_interactions=2, n_rbf=4).double().eval()
    adapted = PaiNN([CU, AG], cutoff=RC, hidden=8, n_interactions=2, n_rbf=4).double().eval()
    adapted.load_state_dict(base.state_dict())
    add_lora(adapted, rank=2, alpha=4.0)
    fields = atoms_to_fields(_metal_frames(2, 9))
    g = atoms_graph(
        torch.as_tensor(fields["positions"]),
        torch.as_tensor(fields["numbers"]),
        torch.as_tensor(fields["cell"]),
        torch.as_tensor(fields["pbc"]),
        torch.as_tensor(fields["n_atoms"]),
        RC,
    )
    ref = base(g, stress=True)
    out = adapted(g, stress=True)
    for key in ref:
        assert torch.equal(out[key], ref[key]), key  # B = 0: exactly the pretrained model
    with torch.no_grad():
        for m in adapted.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(0, 0.3)
    out = adapted(g, stress=True)
    assert (out["energy"] - ref["energy"]).abs().max() > 1e-3
    merged = PaiNN([CU, AG], cutoff=RC, hidden=8, n_interactions=2, n_rbf=4).double().eval()
    merged.load_state_dict(merge_lora_state(adapted.state_dict()))  # strict: plain keys only
    again = merged(g, stress=True)
    for key in out:
        torch.testing.assert_close(again[key], out[key], rtol=1e-10, atol=1e-12)


def test_lora_checkpoint_is_plain_with_provenance_and_resumes(files, tmp_path):
    task = _task(files, ema_decay=0.5, trainable="lora")
    dm = _dm(files)
    saver = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    _fit(task, dm, tmp_path, steps=3, callbacks=[saver], enable_checkpointing=True)
    last = tmp_path / "last.ckpt"
    loaded = checkpoint.load(last)
    assert type(loaded) is PaiNN and not any(isinstance(m, LoRALinear) for m in loaded.modules())
    g = AtomsDataset(files["valid"], cutoff=RC).collate([0, 1])
    task.model.eval()
    torch.testing.assert_close(loaded(g)["forces"], task.model(g)["forces"], atol=1e-5, rtol=0)
    meta = checkpoint.read_checkpoint(last)[KEY]
    origin = meta["provenance"]["finetuned_from"]
    assert origin["checkpoint"] == str(files["ckpt"]) and origin["model"] == "PaiNN"
    assert origin["sha256"] == hashlib.sha256(files["ckpt"].read_bytes()).hexdigest()
    assert origin["provenance"] == {"data": "pretraining set"}
    assert meta["provenance"]["finetune"]["trainable"] == "lora"
    exported = checkpoint.export(last, tmp_path / "shipped.ckpt", note="test")
    assert checkpoint.read_checkpoint(exported)[KEY]["provenance"]["finetune"]["lora_rank"] == 4
    # the adapters travel beside the merged weights, so a run resumes with them
    resumed = _task(files, ema_decay=0.5, trainable="lora")
    trainer = _trainer(tmp_path, 5, enable_checkpointing=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(resumed, dm, ckpt_path=last)
    assert trainer.global_step == 5


def test_bad_input_is_named_before_training(files, tmp_path):
    gnn = GNN(hidden=8, n_layers=1)
    state = {f"model.{k}": v for k, v in gnn.state_dict().items()}
    other = tmp_path / "gnn.ckpt"
    torch.save({"state_dict": state, KEY: make_metadata(gnn, "ParticleDynamicsTask")}, other)
    with pytest.raises(CheckpointError, match=r"gnn.ckpt holds a GNN \(another model family\)"):
        PotentialTask(finetune={"checkpoint": str(other)})
    with pytest.raises(ValueError, match="either model or finetune.checkpoint"):
        PotentialTask(PaiNN([CU], cutoff=RC), finetune={"checkpoint": str(files["ckpt"])})
    with pytest.raises(ValueError, match="finetune.reference_energies"):
        PotentialTask(reference_energies="fit", finetune={"checkpoint": str(files["ckpt"])})
    with pytest.raises(ValueError, match="finetune.trainable must be one of"):
        FineTune(checkpoint="x", trainable="heads")
    with pytest.raises(ValueError, match=r"finetune.lr: unknown groups \['decoder'\]"):
        FineTune(checkpoint="x", lr={"decoder": 1e-3})
    with pytest.raises(ValueError, match="fps needs replay_pool"):
        _dm(files, replay=str(files["replay"]), replay_fraction=0.1, replay_selection="fps")

    with pytest.raises(ValueError, match=r"cutoff 5.0 Å differs from the cutoff 4.0 Å.*pre.ckpt"):
        _fit(_task(files), _dm(files, cutoff=5.0), tmp_path)
    kcal = _write(tmp_path / "kcal.h5", _metal_frames(3, 4), units={"energy": "kcal/mol"})
    dm = _dm(files, replay=str(kcal), replay_fraction=0.2)
    with pytest.raises(DataError, match=r"kcal.h5, field 'energy'.*expected eV, found kcal/mol"):
        _fit(_task(files), dm, tmp_path)
    dm = _dm(files, replay=str(files["cuau"]), replay_fraction=0.2)
    with pytest.raises(DataError, match=r"cuau.h5.*replay file: elements Au"):
        _fit(_task(files, new_elements="add"), dm, tmp_path)

    lj = LennardJones([CU], cutoff=RC)
    path = tmp_path / "lj.ckpt"
    state = {f"model.{k}": v for k, v in lj.state_dict().items()}
    torch.save({"state_dict": state, KEY: make_metadata(lj, "PotentialTask")}, path)
    task = PotentialTask(finetune={"checkpoint": str(path), "trainable": "readout"})
    assert isinstance(task.model, Potential)
    with pytest.raises(ValueError, match="trainable: readout needs the model's 'readout'"):
        _fit(task, _dm(files), tmp_path)


@pytest.mark.parametrize("recipe", ["finetune_emt_painn.yaml", "finetune_emt_painn_lora.yaml"])
def test_cli_runs_the_finetune_recipes(tmp_path, monkeypatch, recipe):
    """The shipped recipes, run from a directory holding a tiny stand-in of the pretrained
    checkpoint and of the data they name."""
    monkeypatch.chdir(tmp_path)
    elements = [13, 28, 29, 46, 47, 78, 79]
    _pretrained(tmp_path / "checkpoints/emt_painn/model.ckpt", elements)
    for split, seed in (("train", 0), ("valid", 1), ("test", 2)):
        _write(tmp_path / f"data/emt_cuau/{split}.h5", _metal_frames(4, seed, ("Cu", "Au")))
    _write(tmp_path / "data/emt_metals/train.h5", _metal_frames(6, 3, ("Al", "Ni", "Pt")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(
            [
                "fit",
                "--config",
                str(RECIPES / recipe),
                "--trainer.max_epochs",
                "1",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.accelerator",
                "cpu",
            ]
        )
    out = tmp_path / "out" / recipe.removesuffix(".yaml") / "checkpoints"
    meta = checkpoint.read_checkpoint(out / "best.ckpt")[KEY]
    assert meta["provenance"]["finetuned_from"]["checkpoint"] == "checkpoints/emt_painn/model.ckpt"
    assert type(checkpoint.load(out / "best.ckpt")) is PaiNN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(["test", "--config", str(RECIPES / recipe), "--ckpt_path", str(out / "best.ckpt")])
    log = tmp_path / "out" / recipe.removesuffix(".yaml") / "logs" / "metrics.csv"
    assert "test/force_mae" in log.read_text()
