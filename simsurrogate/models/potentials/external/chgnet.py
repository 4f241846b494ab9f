"""CHGNet (``chgnet``, Deng et al., 2023) as a :class:`Potential`.

CHGNet's network, with the weights bundled in its wheel (no download), run on *our* graph and
pair vectors so that energy, forces and stress come from the shared head by autograd. CHGNet
works on two graphs, which :meth:`CHGNetPotential.atomic_energies` derives from ours:

* the atom graph: every directed pair within 6 Å (our graph; pairs of a graph built with a
  larger radius are dropped, since CHGNet's radial bases do not vanish beyond it); CHGNet
  keeps one feature per *undirected* bond, so each edge is paired with its reverse (j -> i
  with the opposite cell shift) and both map to one bond;
* the bond graph: every ordered pair of distinct edges that share their centre (receiver)
  atom and are both shorter than 3 Å (the angles), as CHGNet's own graph converter lists them.

Only summation order differs from CHGNet's own evaluation, so energies, forces and stresses
agree to float32 precision. The bond graph's membership (bonds under 3 Å) is decided on the
detached lengths; CHGNet's bond-graph radial basis vanishes smoothly at 3 Å, so the energy
stays continuous as a bond crosses it, as in CHGNet itself.

Mapping onto the parts fine-tuning selects: ``embedding`` (``nn.Embedding`` rows of CHGNet's
element embedding for ``elements``), ``interactions`` (one ``nn.ModuleDict`` per message-passing
step: ``atom_conv``, and except in the last one ``bond_conv`` and ``angle_update``) and
``readout`` (CHGNet's layer norm and site-energy MLP). The radial and angular encoders sit
beside them (group "other"). CHGNet's layers are ``nn.Linear``, so low-rank adapters apply.

CHGNet's composition model (``AtomRef``, a per-element linear energy) is exactly a set of
reference energies, so it becomes ``reference_energies`` (and ``scale`` is one); a fine-tuning
refit adds its least-squares correction to them. CHGNet predicts magnetic moments too; that
head is not carried over.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from importlib.metadata import version

import torch
from torch import Tensor, nn

from simsurrogate.graph import Graph
from simsurrogate.models.potentials.base import (
    Potential,
    UnknownElementError,
    element_symbol,
)

__all__ = ["CHGNetPotential", "undirected_bonds", "bond_pairs"]


@functools.cache
def _bundled_network(model_name: str) -> nn.Module:
    """CHGNet as its package loads it (float32, CPU), loaded once per process and only
    ever copied."""
    try:
        from chgnet.model import CHGNet
    except ImportError as err:
        raise ImportError(
            "CHGNetPotential needs the chgnet package: pip install 'simsurrogate[chgnet]' "
            "(with the torch constraint)"
        ) from err
    try:
        return CHGNet.load(model_name=model_name, use_device="cpu", verbose=False).eval()
    except Exception as err:  # chgnet raises bare ValueError/FileNotFoundError
        raise ValueError(
            f"CHGNet model {model_name!r} could not be loaded from the chgnet package ({err}); "
            "bundled models include '0.3.0' and '0.2.0'"
        ) from err


def undirected_bonds(edge_index: Tensor, shifts: Tensor, n_nodes: int) -> tuple[Tensor, Tensor]:
    """Pair every directed edge with its reverse: returns ``bond`` (E,), the undirected bond
    of each edge (numbered 0..B-1), and ``representative`` (B,), one edge of each bond.

    ``edge_index`` (2, E) holds (sender j, receiver i), ``shifts`` (E, 3) the integer cell
    shifts; the reverse of edge (j, i, s) is (i, j, -s), and an edge without one (a half
    neighbour list) is an error.
    """
    j, i = edge_index
    shifts = shifts.round().to(torch.long)
    n = max(n_nodes, 1)
    width = int(shifts.abs().max()) * 2 + 1 if shifts.numel() else 1

    def key(a: Tensor, b: Tensor, s: Tensor) -> Tensor:
        s = s + width // 2
        return ((a * n + b) * width + s[:, 0]) * width * width + s[:, 1] * width + s[:, 2]

    forward, backward = key(i, j, shifts), key(j, i, -shifts)
    order = torch.argsort(forward)
    position = torch.searchsorted(forward[order], backward).clamp(max=max(len(order) - 1, 0))
    reverse = order[position]
    if len(order) and not bool((forward[reverse] == backward).all()):
        raise ValueError(
            "CHGNet needs a full neighbour list (every edge with its reverse); this graph has "
            "edges without a reverse"
        )
    canonical = torch.minimum(torch.arange(len(order), device=order.device), reverse)
    representative, bond = torch.unique(canonical, return_inverse=True)
    return bond, representative


def bond_pairs(receivers: Tensor, short: Tensor) -> tuple[Tensor, Tensor]:
    """Ordered pairs (d, d') of distinct edges with the same receiver, both ``short``
    (CHGNet's angles): returns the two edge indices (A,) each."""
    edges = torch.nonzero(short).squeeze(-1)
    centre = receivers[edges]
    order = torch.argsort(centre, stable=True)
    edges, centre = edges[order], centre[order]
    counts = torch.bincount(centre, minlength=int(receivers.max()) + 1 if len(receivers) else 0)
    starts = torch.cumsum(counts, 0) - counts
    size = counts[centre]  # pairs each edge starts: one per edge of its group
    first = torch.repeat_interleave(torch.arange(len(edges), device=edges.device), size)
    offset = torch.arange(len(first), device=edges.device) - torch.repeat_interleave(
        torch.cumsum(size, 0) - size, size
    )
    second = starts[centre[first]] + offset
    keep = second != first
    return edges[first[keep]], edges[second[keep]]


class CHGNetPotential(Potential):
    """A bundled CHGNet model run on this project's graphs (see the module docstring).

    Args:
        elements: atomic numbers to keep (rows of ``embedding``, in this order); CHGNet's 94
            elements (H to Pu) when None.
        model_name: the pretrained model as chgnet names it ("0.3.0", "0.2.0"); its weights
            come from the chgnet package, so a checkpoint of this class rebuilds from these
            two arguments plus its state dict.

    The cutoff is CHGNet's atom-graph cutoff (6 Å); the bond graph uses its 3 Å.
    """

    def __init__(self, elements: Sequence[int] | None = None, model_name: str = "0.3.0") -> None:
        network = copy.deepcopy(_bundled_network(model_name))
        n_known = network.atom_embedding.embedding.num_embeddings  # elements 1..n_known
        if elements is None:
            elements = range(1, n_known + 1)
        missing = [int(z) for z in elements if not 1 <= int(z) <= n_known]
        if missing:
            names = ", ".join(f"{element_symbol(z)} (Z={z})" for z in missing)
            raise UnknownElementError(
                f"CHGNet model {model_name!r} was not trained on {names}; it knows elements "
                f"H to {element_symbol(n_known)} (Z=1..{n_known})"
            )
        converter = network.graph_converter
        super().__init__(elements, float(converter.atom_graph_cutoff))
        self.model_name = model_name
        self.bond_cutoff = float(converter.bond_graph_cutoff)
        if not network.mlp_first or network.composition_model is None:
            raise NotImplementedError(
                f"CHGNet model {model_name!r} does not predict site energies (mlp_first) with "
                "a composition model; only such models map onto per-atom energies"
            )
        rows = torch.tensor(self.elements) - 1
        self.embedding = nn.Embedding(
            self.num_elements, network.atom_embedding.embedding.embedding_dim
        )
        with torch.no_grad():
            self.embedding.weight.copy_(network.atom_embedding.embedding.weight[rows])
            reference = network.composition_model.fc.weight[0, rows].to(torch.float64)
        self.set_reference_energies(reference)

        self.bond_basis_expansion = network.bond_basis_expansion
        self.bond_embedding = network.bond_embedding
        self.bond_weights_ag = network.bond_weights_ag
        self.bond_weights_bg = network.bond_weights_bg
        self.angle_basis_expansion = network.angle_basis_expansion
        self.angle_embedding = network.angle_embedding
        layers = []
        for k, atom_conv in enumerate(network.atom_conv_layers):
            layer = {"atom_conv": atom_conv}
            if k < len(network.atom_conv_layers) - 1:
                layer["bond_conv"] = network.bond_conv_layers[k]
                layer["angle_update"] = network.angle_layers[k]
            layers.append(nn.ModuleDict(layer))
        self.interactions = nn.ModuleList(layers)
        norm = network.readout_norm if network.readout_norm is not None else nn.Identity()
        self.readout = nn.Sequential(norm, network.mlp)
        self.train()

    @property
    def source(self) -> str:
        """Where the pretrained weights come from (recorded in exported checkpoints)."""
        return f"chgnet {version('chgnet')}, bundled model {self.model_name}"

    def atomic_energies(self, species: Tensor, vectors: Tensor, graph: Graph) -> Tensor:
        """Per-atom (site) energy (N,) eV in the model's dtype from embedding rows (N,) and
        pair vectors (E, 3) Å from receiver i to sender j (cast to the model's dtype)."""
        dtype = self.embedding.weight.dtype
        # CHGNet's radial bases do not vanish beyond the cutoff: drop longer pairs (a graph
        # may be built with a larger radius, e.g. an MD neighbour list with skin)
        inside = vectors.detach().norm(dim=-1) < self.cutoff
        vectors, edge_index = vectors[inside].to(dtype), graph.edge_index[:, inside]
        j, i = edge_index
        bond, representative = undirected_bonds(
            edge_index, graph.edges["shifts"][inside], graph.num_nodes
        )
        length = vectors.norm(dim=-1)
        # CHGNet's bond vector points from the neighbour to the centre: -vectors / length
        unit = -vectors / length.unsqueeze(-1)
        bond_length = length[representative]
        basis = self.bond_basis_expansion
        bases_ag = basis.rbf_expansion_ag(bond_length)
        bases_bg = basis.rbf_expansion_bg(bond_length)
        left, right = bond_pairs(i, length.detach() < self.bond_cutoff)
        bond_graph = torch.stack([i[left], bond[left], bond[right]], dim=1)
        atom_graph = torch.stack([i, j], dim=1)

        atoms = self.embedding(species)
        bonds = self.bond_embedding(bases_ag)
        weights_ag = self.bond_weights_ag(bases_ag)
        weights_bg = self.bond_weights_bg(bases_bg)
        angles = None
        if len(left):
            angles = self.angle_embedding(self.angle_basis_expansion(unit[left], unit[right]))
        for layer in self.interactions:
            atoms = layer["atom_conv"](
                atom_feas=atoms,
                bond_feas=bonds,
                bond_weights=weights_ag,
                atom_graph=atom_graph,
                directed2undirected=bond,
            )
            if angles is not None and "bond_conv" in layer:
                bonds = layer["bond_conv"](
                    atom_feas=atoms,
                    bond_feas=bonds,
                    bond_weights=weights_bg,
                    angle_feas=angles,
                    bond_graph=bond_graph,
                )
                angles = layer["angle_update"](
                    atom_feas=atoms, bond_feas=bonds, angle_feas=angles, bond_graph=bond_graph
                )
        return self.readout(atoms).squeeze(-1)

    def extra_repr(self) -> str:
        return f"model_name={self.model_name!r}, bond_cutoff={self.bond_cutoff}"
