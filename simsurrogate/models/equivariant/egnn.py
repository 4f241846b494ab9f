"""E(n)-equivariant graph neural network (Satorras, Hoogeboom & Welling, ICML 2021).

Layer l updates invariant node features h, coordinates x and uses velocities v:

    m_ij    = phi_e(h_i, h_j, |x_i - x_j|^2, a_ij)
    x_i    <- x_i + agg_j (x_i - x_j) phi_x(m_ij) + phi_v(h_i) v_i
    h_i    <- h_i + phi_h(h_i, sum_j m_ij)

with agg = mean over neighbours (the paper's N-body setting). Rotating, reflecting or
translating x and v rotates/translates the output coordinates the same way, and permuting the
nodes permutes the output, because only distances enter the learned functions and coordinates
are updated along relative position vectors.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from simsurrogate.graph import Graph, scatter_mean, scatter_sum
from simsurrogate.models.base import SurrogateModel
from simsurrogate.models.mlp import mlp


class EGNNLayer(nn.Module):
    """One equivariant message-passing layer (E_GCL with the velocity term)."""

    def __init__(
        self,
        hidden: int,
        edge_in: int,
        recurrent: bool = True,
        coords_agg: str = "mean",
        tanh: bool = False,
        velocity: bool = True,
        update_nodes: bool = True,
    ) -> None:
        super().__init__()
        if coords_agg not in ("mean", "sum"):
            raise ValueError(f"coords_agg must be 'mean' or 'sum', got {coords_agg!r}")
        self.recurrent = recurrent
        self.coords_agg = coords_agg
        self.edge_mlp = mlp([2 * hidden + 1 + edge_in, hidden, hidden], final_act=True)
        # the last layer of a coordinate-only model has no use for new node features
        self.node_mlp = mlp([2 * hidden, hidden, hidden]) if update_nodes else None
        last = nn.Linear(hidden, 1, bias=False)
        nn.init.xavier_uniform_(last.weight, gain=0.001)  # start close to the identity map
        coord = [nn.Linear(hidden, hidden), nn.SiLU(), last]
        if tanh:
            coord.append(nn.Tanh())
        self.coord_mlp = nn.Sequential(*coord)
        self.vel_mlp = mlp([hidden, hidden, 1]) if velocity else None

    def forward(
        self, h: Tensor, x: Tensor, v: Tensor | None, edge_index: Tensor, edge_attr: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Return updated ``h`` (N, H), ``x`` (N, D) and the messages ``m`` (E, H)."""
        send, recv = edge_index
        diff = x[recv] - x[send]  # x_i - x_j for edge j -> i
        radial = (diff * diff).sum(-1, keepdim=True)
        m = self.edge_mlp(torch.cat([h[recv], h[send], radial, edge_attr], dim=-1))
        trans = diff * self.coord_mlp(m)
        agg = scatter_mean if self.coords_agg == "mean" else scatter_sum
        x = x + agg(trans, recv, x.shape[0])
        if self.vel_mlp is not None and v is not None:
            x = x + self.vel_mlp(h) * v
        if self.node_mlp is not None:
            out = self.node_mlp(torch.cat([h, scatter_sum(m, recv, h.shape[0])], dim=-1))
            h = h + out if self.recurrent else out
        return h, x, m


class EGNN(SurrogateModel):
    """EGNN for particle dynamics: predicts positions (and optionally velocities) a horizon ahead.

    Reads node tensors ``pos`` (N, 3), ``vel`` (N, 3) and ``charge`` (N,) from a
    :class:`~simsurrogate.graph.Graph` (fully connected per system). As in the paper's N-body
    experiment, node features are the speed |v| and edge features are q_i q_j and the initial
    squared distance. With ``predict_velocity`` an extra equivariant head also predicts the
    velocity at the target frame, which multi-horizon rollouts need.
    """

    def __init__(
        self,
        hidden: int = 64,
        n_layers: int = 4,
        coords_agg: str = "mean",
        recurrent: bool = True,
        tanh: bool = False,
        predict_velocity: bool = False,
    ) -> None:
        super().__init__()
        edge_in = 2
        self.embedding = nn.Linear(1, hidden)
        self.layers = nn.ModuleList(
            EGNNLayer(
                hidden,
                edge_in,
                recurrent,
                coords_agg,
                tanh,
                update_nodes=predict_velocity or i < n_layers - 1,
            )
            for i in range(n_layers)
        )
        self.predict_velocity = predict_velocity
        if predict_velocity:
            self.vel_edge_mlp = mlp([2 * hidden + 1 + edge_in, hidden, 1])
            self.vel_scale_mlp = mlp([hidden, hidden, 1])

    def forward(self, graph: Graph) -> dict[str, Tensor]:
        """Return ``{"pos": (N, 3)}`` and, with ``predict_velocity``, ``"vel": (N, 3)``."""
        x, v = graph.nodes["pos"], graph.nodes["vel"]
        q = graph.nodes["charge"]
        send, recv = graph.edge_index
        d0 = x[recv] - x[send]
        edge_attr = torch.stack([q[recv] * q[send], (d0 * d0).sum(-1)], dim=-1)
        h = self.embedding(v.norm(dim=-1, keepdim=True))
        for layer in self.layers:
            h, x, _ = layer(h, x, v, graph.edge_index, edge_attr)
        out = {"pos": x}
        if self.predict_velocity:
            diff = x[recv] - x[send]
            radial = (diff * diff).sum(-1, keepdim=True)
            w = self.vel_edge_mlp(torch.cat([h[recv], h[send], radial, edge_attr], dim=-1))
            out["vel"] = self.vel_scale_mlp(h) * v + scatter_mean(diff * w, recv, x.shape[0])
        return out
