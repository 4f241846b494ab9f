"""SevenNet foundation potentials (``sevenn``, Park et al., 2024) as a :class:`Potential`.

The network is SevenNet's own, with the weights bundled in its wheel (no download): a
NequIP-style e3nn model (SevenNet-0: 5 convolutions, 128 channels, lmax 2, cutoff 5 Å, 89
elements, trained on MPtrj). :class:`SevenNetPotential` runs its modules on *our* graph and
pair vectors, so energy, forces and stress come from the shared head by autograd, and the model
plugs unchanged into ``PotentialTask``, the ASE calculator and the MD engine.

Mapping of SevenNet's modules onto the parts fine-tuning selects:

* ``embedding``: ``nn.Embedding`` over ``elements``; row k is SevenNet's one-hot linear map
  (``onehot_to_feature_x``) applied to element ``elements[k]``, so it is the same function
  restricted to the chosen elements;
* ``edge_embedding``: SevenNet's edge module (Bessel basis with trainable frequencies times
  the XPLOR switching function, and the edge spherical harmonics); it trains with "other";
* ``interactions``: one ``nn.Sequential`` per convolution layer, holding SevenNet's modules
  of that layer (self-connection, linear maps, convolution, gate) under their own names;
* ``readout``: :class:`SevenNetReadout`, SevenNet's two scalar linear maps as ``nn.Linear``
  (so low-rank adapters apply to them) and its per-element scale and shift as buffers.

SevenNet's network output already is the atom's total energy (its per-element shift is part of
the readout), so ``reference_energies`` start at zero and ``scale`` at one. A fine-tuning
``reference_energies: refit`` then adds the least-squares correction of the energy residual on
the new data to these zeros. A plain ``PotentialTask(model=...)`` run must keep both
(``reference_energies: keep``, ``scale: keep``; a ``finetune`` block does so itself), since
the from-scratch initialisation would overwrite what the network already predicts.

SevenNet keeps a few tensors fixed (the convolutions' neighbour-count divisors, the per-element
scale and shift); they are buffers here, so no fine-tuning mode can make them train.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any

import torch
from torch import Tensor, nn

from simsurrogate.graph import Graph
from simsurrogate.models.potentials._e3nn import (
    copy_fx_graphs_as_graphs,
    deepcopy_keeping_fx_graphs,
    exact_wigner_3j,
    exact_wigner_3j_after_load,
)
from simsurrogate.models.potentials.base import (
    Potential,
    UnknownElementError,
    element_symbol,
)

__all__ = ["SevenNetPotential", "SevenNetReadout"]

# SevenNet's module names around the numbered convolution layers "<k>_<name>"
_HEAD = ("edge_embedding", "onehot_idx_to_onehot", "onehot_to_feature_x")
_READOUT = ("reduce_input_to_hidden", "reduce_hidden_to_energy", "rescale_atomic_energy")
_TAIL = ("reduce_total_enegy", "force_output")  # sic: SevenNet's spelling; replaced by our head
_LAYER = (
    "self_connection_intro",
    "self_interaction_1",
    "convolution",
    "self_interaction_2",
    "self_connection_outro",
    "equivariant_gate",
)


def _import_sevenn() -> Any:
    """``sevenn.util``, or an error saying how to install the optional extra."""
    try:
        import sevenn.util
    except ImportError as err:
        raise ImportError(
            "SevenNetPotential needs the sevenn package: pip install 'simsurrogate[sevenn]' "
            "(with the torch constraint)"
        ) from err
    return sevenn.util


@functools.cache
def _load_sevennet(model_name: str) -> Any:
    """SevenNet's checkpoint object for a model bundled in the sevenn wheel (no download)."""
    util = _import_sevenn()
    try:
        return util.load_checkpoint(model_name)
    except Exception as err:  # sevenn raises bare ValueError/FileNotFoundError
        raise ValueError(
            f"SevenNet model {model_name!r} could not be loaded from the sevenn package "
            f"({err}); bundled models include '7net-0' and '7net-l3i5'"
        ) from err


