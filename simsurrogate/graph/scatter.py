"""Scatter reductions along dim 0 in plain torch (autograd-friendly, CPU and CUDA).

These are the aggregation primitives of message passing: edge messages ``src`` of shape
``(E, ...)`` are reduced into per-node bins ``out`` of shape ``(dim_size, ...)`` by
``index`` of shape ``(E,)``, usually the receiver row of ``edge_index``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["scatter_sum", "scatter_mean", "scatter_max"]


def _check(src: Tensor, index: Tensor, dim_size: int | None) -> int:
    """Validate shapes and return the number of output bins."""
    if index.dim() != 1:
        raise ValueError(f"scatter: index must be 1-D (E,), got shape {tuple(index.shape)}")
    if src.dim() == 0 or src.shape[0] != index.shape[0]:
        raise ValueError(
            f"scatter: src leading dim must match index length {index.shape[0]}, "
            f"got src shape {tuple(src.shape)}"
        )
    if dim_size is None:
        return int(index.max()) + 1 if index.numel() > 0 else 0
    return int(dim_size)


def _expand(index: Tensor, src: Tensor) -> Tensor:
    """Broadcast ``index`` (E,) to the shape of ``src`` (E, ...)."""
    return index.view(-1, *([1] * (src.dim() - 1))).expand_as(src)


def scatter_sum(src: Tensor, index: Tensor, dim_size: int | None = None) -> Tensor:
    """Sum ``src`` (E, ...) into ``dim_size`` bins: ``out[index[e]] += src[e]``.

    Returns ``(dim_size, ...)`` with the dtype of ``src``; ``dim_size`` defaults to
    ``index.max() + 1`` (a device sync on CUDA, so pass it in hot loops).
    """
    size = _check(src, index, dim_size)
    out = src.new_zeros((size, *src.shape[1:]))
    return out.index_add(0, index, src)


def scatter_mean(src: Tensor, index: Tensor, dim_size: int | None = None) -> Tensor:
    """Mean of ``src`` (E, ...) per bin, shape ``(dim_size, ...)``; empty bins give 0.

    Integer inputs use floor division so the dtype is kept.
    """
    size = _check(src, index, dim_size)
    total = scatter_sum(src, index, size)
    count = torch.bincount(index, minlength=size).clamp_(min=1)
    count = count.view(-1, *([1] * (src.dim() - 1))).to(src.dtype)
    if src.is_floating_point() or src.is_complex():
        return total / count
    return torch.div(total, count, rounding_mode="floor")


def scatter_max(src: Tensor, index: Tensor, dim_size: int | None = None) -> Tensor:
    """Elementwise maximum of ``src`` (E, ...) per bin, shape ``(dim_size, ...)``.

    Values only (no argmax); empty bins give 0. Gradients go to the maximal entries
    (split evenly between ties, as in ``torch.scatter_reduce``).
    """
    size = _check(src, index, dim_size)
    out = src.new_zeros((size, *src.shape[1:]))
    return out.scatter_reduce(0, _expand(index, src), src, reduce="amax", include_self=False)
