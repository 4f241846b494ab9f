"""Online normalizers: correct statistics, frozen in eval, and carried by checkpoints."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

import simsurrogate
from simsurrogate.data.nbody import NBodyDataModule
from simsurrogate.models import GNN
from simsurrogate.models.normalization import Normalizer
from simsurrogate.tasks import ParticleDynamicsTask


def test_statistics_match_numpy_over_batches() -> None:
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=[1.0, -3.0], scale=[0.5, 4.0], size=(n, 2)) for n in (7, 30, 13)]
    norm = Normalizer(2).train()
    for b in batches:
        norm(torch.tensor(b, dtype=torch.float32))
    data = np.concatenate(batches)
    np.testing.assert_allclose(norm.mean.numpy(), data.mean(0), rtol=1e-6)
    np.testing.assert_allclose(norm.std.numpy(), data.std(0), rtol=1e-5)
    x = torch.tensor(data, dtype=torch.float32)
    y = norm.eval()(x)
    np.testing.assert_allclose(y.mean(0).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(0, unbiased=False).numpy(), 1.0, rtol=1e-5)
    torch.testing.assert_close(norm.inverse(y), x)


def test_an_empty_normalizer_is_the_identity() -> None:
    x = torch.randn(5, 3)
    norm = Normalizer(3).eval()
    torch.testing.assert_close(norm(x), x)
    torch.testing.assert_close(norm.inverse(x), x)


def test_eval_mode_and_max_accumulations_freeze_statistics() -> None:
    norm = Normalizer(1, max_accumulations=2).train()
    for value in (1.0, 3.0, 100.0):
        norm(torch.full((4, 1), value))
    assert float(norm.mean) == pytest.approx(2.0)  # the third batch came after the limit
    norm.eval()(torch.full((4, 1), -50.0))
    assert float(norm.mean) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="size 1"):
        norm(torch.zeros(3, 2))


def test_normalizer_statistics_travel_in_the_checkpoint(nbody_dir: Path, tmp_path: Path) -> None:
    L.seed_everything(0)
    task = ParticleDynamicsTask(GNN(hidden=16, n_layers=2, normalize_inputs=True))
    dm = NBodyDataModule(root=str(nbody_dir), batch_size=16, max_train_samples=32)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, filename="last")
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[ckpt],
    )
    trainer.fit(task, datamodule=dm)
    trained = task.model.input_norm
    assert float(trained.count) == 32 * 5  # two batches of 16 systems of 5 particles
    loaded = simsurrogate.load(tmp_path / "last.ckpt")
    for name in ("count", "total", "total_sq"):
        torch.testing.assert_close(getattr(loaded.input_norm, name), getattr(trained, name))
    pos = dm._split("train", 32).tensors["pos"].reshape(-1, 3).double()
    np.testing.assert_allclose(loaded.input_norm.mean[:3].numpy(), pos.mean(0).numpy(), rtol=1e-9)
