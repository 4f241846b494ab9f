"""Scatter ops, Graph batching/validation and mesh/fully connected edge builders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simsurrogate.graph import (
    EdgeSet,
    Graph,
    cells_to_edges,
    fully_connected,
    scatter_max,
    scatter_mean,
    scatter_sum,
)


def naive_scatter(src: torch.Tensor, index: torch.Tensor, size: int, reduce: str) -> torch.Tensor:
    out = torch.zeros((size, *src.shape[1:]), dtype=src.dtype)
    for b in range(size):
        rows = src[index == b]
        if rows.shape[0] == 0:
            continue
        if reduce == "sum":
            out[b] = rows.sum(0)
        elif reduce == "mean":
            out[b] = rows.mean(0)
        else:
            out[b] = rows.max(0).values
    return out


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("trailing", [(), (3,), (2, 4)])
def test_scatter_matches_naive_loop(reduce: str, trailing: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(20, *trailing, generator=gen)
    index = torch.randint(0, 5, (20,), generator=gen)
    index[index == 3] = 4  # bin 3 stays empty
    size = 7  # bins 5 and 6 too
    op = {"sum": scatter_sum, "mean": scatter_mean, "max": scatter_max}[reduce]
    out = op(src, index, size)
    assert out.shape == (size, *trailing) and out.dtype == src.dtype
    torch.testing.assert_close(out, naive_scatter(src, index, size, reduce))
    assert torch.all(out[[3, 5, 6]] == 0)


def test_scatter_default_size_and_dtype() -> None:
    index = torch.tensor([0, 2, 2])
    assert scatter_sum(torch.ones(3, dtype=torch.float64), index).shape == (3,)
    ints = scatter_mean(torch.tensor([1, 2, 5]), index)
    assert ints.dtype == torch.long and ints.tolist() == [1, 0, 3]
    with pytest.raises(ValueError, match="index length"):
        scatter_sum(torch.ones(4), index)


@pytest.mark.parametrize("op", [scatter_sum, scatter_mean, scatter_max])
def test_scatter_gradcheck(op) -> None:
    gen = torch.Generator().manual_seed(1)
    src = torch.randn(12, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    index = torch.tensor([0, 1, 1, 3, 3, 3, 0, 1, 4, 4, 0, 3])
    assert torch.autograd.gradcheck(lambda s: op(s, index, 6), (src,))


def make_graph(n: int, e: int, w: int, seed: int) -> Graph:
    gen = torch.Generator().manual_seed(seed)
    return Graph(
        nodes={"x": torch.randn(n, 3, generator=gen), "type": torch.randint(0, 3, (n,))},
        edge_index=torch.randint(0, n, (2, e), generator=gen),
        edges={"a": torch.randn(e, 2, generator=gen)},
        globals={"u": torch.randn(1, 4, generator=gen)},
        extra_edge_sets={
            "world": EdgeSet(
                index=torch.randint(0, n, (2, w), generator=gen),
                fields={"d": torch.randn(w, 1, generator=gen)},
            )
        },
    )


def assert_graphs_equal(a: Graph, b: Graph) -> None:
    for da, db in [(a.nodes, b.nodes), (a.edges, b.edges), (a.globals, b.globals)]:
        assert da.keys() == db.keys()
        for key in da:
            assert torch.equal(da[key], db[key])
    assert torch.equal(a.edge_index, b.edge_index)
    assert a.extra_edge_sets.keys() == b.extra_edge_sets.keys()
    for name, es in a.extra_edge_sets.items():
        assert torch.equal(es.index, b.extra_edge_sets[name].index)
        for key, t in es.fields.items():
            assert torch.equal(t, b.extra_edge_sets[name].fields[key])


def test_batch_unbatch_round_trip_with_two_edge_sets() -> None:
    graphs = [make_graph(4, 6, 3, 0), make_graph(5, 2, 4, 1), make_graph(3, 5, 0, 2)]
    batch = Graph.batch(graphs)
    batch.validate()
    assert (batch.num_graphs, batch.num_nodes, batch.num_edges) == (3, 12, 13)
    assert batch.n_nodes.tolist() == [4, 5, 3] and batch.n_edges.tolist() == [6, 2, 5]
    assert batch.extra_edge_sets["world"].n_edges.tolist() == [3, 4, 0]
    assert batch.node_offsets.tolist() == [0, 4, 9, 12]
    assert batch.node_batch.tolist() == [0] * 4 + [1] * 5 + [2] * 3
    assert batch.edge_batch.tolist() == [0] * 6 + [1] * 2 + [2] * 5
    assert batch.edge_set_batch("world").tolist() == [0] * 3 + [1] * 4
    parts = batch.unbatch()
    assert len(parts) == 3
    for got, want in zip(parts, graphs, strict=True):
        got.validate()
        assert_graphs_equal(got, want)
    # batching batches gives the same as batching everything at once
    nested = Graph.batch([Graph.batch(graphs[:2]), graphs[2]])
    assert_graphs_equal(nested, batch)
    assert torch.equal(nested.n_nodes, batch.n_nodes)


def test_batch_shifts_edge_index_by_node_offsets() -> None:
    a = Graph(nodes={"x": torch.zeros(3, 1)}, edge_index=torch.tensor([[0, 1], [1, 2]]))
    b = Graph(nodes={"x": torch.zeros(2, 1)}, edge_index=torch.tensor([[1], [0]]))
    batch = Graph.batch([a, b, a])
    assert batch.edge_index.tolist() == [[0, 1, 4, 5, 6], [1, 2, 3, 6, 7]]
    assert batch.n_edges.tolist() == [2, 1, 2]


def test_batch_rejects_mismatched_keys() -> None:
    a, b = make_graph(3, 2, 1, 0), make_graph(3, 2, 1, 1)
    b.nodes["extra"] = torch.zeros(3)
    with pytest.raises(ValueError, match="nodes key 'extra'"):
        Graph.batch([a, b])
    c = make_graph(3, 2, 1, 2)
    del c.extra_edge_sets["world"].fields["d"]
    with pytest.raises(ValueError, match=r"extra_edge_sets\['world'\].fields key 'd'"):
        Graph.batch([a, c])


def test_validate_catches_bad_graphs() -> None:
    g = make_graph(4, 5, 2, 0)
    g.validate()
    g.edge_index[1, 2] = 4
    with pytest.raises(ValueError, match=r"edge_index has node ids in \[.*, 4\].*4 nodes"):
        g.validate()
    g = make_graph(4, 5, 2, 0)
    g.extra_edge_sets["world"].index[0, 0] = -1
    with pytest.raises(ValueError, match=r"extra_edge_sets\['world'\].index"):
        g.validate()
    g = make_graph(4, 5, 2, 0)
    g.edges["a"] = torch.zeros(4, 2)
    with pytest.raises(ValueError, match=r"edges\['a'\].*leading dim 5"):
        g.validate()
    g = make_graph(4, 5, 2, 0)
    g.edge_index = g.edge_index.int()
    with pytest.raises(ValueError, match="torch.long"):
        g.validate()
    batch = Graph.batch([make_graph(3, 2, 1, 0), make_graph(3, 2, 1, 1)])
    batch.edge_index[0, 0] = 5  # edge from graph 1 into graph 0
    with pytest.raises(ValueError, match="cross graphs"):
        batch.validate()


def test_to_casts_only_floating_tensors() -> None:
    g = make_graph(3, 2, 1, 0).to(dtype=torch.float64)
    assert g.nodes["x"].dtype == torch.float64
    assert g.nodes["type"].dtype == torch.long
    assert g.extra_edge_sets["world"].fields["d"].dtype == torch.float64
    assert g.edge_index.dtype == torch.long


def test_cells_to_edges_two_triangles() -> None:
    cells = np.array([[0, 1, 2], [1, 3, 2]])
    edges = cells_to_edges(cells)
    assert edges.dtype == torch.long and edges.shape == (2, 10)
    pairs = set(map(tuple, edges.T.tolist()))
    undirected = {(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)}
    assert pairs == undirected | {(b, a) for a, b in undirected}
    assert edges.T.tolist() == sorted(edges.T.tolist())


def test_cells_to_edges_quads_and_tets() -> None:
    quad = torch.tensor([[0, 1, 2, 3]])
    assert cells_to_edges(quad, kind="polygon").shape == (2, 8)  # 4 sides
    assert cells_to_edges(quad, kind="simplex").shape == (2, 12)  # 6 pairs
    with pytest.raises(ValueError, match="kind"):
        cells_to_edges(quad, kind="cycle")


def test_fully_connected_counts() -> None:
    n = [3, 1, 4]
    edges = fully_connected(n)
    assert edges.shape == (2, 6 + 0 + 12)
    assert fully_connected(torch.tensor(n), self_loops=True).shape == (2, 9 + 1 + 16)
    graph_of = torch.repeat_interleave(torch.arange(3), torch.tensor(n))
    assert torch.equal(graph_of[edges[0]], graph_of[edges[1]])
    assert bool((edges[0] != edges[1]).all())
    assert len(set(map(tuple, edges.T.tolist()))) == edges.shape[1]
