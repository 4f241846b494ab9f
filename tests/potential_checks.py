"""Physics checks that every interatomic potential must pass, reusable for any model.

Each ``check_*`` function takes a *factory*, ``factory(elements) -> Potential``, that builds a
fresh model over the given atomic numbers with deterministic (seeded) random weights in
float32, and raises ``AssertionError`` naming what failed. Unless a check says otherwise it
runs the model in float64 and eval mode, so tolerances can be tight enough that a wrong
model fails. Structures are small: rattled fcc Cu/Au cells of 4 to 16 atoms (one triclinic
and sheared) and acetamide (C2H5NO) as a free molecule; checks that compare numbers first
assert that the model's forces and stress on them are not trivially small.

Checked: invariance of the energy under rotation, translation and permutation with forces
and stress transforming as vectors (``F(Rx) = R F(x)``) and tensors (``R sigma R^T``);
forces against central finite differences of the energy; stress against finite differences
under symmetric strains and against ASE's ``calculate_numerical_stress``; continuity of
energy and forces as an atom crosses the cutoff; supercell and batch consistency; float32
against float64; force losses reaching the weights; rebuilding from the recorded spec; and
the error for an unknown element. ``ALL_CHECKS`` lists them for parametrized tests.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.fd import calculate_numerical_stress
from torch import nn

from simsurrogate.graph import Graph
from simsurrogate.graph.atoms import atoms_graph
from simsurrogate.models.base import build_model
from simsurrogate.models.potentials import Potential, UnknownElementError

Factory = Callable[[Sequence[int]], Potential]


def quiet_trainer(root: Path, **kw: Any) -> L.Trainer:
    """A CPU trainer for potential tests: no logger, progress bar or summary, and grad mode
    in evaluation (forces need autograd); ``kw`` sets the rest (max_epochs, max_steps, ...)."""
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        default_root_dir=root,
        **kw,
    )


# H, C, N, O (the molecule) and Cu, Au (the metals)
ELEMENTS = (1, 6, 7, 8, 29, 79)
# lower bounds on the RMS force (eV/Å) and on the largest stress component (eV/Å³) of a model
# on the test structures, so that no check passes merely because the output is near zero
MIN_FORCE_RMS = 1e-3
MIN_STRESS = 1e-5


# ---------------------------------------------------------------- structures and evaluation


def copper_cell(seed: int = 0) -> Atoms:
    """Cubic fcc Cu, 4 atoms in a 3.6 Å box (below usual cutoffs, so atoms see their own
    periodic images), rattled by 0.1 Å."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.rattle(0.1, seed=seed)
    return atoms


def alloy_cell(seed: int = 0) -> Atoms:
    """8-atom CuAu cell: primitive fcc (triclinic) repeated 2x2x2, every third atom Au,
    rattled by 0.1 Å and sheared by a random 3 % deformation."""
    atoms = bulk("Cu", "fcc", a=3.7).repeat((2, 2, 2))
    atoms.numbers[::3] = 79
    atoms.rattle(0.1, seed=seed)
    deformation = np.eye(3) + 0.03 * np.random.default_rng(seed).normal(size=(3, 3))
    atoms.set_cell(atoms.cell.array @ deformation, scale_atoms=True)
    return atoms


def small_molecule(seed: int = 0) -> Atoms:
    """Acetamide CH3CONH2 (H, C, N, O; 9 atoms), free (no cell), rattled by 0.05 Å."""
    atoms = molecule("CH3CONH2")
    atoms.rattle(0.05, seed=seed)
    return atoms


def graph_of(images: Sequence[Atoms], cutoff: float, dtype: torch.dtype = torch.float64) -> Graph:
    """One batched graph of ASE structures (positions and cells in ``dtype``)."""
    pos = torch.tensor(np.concatenate([a.positions for a in images]), dtype=dtype)
    numbers = torch.tensor(np.concatenate([a.numbers for a in images]))
    cells = torch.tensor(np.stack([a.cell.array for a in images]), dtype=dtype)
    pbc = torch.tensor(np.stack([a.pbc for a in images]))
    return atoms_graph(pos, numbers, cells, pbc, [len(a) for a in images], cutoff)


