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

Computing the transforms: only the kept modes are ever needed, so a full FFT followed by
cropping (and zero-filling before the inverse) does mostly wasted work. :class:`SpectralConv`
has two exact ways to evaluate the same truncated transforms (they agree to float rounding):

- ``"dft"``: products with the Fourier matrices of the kept modes only (real (n, 2m) along
  the last dim, complex (2m, n) along the others), so every step is one matrix product;
- ``"fft"``: ``rfft`` along the last dim, cropped to its kept columns before the ``fft``
  along the other dims, which then runs on those columns only (and the reverse).

``SpectralConv.transform`` (a class attribute, not a constructor argument, so checkpoints
are unaffected) picks one; the default ``"auto"`` uses ``"dft"`` on CPU where the Fourier
matrices stay small next to the grid (measured several times faster there, forward and
backward, on FNO-sized problems) and ``"fft"`` on other devices.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simsurrogate.models.base import SurrogateModel
from simsurrogate.models.normalization import Normalizer

_FACTORIZATIONS = (None, "tucker", "cp")
_TRANSFORMS = ("auto", "dft", "fft")
#: On CPU, "auto" computes the truncated transforms as matrix products (DFT) when along every
#: dim the kept coefficients (2m reals on the last dim, 2m complex on the others) are at most
#: this fraction of its n grid points. Measured forward + backward, 32 channels, 1 thread:
#: 2-D at 128^2 / 12 modes 2-3x faster than FFT, at 94^2 4-5x (94 is a slow FFT size), at
#: 64^2 / 8 modes even; beyond about 1/3 (e.g. 1-D 128 points / 24 modes) the FFT wins.
_DFT_MAX_FRACTION = 1 / 3


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

    ``transform`` ("auto", "dft" or "fft"; a class attribute, also settable per instance)
    chooses how the truncated transforms are computed (see the module docstring); the choice
    changes speed only, not the result beyond float rounding.
    """

    transform: ClassVar[str] = "auto"

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
        if self.transform not in _TRANSFORMS:
            raise ValueError(
                f"SpectralConv.transform must be one of {_TRANSFORMS}, got {self.transform!r}"
            )
        if torch.is_autocast_enabled(x.device.type):
            # spectral arithmetic stays in float32, as torch.fft does under autocast
            with torch.autocast(x.device.type, enabled=False):
                return self._spectral(x.float(), sizes)
        return self._spectral(x, sizes)

    def _spectral(self, x: Tensor, sizes: tuple[int, ...]) -> Tensor:
        weight = self.complex_weight()
        if self._use_dft(sizes, x.device):
            return self._dft(x, weight, sizes)
        return self._fft(x, weight, sizes)

    def _use_dft(self, sizes: tuple[int, ...], device: torch.device) -> bool:
        if self.transform != "auto":
            return self.transform == "dft"
        if device.type != "cpu":
            return False
        return all(2 * m <= _DFT_MAX_FRACTION * n for n, m in zip(sizes, self.modes, strict=True))

    @staticmethod
    def _mix(z: Tensor, weight: Tensor) -> Tensor:
        """Channel mixing, one complex (in, out) matrix per kept mode."""
        return torch.einsum("bi...,io...->bo...", z, weight.to(z.dtype))

    def _dft(self, x: Tensor, weight: Tensor, sizes: tuple[int, ...]) -> Tensor:
        """Truncated transforms as matrix products with the kept modes' Fourier matrices."""
        d = len(self.modes)
        n, m = sizes[-1], self.modes[-1]
        forward_last, inverse_last = _real_dft_matrices(n, m, x.dtype, x.device)
        # last dim: real (..., n) @ (n, 2m) -> interleaved (re, im) of m coefficients
        z = torch.view_as_complex((x @ forward_last).unflatten(-1, (m, 2)))
        for axis in range(d - 1):
            forward, _ = _complex_dft_matrices(sizes[axis], self.modes[axis], z.dtype, x.device)
            z = _contract(forward, z, 2 + axis)
        out = self._mix(z, weight)
        for axis in range(d - 1):
            _, inverse = _complex_dft_matrices(sizes[axis], self.modes[axis], out.dtype, x.device)
            out = _contract(inverse, out, 2 + axis)
        # last dim: the real part of the Hermitian series, (..., 2m) @ (2m, n)
        return torch.view_as_real(out).flatten(-2) @ inverse_last

    def _fft(self, x: Tensor, weight: Tensor, sizes: tuple[int, ...]) -> Tensor:
        """Truncated transforms with torch.fft, one dim at a time on the kept columns only."""
        d = len(self.modes)
        z = torch.fft.rfft(x, dim=-1, norm="forward")[..., : self.modes[-1]]
        for axis in range(d - 1):
            dim, n, m = 2 + axis, sizes[axis], self.modes[axis]
            z = torch.fft.fft(z, dim=dim, norm="forward")
            z = torch.cat([z.narrow(dim, 0, m), z.narrow(dim, n - m, m)], dim)
        out = self._mix(z, weight)
        for axis in range(d - 1):
            dim, n, m = 2 + axis, sizes[axis], self.modes[axis]
            if n > 2 * m:  # put the blocks back at their frequencies, zeros in between
                pos, neg = out.split(m, dim=dim)
                gap = list(out.shape)
                gap[dim] = n - 2 * m
                out = torch.cat([pos, out.new_zeros(gap), neg], dim)
            out = torch.fft.ifft(out, dim=dim, norm="forward")
        # irfft zero-pads the last dim from m to n//2+1 coefficients
        return torch.fft.irfft(out, n=sizes[-1], dim=-1, norm="forward")


