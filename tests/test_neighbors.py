"""Neighbour lists against ASE, radius graphs against brute force, differentiable vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from ase.neighborlist import neighbor_list as ase_neighbor_list

from simsurrogate.graph import batched_neighbor_list, edge_vectors, neighbor_list, radius_graph

BACKENDS = ["vesin", "torch"]


def skewed_triclinic() -> Atoms:
    rng = np.random.default_rng(3)
    cell = [[3.0, 0.0, 0.0], [2.6, 1.1, 0.0], [0.7, -0.4, 2.4]]
    return Atoms("Cu3", scaled_positions=rng.random((3, 3)), cell=cell, pbc=True)


def rattled_primitive() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6)
    atoms.rattle(0.05, seed=1)
    atoms.positions += [7.3, -2.1, 0.4]  # unwrapped positions outside the cell
    return atoms


def slab() -> Atoms:
    atoms = fcc111("Cu", (2, 2, 3), vacuum=5.0)
    atoms.positions[0] += [6.0, -3.0, 0.0]  # outside the cell in periodic directions
    return atoms


SYSTEMS = {
    "fcc_cubic": (lambda: bulk("Cu", "fcc", a=3.6, cubic=True), 5.0),
    "fcc_primitive": (lambda: bulk("Cu", "fcc", a=3.6), 4.0),
    "triclinic": (skewed_triclinic, 3.5),
    "cutoff_beyond_cell": (rattled_primitive, 8.0),
    "slab_pbc_TTF": (slab, 4.0),
    "molecule": (lambda: molecule("C6H6"), 2.0),
}


def as_set(i, j, shifts) -> set[tuple[int, int, tuple[int, ...]]]:
    shifts = np.rint(np.asarray(shifts)).astype(int)
    return {(int(a), int(b), tuple(s)) for a, b, s in zip(i, j, shifts.tolist(), strict=True)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", list(SYSTEMS))
def test_neighbor_list_matches_ase(name: str, backend: str) -> None:
    make, cutoff = SYSTEMS[name]
    atoms = make()
    ref = as_set(*ase_neighbor_list("ijS", atoms, cutoff))
    positions = torch.tensor(atoms.positions)
    i, j, shifts = neighbor_list(
        positions, torch.tensor(atoms.cell.array), torch.tensor(atoms.pbc), cutoff, backend
    )
    assert i.dtype == j.dtype == torch.long and shifts.dtype == positions.dtype
    assert len(ref) > 0 and as_set(i, j, shifts) == ref
    assert len(i) == len(ref)  # no duplicates
    r = edge_vectors(positions, i, j, shifts, torch.tensor(atoms.cell.array))
    assert float(r.norm(dim=1).max()) < cutoff


def test_backends_agree_in_float32_and_order() -> None:
    atoms = skewed_triclinic()
    args = (torch.tensor(atoms.positions, dtype=torch.float32), torch.tensor(atoms.cell.array))
    out_v = neighbor_list(*args, True, 3.5, backend="vesin")
    out_t = neighbor_list(*args, True, 3.5, backend="torch")
    for a, b in zip(out_v, out_t, strict=True):
        assert torch.equal(a, b)
    assert out_v[2].dtype == torch.float32


@pytest.mark.parametrize("backend", BACKENDS)
def test_pbc_views_are_not_misread(backend: str) -> None:
    """``pbc`` given as a bool or as a stride-0 view must mean the same as three flags.

    vesin reads the flags through the raw data pointer: a view ``base[:1].expand(3)`` over
    storage holding [True, False, False] used to be read as (T, F, F), and ``pbc=True`` (once
    expanded from one bool) as True plus two bytes of whatever memory followed it.
    """
    atoms = skewed_triclinic()
    ref = as_set(*ase_neighbor_list("ijS", atoms, 3.5))
    positions = torch.tensor(atoms.positions)
    cell = torch.tensor(atoms.cell.array)
    base = torch.tensor([True, False, False])
    for pbc in (True, base[:1].expand(3), torch.tensor(True).expand(3)):
        for _ in range(20):
            assert as_set(*neighbor_list(positions, cell, pbc, 3.5, backend)) == ref


def brute_radius(pos: torch.Tensor, r: float, batch: torch.Tensor, loop: bool) -> set:
    d = (pos[:, None] - pos[None]).norm(dim=-1)
    mask = (d < r) & (batch[:, None] == batch[None])
    if not loop:
        mask &= ~torch.eye(len(pos), dtype=torch.bool)
    i, j = mask.nonzero(as_tuple=True)
    return set(zip(j.tolist(), i.tolist(), strict=True))


@pytest.mark.parametrize("loop", [False, True])
def test_radius_graph_matches_brute_force(loop: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    pos = torch.rand(300, 3, generator=gen) * 4
    batch = torch.randint(0, 3, (300,), generator=gen)  # unsorted on purpose
    edges = radius_graph(pos, 0.7, batch, loop=loop)
    assert set(map(tuple, edges.T.tolist())) == brute_radius(pos, 0.7, batch, loop)
    key = (edges[1] * 300 + edges[0]).tolist()
    assert key == sorted(key)


def test_radius_graph_max_num_neighbors_keeps_nearest() -> None:
    gen = torch.Generator().manual_seed(1)
    pos = torch.rand(200, 2, generator=gen)
    edges = radius_graph(pos, 0.3, max_num_neighbors=4)
    full = radius_graph(pos, 0.3)
    assert int(torch.bincount(edges[1], minlength=200).max()) <= 4
    d = (pos[:, None] - pos[None]).norm(dim=-1)
    for i in range(0, 200, 37):
        senders = full[0, full[1] == i]
        nearest = senders[torch.argsort(d[i, senders])][:4]
        assert set(edges[0, edges[1] == i].tolist()) == set(nearest.tolist())


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_neighbor_list_two_systems(backend: str) -> None:
    systems = [bulk("Cu", "fcc", a=3.6, cubic=True), slab()]
    cutoff = 4.0
    positions = torch.tensor(np.concatenate([a.positions for a in systems]))
    cells = torch.tensor(np.stack([a.cell.array for a in systems]))
    pbc = torch.tensor(np.stack([a.pbc for a in systems]))
    n_atoms = torch.tensor([len(a) for a in systems])
    i, j, shifts = batched_neighbor_list(positions, cells, pbc, n_atoms, cutoff, backend)
    ref = set()
    for offset, atoms in zip([0, len(systems[0])], systems, strict=True):
        ref |= {
            (a + offset, b + offset, s)
            for a, b, s in as_set(*ase_neighbor_list("ijS", atoms, cutoff))
        }
    assert as_set(i, j, shifts) == ref
    system = torch.repeat_interleave(torch.arange(2), n_atoms)
    assert torch.equal(system[i], system[j])
    r = edge_vectors(positions, i, j, shifts, cells[system[i]])
    assert float(r.norm(dim=1).max()) < cutoff


def test_edge_vector_gradients_flow_to_positions_and_cell() -> None:
    atoms = rattled_primitive()
    positions = torch.tensor(atoms.positions, requires_grad=True)
    cell = torch.tensor(atoms.cell.array, requires_grad=True)
    i, j, shifts = neighbor_list(positions, cell, True, 4.0)
    assert not shifts.requires_grad
    cell_per_edge = cell.expand(len(i), 3, 3)
    energy = edge_vectors(positions, i, j, shifts, cell_per_edge).norm(dim=1).pow(2).sum()
    grad_pos, grad_cell = torch.autograd.grad(energy, (positions, cell))
    assert grad_pos.shape == (len(atoms), 3) and grad_cell.shape == (3, 3)
    # a full list of a translation-invariant energy has forces summing to zero
    torch.testing.assert_close(grad_pos.sum(0), torch.zeros(3, dtype=torch.float64))
    assert float(grad_cell.abs().sum()) > 0
    assert torch.autograd.gradcheck(
        lambda p: edge_vectors(p, i, j, shifts, cell.detach()),
        (positions.detach().requires_grad_(),),
    )
