"""MeshGraphNet (Pfaff et al., ICLR 2021): encode–process–decode on meshes.

:class:`EncodeProcessDecode` is the network: node and edge encoders, ``n_message_passing``
residual graph-network blocks (edge update from [edge, sender, receiver], sum aggregation
at the receiver, node update from [node, aggregated messages of every edge set]), all MLPs
with LayerNorm except the decoder. Several edge sets are supported (mesh edges, and world
edges for cloth); each has its own encoder and edge MLPs.

:class:`MeshGraphNet` is the learned fluid simulator built on it, with one method for
training (:meth:`MeshGraphNet.forward`: normalised outputs from a state) and one for
inference (:meth:`MeshGraphNet.predict`: the next state in physical units), so the
training tricks (noise, normalised targets) never leak into rollout. Online normalisers
(:class:`~simsurrogate.models.normalization.Normalizer`) for node inputs, edge features and
outputs are buffers, so they travel in every checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from simsurrogate.data.node_types import NodeType, predicted_nodes
from simsurrogate.graph import Graph
from simsurrogate.models.base import SurrogateModel
from simsurrogate.models.linear import Linear, linear
from simsurrogate.models.normalization import Normalizer

__all__ = ["EncodeProcessDecode", "GraphNetBlock", "MeshGraphNet"]


def _mlp(n_in: int, latent: int, n_out: int, hidden_layers: int, layer_norm: bool) -> nn.Sequential:
    """``hidden_layers`` ReLU layers of width ``latent``, a linear output, optional LayerNorm."""
    sizes = [n_in] + [latent] * hidden_layers
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [Linear(a, b), nn.ReLU(inplace=True)]
    layers.append(Linear(sizes[-1], n_out))
    if layer_norm:
        layers.append(nn.LayerNorm(n_out))
    return nn.Sequential(*layers)


class _EdgeMLP(nn.Module):
    """Edge function f([e, h_sender, h_receiver]) -> (E, latent).

    With ``concat_trick`` the first linear layer is applied as three maps,
    ``W_e e + (W_s h)[sender] + (W_r h)[receiver]``: the node maps run on N nodes instead of
    E edges and the (E, 3 latent) concatenation is never built. Both forms have the same
    parameters and compute the same function.
    """

    def __init__(self, latent: int, hidden_layers: int, concat_trick: bool) -> None:
        super().__init__()
        self.concat_trick = concat_trick
        self.net = _mlp(3 * latent, latent, latent, hidden_layers, layer_norm=True)

    def forward(self, e: Tensor, h: Tensor, index: Tensor) -> Tensor:
        sender, receiver = index[0], index[1]
        if not self.concat_trick:
            x = torch.cat([e, h.index_select(0, sender), h.index_select(0, receiver)], dim=-1)
            return self.net(x)
        first: nn.Linear = self.net[0]  # type: ignore[assignment]
        w_e, w_s, w_r = first.weight.split(e.shape[-1], dim=1)
        # one (N, 2 latent) product for both node maps: [h W_s^T | h W_r^T]
        node_s, node_r = linear(h, torch.cat([w_s, w_r])).chunk(2, dim=1)
        x = linear(e, w_e, first.bias)
        x = x + node_s.index_select(0, sender) + node_r.index_select(0, receiver)
        return self.net[1:](x)


class GraphNetBlock(nn.Module):
    """One message-passing step with residual edge and node updates.

    For each edge set k: ``e_k += f_k([e_k, h_s, h_r])``; then
    ``h += g([h, sum_k sum_{edges into i} e_k])``.
    """

    def __init__(
        self, latent: int, edge_sets: Sequence[str], hidden_layers: int, concat_trick: bool
    ) -> None:
        super().__init__()
        self.edge_sets = list(edge_sets)
        self.edge_mlps = nn.ModuleDict(
            {k: _EdgeMLP(latent, hidden_layers, concat_trick) for k in self.edge_sets}
        )
        n_in = latent * (1 + len(self.edge_sets))
        self.node_mlp = _mlp(n_in, latent, latent, hidden_layers, layer_norm=True)

    def forward(
        self, h: Tensor, edges: dict[str, Tensor], indices: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``h`` (N, latent); ``edges[k]`` (E_k, latent); ``indices[k]`` (2, E_k)."""
        new_edges, aggregated = {}, [h]
        for k in self.edge_sets:
            e = self.edge_mlps[k](edges[k], h, indices[k])
            agg = h.new_zeros(h.shape).index_add_(0, indices[k][1], e)
            aggregated.append(agg)
            new_edges[k] = edges[k] + e
        h = h + self.node_mlp(torch.cat(aggregated, dim=-1))
        return h, new_edges


