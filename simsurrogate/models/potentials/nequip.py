"""NequIP-class E(3)-equivariant interatomic potential built on e3nn (Batzner et al., 2022).

Each atom carries features that are direct sums of irreducible representations of O(3)
(``channels`` copies of every ``l <= lmax``, both parities when ``parity``). One interaction
(convolution) updates them from the atom's neighbours j within the cutoff:

    m_i = (1 / avg_num_neighbors) sum_j  W(r_ij) [ (L1 h)_j (x) Y(r_ij / |r_ij|) ]
    h_i <- Gate( L2 m_i + SC(h_i, z_i) )

with ``Y`` the edge spherical harmonics up to ``lmax``, ``(x)`` the tensor product (one path
per allowed ``l_in x l_sh -> l_out``, channel-wise "uvu") whose path weights ``W`` come per
edge from an MLP of the Bessel radial basis times the polynomial envelope (so every message
and its derivatives vanish smoothly at the cutoff), ``L1``/``L2`` equivariant linear maps,
``SC`` the species-dependent self-connection (a tensor product with the one-hot element), and
``Gate`` e3nn's gate nonlinearity (scalars through SiLU/tanh, higher-order features scaled by
sigmoid gates). The last interaction only produces scalars; ``readout`` maps them to one
number per atom, which :class:`~simsurrogate.models.potentials.Potential` turns into energy,
forces and stress.

Parts are named for fine-tuning: ``embedding`` (per-element scalars), ``interactions``
(``nn.ModuleList`` of :class:`NequIPInteraction`) and ``readout``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from torch import Tensor, nn

from simsurrogate.graph import Graph
from simsurrogate.models.potentials._e3nn import (
    deepcopy_keeping_fx_graphs,
    exact_wigner_3j,
    exact_wigner_3j_after_load,
)
from simsurrogate.models.potentials.base import BesselBasis, PolynomialEnvelope, Potential

__all__ = ["NequIP", "NequIPInteraction", "hidden_irreps"]


def hidden_irreps(channels: int, lmax: int, parity: bool) -> o3.Irreps:
    """Feature irreps ``channels x (l, p)`` for ``l <= lmax``: both parities when ``parity``
    (O(3) model), else only ``p = +1`` (an SO(3) model whose vectors ignore inversion)."""
    parities = (1, -1) if parity else (1,)
    return o3.Irreps([(channels, (ell, p)) for ell in range(lmax + 1) for p in parities]).sort()[0]


class NequIPInteraction(nn.Module):
    """One equivariant convolution with self-connection and gate (see the module docstring).

    Args:
        irreps_in: irreps of the incoming node features.
        irreps_sh: irreps of the edge spherical harmonics.
        irreps_target: irreps the block should output; those the tensor product cannot reach
            from ``irreps_in`` are dropped, and ``irreps_out`` says what remains.
        num_elements: number of elements (size of the one-hot node attribute).
        n_rbf: size of the radial basis fed to the weight MLP.
        radial_hidden: hidden width of the weight MLP (two hidden layers, SiLU, no biases,
            so weights vanish with the enveloped basis).
        avg_num_neighbors: fixed divisor of the neighbour sum.

    ``forward(x (N, irreps_in.dim), one_hot (N, num_elements), edge_sh (E, irreps_sh.dim),
    edge_radial (E, n_rbf), edge_index (2, E)) -> (N, irreps_out.dim)``; ``edge_index`` row 0
    is the sender j, row 1 the receiver i.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps | str,
        irreps_sh: o3.Irreps | str,
        irreps_target: o3.Irreps | str,
        num_elements: int,
        n_rbf: int,
        radial_hidden: int = 64,
        avg_num_neighbors: float = 12.0,
    ) -> None:
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in).simplify()
        irreps_target = o3.Irreps(irreps_target).simplify()
        if avg_num_neighbors <= 0:
            raise ValueError(f"avg_num_neighbors must be positive, got {avg_num_neighbors}")
        self.avg_num_neighbors = float(avg_num_neighbors)

        self.linear_1 = o3.Linear(self.irreps_in, self.irreps_in)
        # Tensor product paths l_in x l_sh -> l_out, channel-wise ("uvu"), weights per edge;
        # one output slot per path (NequIP's "irreps_mid"), mixed afterwards by linear_2.
        irreps_sh = o3.Irreps(irreps_sh)
        wanted = {ir for _, ir in irreps_target}
        mid, instructions = [], []
        for i_in, (mul, ir_in) in enumerate(self.irreps_in):
            for i_sh, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in wanted:
                        instructions.append((i_in, i_sh, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        self.tp = o3.TensorProduct(
            self.irreps_in,
            irreps_sh,
            o3.Irreps(mid),
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        self.radial = FullyConnectedNet(
            [n_rbf, radial_hidden, radial_hidden, self.tp.weight_numel], nn.functional.silu
        )
        reachable = {ir for _, ir in self.tp.irreps_out}
        scalars = o3.Irreps([(m, ir) for m, ir in irreps_target if ir.l == 0 and ir in reachable])
        gated = o3.Irreps([(m, ir) for m, ir in irreps_target if ir.l > 0 and ir in reachable])
        gates = o3.Irreps([(gated.num_irreps, (0, 1))]) if gated.num_irreps else o3.Irreps("")
        act = {1: nn.functional.silu, -1: torch.tanh}
        self.gate = Gate(
            scalars, [act[ir.p] for _, ir in scalars], gates, [torch.sigmoid] * len(gates), gated
        )
        self.linear_2 = o3.Linear(self.tp.irreps_out, self.gate.irreps_in)
        self.self_connection = o3.FullyConnectedTensorProduct(
            self.irreps_in, o3.Irreps(f"{num_elements}x0e"), self.gate.irreps_in
        )
        self.irreps_out = self.gate.irreps_out
        exact_wigner_3j(self)
        self.register_load_state_dict_post_hook(exact_wigner_3j_after_load)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> NequIPInteraction:
        super()._apply(fn, recurse)
        exact_wigner_3j(self)
        return self

    def forward(
        self,
        x: Tensor,
        one_hot: Tensor,
        edge_sh: Tensor,
        edge_radial: Tensor,
        edge_index: Tensor,
    ) -> Tensor:
        j, i = edge_index
        messages = self.tp(self.linear_1(x)[j], edge_sh, self.radial(edge_radial))
        summed = torch.zeros(x.shape[0], messages.shape[1], dtype=x.dtype, device=x.device)
        summed = summed.index_add(0, i, messages) / self.avg_num_neighbors
        return self.gate(self.linear_2(summed) + self.self_connection(x, one_hot))


class NequIP(Potential):
    """NequIP-class potential: e3nn convolutions on spherical-harmonic edge features.

    Args:
        elements: atomic numbers the model knows.
        cutoff: neighbour cutoff (Å).
        lmax: highest rotation order of edge harmonics and features.
        channels: multiplicity of every irrep in the hidden features.
        n_interactions: number of convolutions (the last one outputs scalars only).
        n_rbf: number of Bessel radial functions.
        parity: O(3) model (features of both parities; energy invariant under inversion) if
            True, else SO(3) only (chiral).
        avg_num_neighbors: fixed divisor of every neighbour sum (typical neighbour count
            within the cutoff in the training data).
        radial_hidden: width of the radial weight MLPs.
        envelope_p: polynomial envelope exponent (smoothness at the cutoff).

    The defaults (lmax 1, 32 channels, as NequIP's own example configuration; 3 blocks)
    keep CPU training affordable: the cost is dominated by per-edge tensors whose width is
    ``channels`` times the number of tensor-product paths, 22 components per channel in a
    hidden block at lmax 1 against 102 at lmax 2, which makes lmax 2 about four times slower.
    Inference may be wrapped in ``torch.compile`` (e3nn 0.6 generates plain fx code on this
    torch); force training stays eager, since double backward does not compile.
    """

    def __init__(
        self,
        elements: Sequence[int],
        cutoff: float = 5.0,
        lmax: int = 1,
        channels: int = 32,
        n_interactions: int = 3,
        n_rbf: int = 8,
        parity: bool = True,
        avg_num_neighbors: float = 12.0,
        radial_hidden: int = 64,
        envelope_p: int = 6,
    ) -> None:
        super().__init__(elements, cutoff)
        if lmax < 0 or channels < 1 or n_interactions < 1 or n_rbf < 1:
            raise ValueError(
                "NequIP needs lmax >= 0, channels >= 1, n_interactions >= 1 and n_rbf >= 1; got "
                f"lmax={lmax}, channels={channels}, n_interactions={n_interactions}, n_rbf={n_rbf}"
            )
        self.irreps_sh = o3.Irreps.spherical_harmonics(lmax, p=-1 if parity else 1)
        self.spherical_harmonics = o3.SphericalHarmonics(
            self.irreps_sh, normalize=True, normalization="component"
        )
        self.radial_basis = BesselBasis(cutoff, n_rbf)
        self.envelope = PolynomialEnvelope(cutoff, envelope_p)
        self.embedding = nn.Embedding(self.num_elements, channels)

        irreps = o3.Irreps(f"{channels}x0e")
        hidden = hidden_irreps(channels, lmax, parity)
        self.interactions = nn.ModuleList()
        for k in range(n_interactions):
            target = hidden if k < n_interactions - 1 else o3.Irreps(f"{channels}x0e")
            block = NequIPInteraction(
                irreps,
                self.irreps_sh,
                target,
                self.num_elements,
                n_rbf,
                radial_hidden,
                avg_num_neighbors,
            )
            self.interactions.append(block)
            irreps = block.irreps_out
        self.readout = o3.Linear(irreps, o3.Irreps("1x0e"))

    def __deepcopy__(self, memo: dict[int, Any]) -> NequIP:
        """A copy whose e3nn tensor-product kernels stay the same fx graphs, so it has the
        same state-dict keys (weight EMA deep-copies the model and loads states across)."""
        return deepcopy_keeping_fx_graphs(self, memo)

    def atomic_energies(self, species: Tensor, vectors: Tensor, graph: Graph) -> Tensor:
        """Per-atom network output (N,) in the model's dtype from embedding rows (N,) and pair
        vectors (E, 3) Å (cast to the model's dtype, so a float32 model accepts float64
        graphs)."""
        dtype = self.embedding.weight.dtype
        vectors = vectors.to(dtype)
        r = vectors.norm(dim=-1)
        edge_sh = self.spherical_harmonics(vectors)
        edge_radial = self.radial_basis(r) * self.envelope(r).unsqueeze(-1)
        one_hot = nn.functional.one_hot(species, self.num_elements).to(dtype)
        x = self.embedding(species)
        for block in self.interactions:
            x = block(x, one_hot, edge_sh, edge_radial, graph.edge_index)
        return self.readout(x).squeeze(-1)
