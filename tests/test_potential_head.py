"""The shared physics head of potentials (energy, forces by autograd, stress by strain), run
through the Lennard-Jones potential against ASE's calculator, which computes all three
analytically."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule
from ase.calculators.lj import LennardJones as AseLennardJones

from simsurrogate.graph.atoms import atoms_graph
from simsurrogate.models.potentials import (
    LennardJones,
    UnknownElementError,
    fit_reference_energies,
)

SIGMA, EPS, RC = 2.3, 0.4, 5.0


def _LJ(elements: list[int], cutoff: float) -> LennardJones:
    model = LennardJones(elements, sigma=SIGMA, epsilon=EPS, cutoff=cutoff).double()
    with torch.no_grad():  # exact float64 parameters (not float32 ones cast up)
        model.sigma.fill_(SIGMA)
        model.epsilon.fill_(EPS)
    return model


def _graph(images, cutoff=RC):
    pos = torch.tensor(np.concatenate([a.positions for a in images]), dtype=torch.float64)
    num = torch.tensor(np.concatenate([a.numbers for a in images]))
    cells = torch.tensor(np.stack([a.cell.array for a in images]), dtype=torch.float64)
    pbc = torch.tensor(np.stack([a.pbc for a in images]))
    return atoms_graph(pos, num, cells, pbc, [len(a) for a in images], cutoff)


def _rattled_copper(seed: int):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.1, seed=seed)
    atoms.set_cell(
        atoms.cell.array @ (np.eye(3) + 0.02 * np.random.default_rng(seed).normal(size=(3, 3))),
        scale_atoms=True,
    )
    return atoms


def test_energy_forces_stress_match_ase_lennard_jones():
    images = [_rattled_copper(0), _rattled_copper(1)]
    images[1] = images[1].repeat((1, 1, 2))  # systems of different sizes in one batch
    model = _LJ([29], RC).double().eval()
    out = model(_graph(images), forces=True, stress=True)
    start = 0
    for g, atoms in enumerate(images):
        atoms.calc = AseLennardJones(sigma=SIGMA, epsilon=EPS, rc=RC, smooth=False)
        assert out["energy"][g].item() == pytest.approx(atoms.get_potential_energy(), rel=1e-10)
        np.testing.assert_allclose(
            out["forces"][start : start + len(atoms)].numpy(), atoms.get_forces(), atol=1e-9
        )
        np.testing.assert_allclose(
            out["stress"][g].numpy(), atoms.get_stress(voigt=False), atol=1e-9
        )
        start += len(atoms)
    assert out["energy"].dtype == torch.float64


def test_free_molecule_forces_and_no_stress():
    atoms = molecule("CH4")
    atoms.positions *= 1.5
    model = _LJ([1, 6], RC).double().eval()
    out = model(_graph([atoms]))
    atoms.calc = AseLennardJones(sigma=SIGMA, epsilon=EPS, rc=RC, smooth=False)
    np.testing.assert_allclose(out["forces"].numpy(), atoms.get_forces(), atol=1e-9)
    with pytest.raises(ValueError, match="system 0 .* zero volume"):
        model(_graph([atoms]), stress=True)


def test_unknown_element_is_named():
    model = _LJ([29], RC).double()
    atoms = _rattled_copper(0)
    atoms.numbers[3] = 79
    with pytest.raises(UnknownElementError, match=r"Au \(Z=79\) \(system 0 .*atom 3\).*Cu"):
        model(_graph([atoms]))


def test_reference_energies_recover_per_element_constants():
    rng = np.random.default_rng(0)
    truth = {29: -3.5, 79: -1.25, 47: 0.75}
    n_atoms = rng.integers(2, 9, size=40)
    numbers = rng.choice(list(truth), size=int(n_atoms.sum()))
    frame = np.repeat(np.arange(40), n_atoms)
    energies = np.bincount(frame, weights=[truth[z] for z in numbers])
    fitted = fit_reference_energies(numbers, n_atoms, energies, [47, 29, 79])
    np.testing.assert_allclose(fitted, [0.75, -3.5, -1.25], atol=1e-10)
    model = _LJ([47, 29, 79], RC)
    model.set_reference_energies(fitted)
    assert model.reference_energies.dtype == torch.float64
    with pytest.raises(UnknownElementError, match="Pt"):
        fit_reference_energies(np.array([78]), np.array([1]), np.array([0.0]), [29])