def _frequencies(m: int, device: torch.device) -> Tensor:
    """Kept frequencies along a non-last dim, in weight order: 0..m-1, then -m..-1."""
    return torch.cat([torch.arange(m, device=device), torch.arange(-m, 0, device=device)])


def _angles(freqs: Tensor, n: int) -> Tensor:
    """2 pi (k j mod n) / n in float64, (len(freqs), n); the integer reduction keeps it exact."""
    j = torch.arange(n, device=freqs.device)
    return (torch.outer(freqs, j) % n).double() * (2 * math.pi / n)


def _complex_dft_matrices(
    n: int, m: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Forward (2m, n) and inverse (n, 2m) Fourier matrices of a non-last dim's kept modes.

    forward[k, j] = exp(-2 pi i f_k j / n) / n (norm="forward"), inverse[j, k] =
    exp(+2 pi i f_k j / n), with f_k the frequencies of :func:`_frequencies`.
    """
    angle = _angles(_frequencies(m, device), n)
    phase = torch.polar(torch.ones_like(angle), angle)
    return (phase.conj() / n).to(dtype), phase.T.to(dtype)


def _real_dft_matrices(
    n: int, m: int, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Real forward (n, 2m) and inverse (2m, n) matrices of the last dim's modes 0..m-1.

    ``x @ forward`` gives (Re X_0, Im X_0, Re X_1, ...) with X_k = sum_j x_j e^(-2 pi i k j/n)/n;
    ``z @ inverse`` gives Re sum_k c_k Z_k e^(2 pi i k j/n) from the interleaved (Re, Im) of
    Z, with c_k = 2 except c_0 = 1 and, for even n, c_(n/2) = 1: what ``irfft`` computes from
    a half spectrum (it ignores the imaginary parts of the k = 0 and k = n/2 terms).
    """
    angle = _angles(torch.arange(m, device=device), n)  # (m, n)
    cos, sin = torch.cos(angle), torch.sin(angle)
    forward = torch.stack([cos, -sin], dim=1).reshape(2 * m, n).T / n
    weight = torch.full((m, 1), 2.0, dtype=torch.float64, device=device)
    weight[0] = 1.0
    if n % 2 == 0 and m > n // 2:
        weight[n // 2] = 1.0
    inverse = torch.stack([weight * cos, -weight * sin], dim=1).reshape(2 * m, n)
    return forward.to(dtype), inverse.to(dtype)


def _contract(matrix: Tensor, z: Tensor, dim: int) -> Tensor:
    """Apply ``matrix`` (k, n) along ``dim`` of ``z`` (size n there, size k after)."""
    if dim == z.ndim - 2:
        return matrix @ z
    return (matrix @ z.movedim(dim, -2)).movedim(-2, dim)


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


class _PointwiseProduct:
    """A 1x1 convolution evaluated as one batched matrix product over the flattened grid.

    Mixed into the torch ``ConvNd`` classes, so parameters and state-dict keys are theirs (and
    old checkpoints load unchanged); on CPU this is several times faster than the convolution
    kernels for kernel size 1, forward and backward.
    """

    weight: Tensor
    bias: Tensor | None

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        flat = x.reshape(b, c, -1)
        w = self.weight.flatten(1).expand(b, -1, -1)
        if self.bias is None:
            y = torch.bmm(w, flat)
        else:
            y = torch.baddbmm(self.bias[:, None], w, flat)
        return y.view(b, -1, *x.shape[2:])


class _Pointwise1d(_PointwiseProduct, nn.Conv1d):
    pass


class _Pointwise2d(_PointwiseProduct, nn.Conv2d):
    pass


class _Pointwise3d(_PointwiseProduct, nn.Conv3d):
    pass


def _pointwise(dim: int, sizes: list[int]) -> nn.Sequential:
    """1x1 convolution MLP over channels ``sizes`` (in, hidden..., out), GELU between layers."""
    conv = {1: _Pointwise1d, 2: _Pointwise2d, 3: _Pointwise3d}[dim]
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
    It counts grid points, so on a finer grid the same padding covers a shorter length and
    the padded period the Fourier modes refer to changes; to evaluate at another resolution
    with the padded period of training, set the attribute ``pads`` (one int per dim) to the
    rescaled counts (``benchmarks/fno_resolution.py`` measures both choices). The
    normalisers hold one mean and standard deviation per channel, so they apply at any
    resolution.
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
