"""Edge construction from mesh cells and for fully connected graphs."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import numpy as np
import torch
from torch import Tensor

__all__ = ["cells_to_edges", "fully_connected"]


def cells_to_edges(cells: Tensor | np.ndarray, kind: str = "simplex") -> Tensor:
    """Unique bidirectional edges (2, E) of a mesh given its cells (C, k).

    ``kind="simplex"`` connects every pair of vertices of a cell (triangles, tetrahedra);
    ``kind="polygon"`` connects consecutive vertices around the cell (quads as 4-cycles).
    For triangles both give the three sides. The result is sorted lexicographically by
    (sender, receiver), has no self loops and holds each undirected edge in both directions.
    """
    if kind not in ("simplex", "polygon"):
        raise ValueError(f"cells_to_edges: kind must be 'simplex' or 'polygon', got {kind!r}")
    cells = torch.as_tensor(cells)
    if cells.dim() != 2 or cells.shape[1] < 2:
        raise ValueError(
            f"cells_to_edges: cells must have shape (C, k>=2), got {tuple(cells.shape)}"
        )
    if cells.is_floating_point() or cells.is_complex() or cells.dtype == torch.bool:
        raise ValueError(f"cells_to_edges: cells must hold integer node ids, got {cells.dtype}")
    cells = cells.long()
    if cells.numel() == 0:
        return torch.empty(2, 0, dtype=torch.long, device=cells.device)
    if int(cells.min()) < 0:
        raise ValueError("cells_to_edges: cells contain negative node ids")

    k = cells.shape[1]
    if kind == "simplex":
        pairs = list(combinations(range(k), 2))
    else:
        pairs = [(a, (a + 1) % k) for a in range(k)]
    first = torch.tensor([a for a, _ in pairs], device=cells.device)
    second = torch.tensor([b for _, b in pairs], device=cells.device)
    u = cells[:, first].reshape(-1)
    v = cells[:, second].reshape(-1)
    senders, receivers = torch.cat([u, v]), torch.cat([v, u])
    keep = senders != receivers
    n = int(cells.max()) + 1
    key = torch.unique(senders[keep] * n + receivers[keep])  # sorted
    return torch.stack([key // n, key % n])


def fully_connected(
    n_nodes: Tensor | Sequence[int],
    self_loops: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """Edge index (2, E) connecting all ordered node pairs within each graph of a batch.

    ``n_nodes`` (G,) gives the node count of each graph; node ids are global (graph g owns
    ``[sum(n_nodes[:g]), sum(n_nodes[:g+1]))``). E = sum(n^2) with self loops, else
    sum(n^2 - n). Edges are sorted by (sender, receiver).
    """
    n = torch.as_tensor(n_nodes, dtype=torch.long, device=device)
    if n.dim() != 1:
        raise ValueError(f"fully_connected: n_nodes must be 1-D (G,), got {tuple(n.shape)}")
    if bool((n < 0).any()):
        raise ValueError("fully_connected: n_nodes has negative entries")
    per_graph = n * n
    total = int(per_graph.sum())
    graph = torch.repeat_interleave(
        torch.arange(n.shape[0], device=n.device), per_graph, output_size=total
    )
    edge_off = torch.cumsum(per_graph, 0) - per_graph
    node_off = torch.cumsum(n, 0) - n
    local = torch.arange(total, device=n.device) - edge_off[graph]
    size = n[graph]
    senders = local // size + node_off[graph]
    receivers = local % size + node_off[graph]
    if not self_loops:
        keep = senders != receivers
        senders, receivers = senders[keep], receivers[keep]
    return torch.stack([senders, receivers])
