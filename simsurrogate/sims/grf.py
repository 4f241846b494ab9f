"""Gaussian random fields N(0, sigma^2 (-Laplacian + tau^2 I)^(-alpha)) on the unit cube.

The initial conditions and coefficients of the FNO paper's problems are drawn from such
fields: Burgers N(0, 625 (-Δ + 25 I)^-2) on the periodic interval, Navier–Stokes
N(0, 7^(3/2) (-Δ + 49 I)^-2.5) on the torus, Darcy N(0, (-Δ + 9 I)^-2) with Neumann
boundary conditions. A field is a sum over the Laplacian's eigenfunctions with independent
Gaussian weights whose standard deviation is sigma (lambda_k + tau^2)^(-alpha/2); the
constant mode is removed so fields have zero mean.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.fft import idctn
from torch import Tensor


def _wavenumbers(shape: tuple[int, ...], device: torch.device | None) -> list[Tensor]:
    """Integer wavenumbers of an rFFT grid, one broadcastable tensor per axis."""
    d = len(shape)
    ks = []
    for axis, n in enumerate(shape):
        k = torch.fft.rfftfreq(n, 1.0 / n) if axis == d - 1 else torch.fft.fftfreq(n, 1.0 / n)
        view = [1] * d
        view[axis] = -1
        ks.append(k.to(device=device, dtype=torch.float64).reshape(view))
    return ks


def periodic_grf(
    n_samples: int,
    shape: tuple[int, ...],
    alpha: float,
    tau: float,
    sigma: float,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """Samples (n_samples, *shape) float64 of the field on the periodic unit torus [0, 1)^d.

    The eigenvalues of -Δ are 4 pi^2 |k|^2 for integer wavenumbers k; the field is white noise
    filtered in Fourier space, so it is real and its point variance is the sum of the
    represented modes' variances sigma^2 (4 pi^2 |k|^2 + tau^2)^(-alpha).
    """
    if n_samples < 1 or any(n < 2 for n in shape):
        raise ValueError(f"need n_samples >= 1 and at least 2 points per axis, got {shape}")
    dims = tuple(range(1, len(shape) + 1))
    noise = torch.randn((n_samples, *shape), generator=generator, dtype=torch.float64)
    noise = noise.to(device)
    k2 = sum(k**2 for k in _wavenumbers(shape, device))
    sqrt_eig = sigma * (4 * math.pi**2 * k2 + tau**2) ** (-alpha / 2)
    sqrt_eig.reshape(-1)[0] = 0.0  # zero mean
    spectrum = torch.fft.rfftn(noise, dim=dims) * sqrt_eig
    return math.sqrt(math.prod(shape)) * torch.fft.irfftn(spectrum, s=shape, dim=dims)


def neumann_grf(
    n_samples: int,
    shape: tuple[int, ...],
    alpha: float,
    tau: float,
    sigma: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Samples (n_samples, *shape) of the field on [0, 1]^d with zero-flux boundaries.

    Eigenfunctions are products of cos(pi k x) with eigenvalues pi^2 |k|^2; the grid holds
    cell centres x_j = (j + 1/2) / n, where the orthonormal inverse DCT-II evaluates the
    cosine series exactly.
    """
    if n_samples < 1 or any(n < 2 for n in shape):
        raise ValueError(f"need n_samples >= 1 and at least 2 points per axis, got {shape}")
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    k2 = sum(g.astype(np.float64) ** 2 for g in grids)
    coef = sigma * (math.pi**2 * k2 + tau**2) ** (-alpha / 2)
    coef.reshape(-1)[0] = 0.0
    xi = rng.standard_normal((n_samples, *shape))
    # the orthonormal DCT scales mode k by sqrt(prod(n)) relative to the continuous series
    axes = tuple(range(1, len(shape) + 1))
    return idctn(math.sqrt(math.prod(shape)) * coef * xi, type=2, norm="ortho", axes=axes)
