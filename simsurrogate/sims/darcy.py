"""2-D Darcy flow of the FNO paper (Li et al., ICLR 2021, §5.2), regenerated.

    -∇·(a(x) ∇u(x)) = f(x)  on (0, 1)^2,   u = 0 on the boundary,   f = 1,

with a piecewise-constant coefficient a = ψ(g): g ~ N(0, (-Δ + 9 I)^-2) with zero-Neumann
boundary conditions on the Laplacian, ψ = 12 where g > 0 and 3 elsewhere. The task learns the
map a -> u.

Discretisation: second-order finite differences (5-point stencil) on the s x s nodes
x_j = j / (s - 1), j = 0..s-1, boundary included. The flux between neighbouring nodes uses the
coefficient at the face between them, the arithmetic mean of the two nodal values by default
(as the public generator does, so the data match the paper's) or, optionally, the harmonic
mean (flux-continuous across a jump halfway between nodes). Both are second order for smooth
a. The linear system over the (s - 2)^2 interior nodes is symmetric positive definite and is
solved with a sparse LU factorisation (SuperLU through ``scipy.sparse.linalg.spsolve``).

Grid of g: the GRF sampler evaluates its cosine series at the s cell centres (j + 1/2) / s;
those s x s values are used as the values at the s x s nodes, i.e. g is sampled on a grid
shrunk by the factor (s - 1) / s. The public generator does effectively the same (it spline-
interpolates the cell-centre coefficient to the nodes, solves there and interpolates u back);
here no interpolation is done, so a and u are stored on the same nodes, a takes exactly the
two values 12 and 3, and u is exactly zero on the boundary. Only the sign of g matters, so the
field's scale sigma = tau^(alpha - 1) is the public generator's but immaterial.

Units are dimensionless.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import spsolve
from tqdm.auto import tqdm

from simsurrogate.data.grid import GridField, write_well
from simsurrogate.sims.grf import neumann_grf

FACE_MEANS = ("arithmetic", "harmonic")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class DarcyConfig:
    """Parameters of the Darcy data; defaults are the FNO paper's (§5.2)."""

    resolution: int = 421
    alpha: float = 2.0
    tau: float = 3.0
    high: float = 12.0
    low: float = 3.0
    forcing: float = 1.0
    face_mean: str = "arithmetic"

    @property
    def sigma(self) -> float:
        """Scale of the GRF, tau^(alpha - 1) as in the public generator (irrelevant after ψ)."""
        return self.tau ** (self.alpha - 1)


def sample_coefficient(
    n: int, resolution: int, config: DarcyConfig, rng: np.random.Generator
) -> np.ndarray:
    """Coefficients a = ψ(g), (n, s, s) float64 with values ``config.high`` / ``config.low``.

    g is drawn at the s x s cell centres and used at the s x s nodes (see the module doc);
    samples drawn one at a time or in blocks from the same ``rng`` are identical.
    """
    g = neumann_grf(n, (resolution, resolution), config.alpha, config.tau, config.sigma, rng)
    return np.where(g > 0, config.high, config.low)


def _face_mean(left: np.ndarray, right: np.ndarray, kind: str) -> np.ndarray:
    if kind == "arithmetic":
        return 0.5 * (left + right)
    return 2.0 * left * right / (left + right)


def darcy_matrix(a: np.ndarray, face_mean: str = "arithmetic") -> sp.csc_matrix:
    """5-point matrix of -∇·(a∇·) on the interior nodes of an s x s grid, h = 1 / (s - 1).

    Unknowns are the (s - 2)^2 interior nodes in row-major order (axis 0 = x, axis 1 = y);
    the zero boundary values drop out of the stencil.
    """
    if face_mean not in FACE_MEANS:
        raise ValueError(f"face_mean must be one of {FACE_MEANS}, got {face_mean!r}")
    s = a.shape[0]
    m = s - 2
    # face coefficients: between nodes (i, j) and (i + 1, j), and (i, j) and (i, j + 1)
    ax = _face_mean(a[:-1, 1:-1], a[1:, 1:-1], face_mean)  # (s - 1, m)
    ay = _face_mean(a[1:-1, :-1], a[1:-1, 1:], face_mean)  # (m, s - 1)
    diag = ax[:-1] + ax[1:] + ay[:, :-1] + ay[:, 1:]  # (m, m)
    idx = np.arange(m * m).reshape(m, m)
    # couplings (i, j)-(i + 1, j) and (i, j)-(i, j + 1), each entered once and mirrored
    first = np.concatenate([idx[:-1].ravel(), idx[:, :-1].ravel()])
    second = np.concatenate([idx[1:].ravel(), idx[:, 1:].ravel()])
    off = -np.concatenate([ax[1:-1].ravel(), ay[:, 1:-1].ravel()])
    rows = np.concatenate([idx.ravel(), first, second])
    cols = np.concatenate([idx.ravel(), second, first])
    vals = np.concatenate([diag.ravel(), off, off]) * (s - 1) ** 2
    return sp.csc_matrix((vals, (rows, cols)), shape=(m * m, m * m))


