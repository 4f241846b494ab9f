"""Graph container, batching, scatter ops, mesh edges and neighbour lists (plain torch)."""

from simsurrogate.graph.edges import cells_to_edges, fully_connected
from simsurrogate.graph.graph import EdgeSet, Graph
from simsurrogate.graph.neighbors import (
    batched_neighbor_list,
    edge_vectors,
    neighbor_list,
    radius_graph,
)
from simsurrogate.graph.scatter import scatter_max, scatter_mean, scatter_sum

__all__ = [
    "EdgeSet",
    "Graph",
    "batched_neighbor_list",
    "cells_to_edges",
    "edge_vectors",
    "fully_connected",
    "neighbor_list",
    "radius_graph",
    "scatter_max",
    "scatter_mean",
    "scatter_sum",
]
