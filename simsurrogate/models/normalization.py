"""Online feature normalisation whose statistics live in the model's state dict.

As in MeshGraphNets, statistics are accumulated from the training batches themselves (no
separate pass over the data) up to ``max_accumulations`` batches, then frozen. They are
buffers, so they are saved in every checkpoint and come back with
:func:`simsurrogate.load`. Under DDP the per-batch sums are all-reduced, so every rank holds
the same statistics.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


class Normalizer(nn.Module):
    """Standardise the last dimension (size ``size``) with running mean and std.

    Accumulates while the module is in training mode (or when ``accumulate=True`` is passed);
    sums are kept in float64 so long runs do not lose precision.
    """

    def __init__(self, size: int, max_accumulations: int = 1_000_000, eps: float = 1e-8) -> None:
        super().__init__()
        self.size = size
        self.max_accumulations = max_accumulations
        self.eps = eps
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("accumulations", torch.zeros((), dtype=torch.float64))
        self.register_buffer("total", torch.zeros(size, dtype=torch.float64))
        self.register_buffer("total_sq", torch.zeros(size, dtype=torch.float64))

    @property
    def mean(self) -> Tensor:
        """Running mean (size,), float64."""
        return self.total / self.count.clamp(min=1)

    @property
    def std(self) -> Tensor:
        """Running standard deviation (size,), float64, at least ``eps``."""
        var = self.total_sq / self.count.clamp(min=1) - self.mean**2
        return var.clamp(min=0).sqrt().clamp(min=self.eps)

    @torch.no_grad()
    def _accumulate(self, x: Tensor) -> None:
        flat = x.detach().reshape(-1, self.size).double()
        stats = torch.cat([flat.new_tensor([flat.shape[0]]), flat.sum(0), (flat * flat).sum(0)])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        self.count += stats[0]
        self.total += stats[1 : 1 + self.size]
        self.total_sq += stats[1 + self.size :]
        self.accumulations += 1

    def forward(self, x: Tensor, accumulate: bool | None = None) -> Tensor:
        """Normalised ``x`` (..., size); updates the statistics first when accumulating."""
        if x.shape[-1] != self.size:
            raise ValueError(f"Normalizer of size {self.size} got features of size {x.shape[-1]}")
        accumulate = self.training if accumulate is None else accumulate
        if accumulate and self.accumulations < self.max_accumulations:
            self._accumulate(x)
        if self.count == 0:  # nothing seen yet (an untrained model): leave features as they are
            return x
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def inverse(self, y: Tensor) -> Tensor:
        """Undo the normalisation: y * std + mean."""
        if self.count == 0:
            return y
        return y * self.std.to(y.dtype) + self.mean.to(y.dtype)