class EncodeProcessDecode(nn.Module):
    """Encoder MLPs, ``n_message_passing`` :class:`GraphNetBlock` s, decoder MLP.

    Args:
        node_in: node input features.
        edge_in: input features per edge set, e.g. ``{"mesh": 3}``.
        node_out: decoded features per node.
        latent: width of every latent vector and hidden layer (paper: 128).
        n_message_passing: number of blocks (paper: 15).
        hidden_layers: hidden layers per MLP (paper: 2).
        concat_trick: split the first edge layer (see :class:`_EdgeMLP`).
        checkpoint_activations: recompute each block in the backward pass instead of storing
            its activations (less memory, ~30 % more compute); training only.
    """

    def __init__(
        self,
        node_in: int,
        edge_in: Mapping[str, int],
        node_out: int,
        latent: int = 128,
        n_message_passing: int = 15,
        hidden_layers: int = 2,
        concat_trick: bool = True,
        checkpoint_activations: bool = False,
    ) -> None:
        super().__init__()
        self.checkpoint_activations = checkpoint_activations
        self.node_encoder = _mlp(node_in, latent, latent, hidden_layers, layer_norm=True)
        self.edge_encoders = nn.ModuleDict(
            {k: _mlp(n, latent, latent, hidden_layers, layer_norm=True) for k, n in edge_in.items()}
        )
        self.blocks = nn.ModuleList(
            GraphNetBlock(latent, list(edge_in), hidden_layers, concat_trick)
            for _ in range(n_message_passing)
        )
        self.decoder = _mlp(latent, latent, node_out, hidden_layers, layer_norm=False)

    def forward(
        self, node_x: Tensor, edge_x: dict[str, Tensor], indices: dict[str, Tensor]
    ) -> Tensor:
        """Node features (N, node_in), edge features per set (E_k, edge_in_k) and indices
        (2, E_k) of (sender, receiver) -> (N, node_out)."""
        h = self.node_encoder(node_x)
        edges = {k: self.edge_encoders[k](edge_x[k]) for k in self.edge_encoders}
        for block in self.blocks:
            if self.checkpoint_activations and self.training and torch.is_grad_enabled():
                h, edges = checkpoint(block, h, edges, indices, use_reentrant=False)
            else:
                h, edges = block(h, edges, indices)
        return self.decoder(h)


