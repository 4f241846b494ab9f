"""PaiNN: polarizable atom interaction neural network (Schütt, Unke & Gastegger, ICML 2021).

Every atom i carries scalar features ``s_i`` (F,) and vector features ``v_i`` (3, F), stored
batched as ``s`` (N, F) and ``v`` (N, 3, F). Scalars start from a per-element embedding and
vectors from zero. Each interaction block applies, with residual updates,

message (sum over neighbours j of i, pair vector ``r_ij`` from i to j):

    phi(s_j) * W(|r_ij|) = [x_s, x_vv, x_vr]               (three gates of F channels each)
    ds_i = sum_j x_s
    dv_i = sum_j x_vv * v_j + x_vr * r_ij / |r_ij|

where ``phi`` is a two-layer MLP on the scalars and the filter ``W`` a linear map of a Bessel
radial basis, multiplied by a polynomial envelope so that every message, and hence the energy
and its derivatives, goes to zero smoothly as a neighbour leaves the cutoff;

update (U and V linear maps over the channels, acting on each Cartesian component alike):

    a(s_i, |V v_i|) = [a_vv, a_sv, a_ss]
    dv_i = a_vv * (U v_i)
    ds_i = a_sv * <U v_i, V v_i> + a_ss

Scalars only ever meet rotation-invariant quantities (norms, inner products of vectors) and
vectors are only scaled and summed, so the energy ``readout(s_i)`` summed over atoms is
invariant under rotations, reflections, translations and permutations, and forces from its
gradient are equivariant.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from simsurrogate.graph import Graph
from simsurrogate.models.mlp import mlp
from simsurrogate.models.potentials.base import BesselBasis, PolynomialEnvelope, Potential

__all__ = ["PaiNN", "PaiNNInteraction"]

# keeps |V v| differentiable where the vector features vanish (at the start, v = 0)
_NORM_EPS = 1e-8


class PaiNNInteraction(nn.Module):
    """One PaiNN block: the message step, then the update step (both residual).

    ``hidden`` F channels, ``n_rbf`` radial basis functions feeding the filter.
    """

    def __init__(self, hidden: int, n_rbf: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.context = mlp([hidden, hidden, 3 * hidden])  # phi(s_j)
        self.filter = nn.Linear(n_rbf, 3 * hidden)  # W(|r_ij|), before the envelope
        self.U = nn.Linear(hidden, hidden, bias=False)
        self.V = nn.Linear(hidden, hidden, bias=False)
        self.gates = mlp([2 * hidden, hidden, 3 * hidden])  # a(s_i, |V v_i|)

    def forward(
        self,
        s: Tensor,
        v: Tensor,
        radial: Tensor,
        envelope: Tensor,
        direction: Tensor,
        edge_index: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """New ``s`` (N, F) and ``v`` (N, 3, F) from radial basis ``radial`` (E, n_rbf),
        ``envelope`` (E,), unit vectors ``direction`` (E, 3) from receiver i towards sender j
        and ``edge_index`` (2, E) (row 0 sender j, row 1 receiver i)."""
        sender, receiver = edge_index
        f = self.hidden
        # message
        x = self.context(s)[sender] * (self.filter(radial) * envelope.unsqueeze(-1))
        x_s, x_vv, x_vr = x.split(f, dim=-1)
        dv = torch.addcmul(
            v[sender] * x_vv.unsqueeze(1), direction.unsqueeze(-1), x_vr.unsqueeze(1)
        )
        s = s.index_add(0, receiver, x_s)
        v = v.index_add(0, receiver, dv)
        # update
        uv, vv = self.U(v), self.V(v)
        norm = torch.sqrt((vv * vv).sum(dim=1) + _NORM_EPS)
        a_vv, a_sv, a_ss = self.gates(torch.cat([s, norm], dim=-1)).split(f, dim=-1)
        s = s + a_sv * (uv * vv).sum(dim=1) + a_ss
        v = torch.addcmul(v, a_vv.unsqueeze(1), uv)
        return s, v


class PaiNN(Potential):
    """PaiNN interatomic potential: per-atom energies from equivariant message passing.

    Args:
        elements: atomic numbers the model knows (rows of ``embedding``).
        cutoff: neighbour cutoff in Å.
        hidden: F, channels of the scalar and vector features.
        n_interactions: number of message/update blocks.
        n_rbf: number of Bessel radial basis functions.

    Parts named for fine-tuning: ``embedding`` (element -> initial scalars), ``interactions``
    (``nn.ModuleList`` of :class:`PaiNNInteraction`) and ``readout`` (MLP from scalars to one
    energy per atom). Runs in the dtype of its parameters (float32, or float64 after
    ``.double()``); pair vectors are cast to it.
    """

    def __init__(
        self,
        elements: Sequence[int],
        cutoff: float = 5.0,
        hidden: int = 128,
        n_interactions: int = 3,
        n_rbf: int = 20,
    ) -> None:
        super().__init__(elements, cutoff)
        if hidden < 2 or n_interactions < 1 or n_rbf < 1:
            raise ValueError(
                f"PaiNN needs hidden >= 2, n_interactions >= 1 and n_rbf >= 1, got hidden="
                f"{hidden}, n_interactions={n_interactions}, n_rbf={n_rbf}"
            )
        self.hidden = hidden
        self.embedding = nn.Embedding(self.num_elements, hidden)
        self.radial = BesselBasis(cutoff, n_rbf)
        self.envelope = PolynomialEnvelope(cutoff)
        self.interactions = nn.ModuleList(
            PaiNNInteraction(hidden, n_rbf) for _ in range(n_interactions)
        )
        self.readout = mlp([hidden, hidden // 2, 1])

    def atomic_energies(self, species: Tensor, vectors: Tensor, graph: Graph) -> Tensor:
        """Energy per atom (N,) (network units) from embedding rows ``species`` (N,) and pair
        vectors ``vectors`` (E, 3) Å from receiver i to sender j."""
        vectors = vectors.to(self.embedding.weight.dtype)
        r = vectors.norm(dim=-1)
        radial = self.radial(r)
        envelope = self.envelope(r)
        direction = vectors / r.unsqueeze(-1)
        s = self.embedding(species)
        v = s.new_zeros(s.shape[0], 3, self.hidden)
        for block in self.interactions:
            s, v = block(s, v, radial, envelope, direction, graph.edge_index)
        return self.readout(s).squeeze(-1)
