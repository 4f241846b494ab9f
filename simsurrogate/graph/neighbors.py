"""Radius graphs and periodic neighbour lists.

``radius_graph`` connects points closer than ``r`` (no periodicity), e.g. particles or
MeshGraphNet world edges. ``neighbor_list`` follows ASE's convention for atoms in a periodic
cell: pairs ``(i, j, S)`` with ``r_ij = positions[j] - positions[i] + S @ cell``. It uses vesin
when installed and a pure-torch fallback otherwise. Index search never carries gradients;
``edge_vectors`` rebuilds differentiable ``r_ij`` from the pairs, so forces (d/dpositions) and
stress (d/dcell via a strain) come from autograd.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["radius_graph", "neighbor_list", "batched_neighbor_list", "edge_vectors"]

# Largest number of pairwise distances held in memory at once by the pure-torch searches.
_BLOCK_ELEMENTS = 1 << 22


def _vesin_available() -> bool:
    try:
        import vesin.torch  # noqa: F401
    except ImportError:
        return False
    return True


def radius_graph(
    pos: Tensor,
    r: float,
    batch: Tensor | None = None,
    loop: bool = False,
    max_num_neighbors: int | None = None,
) -> Tensor:
    """Edges (2, E) between points of the same graph closer than ``r`` (strictly).

    ``pos`` (N, D); ``batch`` (N,) graph id per point (None: one graph). Row 0 is the sender
    j, row 1 the receiver i; every pair appears in both directions and edges are sorted by
    (receiver, sender). ``loop`` adds self loops. ``max_num_neighbors`` keeps only the nearest
    that many senders per receiver (the result may then be asymmetric). Distances are computed
    in blocks (about 4M at a time, so memory stays bounded for large N), each against only the
    points of its graphs within ``r`` along the longest axis (a sweep), so sparse clouds are
    much cheaper than all N^2 pairs.
    """
    if pos.dim() != 2:
        raise ValueError(f"radius_graph: pos must have shape (N, D), got {tuple(pos.shape)}")
    n = pos.shape[0]
    device = pos.device
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=device)
    elif batch.shape != (n,):
        raise ValueError(f"radius_graph: batch must have shape ({n},), got {tuple(batch.shape)}")
    if n == 0:
        return torch.empty(2, 0, dtype=torch.long, device=device)
    if max_num_neighbors is not None and max_num_neighbors < 1:
        raise ValueError(f"radius_graph: max_num_neighbors must be >= 1, got {max_num_neighbors}")

    # Sort by graph, and within each graph along the axis of largest extent, so that a block
    # of rows only needs the contiguous columns of its graphs within r along that axis.
    pos = pos.detach()
    axis = int(torch.argmax(pos.max(0).values - pos.min(0).values))
    order = torch.sort(pos[:, axis]).indices
    order = order[torch.sort(batch[order], stable=True).indices]
    pos, batch = pos[order], batch[order]
    coord = pos[:, axis].contiguous()
    _, counts = torch.unique_consecutive(batch, return_counts=True)
    ends = torch.cumsum(counts, 0)
    graph_end = torch.repeat_interleave(ends, counts).tolist()
    graph_start = torch.repeat_interleave(ends - counts, counts).tolist()
    window = r * (1 + 1e-6)

    def columns(a: int, b: int) -> tuple[int, int]:
        """Columns [c0, c1) that can neighbour rows [a, b)."""
        s0, e0 = graph_start[a], graph_end[a]
        s1, e1 = graph_start[b - 1], graph_end[b - 1]
        c0 = s0 + int(torch.searchsorted(coord[s0:e0], coord[a : a + 1] - window))
        c1 = s1 + int(torch.searchsorted(coord[s1:e1], coord[b - 1 : b] + window, right=True))
        return c0, c1

    senders, receivers = [], []
    a = 0
    while a < n:
        rows = min(n - a, math.isqrt(_BLOCK_ELEMENTS))
        c0, c1 = columns(a, a + rows)
        while rows > 1 and rows * (c1 - c0) > _BLOCK_ELEMENTS:
            rows //= 2
            c0, c1 = columns(a, a + rows)
        b = a + rows
        d = torch.cdist(pos[a:b], pos[c0:c1], compute_mode="donot_use_mm_for_euclid_dist")
        mask = (d < r) & (batch[a:b, None] == batch[None, c0:c1])
        if not loop:
            row_ids = torch.arange(a, b, device=device)
            col_ids = torch.arange(c0, c1, device=device)
            mask &= row_ids[:, None] != col_ids[None, :]
        if max_num_neighbors is not None and max_num_neighbors < c1 - c0:
            nearest = d.masked_fill(~mask, math.inf).topk(max_num_neighbors, 1, largest=False)
            keep = torch.zeros_like(mask).scatter_(1, nearest.indices, True)
            mask &= keep
        rr, cc = mask.nonzero(as_tuple=True)
        receivers.append(order[rr + a])
        senders.append(order[cc + c0])
        a = b

    senders, receivers = torch.cat(senders), torch.cat(receivers)
    perm = torch.sort(receivers * n + senders).indices
    return torch.stack([senders[perm], receivers[perm]])


def _as_pbc(pbc: Tensor | bool | Sequence[bool], device: torch.device) -> Tensor:
    """Periodic flags as a contiguous bool tensor (3,) that owns its three elements.

    Never an ``expand``-ed view: vesin reads the flags through the raw data pointer, and a
    stride-0 view of one bool would make it read two bytes past the end of that storage
    (whatever the allocator left there), turning periodicity on or off at random.
    """
    flags = torch.as_tensor(pbc, dtype=torch.bool, device=device)
    if flags.dim() == 0:
        flags = flags.repeat(3)
    if flags.shape != (3,):
        raise ValueError(f"pbc must be a bool or have shape (3,), got {tuple(flags.shape)}")
    return flags.contiguous()


def _lexsort(i: Tensor, j: Tensor, shifts: Tensor) -> Tensor:
    """Permutation sorting pairs by (i, j, shift_a, shift_b, shift_c)."""
    order = torch.arange(i.shape[0], device=i.device)
    for key in (shifts[:, 2], shifts[:, 1], shifts[:, 0], j, i):
        order = order[torch.sort(key[order], stable=True).indices]
    return order


def _search_basis(cell: Tensor, pbc: Tensor) -> Tensor:
    """Full-rank basis (3, 3): the periodic cell rows, the rest replaced by an orthonormal
    complement of their span (so degenerate cells of non-periodic directions are fine)."""
    basis = cell.clone()
    n_periodic = int(pbc.sum())
    if n_periodic < 3:
        if n_periodic == 0:
            complement = torch.eye(3, dtype=cell.dtype, device=cell.device)
        else:
            complement = torch.linalg.svd(cell[pbc], full_matrices=True).Vh[n_periodic:]
        basis[~pbc] = complement
    norms = torch.linalg.norm(basis, dim=1).prod()
    if float(norms) == 0.0 or abs(float(torch.linalg.det(basis))) < 1e-10 * float(norms):
        raise ValueError(f"neighbor_list: cell is singular along its periodic directions: {cell}")
    return basis


def _torch_neighbor_list(
    positions: Tensor, cell: Tensor, pbc: Tensor, cutoff: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Pure-torch full neighbour list in float64; returns i, j and long shifts (E, 3).

    Positions are wrapped into the cell along periodic directions, then every periodic image
    that can hold a neighbour is enumerated: along lattice vector a, images up to
    ``ceil(cutoff / d_a)`` away where ``d_a`` is the distance between the cell faces spanned by
    the other two vectors. This covers skewed triclinic cells and cutoffs beyond the cell size.
    """
    pos = positions.to(torch.float64)
    basis = _search_basis(cell.to(torch.float64), pbc)
    inv = torch.linalg.inv(basis)
    wrap = torch.floor(pos @ inv) * pbc  # whole cells to move each atom back into the cell
    pos_w = pos - wrap @ basis
    face_dist = 1.0 / torch.linalg.norm(inv, dim=0)  # columns of inv are reciprocal vectors
    n_img = torch.where(pbc, torch.ceil(cutoff / face_dist), 0.0).long().tolist()
    axes = [torch.arange(-k, k + 1, device=pos.device) for k in n_img]
    images = torch.cartesian_prod(*axes).reshape(-1, 3)  # (M, 3)
    translations = images.to(torch.float64) @ basis

    n = pos.shape[0]
    rows = max(1, min(n, _BLOCK_ELEMENTS // max(n, 1)))
    per_chunk = max(1, _BLOCK_ELEMENTS // max(rows * n, 1))
    found_i, found_j, found_s = [], [], []
    for a in range(0, n, rows):
        centers = pos_w[a : a + rows]
        for m0 in range(0, images.shape[0], per_chunk):
            t = translations[m0 : m0 + per_chunk]
            others = pos_w[None, :, :] + t[:, None, :]  # (m, N, 3)
            d = torch.cdist(
                centers.expand(t.shape[0], -1, -1),
                others,
                compute_mode="donot_use_mm_for_euclid_dist",
            )  # (m, rows, N)
            m_idx, ii, jj = (d < cutoff).nonzero(as_tuple=True)
            ii = ii + a
            s = images[m0 + m_idx]
            keep = (ii != jj) | (s != 0).any(dim=1)
            found_i.append(ii[keep])
            found_j.append(jj[keep])
            found_s.append(s[keep])
    i = torch.cat(found_i)
    j = torch.cat(found_j)
    w = wrap.long()
    shifts = torch.cat(found_s) + w[i] - w[j]  # undo the wrapping: r_ij is unchanged
    return i, j, shifts


def _vesin_neighbor_list(
    positions: Tensor, cell: Tensor, pbc: Tensor, cutoff: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Full neighbour list from vesin (searched in float64, which every vesin release accepts);
    returns i, j and long shifts (E, 3)."""
    import vesin.torch

    # vesin's C++ side uses the raw data pointers, so hand it dense, contiguous copies
    # (views with odd strides, e.g. expand-ed or transposed tensors, would be misread).
    positions = positions.to(torch.float64).contiguous()
    cell = cell.to(torch.float64).contiguous()
    pbc = pbc.to(torch.bool).contiguous()
    if not bool(pbc.any()):
        cell = torch.zeros_like(cell)  # vesin treats a zero box as a free (non-periodic) system
    calculator = vesin.torch.NeighborList(cutoff=float(cutoff), full_list=True)
    i, j, shifts = calculator.compute(positions, cell, pbc, quantities="ijS", copy=True)
    return i.long(), j.long(), shifts.long()


def neighbor_list(
    positions: Tensor,
    cell: Tensor,
    pbc: Tensor | bool | Sequence[bool],
    cutoff: float,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """Full neighbour list of one system in ASE's convention.

    ``positions`` (N, 3), ``cell`` (3, 3) with lattice vectors as rows, ``pbc`` a bool or (3,).
    Returns ``i`` (E,), ``j`` (E,) and integer cell ``shifts`` (E, 3) in the dtype of
    ``positions`` such that ``r_ij = positions[j] - positions[i] + shifts @ cell`` has length
    below ``cutoff``. Both directions are listed, including an atom's own periodic images;
    pairs are sorted by (i, j, shift). ``backend`` is "vesin", "torch" or "auto" (vesin when
    importable). No gradients flow through this call; use ``edge_vectors``.
    """
    if positions.dim() != 2 or positions.shape[1] != 3:
        raise ValueError(f"neighbor_list: positions must be (N, 3), got {tuple(positions.shape)}")
    if cell.shape != (3, 3):
        raise ValueError(f"neighbor_list: cell must be (3, 3), got {tuple(cell.shape)}")
    if backend == "auto":
        backend = "vesin" if _vesin_available() else "torch"
    if backend not in ("vesin", "torch"):
        raise ValueError(
            f"neighbor_list: backend must be 'auto', 'vesin' or 'torch', got {backend!r}"
        )
    flags = _as_pbc(pbc, positions.device)
    positions = positions.detach()
    cell = cell.detach().to(device=positions.device)
    if positions.shape[0] == 0:
        empty = torch.empty(0, dtype=torch.long, device=positions.device)
        return empty, empty.clone(), positions.new_zeros(0, 3)
    search = _vesin_neighbor_list if backend == "vesin" else _torch_neighbor_list
    i, j, shifts = search(positions, cell, flags, cutoff)
    order = _lexsort(i, j, shifts)
    return i[order], j[order], shifts[order].to(positions.dtype)


def batched_neighbor_list(
    positions: Tensor,
    cells: Tensor,
    pbc: Tensor | bool | Sequence[bool],
    n_atoms: Tensor | Sequence[int],
    cutoff: float,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """Neighbour lists of G systems stored back to back, with global atom indices.

    ``positions`` (N, 3) concatenated, ``cells`` (G, 3, 3), ``pbc`` (G, 3) or one flag set for
    all, ``n_atoms`` (G,). Returns ``i``, ``j`` (E,) and ``shifts`` (E, 3) as
    ``neighbor_list``; the cell of edge e is ``cells[system of i[e]]``.
    """
    counts = torch.as_tensor(n_atoms, dtype=torch.long).tolist()
    n_sys = len(counts)
    if cells.shape != (n_sys, 3, 3):
        raise ValueError(
            f"batched_neighbor_list: cells must be ({n_sys}, 3, 3), got {tuple(cells.shape)}"
        )
    if sum(counts) != positions.shape[0]:
        raise ValueError(
            f"batched_neighbor_list: n_atoms sums to {sum(counts)} but positions has "
            f"{positions.shape[0]} rows"
        )
    flags = torch.as_tensor(pbc, dtype=torch.bool, device=positions.device)
    if flags.dim() < 2:
        flags = _as_pbc(flags, positions.device).expand(n_sys, 3)
    if flags.shape != (n_sys, 3):
        raise ValueError(
            f"batched_neighbor_list: pbc must be ({n_sys}, 3), got {tuple(flags.shape)}"
        )
    out_i, out_j, out_s = [], [], []
    start = 0
    for g, count in enumerate(counts):
        i, j, s = neighbor_list(
            positions[start : start + count], cells[g], flags[g], cutoff, backend=backend
        )
        out_i.append(i + start)
        out_j.append(j + start)
        out_s.append(s)
        start += count
    if n_sys == 0:
        empty = torch.empty(0, dtype=torch.long, device=positions.device)
        return empty, empty.clone(), positions.new_zeros(0, 3)
    return torch.cat(out_i), torch.cat(out_j), torch.cat(out_s)


def edge_vectors(
    positions: Tensor, i: Tensor, j: Tensor, shifts: Tensor, cell_per_edge: Tensor
) -> Tensor:
    """Differentiable pair vectors ``r_ij = positions[j] - positions[i] + shifts @ cell`` (E, 3).

    ``cell_per_edge`` is (E, 3, 3) (e.g. ``cells[batch[i]]``) or one (3, 3) cell for all edges.
    Gradients flow to ``positions`` and to the cell (for stress via a strain).
    """
    shifts = shifts.to(cell_per_edge.dtype)
    if cell_per_edge.dim() == 2:
        offsets = shifts @ cell_per_edge
    else:
        offsets = torch.einsum("ea,eab->eb", shifts, cell_per_edge)
    return positions[j] - positions[i] + offsets
