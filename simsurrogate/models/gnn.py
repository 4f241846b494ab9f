"""Plain message-passing GNN baseline for particle dynamics (not equivariant).

The EGNN paper's GNN baseline: node inputs are raw positions and velocities [x, v], edge
inputs q_i q_j, ``n_layers`` residual message-passing layers, and an MLP decoder that outputs
the target positions directly. Because raw coordinates enter the network, its output does not
rotate with its input: the contrast the equivariance tests pin. With ``normalize_inputs`` the
[x, v] inputs are standardised by an online :class:`~simsurrogate.models.normalization.Normalizer`
(off by default, as in the paper).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from simsurrogate.graph import Graph, scatter_sum
from simsurrogate.models.base import SurrogateModel
from simsurrogate.models.mlp import mlp
from simsurrogate.models.normalization import Normalizer


class GNNLayer(nn.Module):
    """m_ij = phi_e(h_i, h_j, a_ij); h_i <- h_i + phi_h(h_i, sum_j m_ij)."""

    def __init__(self, hidden: int, edge_in: int, recurrent: bool = True) -> None:
        super().__init__()
        self.recurrent = recurrent
        self.edge_mlp = mlp([2 * hidden + edge_in, hidden, hidden], final_act=True)
        self.node_mlp = mlp([2 * hidden, hidden, hidden])

    def forward(self, h: Tensor, edge_index: Tensor, edge_attr: Tensor) -> Tensor:
        """Updated node features (N, H)."""
        send, recv = edge_index
        m = self.edge_mlp(torch.cat([h[recv], h[send], edge_attr], dim=-1))
        out = self.node_mlp(torch.cat([h, scatter_sum(m, recv, h.shape[0])], dim=-1))
        return h + out if self.recurrent else out


class GNN(SurrogateModel):
    """Message-passing baseline: [x, v] in, positions (and optionally velocities) out."""

    def __init__(
        self,
        hidden: int = 64,
        n_layers: int = 4,
        recurrent: bool = True,
        predict_velocity: bool = False,
        normalize_inputs: bool = False,
    ) -> None:
        super().__init__()
        self.predict_velocity = predict_velocity
        self.input_norm = Normalizer(6) if normalize_inputs else None
        self.embedding = nn.Linear(6, hidden)
        self.layers = nn.ModuleList(GNNLayer(hidden, 1, recurrent) for _ in range(n_layers))
        self.decoder = mlp([hidden, hidden, 6 if predict_velocity else 3])

    def forward(self, graph: Graph) -> dict[str, Tensor]:
        """Return ``{"pos": (N, 3)}`` and, with ``predict_velocity``, ``"vel": (N, 3)``."""
        x, v, q = graph.nodes["pos"], graph.nodes["vel"], graph.nodes["charge"]
        send, recv = graph.edge_index
        edge_attr = (q[recv] * q[send]).unsqueeze(-1)
        inputs = torch.cat([x, v], dim=-1)
        if self.input_norm is not None:
            inputs = self.input_norm(inputs)
        h = self.embedding(inputs)
        for layer in self.layers:
            h = layer(h, graph.edge_index, edge_attr)
        out = self.decoder(h)
        if self.predict_velocity:
            return {"pos": out[:, :3], "vel": out[:, 3:]}
        return {"pos": out}
