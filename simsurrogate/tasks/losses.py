"""Losses for fields on grids, per sample and relative, as the neural-operator papers report."""

from __future__ import annotations

import torch
from torch import Tensor


def relative_l2(pred: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of ||pred - target||_2 / ||target||_2; tensors (B, C, *spatial)."""
    err = (pred - target).flatten(1).norm(dim=1)
    return (err / target.flatten(1).norm(dim=1).clamp(min=1e-12)).mean()


def _sq_h1(u: Tensor) -> Tensor:
    """Per-sample squared discrete H1 norm on the unit cube: ||u||^2 + sum_d ||D_d u||^2.

    Derivatives are forward differences with spacing 1/n along each spatial dim, and the sums
    are grid means, so the value approximates the continuous norm at any resolution.
    """
    total = (u * u).flatten(1).mean(dim=1)
    for dim in range(2, u.dim()):
        du = torch.diff(u, dim=dim) * u.shape[dim]
        total = total + (du * du).flatten(1).mean(dim=1)
    return total


def relative_h1(pred: Tensor, target: Tensor) -> Tensor:
    """Mean over the batch of |pred - target|_H1 / |target|_H1; tensors (B, C, *spatial)."""
    return (_sq_h1(pred - target) / _sq_h1(target).clamp(min=1e-24)).sqrt().mean()


def vrmse(pred: Tensor, target: Tensor, eps: float = 1e-7, unbiased: bool = False) -> Tensor:
    """The Well's variance-scaled RMSE, averaged over samples and channels.

    Per sample and channel: sqrt(<(pred - target)^2> / (<(target - <target>)^2> + eps)), with
    <.> the mean over the spatial grid; tensors (B, C, *spatial). A value of 1 means no better
    than predicting the target's spatial mean. This is the paper's definition; the_well's code
    (``the_well.benchmark.metrics.VRMSE``, 1.2.0) divides by ``torch.std(target) ** 2``, the
    variance with Bessel's correction (N - 1 for N grid points), which ``unbiased=True`` gives:
    then the two agree to float32 rounding (``benchmarks/well_interop.py``); by default the
    value is sqrt(N / (N - 1)) times theirs when eps is negligible.
    """
    err = ((pred - target) ** 2).flatten(2).mean(dim=2)
    var = target.flatten(2).var(dim=2, unbiased=unbiased)
    return (err / (var + eps)).sqrt().mean()