@functools.cache
def _bundled_network(model_name: str) -> nn.Module:
    """SevenNet's network as its package builds it (float32, eval mode), built once per
    process (~1 s of e3nn code generation) and only ever copied."""
    return _load_sevennet(model_name).build_model().eval()


def _freeze_as_buffers(module: nn.Module) -> None:
    """Turn every parameter SevenNet keeps fixed (``requires_grad=False``) into a buffer of the
    same name, so state-dict keys stay and no fine-tuning mode can unfreeze it."""
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is not None and not param.requires_grad:
                del sub._parameters[name]
                sub.register_buffer(name, param.detach().clone())


def _scalar_linear(irreps_linear: nn.Module, what: str) -> nn.Linear:
    """SevenNet's ``IrrepsLinear`` between scalar irreps (``n x 0e``) as an equal
    ``nn.Linear``: its effective matrix (e3nn's path normalisation folded in) is read off by
    applying it to the identity."""
    linear = irreps_linear.linear
    if any(ir.l != 0 for _, ir in linear.irreps_in) or any(
        ir.l != 0 for _, ir in linear.irreps_out
    ):
        raise NotImplementedError(
            f"SevenNet readout layer {what} maps {linear.irreps_in} -> {linear.irreps_out}; only "
            "scalar readouts are supported"
        )
    n_in, n_out = linear.irreps_in.dim, linear.irreps_out.dim
    with torch.no_grad():
        bias = linear(torch.zeros(1, n_in)).squeeze(0)
        matrix = linear(torch.eye(n_in)) - bias
    has_bias = bool(bias.abs().max() > 0)
    out = nn.Linear(n_in, n_out, bias=has_bias)
    with torch.no_grad():
        out.weight.copy_(matrix.T)
        if has_bias:
            out.bias.copy_(bias)
    return out


class SevenNetReadout(nn.Module):
    """SevenNet's readout: per-atom energy (N,) eV from scalar features (N, channels).

    ``e_i = scale[s_i] * out(hidden(x_i)) + shift[s_i]`` with ``hidden`` and ``out`` plain
    ``nn.Linear`` maps (no activation between them, as in SevenNet-0) and ``scale``/``shift``
    (n_elements,) per-element buffers, indexed by the embedding rows ``s_i``.
    """

    def __init__(self, hidden: nn.Linear, out: nn.Linear, scale: Tensor, shift: Tensor) -> None:
        super().__init__()
        self.hidden = hidden
        self.out = out
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())

    def forward(self, x: Tensor, species: Tensor) -> Tensor:
        energy = self.out(self.hidden(x)).squeeze(-1)
        return energy * self.scale[species] + self.shift[species]


