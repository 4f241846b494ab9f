"""Atomistic graphs: batched systems with periodic neighbour lists, the input of potentials.

A batch of G atomic systems becomes one :class:`~simsurrogate.graph.Graph`:

* ``nodes["positions"]`` (N, 3) Å and ``nodes["numbers"]`` (N,) atomic numbers;
* ``globals["cell"]`` (G, 3, 3) Å, lattice vectors as rows, and ``globals["pbc"]`` (G, 3) bool;
* ``edge_index`` (2, E): row 0 the neighbour j (sender), row 1 the centre atom i (receiver);
* ``edges["shifts"]`` (E, 3): integer cell shifts, so the pair vector pointing from i to j is
  ``positions[j] - positions[i] + shifts @ cell`` (see :func:`~simsurrogate.graph.edge_vectors`).

Both directions of every pair within ``cutoff`` are listed, periodic images included.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from simsurrogate.graph.graph import Graph
from simsurrogate.graph.neighbors import _as_pbc, batched_neighbor_list

__all__ = ["atoms_graph"]


def atoms_graph(
    positions: Tensor,
    numbers: Tensor,
    cells: Tensor,
    pbc: Tensor | bool | Sequence[bool],
    n_atoms: Tensor | Sequence[int],
    cutoff: float,
    backend: str = "auto",
) -> Graph:
    """Build the neighbour graph of G systems stored back to back.

    ``positions`` (N, 3) Å, ``numbers`` (N,), ``cells`` (G, 3, 3) (zeros for a free molecule),
    ``pbc`` (G, 3) or one flag set for all, ``n_atoms`` (G,). The graph's float tensors keep
    the dtype of ``positions``.
    """
    counts = torch.as_tensor(n_atoms, dtype=torch.long, device=positions.device)
    cells = cells.to(dtype=positions.dtype, device=positions.device)
    flags = torch.as_tensor(pbc, dtype=torch.bool, device=positions.device)
    if flags.dim() < 2:
        flags = _as_pbc(flags, positions.device).repeat(counts.shape[0], 1)
    i, j, shifts = batched_neighbor_list(positions, cells, flags, counts, cutoff, backend=backend)
    system = torch.repeat_interleave(torch.arange(counts.shape[0], device=counts.device), counts)
    n_edges = torch.bincount(system[i], minlength=counts.shape[0])
    return Graph(
        nodes={"positions": positions, "numbers": numbers.to(torch.long)},
        edge_index=torch.stack([j, i]),
        edges={"shifts": shifts.to(positions.dtype)},
        globals={"cell": cells, "pbc": flags},
        n_nodes=counts,
        n_edges=n_edges,
    )
