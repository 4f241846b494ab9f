"""Lennard-Jones as a :class:`~simsurrogate.models.potentials.Potential`: an analytic reference
that exercises the same head, calculator and MD engine as the learned models."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from simsurrogate.graph import Graph
from simsurrogate.models.potentials.base import PolynomialEnvelope, Potential

__all__ = ["LennardJones"]


class LennardJones(Potential):
    """``4 eps ((sigma/r)^12 - (sigma/r)^6)`` per pair, one sigma and epsilon for all elements.

    ``smooth=False`` shifts the pair energy to zero at the cutoff exactly as ASE's
    ``LennardJones(smooth=False)`` (forces jump there); ``smooth=True`` multiplies the unshifted
    pair energy by a polynomial envelope instead, so forces are continuous (use it for MD).
    ``sigma`` (Å) and ``epsilon`` (eV) are parameters, so the model can also be fitted.
    """

    def __init__(
        self,
        elements: Sequence[int],
        sigma: float = 1.0,
        epsilon: float = 1.0,
        cutoff: float = 3.0,
        smooth: bool = False,
    ) -> None:
        super().__init__(elements, cutoff)
        self.sigma = nn.Parameter(torch.tensor(float(sigma)))
        self.epsilon = nn.Parameter(torch.tensor(float(epsilon)))
        self.smooth = smooth
        self.envelope = PolynomialEnvelope(cutoff)

    def atomic_energies(self, species: Tensor, vectors: Tensor, graph: Graph) -> Tensor:
        r = vectors.norm(dim=-1)
        sigma, eps = self.sigma.to(r.dtype), self.epsilon.to(r.dtype)
        sr6 = (sigma / r) ** 6
        pair = 4 * eps * (sr6 * sr6 - sr6)
        if self.smooth:
            pair = pair * self.envelope(r)
        else:
            src6 = (sigma / self.cutoff) ** 6
            pair = torch.where(r < self.cutoff, pair - 4 * eps * (src6 * src6 - src6), 0.0 * r)
        out = torch.zeros(species.shape[0], dtype=r.dtype, device=r.device)
        return out.index_add(0, graph.edge_index[1], 0.5 * pair)
