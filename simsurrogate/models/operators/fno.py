"""Fourier Neural Operator (Li et al., ICLR 2021) and its tensorised variant TFNO.

One Fourier layer maps v (B, width, *spatial) to

    v <- act( F^-1[ R · (F v) restricted to the kept modes ] + W v )

where F is the real FFT over the d spatial dims, R is a complex weight per kept mode (a dense
channel mixing for each mode) and W a 1x1 convolution. Only the ``modes`` lowest frequencies
per dim are kept: on the non-last dims both positive (0..m-1) and negative (-m..-1) frequencies,
on the last (rfft, Hermitian) dim the non-negative ones 0..m-1.

FFT normalisation: ``norm="forward"`` on both transforms, so the spectral coefficients of a
sampled function are its Fourier-series coefficients whatever the number of grid points, and
the inverse evaluates that Fourier series on the output grid. The learned kernel R therefore
acts on resolution-independent quantities (discretisation-consistent: train at 85 points,
evaluate at 141), and spectral magnitudes do not grow with the grid size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simsurrogate.models.base import SurrogateModel
from simsurrogate.models.normalization import Normalizer

_FACTORIZATIONS = (None, "tucker", "cp")


def check_modes(sizes: tuple[int, ...] | list[int], modes: list[int], context: str = "") -> None:
    """Raise ValueError when a grid of ``sizes`` points cannot hold the requested modes."""
    d = len(modes)
    for axis, (n, m) in enumerate(zip(sizes, modes, strict=True)):
        last = axis == d - 1
        available = n // 2 + 1 if last else n // 2
        if m > available:
            need = f"n//2+1 >= {m}" if last else f"n >= {2 * m}"
            raise ValueError(
                f"spatial dim {axis} has {n} grid points{context}, too few for modes={m} "
                f"(the {'last' if last else 'non-last'} dim needs {need})"
            )


def _complex_normal(shape: tuple[int, ...], std: float) -> Tensor:
    """Circular complex Gaussian with E|z|^2 = std^2."""
    return torch.randn(shape, dtype=torch.cfloat) * std


def _tucker_ranks(dims: list[int], fraction: float) -> list[int]:
    """Per-mode Tucker ranks, a common fraction s of each dim, with about ``fraction`` of the
    dense parameter count (core + factor matrices); full ranks when the budget allows."""

    def ranks(s: float) -> list[int]:
        return [min(n, max(1, round(s * n))) for n in dims]

    def count(r: list[int]) -> int:
        return math.prod(r) + sum(n * k for n, k in zip(dims, r, strict=True))

    budget = fraction * math.prod(dims)
    lo, hi = 0.0, 1.0
    if count(ranks(hi)) <= budget:
        return ranks(hi)
    for _ in range(60):  # count(ranks(s)) is non-decreasing in s: bisect for the largest s
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if count(ranks(mid)) <= budget else (lo, mid)
    return ranks(lo)


class SpectralConv(nn.Module):
    """Fourier-space convolution over d = 1, 2 or 3 spatial dims, (B, in, *S) -> (B, out, *S).

    The weight holds one complex (in, out) matrix per kept mode, shape
    (in, out, 2*m_1, ..., 2*m_{d-1}, m_d): along each non-last dim the first m entries act on
    frequencies 0..m-1 and the last m on -m..-1. With ``factorization`` the weight is stored as
    a low-rank tensor ("tucker": core and one factor matrix per tensor mode; "cp": R rank-one
    terms) holding about ``rank`` times the dense parameter count, and rebuilt on each call.
    Complex parameters are stored as real tensors with a trailing dim of 2.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: list[int],
        factorization: str | None = None,
        rank: float = 1.0,
    ) -> None:
        super().__init__()
        if not 1 <= len(modes) <= 3:
            raise ValueError(f"modes must list 1, 2 or 3 spatial dims, got {modes}")
        if any(m < 1 for m in modes):
            raise ValueError(f"modes must be positive, got {modes}")
        if factorization not in _FACTORIZATIONS:
            raise ValueError(
                f"factorization must be one of {_FACTORIZATIONS}, got {factorization!r}"
            )
        if rank <= 0:
            raise ValueError(f"rank must be a positive fraction of the dense size, got {rank}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.modes = list(modes)
        self.factorization = factorization
        self.shape = (in_channels, out_channels, *[2 * m for m in modes[:-1]], modes[-1])
        std = math.sqrt(2.0 / (in_channels + out_channels))
        letters, full = "abcde"[: len(self.shape)], "ijklm"[: len(self.shape)]
        if factorization is None:
            self.weight = nn.Parameter(torch.view_as_real(_complex_normal(self.shape, std)))
        elif factorization == "tucker":
            ranks = _tucker_ranks(list(self.shape), rank)
            # factor entries of variance 1/r keep the rebuilt weight's variance at std^2
            self.core = nn.Parameter(torch.view_as_real(_complex_normal(tuple(ranks), std)))
            self.factors = nn.ParameterList(
                torch.view_as_real(_complex_normal((n, r), r**-0.5))
                for n, r in zip(self.shape, ranks, strict=True)
            )
            pairs = ",".join(f"{f}{c}" for f, c in zip(full, letters, strict=True))
            self._equation = f"{letters},{pairs}->{full}"
        else:
            r = max(1, math.floor(rank * math.prod(self.shape) / (1 + sum(self.shape))))
            self.cp_weights = nn.Parameter(torch.view_as_real(_complex_normal((r,), std / r**0.5)))
            self.factors = nn.ParameterList(
                torch.view_as_real(_complex_normal((n, r), 1.0)) for n in self.shape
            )
            self._equation = "z," + ",".join(f"{f}z" for f in full) + f"->{full}"

    def complex_weight(self) -> Tensor:
        """The dense complex weight (in, out, *mode_shape), rebuilt from factors if factorised."""
        if self.factorization is None:
            return torch.view_as_complex(self.weight)
        head = self.core if self.factorization == "tucker" else self.cp_weights
        factors = [torch.view_as_complex(f) for f in self.factors]
        # torch contracts left to right: mode products one factor at a time
        return torch.einsum(self._equation, torch.view_as_complex(head), *factors)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the spectral convolution to ``x`` (B, in, *spatial) -> (B, out, *spatial)."""
        d = len(self.modes)
        sizes = tuple(x.shape[-d:])
        check_modes(sizes, self.modes)
        axes = tuple(range(-d, 0))
        x_ft = torch.fft.rfftn(x, dim=axes, norm="forward")
        # gather the kept blocks into one contiguous tensor, mix channels with one einsum
        blocks = x_ft[..., : self.modes[-1]]
        for axis, m in zip(axes[:-1], self.modes[:-1], strict=True):
            n = blocks.shape[axis]
            blocks = torch.cat([blocks.narrow(axis, 0, m), blocks.narrow(axis, n - m, m)], axis)
        out = torch.einsum("bi...,io...->bo...", blocks, self.complex_weight())
        # put the blocks back at their frequencies; irfftn zero-pads the last dim to n//2+1
        for axis, m in zip(axes[:-1], self.modes[:-1], strict=True):
            n = sizes[axis]
            if n > 2 * m:
                pos, neg = out.split(m, dim=axis)
                zeros_shape = list(out.shape)
                zeros_shape[axis] = n - 2 * m
                out = torch.cat([pos, out.new_zeros(zeros_shape), neg], axis)
        return torch.fft.irfftn(out, s=sizes, dim=axes, norm="forward")


def check_input(x: Tensor, n_spatial: int, in_channels: int, model: str) -> None:
    """Raise a ValueError naming the problem unless ``x`` is (B, in_channels, *n_spatial dims)."""
    if x.ndim != n_spatial + 2:
        raise ValueError(
            f"{model} with {n_spatial} spatial dims expects input (B, C, {n_spatial} spatial "
            f"dims), got shape {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"input has {x.shape[1]} channels but the model was built with "
            f"in_channels={in_channels}"
        )


def _pointwise(dim: int, sizes: list[int]) -> nn.Sequential:
    """1x1 convolution MLP over channels ``sizes`` (in, hidden..., out), GELU between layers."""
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dim]
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        if i > 0:
            layers.append(nn.GELU())
        layers.append(conv(n_in, n_out, kernel_size=1))
    return nn.Sequential(*layers)


class FNO(SurrogateModel):
    """Fourier Neural Operator on regular 1-, 2- or 3-D grids, (B, in, *S) -> (B, out, *S).

    Lifting (1x1 conv MLP to ``width`` channels), ``n_layers`` Fourier layers
    ``v <- GELU(SpectralConv(v) + Conv1x1(v))`` (no activation after the last), projection
    (1x1 conv MLP to ``out_channels``). ``len(modes)`` sets the number of spatial dims.

    ``positional_embedding`` appends the grid coordinates j/n_k in [0, 1) of each dim as extra
    input channels (the paper's grid features; j/n is the periodic convention, so a coarse grid
    is a subsample of a fine one). ``padding`` zero-pads each spatial dim at its end by that
    many points after lifting and crops them before projection, for non-periodic domains.
    ``factorization`` ("tucker" or "cp") with ``rank`` (fraction of the dense spectral-weight
    parameter count) gives the tensorised TFNO. ``normalize_inputs`` standardises each input
    channel with statistics accumulated online during training (a
    :class:`~simsurrogate.models.normalization.Normalizer`, saved with the weights), so the
    model takes fields in physical units, such as Darcy coefficients of 3 and 12.
    ``normalize_outputs`` makes the network predict standardised outputs that ``forward``
    decodes to physical units; the training task feeds it the targets' statistics through
    :meth:`observe_targets`, so a loaded checkpoint needs nothing else.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: list[int],
        width: int = 32,
        n_layers: int = 4,
        padding: int | list[int] = 0,
        lifting_channels: int = 128,
        projection_channels: int = 128,
        factorization: str | None = None,
        rank: float = 1.0,
        positional_embedding: bool = True,
        normalize_inputs: bool = False,
        normalize_outputs: bool = False,
    ) -> None:
        super().__init__()
        d = len(modes)
        if not 1 <= d <= 3:
            raise ValueError(f"modes must list 1, 2 or 3 spatial dims, got {modes}")
        pads = [padding] * d if isinstance(padding, int) else list(padding)
        if len(pads) != d or any(p < 0 for p in pads):
            raise ValueError(
                f"padding must be one non-negative int per spatial dim ({d}), got {padding}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.modes, self.pads = list(modes), pads
        self.positional_embedding = positional_embedding
        self.input_norm = Normalizer(in_channels) if normalize_inputs else None
        self.output_norm = Normalizer(out_channels) if normalize_outputs else None
        n_in = in_channels + (d if positional_embedding else 0)
        self.lifting = _pointwise(d, [n_in, lifting_channels, width])
        self.spectral = nn.ModuleList(
            SpectralConv(width, width, modes, factorization, rank) for _ in range(n_layers)
        )
        self.skips = nn.ModuleList(_pointwise(d, [width, width]) for _ in range(n_layers))
        self.projection = _pointwise(d, [width, projection_channels, out_channels])

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x`` (B, in_channels, *spatial) to (B, out_channels, *spatial)."""
        check_input(x, len(self.modes), self.in_channels, "FNO")
        sizes = x.shape[2:]
        padded = [n + p for n, p in zip(sizes, self.pads, strict=True)]
        check_modes(padded, self.modes, context=f" after padding by {self.pads}")
        if self.input_norm is not None:
            x = self.input_norm(x.movedim(1, -1)).movedim(-1, 1)
        if self.positional_embedding:
            x = torch.cat([x, self._grid(x)], dim=1)
        v = self.lifting(x)
        if any(self.pads):
            v = F.pad(v, [q for p in reversed(self.pads) for q in (0, p)])
        for i, (spectral, skip) in enumerate(zip(self.spectral, self.skips, strict=True)):
            v = spectral(v) + skip(v)
            if i < len(self.spectral) - 1:
                v = F.gelu(v)
        if any(self.pads):
            v = v[(..., *(slice(0, n) for n in sizes))]
        y = self.projection(v)
        if self.output_norm is not None:
            y = self.output_norm.inverse(y.movedim(1, -1)).movedim(-1, 1)
        return y

    @torch.no_grad()
    def observe_targets(self, y: Tensor) -> None:
        """Accumulate output statistics from training targets (B, out_channels, *spatial)."""
        if self.output_norm is not None:
            self.output_norm(y.movedim(1, -1), accumulate=True)

    @staticmethod
    def _grid(x: Tensor) -> Tensor:
        """Coordinates j/n_k of every grid point, (B, d, *spatial)."""
        sizes = x.shape[2:]
        axes = [torch.arange(n, device=x.device, dtype=x.dtype) / n for n in sizes]
        grid = torch.stack(torch.meshgrid(*axes, indexing="ij"))
        return grid.expand(x.shape[0], *grid.shape)