def evaluate(
    model: Potential, images: Sequence[Atoms], forces: bool = True, stress: bool = False
) -> dict[str, np.ndarray]:
    """Energy (G,) eV, forces (N, 3) eV/Å and stress (G, 3, 3) eV/Å³ of a batch, as float64
    numpy arrays, in the dtype of the model's parameters."""
    dtype = next(model.parameters()).dtype
    out = model(graph_of(images, model.cutoff, dtype), forces=forces, stress=stress)
    return {k: v.detach().to(torch.float64).numpy() for k, v in out.items()}


def model64(factory: Factory, elements: Sequence[int] = ELEMENTS) -> Potential:
    """The factory's model in float64 and eval mode."""
    return factory(elements).double().eval()


def assert_close(
    actual: np.ndarray, expected: np.ndarray, what: str, rtol: float, atol: float = 0.0
) -> None:
    """Max absolute deviation at most ``atol + rtol * max|expected|``."""
    actual, expected = np.asarray(actual, dtype=float), np.asarray(expected, dtype=float)
    err = float(np.abs(actual - expected).max())
    bound = atol + rtol * float(np.abs(expected).max())
    assert err <= bound, (
        f"{what}: max deviation {err:.3e} exceeds {bound:.3e} "
        f"(max |expected| {float(np.abs(expected).max()):.3e})"
    )


def assert_nontrivial(out: dict[str, np.ndarray], what: str) -> None:
    """Forces (and stress, if computed) are large enough for the checks to mean something."""
    rms = float(np.sqrt((out["forces"] ** 2).mean()))
    assert rms >= MIN_FORCE_RMS, (
        f"{what}: RMS force {rms:.2e} eV/Å is below {MIN_FORCE_RMS:.0e}; the model's output is "
        "too small for the checks to be meaningful (scale up its initial weights)"
    )
    if "stress" in out:
        biggest = float(np.abs(out["stress"]).max())
        assert biggest >= MIN_STRESS, (
            f"{what}: largest |stress| {biggest:.2e} eV/Å³ is below {MIN_STRESS:.0e}"
        )