def solve_darcy(
    a: np.ndarray, forcing: float | np.ndarray = 1.0, face_mean: str = "arithmetic"
) -> np.ndarray:
    """Solution u (s, s) of -∇·(a∇u) = f on the unit square with u = 0 on the boundary.

    ``a`` (s, s) holds positive nodal values at x_j = j / (s - 1); ``forcing`` is a number or
    nodal values (s, s), of which only the interior ones are used.
    """
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 3:
        raise ValueError(f"coefficient must be a square (s, s) array with s >= 3, got {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a <= 0):
        raise ValueError("coefficient must be finite and positive everywhere")
    s = a.shape[0]
    f = np.broadcast_to(np.asarray(forcing, dtype=np.float64), a.shape)
    if not np.all(np.isfinite(f)):
        raise ValueError("forcing must be finite")
    u = np.zeros((s, s))
    # minimum degree on A^T + A suits the symmetric 5-point matrix (~30% faster than COLAMD)
    rhs = f[1:-1, 1:-1].ravel()
    sol = spsolve(darcy_matrix(a, face_mean), rhs, permc_spec="MMD_AT_PLUS_A")
    u[1:-1, 1:-1] = sol.reshape(s - 2, s - 2)
    return u


def subsample_step(resolution: int, stored: int) -> int:
    """Stride r with stored = (resolution - 1) / r + 1; ValueError if there is none."""
    if stored < 2 or (resolution - 1) % (stored - 1):
        raise ValueError(
            f"stored resolution {stored} is not (resolution - 1) / r + 1 for an integer r "
            f"with resolution {resolution}"
        )
    return (resolution - 1) // (stored - 1)


def generate_darcy(
    out_dir: str | Path,
    *,
    n_train: int = 1000,
    n_test: int = 200,
    seed: int = 0,
    resolution: int = 421,
    stored_resolutions: Sequence[int] = (421, 85),
    config: DarcyConfig = DarcyConfig(),
    progress: bool = True,
    overwrite: bool = False,
    workers: int = 1,
) -> dict[str, Path]:
    """Solve on the ``resolution`` grid and write ``train_<s>.h5`` / ``test_<s>.h5`` per s.

    Files are in The Well's layout with non-time-varying t0 fields ``coefficient`` and
    ``solution`` (n, s, s) float32; coarse files are the fine solution at every r-th node.
    Train and test draw from independent streams spawned from ``seed``. Returns the paths,
    keyed ``"<split>_<s>"``; existing files are kept unless ``overwrite``. ``workers`` > 1
    solves in that many processes (coefficients are still drawn in order here, so the data do
    not depend on it).
    """
    if resolution < 3:
        raise ValueError(f"resolution must be at least 3, got {resolution}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    steps = {s: subsample_step(resolution, s) for s in stored_resolutions}
    if config.low <= 0 or config.high <= 0:
        raise ValueError(f"coefficient values must be positive, got {config.high}, {config.low}")
    if config.face_mean not in FACE_MEANS:
        raise ValueError(f"face_mean must be one of {FACE_MEANS}, got {config.face_mean!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {"train": n_train, "test": n_test}
    streams = np.random.SeedSequence(seed).spawn(len(SPLITS))
    paths: dict[str, Path] = {}
    for split, stream in zip(SPLITS, streams, strict=True):
        files = {s: out_dir / f"{split}_{s}.h5" for s in steps}
        paths.update({f"{split}_{s}": p for s, p in files.items()})
        todo = {s: p for s, p in files.items() if overwrite or not p.exists()}
        if not todo:
            continue
        rng = np.random.default_rng(stream)
        n = counts[split]
        a_all = np.empty((n, resolution, resolution), dtype=np.float32)
        u_all = np.empty_like(a_all)
        solve = partial(solve_darcy, forcing=config.forcing, face_mean=config.face_mean)
        block = 4 * workers  # bounds the coefficients waiting for a worker
        with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
            bar = tqdm(total=n, desc=f"darcy {split}", unit="sample", disable=not progress)
            for start in range(0, n, block):
                stop = min(start + block, n)
                a = sample_coefficient(stop - start, resolution, config, rng)
                a_all[start:stop] = a
                u_all[start:stop] = list(pool.map(solve, a) if pool else map(solve, a))
                bar.update(stop - start)
            bar.close()
        for s, path in todo.items():
            _write(path, a_all, u_all, steps[s], config, overwrite)
    return paths


def _write(
    path: Path, a: np.ndarray, u: np.ndarray, step: int, config: DarcyConfig, overwrite: bool
) -> None:
    """One split at stride ``step`` in The Well's layout; u = 0 (WALL) on the x and y faces."""
    a, u = a[:, ::step, ::step], u[:, ::step, ::step]
    coord = np.linspace(0.0, 1.0, a.shape[-1])
    write_well(
        path,
        dataset_name="darcy",
        dimensions={"x": coord, "y": coord},
        time=np.zeros(1),
        fields=[
            GridField("coefficient", np.ascontiguousarray(a), 0, time_varying=False),
            GridField("solution", np.ascontiguousarray(u), 0, time_varying=False),
        ],
        boundary_conditions=[
            {
                "name": f"{d}_wall",
                "bc_type": "WALL",
                "associated_dims": [d],
                "associated_fields": ["solution"],
                "values": np.zeros(2),
            }
            for d in ("x", "y")
        ],
        simulation_parameters={
            "alpha": config.alpha,
            "tau": config.tau,
            "coefficient_high": config.high,
            "coefficient_low": config.low,
            "forcing": config.forcing,
        },
        overwrite=overwrite,
    )