class SevenNetPotential(Potential):
    """A bundled SevenNet model run on this project's graphs (see the module docstring).

    Args:
        elements: atomic numbers to keep (rows of ``embedding``, in this order); all the
            model's elements (89 for SevenNet-0) when None. Elements the model was not trained
            on are an error naming them.
        model_name: the pretrained model as sevenn names it ("7net-0", "7net-l3i5");
            its weights come from the sevenn package, so a checkpoint of this class rebuilds
            from these two arguments plus its state dict.

    Built in float32 like SevenNet; ``.double()`` gives a float64 copy (with exact Wigner 3j
    coefficients). The cutoff is the model's (5 Å for SevenNet-0): graphs must be built with it.
    """

    def __init__(self, elements: Sequence[int] | None = None, model_name: str = "7net-0") -> None:
        checkpoint = _load_sevennet(model_name)  # a clear error without the sevenn extra
        from sevenn import _keys as key

        config = checkpoint.config
        type_map: dict[int, int] = dict(config[key.TYPE_MAP])
        if elements is None:
            elements = sorted(type_map)
        missing = [int(z) for z in elements if int(z) not in type_map]
        if missing:
            names = ", ".join(f"{element_symbol(z)} (Z={z})" for z in missing)
            raise UnknownElementError(
                f"SevenNet model {model_name!r} was not trained on {names}; it knows "
                f"{len(type_map)} elements: "
                + ", ".join(element_symbol(z) for z in sorted(type_map))
            )
        super().__init__(elements, float(config[key.CUTOFF]))
        self.model_name = model_name
        network, memo = _bundled_network(model_name), {}
        with copy_fx_graphs_as_graphs(network, memo):
            network = copy.deepcopy(network, memo)
        modules: OrderedDict[str, nn.Module] = OrderedDict(network._modules)
        n_layers = int(config[key.NUM_CONVOLUTION])
        expected = [
            *_HEAD,
            *(f"{k}_{name}" for k in range(n_layers) for name in _LAYER),
            *_READOUT,
            *_TAIL,
        ]
        if list(modules) != expected:
            unexpected = [n for n in modules if n not in expected]
            absent = [n for n in expected if n not in modules]
            raise NotImplementedError(
                f"SevenNet model {model_name!r} has a layout this adapter does not map "
                f"(unexpected modules {unexpected}, missing {absent}); supported: single-"
                "fidelity NequIP-style models such as '7net-0' and '7net-l3i5'"
            )
        self._keys = {
            "x": key.NODE_FEATURE,
            "vec": key.EDGE_VEC,
            "index": key.EDGE_IDX,
        }
        rows = torch.tensor([type_map[z] for z in self.elements])

        self.edge_embedding = modules["edge_embedding"]
        to_features = modules["onehot_to_feature_x"].linear
        with torch.no_grad():
            one_hot = nn.functional.one_hot(rows, len(type_map)).to(torch.float32)
            rows_weight = to_features(one_hot)
        self.embedding = nn.Embedding(self.num_elements, rows_weight.shape[1])
        with torch.no_grad():
            self.embedding.weight.copy_(rows_weight)

        self.interactions = nn.ModuleList(
            nn.Sequential(OrderedDict((name, modules[f"{k}_{name}"]) for name in _LAYER))
            for k in range(n_layers)
        )
        rescale = modules["rescale_atomic_energy"]
        self.readout = SevenNetReadout(
            _scalar_linear(modules["reduce_input_to_hidden"], "reduce_input_to_hidden"),
            _scalar_linear(modules["reduce_hidden_to_energy"], "reduce_hidden_to_energy"),
            rescale.scale.detach()[rows],
            rescale.shift.detach()[rows],
        )
        _freeze_as_buffers(self)
        exact_wigner_3j(self)
        self.register_load_state_dict_post_hook(exact_wigner_3j_after_load)
        self.train()

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> SevenNetPotential:
        super()._apply(fn, recurse)
        exact_wigner_3j(self)
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> SevenNetPotential:
        """A copy whose e3nn kernels are the same fx graphs (see
        :func:`~simsurrogate.models.potentials._e3nn.copy_fx_graphs_as_graphs`): same
        state-dict keys, exact ``.double()``."""
        return deepcopy_keeping_fx_graphs(self, memo)

    @property
    def source(self) -> str:
        """Where the pretrained weights come from (recorded in exported checkpoints)."""
        return f"sevenn {version('sevenn')}, bundled model {self.model_name}"

    def atomic_energies(self, species: Tensor, vectors: Tensor, graph: Graph) -> Tensor:
        """Per-atom energy (N,) eV in the model's dtype from embedding rows (N,) and pair
        vectors (E, 3) Å from receiver i to sender j (cast to the model's dtype).

        SevenNet's edge index has the receiver in row 0 and the sender in row 1, and its
        edge vector points from receiver to sender, as ours does; only the rows swap.
        """
        dtype = self.embedding.weight.dtype
        # SevenNet's radial basis and XPLOR switch do not vanish beyond the cutoff: drop
        # longer pairs (a graph may be built with a larger radius, e.g. an MD list with skin)
        inside = vectors.detach().norm(dim=-1) < self.cutoff
        data: dict[str, Tensor] = {
            self._keys["x"]: self.embedding(species),
            self._keys["vec"]: vectors[inside].to(dtype),
            self._keys["index"]: graph.edge_index[:, inside].flip(0),
        }
        data = self.edge_embedding(data)
        for layer in self.interactions:
            data = layer(data)
        return self.readout(data[self._keys["x"]], species)