def _rotation(seed: int) -> np.ndarray:
    """A random proper rotation (3, 3), det = +1."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


# ---------------------------------------------------------------------------------- checks


def check_symmetries(factory: Factory) -> None:
    """Energy invariant and forces/stress covariant under rotation, translation and
    permutation of the atoms, for a periodic cell (with stress) and a free molecule."""
    model = model64(factory)
    for atoms, periodic in ((alloy_cell(), True), (small_molecule(), False)):
        name = atoms.get_chemical_formula()
        ref = evaluate(model, [atoms], stress=periodic)
        assert_nontrivial(ref, name)

        rot = _rotation(7)
        turned = atoms.copy()
        turned.positions = atoms.positions @ rot.T
        turned.set_cell(atoms.cell.array @ rot.T)
        out = evaluate(model, [turned], stress=periodic)
        assert_close(out["energy"], ref["energy"], f"{name}: energy after rotation", 1e-10)
        assert_close(out["forces"], ref["forces"] @ rot.T, f"{name}: rotated forces", 1e-9)
        if periodic:
            expected = rot @ ref["stress"][0] @ rot.T
            assert_close(out["stress"][0], expected, f"{name}: rotated stress", 1e-9)

        moved = atoms.copy()
        moved.positions += np.array([4.3, -7.1, 2.6])  # also takes periodic atoms out of the cell
        out = evaluate(model, [moved], stress=periodic)
        assert_close(out["energy"], ref["energy"], f"{name}: energy after translation", 1e-10)
        assert_close(out["forces"], ref["forces"], f"{name}: forces after translation", 1e-9)

        order = np.random.default_rng(3).permutation(len(atoms))
        out = evaluate(model, [atoms[order]], stress=periodic)
        assert_close(out["energy"], ref["energy"], f"{name}: energy after permutation", 1e-10)
        assert_close(out["forces"], ref["forces"][order], f"{name}: permuted forces", 1e-9)
        if periodic:
            assert_close(out["stress"], ref["stress"], f"{name}: stress after permutation", 1e-9)


def check_forces_finite_differences(factory: Factory, step: float = 2e-5) -> None:
    """Forces equal central finite differences ``-(E(x + h) - E(x - h)) / 2h`` of the energy
    for every coordinate (all displaced copies evaluated in one batch)."""
    model = model64(factory)
    for atoms in (alloy_cell(), small_molecule()):
        name = atoms.get_chemical_formula()
        ref = evaluate(model, [atoms])
        assert_nontrivial(ref, name)
        displaced = []
        for k in range(len(atoms)):
            for c in range(3):
                for sign in (1.0, -1.0):
                    image = atoms.copy()
                    image.positions[k, c] += sign * step
                    displaced.append(image)
        energy = evaluate(model, displaced, forces=False)["energy"].reshape(len(atoms), 3, 2)
        numeric = -(energy[..., 0] - energy[..., 1]) / (2 * step)
        assert_close(ref["forces"], numeric, f"{name}: forces vs finite differences", 1e-6)


def check_stress_finite_differences(factory: Factory, step: float = 1e-5) -> None:
    """``V sigma : S`` equals the central finite difference of the energy along symmetric
    strains ``S`` (the six Voigt directions and two random ones), positions and cell deformed
    by ``I + t S``."""
    model = model64(factory)
    for atoms in (alloy_cell(), copper_cell()):
        name = atoms.get_chemical_formula()
        ref = evaluate(model, [atoms], stress=True)
        assert_nontrivial(ref, name)
        directions = []
        for a, b in ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)):
            s = np.zeros((3, 3))
            s[a, b] = s[b, a] = 1.0
            directions.append(s)
        for seed in (0, 1):
            s = np.random.default_rng(seed).normal(size=(3, 3))
            directions.append(s + s.T)
        strained = []
        for s in directions:
            for sign in (1.0, -1.0):
                image = atoms.copy()
                image.set_cell(atoms.cell.array @ (np.eye(3) + sign * step * s), scale_atoms=True)
                strained.append(image)
        energy = evaluate(model, strained, forces=False)["energy"].reshape(-1, 2)
        numeric = (energy[:, 0] - energy[:, 1]) / (2 * step * atoms.get_volume())
        analytic = np.array([np.sum(ref["stress"][0] * s) for s in directions])
        assert_close(analytic, numeric, f"{name}: stress vs strain finite differences", 1e-6)


class _EnergyCalculator(Calculator):
    """A minimal ASE calculator (energy only) around a potential, for ASE's numerical tools."""

    implemented_properties = ["energy", "free_energy"]

    def __init__(self, model: Potential) -> None:
        super().__init__()
        self.model = model

    def calculate(
        self,
        atoms: Atoms | None = None,
        properties: Sequence[str] = ("energy",),
        system_changes: Sequence[str] = tuple(all_changes),
    ) -> None:
        super().calculate(atoms, properties, system_changes)
        energy = float(evaluate(self.model, [self.atoms], forces=False)["energy"][0])
        self.results = {"energy": energy, "free_energy": energy}


def check_stress_matches_ase(factory: Factory) -> None:
    """The model's stress is the tensor ASE's ``calculate_numerical_stress`` gives from its
    energies (ASE's sign convention: ``sigma = (1/V) dE/d(strain)``)."""
    model = model64(factory)
    atoms = alloy_cell(seed=5)
    ref = evaluate(model, [atoms], stress=True)
    assert_nontrivial(ref, atoms.get_chemical_formula())
    atoms.calc = _EnergyCalculator(model)
    numeric = calculate_numerical_stress(atoms, eps=1e-5, voigt=False)
    assert_close(ref["stress"][0], numeric, "stress vs ASE calculate_numerical_stress", 1e-6)


