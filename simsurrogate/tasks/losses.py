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
