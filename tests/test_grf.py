"""Gaussian random fields: the right spectrum, variance, mean and boundary behaviour."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from simsurrogate.sims.grf import neumann_grf, periodic_grf


def test_periodic_field_has_the_prescribed_variance_and_zero_mean() -> None:
    n, alpha, tau, sigma = 64, 2.5, 7.0, 7.0**1.5
    g = torch.Generator().manual_seed(0)
    u = periodic_grf(400, (n, n), alpha, tau, sigma, generator=g)
    assert u.shape == (400, n, n) and u.dtype == torch.float64
    k = torch.fft.fftfreq(n, 1.0 / n).double()
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    var = (sigma**2 * (4 * math.pi**2 * k2 + tau**2) ** (-alpha)).sum() - sigma**2 * tau ** (
        -2 * alpha
    )
    np.testing.assert_allclose(float(u.var()), float(var), rtol=0.05)
    np.testing.assert_allclose(u.mean(dim=(1, 2)).numpy(), 0.0, atol=1e-12)


def test_periodic_spectrum_follows_the_covariance_operator() -> None:
    n, alpha, tau, sigma = 256, 2.0, 5.0, 25.0  # Burgers: 625 (-Δ + 25 I)^-2
    u = periodic_grf(2000, (n,), alpha, tau, sigma, generator=torch.Generator().manual_seed(1))
    power = (torch.fft.rfft(u, dim=1).abs() ** 2).mean(0) / n**2  # E|u_k|^2 of the series
    k = torch.arange(1, 20, dtype=torch.float64)
    expected = sigma**2 * (4 * math.pi**2 * k**2 + tau**2) ** (-alpha)
    np.testing.assert_allclose(power[1:20].numpy(), expected.numpy(), rtol=0.15)


def test_neumann_field_is_the_orthonormal_cosine_series() -> None:
    """Mean point variance equals the sum of mode variances (orthonormal eigenfunctions)."""
    n, alpha, tau, sigma = 48, 2.0, 3.0, 3.0  # Darcy: (-Δ + 9 I)^-2, sigma = tau^(alpha - 1)
    u = neumann_grf(400, (n, n), alpha=alpha, tau=tau, sigma=sigma, rng=np.random.default_rng(0))
    np.testing.assert_allclose(u.mean(axis=(1, 2)), 0.0, atol=1e-12)
    k1, k2 = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    coef2 = sigma**2 * (math.pi**2 * (k1**2 + k2**2) + tau**2) ** (-alpha)
    coef2[0, 0] = 0.0
    np.testing.assert_allclose(u.var(axis=0).mean(), coef2.sum(), rtol=0.05)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="points per axis"):
        periodic_grf(1, (1,), 2.0, 5.0, 1.0)
    with pytest.raises(ValueError, match="n_samples"):
        neumann_grf(0, (8, 8), 2.0, 3.0, 1.0, np.random.default_rng())