def _assert_continuous(
    r: np.ndarray, values: np.ndarray, cutoff: float, what: str, order: int
) -> None:
    """``values`` (one row per grid point ``r``) shows no jump at the cutoff.

    Differences of order ``order`` on a grid of spacing h shrink like ``h^order`` on a smooth
    curve but stay finite across a jump: a jump J of the curve gives a first difference J,
    and a jump dF of its derivative a second difference ``h dF``. So the largest difference
    within 0.05 Å of the cutoff may be at most five times the largest one further inside.
    Energies are checked at second order (a kink in the energy is a jump in the force),
    forces at first order (their derivative may jump, e.g. with a cosine cutoff).
    """
    diff = np.abs(np.diff(values, n=order, axis=0)).reshape(len(r) - order, -1).max(axis=1)
    centre = r[: len(diff)] + 0.5 * order * (r[1] - r[0])
    near = np.abs(centre - cutoff) < 0.05
    inside = centre < cutoff - 0.05
    allowed = 5.0 * diff[inside].max() + 1e-12
    worst = diff[near].max()
    at = centre[near][diff[near].argmax()]
    assert worst <= allowed, (
        f"{what} is not smooth at r = {at:.4f} Å (cutoff {cutoff} Å): differences of order "
        f"{order} on the {r[1] - r[0]:.0e} Å grid reach {worst:.3e} there, at most "
        f"{diff[inside].max():.3e} further inside"
    )


def check_smooth_cutoff(factory: Factory, spacing: float = 1e-3) -> None:
    """Energy and forces are continuous as one atom of a dimer, and of a trimer whose third
    atom stays in range, moves across the cutoff on a fine grid; beyond the cutoff the dimer
    is two isolated atoms (energy constant, forces exactly zero)."""
    model = model64(factory)
    rc = model.cutoff
    r = np.arange(rc - 1.0, rc + 0.25, spacing)
    dimers = [Atoms("CuAu", positions=[[0, 0, 0], [x, 0, 0]]) for x in r]
    # the moving Au stays within ~2.2 Å of the second Cu while it leaves the first one's range
    trimers = [Atoms("CuAuCu", positions=[[0, 0, 0], [x, 0, 0], [rc - 1.0, 1.8, 0]]) for x in r]
    for images, what in ((dimers, "dimer"), (trimers, "trimer")):
        out = evaluate(model, images)
        energy = out["energy"]
        forces = out["forces"].reshape(len(r), len(images[0]), 3)
        span = np.ptp(energy[r < rc])
        assert span > 1e-6, f"{what}: energy varies by only {span:.2e} eV inside the cutoff"
        _assert_continuous(r, energy, rc, f"{what}: energy", order=2)
        _assert_continuous(r, forces, rc, f"{what}: forces", order=1)
        if what == "dimer":
            beyond = r > rc + 1e-9
            assert_close(
                energy[beyond],
                np.full(beyond.sum(), energy[-1]),
                "dimer energy beyond cutoff",
                0.0,
                1e-12,
            )
            assert np.abs(forces[beyond]).max() == 0.0, "dimer: forces beyond the cutoff"


def check_supercell(factory: Factory) -> None:
    """A supercell's energy is the multiple of the unit cell's; forces are the unit cell's
    repeated and the stress is unchanged."""
    model = model64(factory)
    for atoms, reps in ((copper_cell(), (2, 1, 2)), (alloy_cell(), (1, 2, 1))):
        name = atoms.get_chemical_formula()
        k = int(np.prod(reps))
        unit = evaluate(model, [atoms], stress=True)
        assert_nontrivial(unit, name)
        big = evaluate(model, [atoms.repeat(reps)], stress=True)
        assert_close(big["energy"], k * unit["energy"], f"{name} x{k}: supercell energy", 1e-10)
        assert_close(big["forces"], np.tile(unit["forces"], (k, 1)), f"{name}: forces", 1e-9)
        assert_close(big["stress"], unit["stress"], f"{name} x{k}: supercell stress", 1e-9)


def check_batch_consistency(factory: Factory) -> None:
    """Systems of different sizes, periodic and free, batched together give the energies,
    forces and stress each gives alone."""
    model = model64(factory)
    periodic = [alloy_cell(1), copper_cell(2), copper_cell(3).repeat((2, 1, 1))]
    mixed = [small_molecule(1), *periodic, small_molecule(2)]
    for images, stress in ((periodic, True), (mixed, False)):
        batch = evaluate(model, images, stress=stress)
        start = 0
        for g, atoms in enumerate(images):
            alone = evaluate(model, [atoms], stress=stress)
            what = f"system {g} ({atoms.get_chemical_formula()}) of a batch"
            assert_close(batch["energy"][g], alone["energy"][0], f"{what}: energy", 1e-10)
            forces = batch["forces"][start : start + len(atoms)]
            assert_close(forces, alone["forces"], f"{what}: forces", 1e-9)
            if stress:
                assert_close(batch["stress"][g], alone["stress"][0], f"{what}: stress", 1e-9)
            start += len(atoms)


