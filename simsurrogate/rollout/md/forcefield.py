"""Evaluate a potential on a batched MD state, with Verlet (skin) neighbour lists.

:class:`ForceField` is the force function the integrators call: one model call per step for
all systems. Neighbour lists are searched (vesin, through :mod:`simsurrogate.graph.neighbors`)
with radius ``cutoff + skin`` and kept until some atom of a system may have entered the
cutoff sphere of another, i.e. until it moved more than half the skin since the last search.
Only that system's list is searched again, and its positions are wrapped back into the cell at
that moment. Every step the kept pairs are filtered to the model's cutoff, so the model sees
exactly the graph a fresh search would give.

Cell changes (NPT) are accounted for: displacements are measured in fractional coordinates
(the affine part of the motion is taken out), and an affine deformation that shrinks pair
distances by a factor ``s`` (smallest singular value of ``cell_ref^-1 cell``) uses up skin, so
a system's list is kept while ``s (cutoff + skin) - 2 max_i |d_i| >= cutoff``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from simsurrogate.graph import Graph, edge_vectors
from simsurrogate.graph.neighbors import neighbor_list
from simsurrogate.models.potentials import Potential
from simsurrogate.rollout.md.state import MDState

__all__ = ["ForceField", "prepare_model"]

# float64 buffers of the physics head that must not follow the network's dtype
_FLOAT64_BUFFERS = ("reference_energies", "scale")


def prepare_model(
    model: Potential | str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> Potential:
    """A potential in eval mode on ``device``, its network cast to ``dtype`` (None: keep).

    ``model`` is a :class:`Potential` (moved in place) or a checkpoint path. The head's
    reference energies and scale stay float64, so energies are still accumulated in float64.
    """
    if isinstance(model, (str, Path)):
        from simsurrogate.checkpoint import load

        model = load(model, map_location=device)
    if not isinstance(model, Potential):
        raise TypeError(
            f"an interatomic potential (simsurrogate Potential) is needed, got "
            f"{type(model).__name__}"
        )
    kept = {name: getattr(model, name).to(torch.float64) for name in _FLOAT64_BUFFERS}
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
    for name, value in kept.items():
        setattr(model, name, value.to(device))
    return model.eval()


def model_dtype(model: Potential) -> torch.dtype:
    """Dtype of the network: that of its first floating-point parameter (float64 if none)."""
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.float64


class ForceField:
    """Energy (G,), forces (N, 3) and, on request, stress (G, 3, 3) of an :class:`MDState`.

    Args:
        model: the potential (see :func:`prepare_model`).
        skin: extra neighbour-list radius in Å; 0 searches again at every call.
        compile: run the model's ``atomic_energies`` through ``torch.compile`` (dynamic
            shapes). Forces still come from one autograd pass; see the engine's docs for when
            this pays off.
        max_atoms_per_call: None (default) evaluates all systems in one model call. A number
            splits the batch into runs of whole systems of at most that many atoms (at least
            one system each): on a CPU, message-passing models slow down per atom once their
            edge tensors outgrow the caches (PaiNN with 32 channels: the same cost per atom
            up to ~500 atoms per call, 1.7x more at 2,000).

    ``n_builds`` counts calls that searched any system again, ``n_system_builds`` the systems
    searched in all. A call sets ``state.energy``, ``state.forces`` and (when ``stress`` is
    True, or :attr:`stress` is) ``state.stress``, all float64; the closest pair distance per
    system (G,) Å (inf without pairs) is left in :attr:`min_pair_distance`.
    """

    def __init__(
        self,
        model: Potential,
        skin: float = 1.0,
        compile: bool = False,
        max_atoms_per_call: int | None = None,
    ) -> None:
        if skin < 0:
            raise ValueError(f"skin must be >= 0 Å, got {skin}")
        if max_atoms_per_call is not None and max_atoms_per_call < 1:
            raise ValueError(f"max_atoms_per_call must be >= 1, got {max_atoms_per_call}")
        self.max_atoms_per_call = max_atoms_per_call
        self.model = model
        self.cutoff = float(model.cutoff)
        self.skin = float(skin)
        self.dtype = model_dtype(model)
        self.stress = False
        self.n_builds = 0
        self.n_system_builds = 0
        self.min_pair_distance: Tensor | None = None
        if compile:
            model.atomic_energies = torch.compile(model.atomic_energies, dynamic=True)
        self.reset()

    def reset(self) -> None:
        """Forget all neighbour lists (the next call searches every system)."""
        self._blocks: list[tuple[Tensor, Tensor, Tensor]] = []
        self._edges: tuple[Tensor, Tensor] | None = None
        self._ref_positions: Tensor | None = None
        self._ref_cell: Tensor | None = None
        self._n_atoms: list[int] = []
        self._offsets: Tensor | None = None  # Cartesian image offsets (E, 3) of the kept pairs
        self._offsets_cell: Tensor | None = None  # the cells they were computed with

    def drop(self, keep: Tensor) -> None:
        """Keep only the lists of the systems where ``keep`` (G,) is True (call together with
        :meth:`MDState.select`), so stopping a system does not force a new search."""
        if self._ref_positions is None:
            return
        keep_list = keep.tolist()
        atom_keep = torch.repeat_interleave(
            keep.to(self._ref_positions.device),
            torch.tensor(self._n_atoms, device=self._ref_positions.device),
        )
        self._blocks = [b for b, k in zip(self._blocks, keep_list, strict=True) if k]
        self._n_atoms = [n for n, k in zip(self._n_atoms, keep_list, strict=True) if k]
        self._ref_positions = self._ref_positions[atom_keep]
        self._ref_cell = self._ref_cell[keep]
        self._edges = self._concatenate()
        self._offsets = None

    # ---------------------------------------------------------------- neighbour lists
    def _stale(self, state: MDState) -> Tensor:
        """Systems (G,) bool whose kept list may miss a pair within the cutoff."""
        n_atoms = state.n_atoms.tolist()
        if self._ref_positions is None or n_atoms != self._n_atoms:
            return torch.ones(state.n_systems, dtype=torch.bool, device=state.positions.device)
        if self.skin == 0:
            return torch.ones(state.n_systems, dtype=torch.bool, device=state.positions.device)
        batch = state.system_idx
        ref_cell, cell = self._ref_cell, state.cell
        if torch.equal(ref_cell, cell):  # fixed cells: plain displacements
            distance = (state.positions - self._ref_positions).norm(dim=-1)
            return self._largest(distance, state) > 0.5 * self.skin
        has_volume = torch.linalg.det(cell).abs() > 1e-9
        eye = torch.eye(3, dtype=cell.dtype, device=cell.device).expand_as(cell)
        # fractional displacement mapped with the current cell: the non-affine motion
        safe_ref = torch.where(has_volume[:, None, None], ref_cell, eye)
        safe_cell = torch.where(has_volume[:, None, None], cell, eye)
        to_frac = torch.linalg.inv(safe_cell)[batch]
        ref_frac = torch.linalg.inv(safe_ref)[batch]
        frac_disp = torch.einsum("na,nab->nb", state.positions, to_frac) - torch.einsum(
            "na,nab->nb", self._ref_positions, ref_frac
        )
        displacement = torch.einsum("nb,nbc->nc", frac_disp, safe_cell[batch])
        plain = state.positions - self._ref_positions
        displacement = torch.where(has_volume[batch, None], displacement, plain)
        largest = self._largest(displacement.norm(dim=-1), state)
        strain = torch.linalg.solve(safe_ref, safe_cell)  # cell = ref_cell @ strain
        shrink = torch.linalg.svdvals(strain)[:, -1]
        shrink = torch.where(has_volume, shrink, torch.ones_like(shrink))
        return shrink * (self.cutoff + self.skin) - 2 * largest < self.cutoff

    @staticmethod
    def _largest(distance: Tensor, state: MDState) -> Tensor:
        """Largest finite per-atom ``distance`` (N,) of each system (G,)."""
        distance = torch.where(torch.isfinite(distance), distance, torch.zeros_like(distance))
        largest = torch.zeros(state.n_systems, dtype=distance.dtype, device=distance.device)
        return largest.scatter_reduce(0, state.system_idx, distance, "amax", include_self=True)

    def _search(self, state: MDState, systems: list[int]) -> None:
        """Wrap the positions of ``systems`` into their cells and search their lists again.

        A system whose positions are not finite gets an empty list (the engine stops it)."""
        bounds = [0]
        for n in state.n_atoms.tolist():
            bounds.append(bounds[-1] + n)
        if self._ref_positions is None or state.n_atoms.tolist() != self._n_atoms:
            empty = torch.empty(0, dtype=torch.long, device=state.positions.device)
            self._blocks = [(empty, empty, state.cell.new_zeros(0, 3))] * state.n_systems
            self._ref_positions = state.positions.clone()
            self._ref_cell = state.cell.clone()
            self._n_atoms = state.n_atoms.tolist()
        for g in systems:
            lo, hi = bounds[g], bounds[g + 1]
            positions = state.positions[lo:hi]
            cell, pbc = state.cell[g], state.pbc[g]
            if not bool(torch.isfinite(positions).all()):
                empty = torch.empty(0, dtype=torch.long, device=positions.device)
                self._blocks[g] = (empty, empty, cell.new_zeros(0, 3))
                continue
            if bool(pbc.any()):
                frac = positions @ torch.linalg.inv(cell)
                frac = frac - torch.floor(frac) * pbc
                positions = frac @ cell
                state.positions[lo:hi] = positions
            i, j, shifts = neighbor_list(positions, cell, pbc, self.cutoff + self.skin)
            self._blocks[g] = (i, j, shifts)
            self._ref_positions[lo:hi] = positions
            self._ref_cell[g] = cell
        self._edges = self._concatenate()
        self._offsets = None
        self.n_builds += 1
        self.n_system_builds += len(systems)

    def _concatenate(self) -> tuple[Tensor, Tensor]:
        """Edge index (2, E) with global atom ids (row 0 sender j, row 1 receiver i) and
        integer shifts (E, 3) of all kept lists."""
        offset, index, shifts = 0, [], []
        for (i, j, s), n in zip(self._blocks, self._n_atoms, strict=True):
            index.append(torch.stack([j, i]) + offset)
            shifts.append(s)
            offset += n
        if not index:
            ref = self._ref_positions
            return torch.empty(2, 0, dtype=torch.long, device=ref.device), ref.new_zeros(0, 3)
        return torch.cat(index, 1), torch.cat(shifts)

    # ---------------------------------------------------------------- evaluation
    def __call__(self, state: MDState, stress: bool | None = None) -> MDState:
        """Fill ``state.energy`` (G,) eV, ``state.forces`` (N, 3) eV/Å and, when asked,
        ``state.stress`` (G, 3, 3) eV/Å³ (float64); may wrap ``state.positions``."""
        stress = self.stress if stress is None else stress
        with torch.no_grad():
            stale = self._stale(state)
            if bool(stale.any()):
                self._search(state, torch.nonzero(stale).flatten().tolist())
            index, shifts = self._edges
            batch = state.system_idx
            j, i = index
            if self._offsets is None or not torch.equal(self._offsets_cell, state.cell):
                self._offsets = edge_vectors(
                    torch.zeros_like(state.positions), i, j, shifts, state.cell[batch[i]]
                )
                self._offsets_cell = state.cell.clone()
            vectors = state.positions[j] - state.positions[i] + self._offsets
            distance = vectors.norm(dim=-1)
            inside = distance < self.cutoff
            index, shifts, distance = index[:, inside], shifts[inside], distance[inside]
            edge_system = batch[index[1]]
            closest = torch.full_like(state.cell[:, 0, 0], float("inf"))
            self.min_pair_distance = closest.scatter_reduce(
                0, edge_system, distance, "amin", include_self=True
            )
            n_edges = torch.bincount(edge_system, minlength=state.n_systems)
        atom_start = [0, *torch.cumsum(state.n_atoms, 0).tolist()]
        edge_start = [0, *torch.cumsum(n_edges, 0).tolist()]
        outputs = []
        for a, b in self._chunks(state.n_atoms.tolist()):
            atoms, edges = slice(atom_start[a], atom_start[b]), slice(edge_start[a], edge_start[b])
            graph = Graph(
                nodes={
                    "positions": state.positions[atoms].to(self.dtype),
                    "numbers": state.numbers[atoms],
                },
                edge_index=index[:, edges] - atom_start[a],
                edges={"shifts": shifts[edges].to(self.dtype)},
                globals={"cell": state.cell[a:b].to(self.dtype), "pbc": state.pbc[a:b]},
                n_nodes=state.n_atoms[a:b],
                n_edges=n_edges[a:b],
            )
            outputs.append(self.model(graph, forces=True, stress=stress))
        state.energy = torch.cat([o["energy"] for o in outputs]).to(torch.float64)
        state.forces = torch.cat([o["forces"] for o in outputs]).to(state.positions.dtype)
        if stress:
            state.stress = torch.cat([o["stress"] for o in outputs]).to(state.positions.dtype)
        return state

    def _chunks(self, n_atoms: list[int]) -> list[tuple[int, int]]:
        """Runs [a, b) of whole systems with at most ``max_atoms_per_call`` atoms each (a
        larger system alone); one run of all systems by default."""
        limit = self.max_atoms_per_call
        if limit is None or sum(n_atoms) <= limit:
            return [(0, len(n_atoms))]
        runs, start, count = [], 0, 0
        for g, n in enumerate(n_atoms):
            if count and count + n > limit:
                runs.append((start, g))
                start, count = g, 0
            count += n
        runs.append((start, len(n_atoms)))
        return runs
