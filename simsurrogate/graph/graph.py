"""Graph container: one or more graphs batched by concatenation.

Node, edge and graph-level tensors of all graphs in a batch are concatenated along dim 0 and
``edge_index`` holds global node ids, so message passing over a batch is the same code as
over one graph. Per-graph counts (``n_nodes``, ``n_edges``) make the batch splittable again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["EdgeSet", "Graph"]


def _to(t: Tensor, device: torch.device | str | None, dtype: torch.dtype | None) -> Tensor:
    """Move ``t`` to ``device``; cast to ``dtype`` only if ``t`` is floating point."""
    if dtype is not None and t.is_floating_point():
        return t.to(device=device, dtype=dtype)
    return t.to(device=device)


def _counts(counts: Tensor | None, total: int, what: str) -> Tensor | None:
    """Return per-graph counts as int64, checking they are 1-D and sum to ``total``."""
    if counts is None:
        return None
    if counts.dim() != 1:
        raise ValueError(f"{what} must be 1-D (G,), got shape {tuple(counts.shape)}")
    if int(counts.sum()) != total:
        raise ValueError(f"{what} sums to {int(counts.sum())}, expected {total}")
    return counts


def _check_leading(tensors: dict[str, Tensor], size: int, where: str, counted: str) -> None:
    """Raise if any tensor in ``tensors`` does not have leading dim ``size``."""
    for key, t in tensors.items():
        if not isinstance(t, Tensor):
            raise ValueError(f"{where}[{key!r}] must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() == 0 or t.shape[0] != size:
            raise ValueError(
                f"{where}[{key!r}] has shape {tuple(t.shape)}; expected leading dim {size} "
                f"({counted})"
            )


@dataclass
class EdgeSet:
    """An additional set of edges over the same nodes (e.g. MeshGraphNet world edges).

    ``index`` (2, E) uses the same convention as ``Graph.edge_index`` (row 0 sender, row 1
    receiver, global node ids); ``fields`` hold (E, ...) tensors; ``n_edges`` (G,) per graph.
    """

    index: Tensor
    fields: dict[str, Tensor] = field(default_factory=dict)
    n_edges: Tensor | None = None

    @property
    def num_edges(self) -> int:
        """Number of edges E."""
        return int(self.index.shape[1])

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> EdgeSet:
        """Copy to ``device``; ``dtype`` applies to floating tensors only."""
        return EdgeSet(
            index=self.index.to(device=device),
            fields={k: _to(v, device, dtype) for k, v in self.fields.items()},
            n_edges=None if self.n_edges is None else self.n_edges.to(device=device),
        )


@dataclass
class Graph:
    """A batch of one or more graphs: node/edge/graph tensors concatenated.

    ``edge_index`` (2, E) holds global node ids; row 0 is the sender (source j), row 1 the
    receiver (target i), and messages aggregate at the receiver. ``n_nodes``/``n_edges`` (G,)
    give per-graph counts; ``None`` means a single graph. ``globals`` tensors are (G, ...).
    """

    nodes: dict[str, Tensor]
    edge_index: Tensor
    edges: dict[str, Tensor] = field(default_factory=dict)
    globals: dict[str, Tensor] = field(default_factory=dict)
    n_nodes: Tensor | None = None
    n_edges: Tensor | None = None
    extra_edge_sets: dict[str, EdgeSet] = field(default_factory=dict)

    # ------------------------------------------------------------------ sizes
    @property
    def device(self) -> torch.device:
        """Device of ``edge_index``."""
        return self.edge_index.device

    @property
    def num_nodes(self) -> int:
        """Total number of nodes N (from the node tensors, else ``n_nodes``, else edges)."""
        for t in self.nodes.values():
            return int(t.shape[0])
        if self.n_nodes is not None:
            return int(self.n_nodes.sum())
        return int(self.edge_index.max()) + 1 if self.edge_index.numel() > 0 else 0

    @property
    def num_edges(self) -> int:
        """Number of edges E in the main edge set."""
        return int(self.edge_index.shape[1])

    @property
    def num_graphs(self) -> int:
        """Number of graphs G in the batch."""
        return 1 if self.n_nodes is None else int(self.n_nodes.shape[0])

    def _n_nodes(self) -> Tensor:
        """Per-graph node counts (G,), also for a single graph."""
        if self.n_nodes is not None:
            return self.n_nodes
        return torch.tensor([self.num_nodes], dtype=torch.long, device=self.device)

    @property
    def node_offsets(self) -> Tensor:
        """Cumulative node counts (G+1,): graph g owns nodes ``[off[g], off[g+1])``."""
        n = self._n_nodes()
        return torch.cat([n.new_zeros(1), torch.cumsum(n, 0)])

    @property
    def node_batch(self) -> Tensor:
        """Graph id of each node (N,)."""
        n = self._n_nodes()
        g = torch.arange(n.shape[0], device=n.device)
        return torch.repeat_interleave(g, n, output_size=self.num_nodes)

    def _edge_batch(self, index: Tensor, n_edges: Tensor | None) -> Tensor:
        """Graph id of each edge of an edge set, from counts or from the receiving node."""
        if n_edges is None:
            return self.node_batch[index[1]]
        g = torch.arange(n_edges.shape[0], device=n_edges.device)
        return torch.repeat_interleave(g, n_edges, output_size=index.shape[1])

    @property
    def edge_batch(self) -> Tensor:
        """Graph id of each edge of the main edge set (E,)."""
        return self._edge_batch(self.edge_index, self.n_edges)

    def edge_set_batch(self, name: str) -> Tensor:
        """Graph id of each edge of ``extra_edge_sets[name]`` (E_name,)."""
        es = self.extra_edge_sets[name]
        return self._edge_batch(es.index, es.n_edges)

    # ------------------------------------------------------------- conversion
    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Graph:
        """Copy to ``device``; ``dtype`` applies to floating tensors only."""

        def conv(d: dict[str, Tensor]) -> dict[str, Tensor]:
            return {k: _to(v, device, dtype) for k, v in d.items()}

        return Graph(
            nodes=conv(self.nodes),
            edge_index=self.edge_index.to(device=device),
            edges=conv(self.edges),
            globals=conv(self.globals),
            n_nodes=None if self.n_nodes is None else self.n_nodes.to(device=device),
            n_edges=None if self.n_edges is None else self.n_edges.to(device=device),
            extra_edge_sets={k: v.to(device, dtype) for k, v in self.extra_edge_sets.items()},
        )

    # ---------------------------------------------------------------- batching
    @classmethod
    def batch(cls, graphs: Sequence[Graph]) -> Graph:
        """Concatenate graphs (each may itself be a batch) into one batch.

        Every edge set's indices are shifted by the node offset of its graph; per-graph counts
        are concatenated. All graphs must carry the same keys and edge sets.
        """
        if len(graphs) == 0:
            raise ValueError("Graph.batch: need at least one graph")
        first = graphs[0]
        for k, g in enumerate(graphs[1:], start=1):
            _same_keys("nodes", first.nodes, g.nodes, k)
            _same_keys("edges", first.edges, g.edges, k)
            _same_keys("globals", first.globals, g.globals, k)
            _same_keys("extra_edge_sets", first.extra_edge_sets, g.extra_edge_sets, k)
            for name, es in first.extra_edge_sets.items():
                _same_keys(
                    f"extra_edge_sets[{name!r}].fields",
                    es.fields,
                    g.extra_edge_sets[name].fields,
                    k,
                )

        device = first.device
        sizes = [g.num_nodes for g in graphs]
        offsets = torch.tensor([0, *sizes[:-1]], device=device).cumsum(0)

        def cat(dicts: list[dict[str, Tensor]]) -> dict[str, Tensor]:
            return {k: torch.cat([d[k] for d in dicts]) for k in dicts[0]}

        def cat_index(indices: list[Tensor]) -> Tensor:
            return torch.cat([ix + offsets[n] for n, ix in enumerate(indices)], dim=1)

        def cat_counts(counts: list[Tensor | None], totals: list[int]) -> Tensor:
            parts = [
                torch.tensor([t], dtype=torch.long, device=device) if c is None else c
                for c, t in zip(counts, totals, strict=True)
            ]
            return torch.cat(parts)

        extra = {}
        for name in first.extra_edge_sets:
            sets = [g.extra_edge_sets[name] for g in graphs]
            extra[name] = EdgeSet(
                index=cat_index([s.index for s in sets]),
                fields=cat([s.fields for s in sets]),
                n_edges=cat_counts(
                    [_edges_per_graph(g, s.n_edges) for g, s in zip(graphs, sets, strict=True)],
                    [s.num_edges for s in sets],
                ),
            )
        return cls(
            nodes=cat([g.nodes for g in graphs]),
            edge_index=cat_index([g.edge_index for g in graphs]),
            edges=cat([g.edges for g in graphs]),
            globals=cat([g.globals for g in graphs]),
            n_nodes=cat_counts([g.n_nodes for g in graphs], sizes),
            n_edges=cat_counts(
                [_edges_per_graph(g, g.n_edges) for g in graphs], [g.num_edges for g in graphs]
            ),
            extra_edge_sets=extra,
        )

    def unbatch(self) -> list[Graph]:
        """Split the batch into single graphs with local node ids and counts of length 1."""
        n_graphs = self.num_graphs
        node_off = self.node_offsets.tolist()

        def split_edges(index: Tensor, fields: dict[str, Tensor], n_edges: Tensor | None):
            """Yield (local index, fields, count) per graph, grouping edges by graph if needed."""
            if n_edges is None:
                batch = self._edge_batch(index, None)
                order = torch.sort(batch, stable=True).indices
                index, fields = index[:, order], {k: v[order] for k, v in fields.items()}
                n_edges = torch.bincount(batch, minlength=n_graphs)
            off = [0, *torch.cumsum(n_edges, 0).tolist()]
            for g in range(n_graphs):
                sl = slice(off[g], off[g + 1])
                yield (
                    index[:, sl] - node_off[g],
                    {k: v[sl] for k, v in fields.items()},
                    n_edges[g : g + 1].clone(),
                )

        main = list(split_edges(self.edge_index, self.edges, self.n_edges))
        extras = {
            name: list(split_edges(es.index, es.fields, es.n_edges))
            for name, es in self.extra_edge_sets.items()
        }
        n_nodes = self._n_nodes()
        out = []
        for g in range(n_graphs):
            ns = slice(node_off[g], node_off[g + 1])
            index, fields, n_e = main[g]
            out.append(
                Graph(
                    nodes={k: v[ns] for k, v in self.nodes.items()},
                    edge_index=index,
                    edges=fields,
                    globals={k: v[g : g + 1] for k, v in self.globals.items()},
                    n_nodes=n_nodes[g : g + 1].clone(),
                    n_edges=n_e,
                    extra_edge_sets={
                        name: EdgeSet(index=parts[g][0], fields=parts[g][1], n_edges=parts[g][2])
                        for name, parts in extras.items()
                    },
                )
            )
        return out

    # -------------------------------------------------------------- validation
    def validate(self) -> None:
        """Check dtypes, shapes, counts and index ranges; raise ``ValueError`` naming the tensor.

        Also checks that every edge connects nodes of one graph and, when ``n_edges`` is given,
        that edges are grouped by graph in order.
        """
        n_nodes_t = _counts(self.n_nodes, self.num_nodes, "n_nodes")
        num_nodes, num_graphs = self.num_nodes, self.num_graphs
        _check_leading(self.nodes, num_nodes, "nodes", "number of nodes")
        _check_leading(self.globals, num_graphs, "globals", "number of graphs")
        if n_nodes_t is not None and bool((n_nodes_t < 0).any()):
            raise ValueError("n_nodes has negative entries")
        sets = {"edge_index": (self.edge_index, self.edges, self.n_edges, "edges")}
        for name, es in self.extra_edge_sets.items():
            where = f"extra_edge_sets[{name!r}]"
            sets[f"{where}.index"] = (es.index, es.fields, es.n_edges, f"{where}.fields")
        node_batch = self.node_batch
        for what, (index, fields, n_edges, fields_name) in sets.items():
            if not isinstance(index, Tensor) or index.dtype != torch.long:
                raise ValueError(f"{what} must be a torch.long tensor, got {_describe(index)}")
            if index.dim() != 2 or index.shape[0] != 2:
                raise ValueError(f"{what} must have shape (2, E), got {tuple(index.shape)}")
            if index.device != node_batch.device:
                raise ValueError(f"{what} is on {index.device}, nodes on {node_batch.device}")
            num_edges = int(index.shape[1])
            _check_leading(fields, num_edges, fields_name, "number of edges")
            if num_edges == 0:
                continue
            lo, hi = int(index.min()), int(index.max())
            if lo < 0 or hi >= num_nodes:
                raise ValueError(
                    f"{what} has node ids in [{lo}, {hi}] but the graph has {num_nodes} nodes"
                )
            counts = _counts(n_edges, num_edges, what.replace("index", "n_edges"))
            if counts is not None and counts.shape[0] != num_graphs:
                raise ValueError(
                    f"n_edges for {what} has {counts.shape[0]} graphs, expected {num_graphs}"
                )
            edge_batch = self._edge_batch(index, counts)
            if not bool((node_batch[index] == edge_batch).all()):
                raise ValueError(
                    f"{what} has edges that cross graphs or are not grouped by graph as its "
                    "n_edges says"
                )


def _describe(x: object) -> str:
    """Short description of a value for error messages."""
    if isinstance(x, Tensor):
        return f"tensor of dtype {x.dtype} and shape {tuple(x.shape)}"
    return type(x).__name__


def _same_keys(where: str, ref: dict, other: dict, k: int) -> None:
    """Raise a ValueError naming the first key present in one dict but not the other."""
    missing = [key for key in ref if key not in other]
    added = [key for key in other if key not in ref]
    if missing:
        raise ValueError(f"Graph.batch: graph {k} lacks {where} key {missing[0]!r} of graph 0")
    if added:
        raise ValueError(f"Graph.batch: graph {k} has {where} key {added[0]!r} not in graph 0")


def _edges_per_graph(g: Graph, n_edges: Tensor | None) -> Tensor | None:
    """Counts of an edge set for a graph being batched; None if it is a single graph."""
    if n_edges is not None or g.n_nodes is None or g.n_nodes.shape[0] == 1:
        return n_edges
    raise ValueError(
        "Graph.batch: an input batch of several graphs needs n_edges for every edge set"
    )
