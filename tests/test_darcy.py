"""Darcy flow generator: discretisation accuracy, physics, coefficients and written files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simsurrogate.data.grid import WellReader, validate_well
from simsurrogate.sims.darcy import DarcyConfig, generate_darcy, sample_coefficient, solve_darcy


def _nodes(s: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(0.0, 1.0, s)
    return np.meshgrid(x, x, indexing="ij")


def _manufactured(s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """a = 1 + x^2 y + cos(2 pi y)/2, u = sin(pi x) sin(pi y) e^x, f = -div(a grad u) exactly."""
    x, y = _nodes(s)
    pi = np.pi
    a = 1.0 + x**2 * y + 0.5 * np.cos(2 * pi * y)
    ax, ay = 2 * x * y, x**2 - pi * np.sin(2 * pi * y)
    sx, sy, cx, cy, ex = np.sin(pi * x), np.sin(pi * y), np.cos(pi * x), np.cos(pi * y), np.exp(x)
    u = sx * sy * ex
    ux, uy = (pi * cx + sx) * sy * ex, pi * sx * cy * ex
    uxx = (-(pi**2) * sx + 2 * pi * cx + sx) * sy * ex
    uyy = -(pi**2) * u
    return a, -(ax * ux + ay * uy + a * (uxx + uyy)), u


@pytest.mark.parametrize("face_mean", ["arithmetic", "harmonic"])
def test_manufactured_solution_converges_at_second_order(face_mean: str) -> None:
    errors = []
    for s in (33, 65, 129):
        a, f, u = _manufactured(s)
        errors.append(np.abs(solve_darcy(a, f, face_mean) - u).max())
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert errors[-1] < 1e-3
    np.testing.assert_allclose(ratios, 4.0, rtol=0.1)


def _constant_series(x: np.ndarray, y: np.ndarray, a: float, terms: int = 199) -> np.ndarray:
    """-a Δu = 1, u = 0 on the boundary: odd m, n terms 16 sin sin / (pi^4 m n (m^2+n^2) a)."""
    u = np.zeros_like(x)
    odd = np.arange(1, terms + 1, 2)
    sin_x = np.sin(np.pi * odd[:, None, None] * x)
    sin_y = np.sin(np.pi * odd[:, None, None] * y)
    for m, sx in zip(odd, sin_x, strict=True):
        coef = 16.0 / (np.pi**4 * m * odd * (m**2 + odd**2) * a)
        u += sx * np.tensordot(coef, sin_y, axes=1)
    return u


def test_constant_coefficient_matches_series_solution() -> None:
    a = 3.0
    errors = []
    for s in (33, 65):
        exact = _constant_series(*_nodes(s), a)
        errors.append(np.abs(solve_darcy(np.full((s, s), a), 1.0) - exact).max() / exact.max())
    assert abs(exact[s // 2, s // 2] - 0.0736713532 / a) < 1e-6  # the classical centre value
    assert errors[1] < 3e-4
    assert 3.6 < errors[0] / errors[1] < 4.4


def test_maximum_principle_for_positive_forcing() -> None:
    rng = np.random.default_rng(1)
    a = sample_coefficient(3, 41, DarcyConfig(), rng)
    for coef in a:
        u = solve_darcy(coef, 1.0)
        assert np.all(u[1:-1, 1:-1] > 0)
        assert not np.any(u[[0, -1]]) and not np.any(u[:, [0, -1]])


def test_coefficient_takes_two_balanced_values() -> None:
    cfg = DarcyConfig()
    a = sample_coefficient(60, 33, cfg, np.random.default_rng(2))
    assert a.shape == (60, 33, 33)
    assert set(np.unique(a)) == {3.0, 12.0}
    assert 0.4 < (a == 12.0).mean() < 0.6
    per_sample = (a == 12.0).mean(axis=(1, 2))
    assert np.count_nonzero((per_sample > 0) & (per_sample < 1)) > 50  # both values in most
    # drawing in blocks or one at a time gives the same samples
    r1, r2 = np.random.default_rng(3), np.random.default_rng(3)
    one_by_one = [sample_coefficient(1, 33, cfg, r1)[0] for _ in range(3)]
    np.testing.assert_array_equal(sample_coefficient(3, 33, cfg, r2), np.stack(one_by_one))


def test_generated_files_validate_read_back_and_subsample(tmp_path: Path) -> None:
    paths = generate_darcy(
        tmp_path,
        n_train=3,
        n_test=2,
        seed=5,
        resolution=41,
        stored_resolutions=(41, 11),
        progress=False,
    )
    assert set(paths) == {"train_41", "train_11", "test_41", "test_11"}
    for p in paths.values():
        validate_well(p)
    fine, coarse = WellReader(paths["train_41"]), WellReader(paths["train_11"])
    assert (fine.n_trajectories, fine.spatial_shape, fine.n_steps) == (3, (41, 41), 1)
    assert fine.constant_field_names == {0: ["coefficient", "solution"], 1: [], 2: []}
    assert {bc["bc_type"] for bc in fine.boundary_conditions} == {"WALL"}
    assert fine.simulation_parameters["coefficient_high"] == 12.0
    np.testing.assert_array_equal(fine.coordinates()["x"], np.linspace(0, 1, 41))
    rng_train = np.random.default_rng(np.random.SeedSequence(5).spawn(2)[0])
    a = sample_coefficient(3, 41, DarcyConfig(), rng_train)
    for i in range(3):
        w, c = fine.window(i, 0, 1), coarse.window(i, 0, 1)
        np.testing.assert_array_equal(w["coefficient"][0], a[i].astype(np.float32))
        expected = solve_darcy(a[i]).astype(np.float32)
        np.testing.assert_array_equal(w["solution"][0], expected)
        for name in ("coefficient", "solution"):
            np.testing.assert_array_equal(c[name][0], w[name][0, ::4, ::4])
    # same seed with a process pool: identical data; existing files are kept
    again = generate_darcy(
        tmp_path / "pool",
        n_train=3,
        n_test=2,
        seed=5,
        resolution=41,
        stored_resolutions=(41,),
        progress=False,
        workers=2,
    )
    with WellReader(again["train_41"]) as pooled:
        np.testing.assert_array_equal(
            pooled.window(2, 0, 1)["solution"], fine.window(2, 0, 1)["solution"]
        )
    stamp = paths["test_11"].stat().st_mtime_ns
    generate_darcy(
        tmp_path, n_train=3, n_test=2, resolution=41, stored_resolutions=(11,), progress=False
    )
    assert paths["test_11"].stat().st_mtime_ns == stamp


def test_bad_input_names_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stored resolution 86"):
        generate_darcy(tmp_path, resolution=421, stored_resolutions=(86,), progress=False)
    assert not any(tmp_path.iterdir())
    a = np.full((9, 9), 12.0)
    a[4, 4] = 0.0
    with pytest.raises(ValueError, match="coefficient"):
        solve_darcy(a)
    with pytest.raises(ValueError, match="coefficient"):
        solve_darcy(-np.ones((9, 9)))
    with pytest.raises(ValueError, match="coefficient values"):
        generate_darcy(tmp_path, config=DarcyConfig(low=-3.0), progress=False)
    with pytest.raises(ValueError, match="face_mean"):
        solve_darcy(np.ones((9, 9)), face_mean="geometric")
