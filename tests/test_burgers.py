"""Burgers solver of the FNO paper's data: accuracy, conservation, dissipation, files, errors."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from simsurrogate.data.grid import WellReader, validate_well
from simsurrogate.sims.burgers import BurgersConfig, generate_burgers, solve_burgers
from simsurrogate.sims.grf import periodic_grf

NU = 0.1


def _grid(n: int) -> torch.Tensor:
    return torch.arange(n, dtype=torch.float64) / n


def _smooth(n: int) -> torch.Tensor:
    """Two smooth initial states (2, n) whose Fourier series end at mode 2."""
    x = _grid(n)
    return torch.stack([torch.sin(2 * math.pi * x), 0.5 + torch.cos(4 * math.pi * x)])


def test_spectral_convergence_in_space_and_fourth_order_in_time() -> None:
    ref = solve_burgers(_smooth(256), NU, 0.5, 1e-3)[:, -1]
    space = [
        (solve_burgers(_smooth(n), NU, 0.5, 1e-3)[:, -1] - ref[:, :: 256 // n]).abs().max()
        for n in (16, 32, 64)
    ]
    assert space[0] > 1e3 * space[1] and space[2] < 1e-12  # exponential, then round-off
    fine = solve_burgers(_smooth(64), NU, 0.5, 1e-3)[:, -1]
    time = [
        (solve_burgers(_smooth(64), NU, 0.5, dt)[:, -1] - fine).abs().max()
        for dt in (0.05, 0.025, 0.0125)
    ]
    rates = [math.log2(a / b) for a, b in zip(time, time[1:], strict=False)]
    assert min(rates) > 3.5, rates


def test_matches_cole_hopf_exact_solution() -> None:
    """Cole–Hopf: u = -2 nu phi_x / phi where phi_t = nu phi_xx.

    phi = a + exp(-4 pi^2 nu t) cos(2 pi x) gives a smooth, decaying, analytic solution.
    """
    a, n, times = 2.0, 128, torch.linspace(0.0, 1.0, 5, dtype=torch.float64)

    def exact(t: torch.Tensor) -> torch.Tensor:
        x, decay = _grid(n), torch.exp(-4 * math.pi**2 * NU * t)[:, None]
        phi = a + decay * torch.cos(2 * math.pi * x)
        return 4 * math.pi * NU * decay * torch.sin(2 * math.pi * x) / phi

    u = solve_burgers(exact(times[:1]), NU, 1.0, 1e-3, snapshots=4)[0]
    assert (u - exact(times)).abs().max() < 1e-11


def test_mean_is_conserved_and_energy_decays() -> None:
    gen = torch.Generator().manual_seed(0)
    u0 = 0.3 + periodic_grf(3, (256,), 2.0, 5.0, 25.0, gen)
    u = solve_burgers(u0, NU, 1.0, 1e-2, snapshots=20)
    assert (u.mean(dim=-1) - u0.mean(dim=-1, keepdim=True)).abs().max() < 1e-14
    energy = (u**2).mean(dim=-1)
    assert (energy.diff(dim=1) < 0).all()


def test_generated_files_follow_the_well_layout(tmp_path: Path) -> None:
    config = BurgersConfig(resolution=256, dt=1e-2)
    kwargs = dict(n_train=3, n_test=2, seed=1, stored_resolution=64, config=config)
    paths = generate_burgers(tmp_path / "a", chunk=2, progress=False, **kwargs)
    again = generate_burgers(tmp_path / "b", chunk=3, progress=False, **kwargs)
    for split, n in (("train", 3), ("test", 2)):
        validate_well(paths[split])
        with h5py.File(paths[split]) as f:
            stored = f["t0_fields/u"][()]
            assert f.attrs["nu"] == NU and f.attrs["resolution"] == 256
            assert stored.shape == (n, 2, 64) and stored.dtype == np.float32
        with h5py.File(again[split]) as f:  # samples do not depend on the chunk size
            np.testing.assert_array_equal(f["t0_fields/u"][()], stored)
        with WellReader(paths[split]) as reader:
            np.testing.assert_array_equal(reader.window(0, 0, 2)["u"], stored[0])
            np.testing.assert_array_equal(reader.time(), [0.0, 1.0])
            np.testing.assert_allclose(reader.coordinates()["x"], np.arange(64) / 64)
            assert reader.boundary_conditions[0]["bc_type"] == "PERIODIC"
    with h5py.File(paths["train"]) as train, h5py.File(paths["test"]) as test:
        assert not np.allclose(train["t0_fields/u"][:2], test["t0_fields/u"][()])


def test_target_is_the_solution_of_the_stored_input(tmp_path: Path) -> None:
    config = BurgersConfig(resolution=128, dt=1e-2)
    path = generate_burgers(
        tmp_path, n_train=2, n_test=1, stored_resolution=128, config=config, progress=False
    )["train"]
    with WellReader(path) as reader:
        pair = reader.window(1, 0, 2)["u"]
    u = solve_burgers(torch.from_numpy(pair[:1].astype(np.float64)), NU, 1.0, 1e-2)[0, -1]
    np.testing.assert_allclose(u.numpy(), pair[1], atol=1e-6 * np.abs(pair[1]).max())


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: BurgersConfig(viscosity=-0.1), "viscosity"),
        (lambda: solve_burgers(_smooth(16), -0.1, 1.0, 1e-2), "viscosity"),
        (lambda: solve_burgers(_smooth(16), NU, 1.0, 0.0), "dt"),
        (lambda: generate_burgers("unused", stored_resolution=1000), "stored_resolution"),
    ],
)
def test_bad_input_names_the_parameter(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()
