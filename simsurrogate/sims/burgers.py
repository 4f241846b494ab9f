"""1-D viscous Burgers equation of the FNO paper (Li et al., ICLR 2021, §5.1).

    u_t + (u^2 / 2)_x = nu u_xx   on the periodic unit interval [0, 1),  0 < t <= 1,

with nu = 0.1 and initial conditions u0 ~ N(0, 625 (-Δ + 25 I)^-2). The paper's data come
from a pseudo-spectral solver with a stiff time integrator (Chebfun's ``spin``) on 8192
points, subsampled to 8192 / 2^k points for storage; the task maps u0 to u(t = 1).

Written anew from that description: Fourier pseudo-spectral in space (grid x_j = j / N,
angular wavenumbers 2 pi m, the nonlinear term de-aliased by the 2/3 rule) and exponential
time differencing RK4 in time (Cox & Matthews 2002), with coefficients evaluated by contour
integrals as in Kassam & Trefethen (2005) so that they stay accurate for tiny |nu k^2 dt|.
The viscous term is integrated exactly, so the step is limited by accuracy, not by the
stiffness of nu k^2 on 8192 points. A batch of samples is advanced at once, in float64.
Quantities are dimensionless.
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

SPLITS = ("train", "test")


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True)
class BurgersConfig:
    """Parameters of the equation, the solver and the initial-condition field (FNO defaults).

    ``resolution`` is the solver's grid (points on [0, 1)); ``dt`` its largest time step
    (shortened so that whole steps reach ``t_final``). Initial conditions are drawn from
    N(0, sigma^2 (-Δ + tau^2 I)^-alpha).
    """

    viscosity: float = 0.1
    resolution: int = 8192
    t_final: float = 1.0
    dt: float = 1e-3
    alpha: float = 2.0
    tau: float = 5.0
    sigma: float = 25.0

    def __post_init__(self) -> None:
        _check_positive(viscosity=self.viscosity, t_final=self.t_final, dt=self.dt)
        if self.resolution < 4 or self.resolution % 2:
            raise ValueError(f"resolution must be even and >= 4, got {self.resolution}")


def _etdrk4_coefficients(lin: Tensor, h: float, n_contour: int = 32) -> tuple[Tensor, ...]:
    """ETDRK4 coefficients for a diagonal linear operator ``lin`` (K,) and step ``h``.

    Returns exp(hL), exp(hL/2) and h times the phi-function combinations Q, f1, f2, f3 of
    Kassam & Trefethen (2005), each (K,) real. The phi functions are averaged over
    ``n_contour`` points on the unit circle around each hL, avoiding the cancellation of
    their closed forms near hL = 0.
    """
    angles = 2 * math.pi * (torch.arange(n_contour, dtype=torch.float64) + 0.5) / n_contour
    z = (h * lin)[:, None] + torch.exp(1j * angles).to(lin.device)
    ez, z3 = torch.exp(z), z**3

    def contour_mean(values: Tensor) -> Tensor:
        return h * values.mean(dim=1).real

    q = contour_mean((torch.exp(z / 2) - 1) / z)
    f1 = contour_mean((-4 - z + ez * (4 - 3 * z + z**2)) / z3)
    f2 = contour_mean((2 + z + ez * (z - 2)) / z3)
    f3 = contour_mean((-4 - 3 * z - z**2 + ez * (4 - z)) / z3)
    return torch.exp(h * lin), torch.exp(h * lin / 2), q, f1, f2, f3


def solve_burgers(
    u0: Tensor,
    viscosity: float,
    t_final: float,
    dt: float,
    snapshots: int = 1,
    progress: bool = False,
) -> Tensor:
    """Advance initial states ``u0`` (S, N) on x_j = j / N to ``t_final``; batched, float64.

    Returns (S, snapshots + 1, N): the states at ``snapshots + 1`` equally spaced times from 0
    to ``t_final``, the first being ``u0`` itself. Each interval between snapshots takes whole
    ETDRK4 steps no longer than ``dt``. Runs on ``u0``'s device.
    """
    _check_positive(viscosity=viscosity, t_final=t_final, dt=dt)
    if u0.ndim != 2 or u0.shape[1] < 4 or u0.shape[1] % 2:
        raise ValueError(f"u0 must be (samples, N) with N even and >= 4, got {tuple(u0.shape)}")
    if snapshots < 1:
        raise ValueError(f"snapshots must be >= 1, got {snapshots}")
    u0 = u0.to(torch.float64)
    n = u0.shape[1]
    modes = torch.arange(n // 2 + 1, device=u0.device, dtype=torch.float64)
    k = 2 * math.pi * modes
    # -(u^2/2)_x in Fourier space, keeping only modes below N/3 (2/3-rule de-aliasing)
    nonlin_factor = torch.where(modes < n / 3, -0.5j * k, torch.zeros((), dtype=torch.complex128))

    def nonlinear(v: Tensor) -> Tensor:
        return nonlin_factor * torch.fft.rfft(torch.fft.irfft(v, n=n) ** 2)

    interval = t_final / snapshots
    n_sub = math.ceil(interval / dt - 1e-9)  # tolerance: t_final / dt is often not exact
    e, e2, q, f1, f2, f3 = _etdrk4_coefficients(-viscosity * k**2, interval / n_sub)
    v = torch.fft.rfft(u0)
    out = torch.empty((u0.shape[0], snapshots + 1, n), dtype=torch.float64, device=u0.device)
    out[:, 0] = u0
    steps = tqdm(total=snapshots * n_sub, desc="Burgers", unit="step", disable=not progress)
    for snap in range(1, snapshots + 1):
        for _ in range(n_sub):
            nv = nonlinear(v)
            a = e2 * v + q * nv
            na = nonlinear(a)
            b = e2 * v + q * na
            nb = nonlinear(b)
            c = e2 * a + q * (2 * nb - nv)
            nc = nonlinear(c)
            v = e * v + f1 * nv + 2 * f2 * (na + nb) + f3 * nc
        steps.update(n_sub)
        out[:, snap] = torch.fft.irfft(v, n=n)
    steps.close()
    return out


def _initial_conditions(
    n_samples: int, config: BurgersConfig, stream: np.random.SeedSequence
) -> Tensor:
    """(n_samples, resolution) initial states, sample i drawn from its own child seed.

    One seed per sample makes a split's data independent of the chunk size, and the first
    samples of a larger split equal those of a smaller one.
    """
    fields = []
    for child in stream.spawn(n_samples):
        gen = torch.Generator().manual_seed(int(child.generate_state(1, np.uint64)[0] >> 1))
        shape = (config.resolution,)
        fields.append(periodic_grf(1, shape, config.alpha, config.tau, config.sigma, gen))
    return torch.cat(fields)


def generate_burgers(
    out_dir: str | Path,
    *,
    n_train: int = 1000,
    n_test: int = 200,
    seed: int = 0,
    stored_resolution: int = 1024,
    config: BurgersConfig = BurgersConfig(),
    chunk: int = 100,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write ``train.h5`` and ``test.h5`` (The Well layout) under ``out_dir``; return paths.

    Each trajectory holds the field ``u`` (float32) at t = 0 and t = ``config.t_final`` on
    ``stored_resolution`` points x_j = j / stored_resolution, subsampled from the solver's
    ``config.resolution`` points (which it must divide). The splits draw from independent
    random streams spawned from ``seed``; ``chunk`` samples are solved at once. Existing files
    are kept unless ``overwrite``.
    """
    if stored_resolution < 1 or config.resolution % stored_resolution:
        raise ValueError(
            f"stored_resolution={stored_resolution} must divide the solver resolution "
            f"{config.resolution}"
        )
    counts = {"train": n_train, "test": n_test}
    for split, count in counts.items():
        if count < 1:
            raise ValueError(f"n_{split} must be positive, got {count}")
    if chunk < 1:
        raise ValueError(f"chunk must be positive, got {chunk}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stride = config.resolution // stored_resolution
    streams = np.random.SeedSequence(seed).spawn(len(SPLITS))
    paths: dict[str, Path] = {}
    for split, stream in zip(SPLITS, streams, strict=True):
        path = out_dir / f"{split}.h5"
        paths[split] = path
        if path.exists() and not overwrite:
            continue
        u0 = _initial_conditions(counts[split], config, stream)
        parts = []
        bar = tqdm(total=counts[split], desc=f"Burgers {split}", unit="traj", disable=not progress)
        for start in range(0, counts[split], chunk):
            batch = u0[start : start + chunk]
            u = solve_burgers(batch, config.viscosity, config.t_final, config.dt)
            parts.append(u[:, :, ::stride].to(torch.float32).numpy())
            bar.update(len(batch))
        bar.close()
        write_well(
            path,
            dataset_name="burgers_1d",
            dimensions={"x": np.arange(stored_resolution) / stored_resolution},
            time=np.array([0.0, config.t_final]),
            fields=[GridField("u", np.concatenate(parts), 0)],
            boundary_conditions=[
                {
                    "name": "x_periodic",
                    "bc_type": "PERIODIC",
                    "associated_dims": ["x"],
                    "associated_fields": ["u"],
                }
            ],
            simulation_parameters={
                "nu": float(config.viscosity),
                "resolution": int(config.resolution),
            },
            overwrite=True,
        )
    return paths