class MeshGraphNet(SurrogateModel):
    """Learned simulator for incompressible flow on a fixed mesh (MeshGraphNets ``cfd``).

    Inputs per node: the velocity field (N, dim) and the one-hot node type (N, 9); per mesh
    edge: relative rest position ``x_sender - x_receiver`` (dim) and its length. Outputs per
    node: the velocity change over one step (dim) and the fields named in ``output_fields``
    at the next step (e.g. pressure, 1), all predicted in normalised units.

    Args:
        dim: spatial dimension of the mesh (2).
        velocity_field: name of the integrated field in data files (``velocity``).
        output_fields: other fields predicted directly at the next step, name -> components.
        latent, n_message_passing, hidden_layers, concat_trick, checkpoint_activations: see
            :class:`EncodeProcessDecode`.
    """

    def __init__(
        self,
        dim: int = 2,
        velocity_field: str = "velocity",
        output_fields: dict[str, int] | None = None,
        latent: int = 128,
        n_message_passing: int = 15,
        hidden_layers: int = 2,
        concat_trick: bool = True,
        checkpoint_activations: bool = False,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.velocity_field = velocity_field
        self.output_fields = dict({"pressure": 1} if output_fields is None else output_fields)
        if velocity_field in self.output_fields:
            raise ValueError(f"{velocity_field!r} is both the velocity field and an output field")
        n_types = int(NodeType.SIZE)
        node_in = dim + n_types
        n_out = dim + sum(self.output_fields.values())
        self.net = EncodeProcessDecode(
            node_in,
            {"mesh": dim + 1},
            n_out,
            latent,
            n_message_passing,
            hidden_layers,
            concat_trick,
            checkpoint_activations,
        )
        self.node_normalizer = Normalizer(node_in)
        self.edge_normalizer = Normalizer(dim + 1)
        self.output_normalizer = Normalizer(n_out)

    @property
    def fields(self) -> list[str]:
        """Every field the model reads or writes: velocity first, then the output fields."""
        return [self.velocity_field, *self.output_fields]

    def _features(self, graph: Graph) -> tuple[Tensor, Tensor]:
        """Raw node (N, dim + 9) and mesh-edge (E, dim + 1) features of a graph."""
        vel = graph.nodes[self.velocity_field]
        one_hot = nn.functional.one_hot(graph.nodes["node_type"].long(), int(NodeType.SIZE))
        node_x = torch.cat([vel, one_hot.to(vel.dtype)], dim=-1)
        pos = graph.nodes["mesh_pos"]
        rel = pos[graph.edge_index[0]] - pos[graph.edge_index[1]]
        edge_x = torch.cat([rel, rel.norm(dim=-1, keepdim=True)], dim=-1)
        return node_x, edge_x

    def forward(self, graph: Graph, accumulate: bool | None = None) -> Tensor:
        """Normalised outputs (N, dim + sum(output_fields)) for a (batched) graph with nodes
        ``mesh_pos`` (N, dim), ``node_type`` (N,) and the velocity field (N, dim).

        The input normalisers accumulate statistics if ``accumulate``; None: in training
        mode."""
        node_x, edge_x = self._features(graph)
        node_x = self.node_normalizer(node_x, accumulate)
        edge_x = self.edge_normalizer(edge_x, accumulate)
        return self.net(node_x, {"mesh": edge_x}, {"mesh": graph.edge_index})

    def raw_targets(self, graph: Graph, next_fields: Mapping[str, Tensor]) -> Tensor:
        """Targets in physical units (N, n_out): velocity change from the graph's (possibly
        noisy) velocity to ``next_fields[velocity]``, then the next output fields."""
        vel = graph.nodes[self.velocity_field]
        parts = [next_fields[self.velocity_field] - vel]
        parts += [next_fields[k].reshape(vel.shape[0], -1) for k in self.output_fields]
        return torch.cat(parts, dim=-1)

    def normalize_targets(self, raw: Tensor, accumulate: bool | None = None) -> Tensor:
        """Normalise targets (N, n_out); accumulates statistics in training mode."""
        return self.output_normalizer(raw, accumulate)

    def decode(self, graph: Graph, out: Tensor) -> dict[str, Tensor]:
        """Next-state fields in physical units from normalised outputs ``out`` (N, n_out):
        the velocity (N, dim) integrated with one forward-Euler step of the predicted change,
        and each output field (N, components)."""
        raw = self.output_normalizer.inverse(out)
        result = {self.velocity_field: graph.nodes[self.velocity_field] + raw[:, : self.dim]}
        start = self.dim
        for name, size in self.output_fields.items():
            result[name] = raw[:, start : start + size]
            start += size
        return result

    @torch.no_grad()
    def predict(self, graph: Graph) -> dict[str, Tensor]:
        """Next state of every node (no boundary condition applied: the rollout engine holds
        the nodes whose type is not in :data:`PREDICTED_TYPES`)."""
        was_training = self.training
        self.eval()
        try:
            return self.decode(graph, self.forward(graph))
        finally:
            self.train(was_training)

    @staticmethod
    def loss_mask(node_type: Tensor) -> Tensor:
        """Nodes the model is scored on (N,) bool: normal and outflow nodes."""
        return predicted_nodes(node_type)
