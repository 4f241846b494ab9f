"""Shared physics head of every interatomic potential: energy, forces and stress.

A potential predicts one scalar per atom from its neighbourhood. :class:`Potential` turns
that into what simulations need, in ASE's units and sign conventions:

* energy (eV) per system: ``E = sum_i (scale * e_i + E_ref[Z_i])``, accumulated in float64;
  the per-element reference energies ``E_ref`` are fitted by least squares on the training
  set (:func:`fit_reference_energies`) and ``scale`` (typically the force RMS) sets the size
  of the network's output ``e_i``;
* forces (eV/Å) ``F = -dE/dr`` by autograd (``create_graph`` while training, so force losses
  train the weights);
* stress (eV/Å³) ``sigma = (1/V) dE/d(epsilon)`` through a symmetric displacement
  ``epsilon`` applied to positions and cell (the strain-derivative trick), so the result is
  the same tensor ``ase.Atoms.get_stress(voigt=False)`` returns; its negative trace over
  three is the pressure.

Subclasses implement :meth:`Potential.atomic_energies` on (species, pair vectors, graph).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from simsurrogate.graph import Graph, edge_vectors
from simsurrogate.models.base import SurrogateModel

__all__ = [
    "BesselBasis",
    "PolynomialEnvelope",
    "Potential",
    "UnknownElementError",
    "fit_reference_energies",
]

_SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As "
    "Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd "
    "Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn Fr Ra Ac Th Pa U Np Pu Am "
    "Cm Bk Cf Es Fm Md No Lr Rf Db Sg Bh Hs Mt Ds Rg Cn Nh Fl Mc Lv Ts Og"
).split()


def element_symbol(z: int) -> str:
    """Chemical symbol of atomic number ``z`` (``"Z=z"`` outside the periodic table)."""
    return _SYMBOLS[z] if 0 < z < len(_SYMBOLS) else f"Z={z}"


class UnknownElementError(ValueError):
    """A structure holds an element the potential was not built for."""


class BesselBasis(nn.Module):
    """Radial basis ``sqrt(2/rc) sin(n pi r / rc) / r`` for n = 1..num (DimeNet, NequIP).

    ``r`` (E,) Å -> (E, num). Frequencies are trainable, as in NequIP.
    """

    def __init__(self, cutoff: float, num: int = 8, trainable: bool = True) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        freq = torch.arange(1, num + 1, dtype=torch.get_default_dtype()) * math.pi / self.cutoff
        self.freq = nn.Parameter(freq, requires_grad=trainable)
        self.prefactor = math.sqrt(2.0 / self.cutoff)

    def forward(self, r: Tensor) -> Tensor:
        r = r.unsqueeze(-1)
        return self.prefactor * torch.sin(self.freq * r) / r


class PolynomialEnvelope(nn.Module):
    """Smooth cutoff ``u(r)`` (Klicpera et al., 2020): 1 at r = 0, and it and its first
    ``p - 1`` derivatives vanish at ``r = cutoff``; zero beyond. ``r`` (E,) -> (E,)."""

    def __init__(self, cutoff: float, p: int = 6) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = int(p)

    def forward(self, r: Tensor) -> Tensor:
        p = self.p
        x = r / self.cutoff
        u = (
            1.0
            - (p + 1) * (p + 2) / 2 * x**p
            + p * (p + 2) * x ** (p + 1)
            - p * (p + 1) / 2 * x ** (p + 2)
        )
        return torch.where(x < 1.0, u, torch.zeros_like(u))


def fit_reference_energies(
    numbers: np.ndarray, n_atoms: np.ndarray, energies: np.ndarray, elements: Sequence[int]
) -> np.ndarray:
    """Per-element reference energies (eV) by least squares: ``E_f ~ sum_Z count_fZ E_ref[Z]``.

    ``numbers`` (A,) atomic numbers of all frames back to back, ``n_atoms`` (F,), ``energies``
    (F,) eV, ``elements`` the model's atomic numbers. Returns (len(elements),) float64. Elements
    absent from the data get 0; with collinear compositions (e.g. one element only) numpy's
    minimum-norm solution is returned.
    """
    elements = list(elements)
    frame = np.repeat(np.arange(len(n_atoms)), n_atoms)
    counts = np.zeros((len(n_atoms), len(elements)))
    lookup = {z: k for k, z in enumerate(elements)}
    unknown = sorted(set(np.unique(numbers).tolist()) - set(elements))
    if unknown:
        names = ", ".join(element_symbol(z) for z in unknown)
        raise UnknownElementError(f"fit_reference_energies: elements {names} are not in {elements}")
    cols = np.array([lookup[int(z)] for z in numbers], dtype=np.int64)
    np.add.at(counts, (frame, cols), 1.0)
    solution, *_ = np.linalg.lstsq(counts, np.asarray(energies, dtype=np.float64), rcond=None)
    return solution


class Potential(SurrogateModel):
    """Base class of interatomic potentials: per-atom energies in, energy/forces/stress out.

    Args:
        elements: atomic numbers the model knows (its embedding rows, in this order).
        cutoff: neighbour cutoff in Å; graphs must be built with at least this radius.

    Buffers travelling in checkpoints: ``reference_energies`` (n_elements,) float64 eV and
    ``scale`` (float64 scalar, eV) mapping the network output to eV per atom.
    """

    def __init__(self, elements: Sequence[int], cutoff: float) -> None:
        super().__init__()
        elements = [int(z) for z in elements]
        if not elements or len(set(elements)) != len(elements):
            raise ValueError(f"elements must be distinct atomic numbers, got {elements}")
        if cutoff <= 0:
            raise ValueError(f"cutoff must be positive, got {cutoff}")
        self.elements = elements
        self.cutoff = float(cutoff)
        table = torch.full((max(119, max(elements) + 1),), -1, dtype=torch.long)
        table[torch.tensor(elements)] = torch.arange(len(elements))
        self.register_buffer("species_table", table, persistent=False)
        self.register_buffer("reference_energies", torch.zeros(len(elements), dtype=torch.float64))
        self.register_buffer("scale", torch.tensor(1.0, dtype=torch.float64))

    @property
    def num_elements(self) -> int:
        """Number of elements (rows of the species embedding)."""
        return len(self.elements)

    def species(self, numbers: Tensor, graph: Graph | None = None) -> Tensor:
        """Map atomic numbers (N,) to embedding rows (N,); an unknown element is an error
        naming it (and the system of the batch it sits in, when ``graph`` is given)."""
        too_big = numbers >= self.species_table.shape[0]
        index = self.species_table[numbers.clamp(0, self.species_table.shape[0] - 1)]
        bad = (index < 0) | too_big | (numbers < 0)
        if bool(bad.any()):
            first = int(torch.nonzero(bad)[0, 0])
            z = int(numbers[first])
            where = ""
            if graph is not None:
                where = f" (system {int(graph.node_batch[first])} of the batch, atom {first})"
            known = ", ".join(element_symbol(e) for e in self.elements)
            raise UnknownElementError(
                f"element {element_symbol(z)} (Z={z}){where} is not one of this model's "
                f"elements: {known}"
            )
        return index

    def set_reference_energies(self, values: Sequence[float] | Tensor) -> None:
        """Set the per-element reference energies (eV), in the order of ``elements``."""
        values = torch.as_tensor(values, dtype=torch.float64)
        if values.shape != self.reference_energies.shape:
            raise ValueError(
                f"reference energies must have shape {tuple(self.reference_energies.shape)}, "
                f"got {tuple(values.shape)}"
            )
        self.reference_energies.copy_(values)

    def atomic_energies(self, species: Tensor, vectors: Tensor, graph: Graph) -> Tensor:
        """Network output per atom (N,) (before scale and shift) from embedding rows
        ``species`` (N,), pair vectors ``vectors`` (E, 3) Å from receiver i to sender j along
        ``graph.edge_index``, and the graph. Implemented by each model."""
        raise NotImplementedError

    def _check_volume(self, graph: Graph, cell: Tensor) -> Tensor:
        volume = torch.linalg.det(cell).abs()
        if bool((volume < 1e-9).any()):
            g = int(torch.nonzero(volume < 1e-9)[0, 0])
            raise ValueError(
                f"stress requested for system {g} of the batch, whose cell has zero volume "
                "(a free molecule has no stress; pass stress=False)"
            )
        return volume

    def forward(self, graph: Graph, forces: bool = True, stress: bool = False) -> dict[str, Tensor]:
        """Energy (G,) float64 eV, and on request forces (N, 3) eV/Å and stress (G, 3, 3)
        eV/Å³ of the systems in ``graph`` (see :mod:`simsurrogate.graph.atoms`).

        Gradients stay in the graph in training mode (force and stress losses train the
        weights) and are detached in eval mode.
        """
        positions = graph.nodes["positions"]
        cell = graph.globals["cell"].to(positions.dtype)
        batch = graph.node_batch
        species = self.species(graph.nodes["numbers"], graph)
        volume = self._check_volume(graph, cell) if stress else None
        inputs: list[Tensor] = []
        with torch.set_grad_enabled(torch.is_grad_enabled() or forces or stress):
            if forces:
                positions = positions.detach().requires_grad_(True)
                inputs.append(positions)
            if stress:
                displacement = torch.zeros_like(cell, requires_grad=True)
                inputs.append(displacement)
                strain = 0.5 * (displacement + displacement.transpose(1, 2))
                positions = positions + torch.einsum("na,nab->nb", positions, strain[batch])
                cell = cell + torch.bmm(cell, strain)
            j, i = graph.edge_index
            vectors = edge_vectors(positions, i, j, graph.edges["shifts"], cell[batch[i]])
            e_atom = self.atomic_energies(species, vectors, graph).to(torch.float64)
            e_atom = e_atom * self.scale + self.reference_energies[species]
            energy = torch.zeros(graph.num_graphs, dtype=torch.float64, device=positions.device)
            energy = energy.index_add(0, batch, e_atom)
            out = {"energy": energy}
            if inputs:
                grads = torch.autograd.grad(
                    energy.sum(), inputs, create_graph=self.training, allow_unused=True
                )
                if forces:
                    g = grads[0]
                    out["forces"] = -g if g is not None else torch.zeros_like(positions)
                if stress:
                    g = grads[-1]
                    if g is None:
                        g = torch.zeros_like(cell)
                    out["stress"] = g / volume.view(-1, 1, 1)
        if not self.training:
            out = {k: v.detach() for k, v in out.items()}
        return out
