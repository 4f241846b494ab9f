"""2-D incompressible Navier–Stokes in vorticity form, as in the FNO paper (Li et al., 2021, §5.3).

On the periodic unit torus [0, 1)^2 the vorticity w(x, y, t) obeys

    ∂t w + u·∇w = ν Δw + f,    u = ∇⊥ψ = (∂y ψ, -∂x ψ),    -Δψ = w,

with the paper's forcing f(x, y) = 0.1 (sin 2π(x + y) + cos 2π(x + y)) and initial vorticity
w0 ~ N(0, 7^(3/2) (-Δ + 49 I)^(-2.5)). The solver, written anew after the algorithm of the
paper's public generator (``ns_2d.py``), is pseudo-spectral: ψ, u and ∇w come from the FFT of
w, the product u·∇w is formed on the grid and its transform is truncated by the 2/3 rule
(|k_x|, |k_y| <= (2/3)(n/2)). In time, the viscous term is Crank–Nicolson and the nonlinear
term and forcing are explicit: forward Euler as in the public generator (``scheme="euler"``,
first order), or Heun's predictor–corrector (``scheme="heun"``, second order). Axis 0 of every
field is x, axis 1 is y; grid points are x_j = j / n. Units are dimensionless.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from simsurrogate.data.grid import GridField, write_well
from simsurrogate.sims.grf import periodic_grf

SCHEMES = ("euler", "heun")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class NavierStokesConfig:
    """Parameters of one Navier–Stokes data set; defaults are the paper's ν = 1e-3 set.

    The paper's sets: ν = 1e-3 with T = 50, ν = 1e-4 with T = 30 (T = 50 for N = 10000),
    ν = 1e-5 with T = 20. ``resolution`` is the solver grid, ``stored_resolution`` the saved
    one (every ``resolution / stored_resolution``-th point); ``record_every`` is the time
    between saved snapshots; ``alpha`` and ``tau`` set the initial-vorticity covariance.
    """

    viscosity: float = 1e-3
    t_final: float = 50.0
    dt: float = 1e-4
    resolution: int = 256
    stored_resolution: int = 64
    record_every: float = 1.0
    alpha: float = 2.5
    tau: float = 7.0
    scheme: str = "euler"

    def __post_init__(self) -> None:
        _check_times(self.viscosity, self.t_final, self.dt, self.record_every, self.scheme)
        if self.resolution < 4 or self.resolution % 2:
            raise ValueError(f"resolution must be even and >= 4, got {self.resolution}")
        if self.stored_resolution < 1 or self.resolution % self.stored_resolution:
            raise ValueError(
                f"stored_resolution {self.stored_resolution} must divide "
                f"resolution {self.resolution}"
            )

    @property
    def sigma(self) -> float:
        """Amplitude of the initial-vorticity field, tau^(alpha - 1) (7^1.5 for the paper)."""
        return self.tau ** (self.alpha - 1.0)

    @property
    def n_records(self) -> int:
        """Snapshots after the initial state: t_final / record_every."""
        return round(self.t_final / self.record_every)


def _check_times(viscosity: float, t_final: float, dt: float, record_every: float, scheme: str):
    """Raise ValueError naming the first bad time-stepping parameter."""
    for name, value in (
        ("viscosity", viscosity),
        ("t_final", t_final),
        ("dt", dt),
        ("record_every", record_every),
    ):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive and finite, got {value}")
    for name, ratio in (
        ("record_every / dt", record_every / dt),
        ("t_final / record_every", t_final / record_every),
    ):
        if abs(ratio - round(ratio)) > 1e-6 * max(1.0, ratio):
            raise ValueError(f"{name} must be a whole number, got {ratio}")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {SCHEMES}, got {scheme!r}")


def grid(n: int, device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Coordinates (X, Y), each (n, n) float64, of the points x_j = j / n (axis 0 is x)."""
    t = torch.arange(n, dtype=torch.float64, device=device) / n
    return torch.meshgrid(t, t, indexing="ij")


