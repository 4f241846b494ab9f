"""Neural-operator training on Well-format files: windows, losses, recipe, checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import simsurrogate
from simsurrogate.cli import main
from simsurrogate.data.errors import DataError
from simsurrogate.data.well import WellDataModule
from simsurrogate.models import FNO
from simsurrogate.sims.darcy import generate_darcy
from simsurrogate.tasks.losses import relative_h1, relative_l2, vrmse

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "operators" / "darcy_fno.yaml"


@pytest.fixture(scope="module")
def darcy(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("darcy")
    return generate_darcy(
        root, n_train=20, n_test=6, resolution=29, stored_resolutions=(29,), progress=False
    )


def test_relative_losses() -> None:
    x = torch.linspace(0, 1, 257)[:-1]
    y = torch.sin(2 * math.pi * x).reshape(1, 1, -1)
    assert float(relative_l2(y, y)) == 0.0
    assert float(relative_l2(1.1 * y, y)) == pytest.approx(0.1, rel=1e-5)
    assert float(relative_h1(1.1 * y, y)) == pytest.approx(0.1, rel=1e-5)
    # VRMSE: the error's RMS over the target's standard deviation (sin has variance 1/2)
    assert float(vrmse(y + 0.1, y)) == pytest.approx(0.1 / math.sqrt(0.5), rel=1e-4)
    assert float(vrmse(torch.zeros_like(y), y)) == pytest.approx(1.0, rel=1e-4)
    # the_well's code divides by the N - 1 variance: sqrt((N - 1) / N) of ours, N = 256
    ratio = float(vrmse(y + 0.1, y, unbiased=True)) / float(vrmse(y + 0.1, y))
    assert ratio == pytest.approx(math.sqrt(255 / 256), rel=1e-6)
    wiggle = y + 0.01 * torch.sin(2 * math.pi * 40 * x)
    # H1 weighs a high-frequency error by its derivative: far more than L2 does
    assert float(relative_h1(wiggle, y)) > 10 * float(relative_l2(wiggle, y))


def test_windows_give_channels_first_pairs(darcy: dict[str, Path]) -> None:
    dm = WellDataModule(
        train=str(darcy["train_29"]),
        test=str(darcy["test_29"]),
        input_fields=["coefficient"],
        target_fields=["solution"],
        target_offset=0,
        val_fraction=0.25,
        batch_size=4,
    )
    dm.setup()
    assert len(dm._sets["train"]) == 15 and len(dm._sets["val"]) == 5
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 29, 29) and y.shape == (4, 1, 29, 29)
    assert set(torch.unique(x).tolist()) <= {3.0, 12.0}
    assert float(y[:, :, 0].abs().max()) == 0.0  # zero Dirichlet boundary


def test_missing_field_is_named(darcy: dict[str, Path]) -> None:
    dm = WellDataModule(
        train=str(darcy["train_29"]), input_fields=["permeability"], target_fields=["solution"]
    )
    with pytest.raises(DataError, match="permeability"):
        dm.setup("fit")


def test_recipe_fits_and_checkpoint_rebuilds_fno(darcy: dict[str, Path], tmp_path: Path) -> None:
    args = [
        "fit",
        "--config",
        str(RECIPE),
        "--trainer.max_epochs",
        "4",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.callbacks",
        "[]",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.dirpath",
        str(tmp_path / "ckpt"),
        "--trainer.callbacks.filename",
        "last",
        "--model.init_args.model.init_args.modes",
        "[6, 6]",
        "--model.init_args.model.init_args.width",
        "8",
        "--model.init_args.model.init_args.padding",
        "4",
        "--data.init_args.train",
        str(darcy["train_29"]),
        "--data.init_args.test",
        str(darcy["test_29"]),
        "--data.init_args.batch_size",
        "5",
    ]
    main(args)
    model = simsurrogate.load(tmp_path / "ckpt" / "last.ckpt")
    assert isinstance(model, FNO) and model.modes == [6, 6]
    assert float(model.input_norm.count) == 4 * 18 * 29 * 29  # 4 epochs x 18 train samples
    assert 3.0 < float(model.input_norm.mean[0]) < 12.0
    assert 0.0 < float(model.output_norm.mean[0]) < float(model.output_norm.std[0]) * 10
    meta = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["simsurrogate"]
    assert meta["input_fields"] == ["coefficient"] and meta["target_fields"] == ["solution"]


def test_short_training_reduces_relative_error(darcy: dict[str, Path]) -> None:
    import lightning as L

    from simsurrogate.tasks import FieldOperatorTask

    L.seed_everything(0)
    dm = WellDataModule(
        train=str(darcy["train_29"]),
        input_fields=["coefficient"],
        target_fields=["solution"],
        target_offset=0,
        val_fraction=0.2,
        batch_size=4,
    )
    dm.setup("fit")
    model = FNO(
        1, 1, modes=[6, 6], width=16, padding=4, normalize_inputs=True, normalize_outputs=True
    )
    task = FieldOperatorTask(model, lr=3e-3)

    def val_error() -> float:
        task.eval()
        with torch.no_grad():
            return float(
                torch.stack([relative_l2(task(x), y) for x, y in dm.val_dataloader()]).mean()
            )

    before = val_error()
    task.train()
    trainer = L.Trainer(
        max_epochs=30,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(task, datamodule=dm)
    after = val_error()
    assert after < 0.5 * before and after < 0.3, (before, after)
