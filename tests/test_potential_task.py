"""Training potentials: the task recovers a known potential, fits reference energies, keeps an
EMA of the weights in its checkpoints, and refuses bad data before training starts."""

from __future__ import annotations

import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.lj import LennardJones as AseLennardJones
from potential_checks import quiet_trainer

from simsurrogate import checkpoint
from simsurrogate.data.atoms import AtomsDataModule, AtomsDataset
from simsurrogate.data.errors import DataError
from simsurrogate.data.importers.ase_import import atoms_to_fields
from simsurrogate.data.particles import write_frames
from simsurrogate.models.potentials import LennardJones
from simsurrogate.tasks.potential import PotentialTask

SIGMA, EPS, RC = 3.4, 0.0104, 7.0  # argon


def _argon_frames(n: int, seed: int) -> list:
    """Strained, rattled fcc argon cells labelled by ASE's analytic Lennard-Jones."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat((2, 2, 2))
        strain = np.eye(3) + rng.uniform(-0.03, 0.03, (3, 3))
        atoms.set_cell(atoms.cell.array @ (strain + strain.T) / 2, scale_atoms=True)
        atoms.positions += rng.normal(0, 0.08, atoms.positions.shape)
        atoms.calc = AseLennardJones(sigma=SIGMA, epsilon=EPS, rc=RC, smooth=False)
        atoms.get_stress()
        frames.append(atoms)
    return frames


def _write(path: Path, frames: list, drop: tuple[str, ...] = (), units: dict | None = None):
    fields = atoms_to_fields(frames)
    for name in drop:
        fields.pop(name)
    return write_frames(path, units=units, **fields)


@pytest.fixture(scope="module")
def argon(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("argon")
    return {
        "train": _write(root / "train.h5", _argon_frames(24, 0)),
        "valid": _write(root / "valid.h5", _argon_frames(8, 1)),
    }


def _trainer(root: Path, epochs: int, **kw) -> L.Trainer:
    return quiet_trainer(root, max_epochs=epochs, **kw)


def test_training_recovers_lennard_jones_parameters(argon, tmp_path):
    """Fitting LJ's sigma and epsilon from a wrong start to energies, forces and stresses
    labelled by ASE's LJ must land on the true values."""
    torch.manual_seed(0)
    model = LennardJones([18], sigma=3.1, epsilon=0.006, cutoff=RC)
    task = PotentialTask(
        model,
        force_weight=10.0,
        stress_weight=100.0,
        lr=0.02,
        lr_schedule="constant",
        ema_decay=None,
        reference_energies="keep",
        scale="keep",
    )
    dm = AtomsDataModule(str(argon["train"]), str(argon["valid"]), batch_size=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _trainer(tmp_path, 40).fit(task, dm)
    assert model.sigma.item() == pytest.approx(SIGMA, rel=2e-3)
    assert model.epsilon.item() == pytest.approx(EPS, rel=2e-2)
    metrics = _trainer(tmp_path, 1).validate(task, dm, verbose=False)[0]
    assert metrics["val/force_mae"] < 2e-3
    assert metrics["val/stress_mae"] < 1e-5
    assert metrics["val/energy_mae_per_atom"] < 1e-3


def test_reference_energies_scale_and_ema_checkpoint(argon, tmp_path):
    """A fresh run fits reference energies and the force scale; the saved checkpoint's model
    weights are the EMA ones (what ``checkpoint.load`` rebuilds), the raw ones sit beside."""
    model = LennardJones([18], sigma=3.3, epsilon=0.009, cutoff=RC)
    task = PotentialTask(model, lr=0.01, ema_decay=0.5, lr_schedule="cosine")
    dm = AtomsDataModule(str(argon["train"]), str(argon["valid"]), batch_size=8)
    saver = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = _trainer(tmp_path, 3, callbacks=[saver])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(task, dm)
    ds = dm.dataset("train")
    rms = np.sqrt(np.mean(ds.forces**2))
    assert model.scale.item() == pytest.approx(rms, rel=1e-6)
    # one element: the reference energy is the mean energy per atom
    assert model.reference_energies.item() == pytest.approx(
        ds.energy.sum() / ds.n_atoms.sum(), rel=1e-9
    )
    path = tmp_path / "last.ckpt"  # saved during training, after the last epoch
    raw = torch.load(path, weights_only=True)
    assert "raw_model_state" in raw
    loaded = checkpoint.load(path)
    ema_sigma = task._ema.module.sigma.item()
    assert loaded.sigma.item() == pytest.approx(ema_sigma)
    assert raw["raw_model_state"]["sigma"].item() != pytest.approx(ema_sigma, abs=1e-9)
    assert loaded.scale.item() == pytest.approx(rms, rel=1e-6)


def test_missing_labels_units_elements_overlaps_are_named(argon, tmp_path):
    frames = _argon_frames(4, 3)
    no_forces = _write(tmp_path / "no_forces.h5", frames, drop=("forces",))
    dm = AtomsDataModule(str(no_forces), str(argon["valid"]))
    task = PotentialTask(LennardJones([18], cutoff=RC))
    with pytest.raises(DataError, match=r"no_forces.h5.*'forces'.*weights forces"):
        _trainer(tmp_path, 1).fit(task, dm)

    kcal = _write(tmp_path / "kcal.h5", frames, units={"energy": "kcal/mol"})
    with pytest.raises(DataError, match=r"kcal.h5, field 'energy'.*expected eV, found kcal/mol"):
        AtomsDataset(kcal)

    task = PotentialTask(LennardJones([10], cutoff=RC))
    dm = AtomsDataModule(str(argon["train"]), str(argon["valid"]))
    with pytest.raises(DataError, match=r"elements Ar \(first in frame 0\).*Ne"):
        _trainer(tmp_path, 1).fit(task, dm)

    frames[2].positions[5] = frames[2].positions[1] + 0.1
    overlap = _write(tmp_path / "overlap.h5", frames)
    with pytest.raises(DataError, match=r"frame 2: atoms 1 and 5 are closer than 0.5"):
        AtomsDataset(overlap)

    fields = atoms_to_fields(_argon_frames(1, 4))
    fields["cell"][0, 2] = 0.0
    path = write_frames(tmp_path / "flat.h5", **fields)
    with pytest.raises(DataError, match="frame 0 is periodic but its cell has zero volume"):
        AtomsDataset(path)
