"""simsurrogate potentials as an ASE calculator: units and sign conventions against ASE's own
Lennard-Jones, energy conservation under ASE's VelocityVerlet, a full cell relaxation with
ASE's BFGS, checkpoints, float32 and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.lj import LennardJones as AseLennardJones
from ase.filters import FrechetCellFilter
from ase.md.verlet import VelocityVerlet
from ase.optimize import BFGS

from simsurrogate.checkpoint import make_metadata
from simsurrogate.models.potentials import LennardJones, UnknownElementError
from simsurrogate.rollout.md import SimsurrogateCalculator

SIGMA, EPS, RC = 3.4, 0.0104, 8.5  # argon-like


def _lj(smooth: bool = True) -> LennardJones:
    model = LennardJones([18], sigma=SIGMA, epsilon=EPS, cutoff=RC, smooth=smooth).double()
    with torch.no_grad():  # exact float64 parameters
        model.sigma.fill_(SIGMA)
        model.epsilon.fill_(EPS)
    return model


def _argon(seed: int = 0, rattle: float = 0.05):
    atoms = bulk("Ar", "fcc", a=5.26, cubic=True).repeat(2)
    atoms.rattle(rattle, seed=seed)
    return atoms


def test_results_match_ase_lennard_jones_in_ase_conventions():
    """Energy, forces and the Voigt stress (order and sign) equal ASE's analytic LJ."""
    atoms = _argon(seed=1)
    atoms.set_cell(atoms.cell.array @ np.diag([1.0, 1.02, 0.97]), scale_atoms=True)
    reference = atoms.copy()
    reference.calc = AseLennardJones(sigma=SIGMA, epsilon=EPS, rc=RC, smooth=False)
    atoms.calc = SimsurrogateCalculator(_lj(smooth=False))
    assert atoms.get_potential_energy() == pytest.approx(reference.get_potential_energy(), 1e-10)
    assert atoms.get_potential_energy() == atoms.calc.get_property("free_energy")
    np.testing.assert_allclose(atoms.get_forces(), reference.get_forces(), atol=1e-10)
    np.testing.assert_allclose(atoms.get_stress(), reference.get_stress(), atol=1e-10)
    assert atoms.get_stress().shape == (6,)


def test_velocity_verlet_conserves_energy():
    atoms = _argon()
    rng = np.random.default_rng(0)
    momenta = (
        rng.normal(size=(len(atoms), 3)) * np.sqrt(atoms.get_masses() * units.kB * 40)[:, None]
    )
    atoms.set_momenta(momenta - momenta.mean(0))
    atoms.calc = SimsurrogateCalculator(_lj())
    energies = []
    dyn = VelocityVerlet(atoms, timestep=5 * units.fs)
    dyn.attach(lambda: energies.append(atoms.get_total_energy()), interval=1)
    dyn.run(300)
    energies = np.array(energies) / len(atoms)
    # kinetic energy ~3e-3 eV/atom moves in and out of the potential; velocity Verlet at
    # 5 fs keeps the total within ~2e-6 eV/atom (a wrong force would drift by far more)
    assert atoms.get_kinetic_energy() / len(atoms) > 1e-3
    assert np.abs(energies - energies[0]).max() < 1e-5


def test_bfgs_relaxes_rattled_cell():
    """Positions and cell relax together (FrechetCellFilter uses the stress), so the forces
    and the stress are consistent gradients of the energy."""
    atoms = _argon(seed=2, rattle=0.1)
    strain = np.eye(3) + 0.03 * np.random.default_rng(0).normal(size=(3, 3))
    atoms.set_cell(atoms.cell.array @ strain, scale_atoms=True)
    atoms.calc = SimsurrogateCalculator(_lj())
    e0 = atoms.get_potential_energy()
    assert np.abs(atoms.get_forces()).max() > 0.05
    opt = BFGS(FrechetCellFilter(atoms), logfile=None)
    assert opt.run(fmax=1e-3, steps=300)
    assert np.abs(atoms.get_forces()).max() < 1e-3
    assert np.abs(atoms.get_stress()).max() < 1e-4
    assert atoms.get_potential_energy() < e0
    lengths = atoms.cell.lengths()
    np.testing.assert_allclose(lengths, lengths.mean(), rtol=1e-3)  # back to a cubic fcc cell


def test_checkpoint_path_and_float32(tmp_path):
    model = _lj()
    path = tmp_path / "lj.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "simsurrogate": make_metadata(model, "potential")}, path)
    atoms = _argon(seed=3)
    atoms.calc = SimsurrogateCalculator(model)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    from_file = SimsurrogateCalculator(path)  # rebuilt with float32 parameters
    assert from_file.get_potential_energy(atoms) == pytest.approx(energy, rel=1e-6)
    single = SimsurrogateCalculator(_lj(), dtype=torch.float32)
    assert single.model.sigma.dtype == torch.float32
    assert single.model.reference_energies.dtype == torch.float64
    assert single.get_potential_energy(atoms) == pytest.approx(energy, rel=1e-5)
    np.testing.assert_allclose(single.get_forces(atoms), forces, atol=1e-5)


def test_molecule_has_no_stress_and_unknown_elements_are_named():
    atoms = molecule("H2O")
    atoms.calc = SimsurrogateCalculator(LennardJones([1, 8], 2.0, 0.01, 5.0, smooth=True))
    assert np.isfinite(atoms.get_forces()).all()
    with pytest.raises(PropertyNotImplementedError, match="stress needs a periodic cell"):
        atoms.get_stress()
    argon = _argon()
    argon.calc = SimsurrogateCalculator(LennardJones([1, 8], 2.0, 0.01, 5.0))
    with pytest.raises(UnknownElementError, match="element Ar"):
        argon.get_potential_energy()
