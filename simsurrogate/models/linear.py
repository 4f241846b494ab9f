"""Linear layers whose float32 products on the CPU run through oneDNN instead of MKL.

Why: PyTorch sends float32 CPU matrix products to MKL, which runs its AVX2 kernels on AMD
processors even where they have AVX-512; oneDNN, also inside every PyTorch build, picks its
AVX-512 kernels. On this project's machines (AMD EPYC with AVX-512) a (8762, 128) x (128, 128)
product runs at about 95 GFLOP/s through MKL and 160-230 through oneDNN on one core, and the
products are most of a MeshGraphNet training step (``benchmarks/mgn_speed.py``). The results
are IEEE float32 products, equal to MKL's up to the order of summation.

:func:`linear` takes this path only for float32 CPU tensors outside autocast (where PyTorch
already sends bfloat16 products to oneDNN) and falls back to :func:`torch.nn.functional.linear`
everywhere else (GPU, float64, bfloat16, PyTorch builds without oneDNN). Its backward pass is
not differentiable again, so it serves models trained on first derivatives (mesh models), not
potentials whose forces enter the loss. ``SIMSURROGATE_ONEDNN=0`` in the environment turns it
off, to measure what it brings.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

__all__ = ["Linear", "linear", "onednn_enabled"]


def _pointwise_linear() -> object | None:
    """``torch.ops.mkldnn._linear_pointwise`` (dense oneDNN inner product), if this build has it."""
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._linear_pointwise
    except (AttributeError, RuntimeError):
        return None


_OP = _pointwise_linear()


def onednn_enabled() -> bool:
    """Whether :func:`linear` may use oneDNN (op present, ``SIMSURROGATE_ONEDNN`` not ``0``)."""
    return _OP is not None and os.environ.get("SIMSURROGATE_ONEDNN", "1") != "0"


def _product(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``x @ weight.T + bias`` by oneDNN; x (M, K), weight (N, K), bias (N,) or None.

    Each matrix must be contiguous or the transpose of a contiguous one: for any other
    strides (a column slice) oneDNN falls back to a reference kernel about 1000x slower, so
    such operands are copied first."""
    return _OP(_dense(x), _dense(weight), bias, "none", [], "")  # type: ignore[operator]


def _dense(m: Tensor) -> Tensor:
    """``m`` (2-D) if it or its transpose is contiguous, else a contiguous copy."""
    return m if m.is_contiguous() or m.t().is_contiguous() else m.contiguous()


class _OneDnnLinear(torch.autograd.Function):
    """y = x W^T + b with every product (forward, dx, dW) in oneDNN."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None  # type: ignore[attr-defined]
        return _product(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(
        ctx: FunctionCtx, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        x, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        need_x, need_w, need_b = ctx.needs_input_grad  # type: ignore[attr-defined]
        grad_x = _product(grad, weight.t(), None) if need_x else None
        # dW = grad^T x; oneDNN reads a transposed weight operand in place but copies a
        # transposed source, so the source copy is made here once, contiguously
        grad_w = _product(grad.t().contiguous(), x.t(), None) if need_w else None
        grad_b = grad.sum(0) if need_b and ctx.has_bias else None  # type: ignore[attr-defined]
        return grad_x, grad_w, grad_b


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``torch.nn.functional.linear`` (x (..., K), weight (N, K), bias (N,) -> (..., N)), by
    oneDNN for float32 CPU tensors outside autocast."""
    if not (
        x.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and x.numel() > 0
        and not torch.is_autocast_enabled("cpu")
        and onednn_enabled()
    ):
        return nn.functional.linear(x, weight, bias)
    if x.dim() == 2:  # no view of the output: an in-place op after it (ReLU) stays cheap
        return _OneDnnLinear.apply(x, weight, bias)
    out = _OneDnnLinear.apply(x.reshape(-1, x.shape[-1]), weight, bias)
    return out.reshape(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """:class:`torch.nn.Linear` computed by :func:`linear`: same parameters and state dict."""

    def forward(self, x: Tensor) -> Tensor:
        return linear(x, self.weight, self.bias)
