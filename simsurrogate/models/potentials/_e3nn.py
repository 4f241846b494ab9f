"""Helpers for modules built from e3nn's generated (torch.fx) code."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any, TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def exact_wigner_3j(module: nn.Module) -> None:
    """Recompute e3nn's Wigner 3j buffers (``_w3j_<l1>_<l2>_<l3>`` in the tensor products'
    generated code) below ``module`` in float64 and round them once to the buffer's dtype.

    A float32 model cast with ``.double()``, a float64 model loading float32 weights, or
    weights shipped float32-rounded (SevenNet) would otherwise keep float32-rounded
    coefficients, and equivariance would stop at ~1e-7 to 1e-9 instead of float64 round-off.
    """
    from e3nn import o3

    for sub in module.modules():
        for name, buffer in sub._buffers.items():
            if name.startswith("_w3j_") and buffer is not None:
                l1, l2, l3 = (int(v) for v in name.removeprefix("_w3j_").split("_"))
                exact = o3.wigner_3j(l1, l2, l3, dtype=torch.float64, device=buffer.device)
                sub._buffers[name] = exact.to(buffer.dtype)


def exact_wigner_3j_after_load(module: nn.Module, incompatible_keys: object) -> None:
    """``load_state_dict`` post-hook: loaded Wigner 3j buffers may be float32-rounded."""
    exact_wigner_3j(module)


@contextlib.contextmanager
def copy_fx_graphs_as_graphs(root: nn.Module, memo: dict[int, Any]) -> Iterator[None]:
    """Deep copies of ``root`` made inside this context (with ``memo``) copy e3nn's generated
    kernels as the same fx graphs.

    e3nn's modules deep-copy their generated code by pickling it, and torch.fx re-traces
    pickled code with the Wigner 3j buffers folded into new ``_tensor_constant`` tensors: the
    copy's state dict gains keys (so loading it into a fresh model, as the training task's
    weight EMA does, fails) and ``.double()`` no longer makes those coefficients exact. With
    e3nn's ``__codegen__`` list hidden, ``deepcopy`` uses ``fx.GraphModule.__deepcopy__``,
    which keeps graph and buffers; the list is put back on the originals and the copies.
    """
    owners = [m for m in root.modules() if "__codegen__" in m.__dict__]
    hidden = {id(m): m.__dict__.pop("__codegen__") for m in owners}
    try:
        yield
    finally:
        for module in owners:
            module.__dict__["__codegen__"] = hidden[id(module)]
        for key, names in hidden.items():
            if key in memo:
                memo[key].__dict__["__codegen__"] = list(names)


def deepcopy_keeping_fx_graphs(module: M, memo: dict[int, Any]) -> M:
    """``copy.deepcopy`` of ``module`` under :func:`copy_fx_graphs_as_graphs`, for a module's
    ``__deepcopy__`` (weight EMA deep-copies the model)."""
    with copy_fx_graphs_as_graphs(module, memo):
        clone = type(module).__new__(type(module))
        memo[id(module)] = clone
        clone.__setstate__(copy.deepcopy(module.__dict__, memo))
    return clone