def forcing(n: int, device: torch.device | str | None = None) -> Tensor:
    """The paper's forcing 0.1 (sin 2π(x + y) + cos 2π(x + y)) on the n x n grid, float64."""
    x, y = grid(n, device)
    phase = 2 * math.pi * (x + y)
    return 0.1 * (torch.sin(phase) + torch.cos(phase))


class _Spectral:
    """Fourier-space operators of the n x n rFFT grid: derivatives, inverse Laplacian, mask."""

    def __init__(self, n: int, device: torch.device, dtype: torch.dtype) -> None:
        kx = torch.fft.fftfreq(n, 1.0 / n, dtype=dtype, device=device)[:, None]
        ky = torch.fft.rfftfreq(n, 1.0 / n, dtype=dtype, device=device)[None, :]
        self.lap = 4 * math.pi**2 * (kx**2 + ky**2)  # eigenvalues of -Δ, (n, n//2 + 1)
        inv_lap = torch.where(self.lap > 0, 1.0 / self.lap.clamp_min(1.0), 0.0)
        # odd derivatives drop the Nyquist mode, whose sign is ambiguous for a real field
        dx = 2j * math.pi * torch.where(kx.abs() < n / 2, kx, 0.0)
        dy = 2j * math.pi * torch.where(ky.abs() < n / 2, ky, 0.0)
        # u = ∂y ψ, v = -∂x ψ, ∂x w, ∂y w, each a multiplier of w_h
        self.ops = torch.stack(torch.broadcast_tensors(dy * inv_lap, -dx * inv_lap, dx, dy))
        k_cut = (2.0 / 3.0) * (n // 2)
        self.dealias = (kx.abs() <= k_cut) & (ky.abs() <= k_cut)
        self.n = n

    def advection(self, w_h: Tensor) -> Tensor:
        """rFFT of u·∇w, 2/3-dealiased, for w_h (S, n, n//2 + 1)."""
        u, v, wx, wy = torch.fft.irfft2(w_h[:, None] * self.ops, s=(self.n, self.n)).unbind(1)
        return torch.fft.rfft2(u * wx + v * wy) * self.dealias


def solve_vorticity(
    w0: Tensor,
    f: Tensor,
    viscosity: float,
    t_final: float,
    dt: float,
    record_every: float,
    progress: bool = False,
    *,
    scheme: str = "euler",
    stride: int = 1,
) -> Tensor:
    """Advance vorticity w0 (S, n, n) under forcing f (n, n) to t_final; return snapshots.

    The result is (S, n_records + 1, n / stride, n / stride) in w0's dtype and device: the
    initial state, then the state every ``record_every`` time units (n_records = t_final /
    record_every), each subsampled to every ``stride``-th grid point. ``dt`` must divide
    ``record_every``. Viscous term Crank–Nicolson, nonlinear term and forcing explicit
    (``scheme`` "euler" as the paper's generator, or "heun").
    """
    _check_times(viscosity, t_final, dt, record_every, scheme)
    if w0.ndim != 3 or w0.shape[-1] != w0.shape[-2] or w0.shape[-1] % 2:
        raise ValueError(f"w0 must be (S, n, n) with n even, got {tuple(w0.shape)}")
    n = w0.shape[-1]
    if f.shape != (n, n):
        raise ValueError(f"forcing must be ({n}, {n}) like w0, got {tuple(f.shape)}")
    if stride < 1 or n % stride:
        raise ValueError(f"stride {stride} must divide the resolution {n}")
    steps_per_record = round(record_every / dt)
    n_records = round(t_final / record_every)
    dt = record_every / steps_per_record  # exact multiple of the record interval

    ops = _Spectral(n, w0.device, w0.dtype)
    half = 0.5 * dt * viscosity * ops.lap
    keep = (1.0 - half) / (1.0 + half)  # Crank–Nicolson amplification of the viscous part
    gain = dt / (1.0 + half)  # weight of the explicit terms
    f_h = gain * torch.fft.rfft2(f.to(device=w0.device, dtype=w0.dtype))

    w_h = torch.fft.rfft2(w0)
    out = w0.new_empty((w0.shape[0], n_records + 1, n // stride, n // stride))
    out[:, 0] = w0[:, ::stride, ::stride]
    bar = tqdm(
        total=n_records * steps_per_record,
        desc=f"navier-stokes nu={viscosity:g}",
        unit="step",
        disable=not progress,
        leave=False,
    )
    for record in range(1, n_records + 1):
        for _ in range(steps_per_record):
            n0 = ops.advection(w_h)
            explicit = keep * w_h + f_h
            if scheme == "heun":
                n1 = ops.advection(explicit - gain * n0)
                w_h = explicit - 0.5 * gain * (n0 + n1)
            else:
                w_h = explicit - gain * n0
        out[:, record] = torch.fft.irfft2(w_h, s=(n, n))[:, ::stride, ::stride]
        bar.update(steps_per_record)
    bar.close()
    return out


def generate_navier_stokes(
    out_dir: str | Path,
    *,
    n_train: int = 1000,
    n_test: int = 200,
    seed: int = 0,
    config: NavierStokesConfig = NavierStokesConfig(),
    chunk: int = 20,
    device: str | torch.device = "cpu",
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``train.hdf5`` and ``test.hdf5`` (The Well layout) under ``out_dir``; return paths.

    Each trajectory starts from its own draw of the initial-vorticity field on the solver grid
    (seeded per sample from ``seed`` and the split, so the data do not depend on ``chunk`` or
    ``device``), is solved in float64 in batches of ``chunk`` on ``device`` and stored as
    float32 at ``config.stored_resolution``: t0 field ``vorticity`` (n, T + 1, m, m) at times
    0, record_every, ..., t_final and the constant t0 field ``forcing`` (m, m). Existing files
    are kept (a file is complete once it exists) unless ``overwrite``.
    """
    counts = {"train": n_train, "test": n_test}
    for name, value in (*counts.items(), ("chunk", chunk)):
        if value < 1:
            raise ValueError(f"{'n_' if name in counts else ''}{name} must be >= 1, got {value}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    n, m = config.resolution, config.stored_resolution
    stride = n // m
    f = forcing(n, device)
    coords = np.arange(m, dtype=np.float32) / m
    time = np.arange(config.n_records + 1, dtype=np.float32) * config.record_every
    streams = np.random.SeedSequence(seed).spawn(len(SPLITS))
    paths: dict[str, Path] = {}
    for split, stream in zip(SPLITS, streams, strict=True):
        path = out_dir / f"{split}.hdf5"
        paths[split] = path
        if path.exists() and not overwrite:
            continue
        seeds = stream.generate_state(counts[split], dtype=np.uint64)
        data = np.empty((counts[split], config.n_records + 1, m, m), dtype=np.float32)
        bar = tqdm(
            total=counts[split], desc=f"navier-stokes {split}", unit="traj", disable=not progress
        )
        for start in range(0, counts[split], chunk):
            w0 = torch.cat(
                [
                    periodic_grf(
                        1,
                        (n, n),
                        config.alpha,
                        config.tau,
                        config.sigma,
                        generator=torch.Generator().manual_seed(int(s)),
                    )
                    for s in seeds[start : start + chunk]
                ]
            ).to(device)
            sol = solve_vorticity(
                w0,
                f,
                config.viscosity,
                config.t_final,
                config.dt,
                config.record_every,
                progress,
                scheme=config.scheme,
                stride=stride,
            )
            data[start : start + len(w0)] = sol.cpu().numpy()
            bar.update(len(w0))
        bar.close()
        write_well(
            path,
            dataset_name=f"navier_stokes_nu{config.viscosity:g}",
            dimensions={"x": coords, "y": coords},
            time=time,
            fields=[
                GridField("vorticity", data, 0),
                GridField(
                    "forcing",
                    f[::stride, ::stride].cpu().numpy().astype(np.float32),
                    0,
                    sample_varying=False,
                    time_varying=False,
                ),
            ],
            boundary_conditions=[
                {
                    "name": f"{d}_periodic",
                    "bc_type": "PERIODIC",
                    "associated_dims": [d],
                    "associated_fields": ["vorticity", "forcing"],
                }
                for d in ("x", "y")
            ],
            simulation_parameters={"viscosity": float(config.viscosity)},
            overwrite=True,
        )
    return paths
