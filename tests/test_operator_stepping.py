"""Autoregressive and space-time operators: unrolling, training on Well windows, NS recipes."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import NS_HISTORY as HISTORY
from conftest import fit_ns_recipe, tiny_fno

import simsurrogate
from simsurrogate.data.errors import DataError
from simsurrogate.data.well import WellDataModule
from simsurrogate.models import FNO
from simsurrogate.models.operators.stepping import push, unroll
from simsurrogate.tasks import FieldOperatorTask


def test_push_keeps_the_newest_snapshots() -> None:
    state = torch.arange(3.0).reshape(1, 3, 1)
    assert push(state, torch.tensor([[[7.0]]])).flatten().tolist() == [1.0, 2.0, 7.0]
    assert push(state, torch.arange(10.0, 14.0).reshape(1, 4, 1)).flatten().tolist() == [
        11.0,
        12.0,
        13.0,
    ]


def test_autoregressive_unroll_equals_repeated_single_steps() -> None:
    model = tiny_fno().eval()
    x = torch.randn(2, HISTORY, 16, 16)
    with torch.no_grad():
        unrolled = torch.cat(list(unroll(model, x, 5, "autoregressive", HISTORY)), dim=1)
        state, manual = x, []
        for _ in range(5):
            y = model(state)
            manual.append(y)
            state = torch.cat([state[:, 1:], y], dim=1)
    assert unrolled.shape == (2, 5, 16, 16)
    torch.testing.assert_close(unrolled, torch.cat(manual, dim=1))


def test_space_time_unroll_in_blocks_continues_from_predictions() -> None:
    model = tiny_fno(modes=[4, 4, 3], padding=[0, 0, 2]).eval()
    x = torch.randn(1, HISTORY, 8, 8)
    with torch.no_grad():
        blocks = torch.cat(list(unroll(model, x, 7, "space_time", HISTORY, block=4)), dim=1)
        first = model(x[..., None].expand(-1, -1, -1, -1, 4))[:, 0].movedim(-1, 1)
        state = torch.cat([x, first], dim=1)[:, -HISTORY:]
        second = model(state[..., None].expand(-1, -1, -1, -1, 3))[:, 0].movedim(-1, 1)
    assert blocks.shape == (1, 7, 8, 8)
    torch.testing.assert_close(blocks, torch.cat([first, second], dim=1))


def test_unroll_rejects_a_model_that_does_not_fit_the_mode() -> None:
    model = FNO(HISTORY, 2, modes=[4, 4], width=4, n_layers=1)
    with pytest.raises(ValueError, match="one snapshot"):
        next(unroll(model, torch.zeros(1, HISTORY, 8, 8), 2, "autoregressive", HISTORY))
    with pytest.raises(ValueError, match="mode must be one of"):
        FieldOperatorTask(model, mode="leapfrog")
    with pytest.raises(ValueError, match="whole number of snapshots"):
        FieldOperatorTask(FNO(3, 2, modes=[4, 4]), mode="autoregressive")


def _datamodule(tiny_ns: dict[str, Path], **kw) -> WellDataModule:
    args = {
        "train": str(tiny_ns["train"]),
        "test": str(tiny_ns["test"]),
        "input_fields": ["vorticity"],
        "target_fields": ["vorticity"],
        "history": HISTORY,
        "horizon": 4,
        "val_fraction": 1 / 3,
        "batch_size": 2,
    }
    return WellDataModule(**{**args, **kw})


def test_window_starts_pick_the_paper_window(tiny_ns: dict[str, Path]) -> None:
    dm = _datamodule(tiny_ns, window_starts=[1])
    dm.setup()
    assert len(dm._sets["test"]) == 2 and {i[2] for i in dm._sets["test"].items} == {1}
    bad = _datamodule(tiny_ns, window_starts=[3])  # 3 + 3 + 4 = 10 > 9 snapshots
    with pytest.raises(DataError, match="window start"):
        bad.setup("test")


def test_autoregressive_training_unrolls_and_normalises_from_data(tiny_ns: dict[str, Path]) -> None:
    L.seed_everything(0)
    dm = _datamodule(tiny_ns)
    model = tiny_fno(normalize_inputs=True, normalize_outputs=True)
    task = FieldOperatorTask(model, lr=3e-3, mode="autoregressive")
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(task, datamodule=dm)
    n_windows = len(dm._sets["train"])  # 4 trajectories x 3 windows of 3 + 4 steps
    assert n_windows == 12
    # inputs: the given snapshots only; outputs: every target step
    assert float(model.input_norm.count) == 3 * n_windows * 16 * 16
    assert float(model.output_norm.count) == 3 * n_windows * 4 * 16 * 16
    x, y = next(iter(dm.val_dataloader()))
    task.eval()
    with torch.no_grad():
        pred = task.predict_window(x, 4)
        manual = torch.cat(list(unroll(model, x, 4, "autoregressive", HISTORY)), dim=1)
    assert pred.shape == y.shape == (2, 4, 16, 16)
    torch.testing.assert_close(pred, manual)
    assert torch.isfinite(torch.as_tensor(trainer.callback_metrics["val/rel_l2"]))


def test_autoregressive_mode_needs_a_time_stepping_window(tiny_ns: dict[str, Path]) -> None:
    dm = _datamodule(tiny_ns, target_offset=2)
    task = FieldOperatorTask(tiny_fno(), mode="autoregressive")
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="target_offset 1"):
        trainer.fit(task, datamodule=dm)


@pytest.mark.parametrize(
    ("recipe", "modes", "mode"),
    [("ns_fno2d.yaml", "[4, 4]", "autoregressive"), ("ns_fno3d.yaml", "[4, 4, 3]", "space_time")],
)
def test_ns_recipes_fit_and_checkpoints_record_the_mode(
    tiny_ns: dict[str, Path], tmp_path: Path, recipe: str, modes: str, mode: str
) -> None:
    flag = "--model.init_args.model.init_args.modes"
    ckpt = fit_ns_recipe(tiny_ns, recipe, tmp_path, flag, modes)
    model = simsurrogate.load(ckpt)
    assert isinstance(model, FNO) and model.config["in_channels"] == HISTORY
    meta = torch.load(ckpt, weights_only=True)["simsurrogate"]
    assert meta["mode"] == mode
    assert meta["window"] == {"history": HISTORY, "target_offset": 1, "horizon": 4}
