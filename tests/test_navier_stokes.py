"""2-D Navier–Stokes vorticity solver: invariants, an exact solution, convergence, data files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from simsurrogate.data.grid import WellReader, validate_well
from simsurrogate.sims.grf import periodic_grf
from simsurrogate.sims.navier_stokes import (
    NavierStokesConfig,
    forcing,
    generate_navier_stokes,
    grid,
    solve_vorticity,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small grids: intra-op threads only add synchronisation, badly so on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _zeros(n: int) -> torch.Tensor:
    return torch.zeros(n, n, dtype=torch.float64)


def _grf(n_samples: int, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return periodic_grf(n_samples, (n, n), 2.5, 7.0, 7.0**1.5, generator=g)


def _two_modes(n: int) -> torch.Tensor:
    """Modes of different |k|, so u·∇w != 0 and the nonlinear term matters."""
    x, y = grid(n)
    return (3 * torch.cos(2 * math.pi * x) + 2 * torch.sin(2 * math.pi * (x + 2 * y)))[None]


def test_forcing_and_mean_vorticity_are_zero_mean() -> None:
    f = forcing(32)
    assert f.shape == (32, 32) and abs(float(f.mean())) < 1e-15
    x, y = grid(32)
    np.testing.assert_allclose(
        f[3, 5], 0.1 * (math.sin(2 * math.pi * 8 / 32) + math.cos(0.5 * math.pi))
    )
    w = solve_vorticity(_grf(4, 32), f, 1e-3, 0.1, 1e-3, 0.05)
    assert w.shape == (4, 3, 32, 32)
    assert float(w.mean(dim=(-1, -2)).abs().max()) < 1e-12
    assert float(w.abs().max()) > 0.1


@pytest.mark.parametrize("scheme", ["euler", "heun"])
@pytest.mark.parametrize(("kx", "ky"), [(1, 0), (1, 2), (-3, 2)])
def test_single_mode_decays_exactly(scheme: str, kx: int, ky: int) -> None:
    """cos 2π(kx x + ky y) has u along its level lines, so u·∇w = 0 and it only decays."""
    n, nu, dt = 32, 1e-3, 5e-3
    x, y = grid(n)
    w0 = torch.cos(2 * math.pi * (kx * x + ky * y))
    w = solve_vorticity(w0[None], _zeros(n), nu, 0.5, dt, 0.125, scheme=scheme)[0]
    rate = 4 * math.pi**2 * (kx * kx + ky * ky) * nu
    half = 0.5 * dt * rate
    for r, t in enumerate(np.arange(5) * 0.125):
        # the discrete Crank–Nicolson decay to round-off: the nonlinear term vanishes
        discrete = ((1 - half) / (1 + half)) ** round(t / dt)
        np.testing.assert_allclose(w[r], discrete * w0, rtol=0, atol=1e-13)
        np.testing.assert_allclose(w[r], math.exp(-rate * t) * w0, rtol=0, atol=1e-6)


@pytest.mark.parametrize(("scheme", "order"), [("euler", 1), ("heun", 2)])
def test_time_convergence_order(scheme: str, order: int) -> None:
    n, nu, t = 32, 1e-2, 0.25
    w0, f = _two_modes(n), forcing(n)
    ref = solve_vorticity(w0, f, nu, t, t / (1600 // 2**order), t, scheme=scheme)[:, -1]
    errors = [
        float((solve_vorticity(w0, f, nu, t, t / s, t, scheme=scheme)[:, -1] - ref).abs().max())
        for s in (25, 50, 100)
    ]
    assert errors[0] > 1e-5  # the nonlinear term is active
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert 0.85 * 2**order < coarse / fine < 1.25 * 2**order


def test_spectral_convergence_in_resolution() -> None:
    nu, t, dt = 1e-2, 0.25, 0.25 / 100
    ref = solve_vorticity(_two_modes(128), _zeros(128), nu, t, dt, t)[:, -1]
    errors = []
    for n in (16, 32, 64):
        w = solve_vorticity(_two_modes(n), _zeros(n), nu, t, dt, t)[:, -1]
        errors.append(float((w - ref[:, :: 128 // n, :: 128 // n]).abs().max()))
    assert errors[0] > 1e-5 and errors[1] < errors[0] / 100 and errors[2] < 1e-12


def test_stride_subsamples_the_records() -> None:
    w0, f = _grf(2, 32), forcing(32)
    full = solve_vorticity(w0, f, 1e-3, 0.1, 1e-3, 0.05)
    coarse = solve_vorticity(w0, f, 1e-3, 0.1, 1e-3, 0.05, stride=4)
    assert coarse.shape == (2, 3, 8, 8)
    torch.testing.assert_close(coarse, full[..., ::4, ::4], rtol=0, atol=0)


def test_enstrophy_decays_without_forcing_and_is_conserved_when_inviscid() -> None:
    n, w0 = 64, _grf(2, 64, seed=1)
    viscous = solve_vorticity(w0, _zeros(n), 1e-3, 0.25, 1e-3, 0.025)
    enstrophy = (viscous**2).mean(dim=(-1, -2))
    assert bool((enstrophy[:, 1:] < enstrophy[:, :-1]).all())
    # continuum balance dZ/dt = -2ν <|∇w|^2>, Z = <w^2>, over a short first interval
    k = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64)
    lap = 4 * math.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2)
    grad2 = (lap * torch.fft.fft2(w0).abs() ** 2).sum(dim=(-1, -2)) / n**4
    short = solve_vorticity(w0, _zeros(n), 1e-3, 0.005, 1e-3, 0.005)
    change = (short[:, 1] ** 2).mean(dim=(-1, -2)) - (w0**2).mean(dim=(-1, -2))
    np.testing.assert_allclose(change, -2e-3 * grad2 * 0.005, rtol=0.02)

    inviscid = solve_vorticity(w0, _zeros(n), 1e-7, 0.25, 1e-3, 0.025)
    enstrophy = (inviscid**2).mean(dim=(-1, -2))
    np.testing.assert_allclose(enstrophy / enstrophy[:, :1], 1.0, atol=1e-4)
    moved = (inviscid[:, -1] - w0).abs().max()
    assert float(moved) > 0.03 * float(w0.abs().max())  # yet the field has moved


def test_generated_files_validate_and_read_back(tmp_path: Path) -> None:
    config = NavierStokesConfig(
        viscosity=1e-3, t_final=2.0, dt=2e-2, resolution=32, stored_resolution=16
    )
    paths = generate_navier_stokes(
        tmp_path / "ns", n_train=3, n_test=2, seed=5, config=config, chunk=2, progress=False
    )
    assert set(paths) == {"train", "test"}
    for path in paths.values():
        validate_well(path)
    with WellReader(paths["train"]) as r:
        assert (r.n_trajectories, r.n_steps, r.spatial_shape) == (3, 3, (16, 16))
        assert r.simulation_parameters == {"viscosity": 1e-3}
        np.testing.assert_array_equal(r.time(), [0.0, 1.0, 2.0])
        np.testing.assert_array_equal(r.coordinates()["x"], np.arange(16) / 16)
        window = r.window(2, 0, 3)
        assert window["vorticity"].shape == (3, 16, 16)
        assert window["vorticity"].dtype == np.float32
        np.testing.assert_allclose(window["forcing"][0], forcing(32)[::2, ::2], atol=1e-7)
        assert {bc["bc_type"] for bc in r.boundary_conditions} == {"PERIODIC"}
    with WellReader(paths["test"]) as r:
        assert r.n_trajectories == 2

    # one seed per sample: the data do not depend on the batch size; files are kept
    again = generate_navier_stokes(
        tmp_path / "again", n_train=3, n_test=1, seed=5, config=config, chunk=3, progress=False
    )
    with WellReader(paths["train"]) as a, WellReader(again["train"]) as b:
        for i in range(3):
            np.testing.assert_array_equal(
                a.window(i, 0, 3)["vorticity"], b.window(i, 0, 3)["vorticity"]
            )
    mtime = paths["train"].stat().st_mtime_ns
    generate_navier_stokes(tmp_path / "ns", n_train=3, n_test=2, config=config, progress=False)
    assert paths["train"].stat().st_mtime_ns == mtime


def test_bad_input_names_the_parameter() -> None:
    with pytest.raises(ValueError, match="stored_resolution"):
        NavierStokesConfig(resolution=256, stored_resolution=48)
    with pytest.raises(ValueError, match="viscosity"):
        NavierStokesConfig(viscosity=0.0)
    with pytest.raises(ValueError, match="record_every / dt"):
        NavierStokesConfig(dt=3e-1)
    with pytest.raises(ValueError, match="scheme"):
        NavierStokesConfig(scheme="rk4")
    w0, f = _grf(1, 16), forcing(16)
    with pytest.raises(ValueError, match="viscosity"):
        solve_vorticity(w0, f, -1e-3, 1.0, 1e-2, 1.0)
    with pytest.raises(ValueError, match="forcing"):
        solve_vorticity(w0, forcing(32), 1e-3, 1.0, 1e-2, 1.0)
    with pytest.raises(ValueError, match="n_train"):
        generate_navier_stokes("unused", n_train=0, progress=False)