def check_unknown_element(factory: Factory) -> None:
    """An element outside the model's list raises ``UnknownElementError`` naming it and the
    system of the batch that holds it."""
    model = factory((29,)).double().eval()
    with pytest.raises(UnknownElementError, match=r"Au \(Z=79\) \(system 1 .*Cu"):
        evaluate(model, [copper_cell(), alloy_cell()])


def check_float32(factory: Factory) -> None:
    """The model as built (float32, float32 inputs) agrees with its float64 copy within
    float32 precision, and energies come out in float64."""
    model32 = factory(ELEMENTS).eval()
    model = copy.deepcopy(model32).double()
    images = [alloy_cell(), small_molecule()]
    graph = graph_of(images, model32.cutoff, torch.float32)
    out32 = model32(graph)
    assert out32["energy"].dtype == torch.float64, "energies must be accumulated in float64"
    assert out32["forces"].dtype == torch.float32
    ref = evaluate(model, images)
    n_atoms = np.array([len(a) for a in images])
    assert_close(
        out32["energy"].numpy() / n_atoms, ref["energy"] / n_atoms, "float32 energy/atom", 1e-5
    )
    assert_close(out32["forces"].double().numpy(), ref["forces"], "float32 forces", 1e-4)


def check_force_training(factory: Factory) -> None:
    """In training mode a loss on forces and stress back-propagates to the weights (double
    backward), with finite gradients; in eval mode outputs carry no autograd graph."""
    model = factory(ELEMENTS).train()
    graph = graph_of([alloy_cell(), copper_cell()], model.cutoff, torch.float32)
    out = model(graph, forces=True, stress=True)
    loss = (out["forces"] ** 2).sum() + (out["stress"] ** 2).sum()
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads, "model has no trainable parameters"
    for name, g in grads.items():
        assert g is None or bool(torch.isfinite(g).all()), f"gradient of {name} is not finite"
    reached = [n for n, g in grads.items() if g is not None and bool(g.abs().sum() > 0)]
    assert reached, "a force/stress loss does not reach any weight"
    model.eval()
    out = model(graph, forces=True, stress=True)
    assert not any(v.requires_grad for v in out.values()), "eval outputs keep autograd graph"


def check_rebuild_from_spec(factory: Factory) -> None:
    """``build_model(model.spec())`` plus the state dict reproduces the model exactly (what a
    checkpoint relies on)."""
    model = model64(factory)
    with torch.no_grad():
        model.reference_energies.copy_(torch.linspace(-3.0, 1.0, model.num_elements))
    rebuilt = build_model(model.spec()).double().eval()
    rebuilt.load_state_dict(model.state_dict())
    images = [alloy_cell(), small_molecule()]
    a, b = evaluate(model, images), evaluate(rebuilt, images)
    assert np.array_equal(a["energy"], b["energy"]), "rebuilt model gives other energies"
    assert np.array_equal(a["forces"], b["forces"]), "rebuilt model gives other forces"


def check_named_parts(factory: Factory) -> None:
    """A learned potential exposes ``embedding``, ``interactions`` (a non-empty
    ``nn.ModuleList``) and ``readout``, each holding weights (fine-tuning selects by them)."""
    model = factory(ELEMENTS)
    for part in ("embedding", "interactions", "readout"):
        module = getattr(model, part, None)
        assert isinstance(module, nn.Module), f"{type(model).__name__} has no module {part!r}"
        assert any(True for _ in module.parameters()), f"{part!r} holds no weights"
    assert isinstance(model.interactions, nn.ModuleList) and len(model.interactions) > 0


ALL_CHECKS = [
    check_symmetries,
    check_forces_finite_differences,
    check_stress_finite_differences,
    check_stress_matches_ase,
    check_smooth_cutoff,
    check_supercell,
    check_batch_consistency,
    check_unknown_element,
    check_float32,
    check_force_training,
    check_rebuild_from_spec,
]
