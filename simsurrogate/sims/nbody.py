"""Charged-particle N-body system of the EGNN paper (Satorras et al., 2021; NRI's charged set-up).

Five particles with charges +-1 interact through a Coulomb-like force

    F_i = c * sum_{j != i} q_i q_j (x_i - x_j) / |x_i - x_j|^3

(like charges repel), each Cartesian component clipped to +-0.1/dt as in the reference
generator. Positions start from N(0, loc_std^2), folded into the box [-box_size, box_size]^3
by elastic reflection (the reference applies its box walls to the initial state only; its
in-loop wall clamp is disabled), velocities are Gaussian directions of norm ``vel_norm``.
Integration is leapfrog with dt = 0.001: an initial half kick, then drift-kick steps. A frame
is stored every ``sample_every`` steps, holding the positions after the drift and the
half-step velocities before the following kick, exactly the reference's bookkeeping, so
frame k is step (k + 1) * sample_every and frames 30 -> 40 are 1000 integration steps apart.

Units are dimensionless (unit masses, unit Coulomb constant).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from simsurrogate.data.particles import write_frames


@dataclass(frozen=True)
class ChargedNBodyConfig:
    """Parameters of the charged N-body system; defaults are the EGNN paper's."""

    n_particles: int = 5
    box_size: float = 5.0
    loc_std: float = 1.0
    vel_norm: float = 0.5
    interaction_strength: float = 1.0
    dt: float = 0.001
    n_steps: int = 5000
    sample_every: int = 100
    clip_force: bool = True

    @property
    def max_force(self) -> float:
        """Per-component force clip of the reference generator, 0.1 / dt."""
        return 0.1 / self.dt

    @property
    def n_frames(self) -> int:
        """Stored frames per trajectory: n_steps / sample_every - 1 (the reference's count)."""
        return self.n_steps // self.sample_every - 1


def coulomb_forces(
    positions: np.ndarray, charges: np.ndarray, strength: float, max_force: float | None
) -> np.ndarray:
    """Forces (S, N, 3) on unit-mass particles at ``positions`` (S, N, 3), charges (S, N)."""
    diff = positions[:, :, None, :] - positions[:, None, :, :]  # x_i - x_j, (S, N, N, 3)
    dist2 = np.einsum("sijk,sijk->sij", diff, diff)
    n = positions.shape[1]
    eye = np.eye(n, dtype=bool)
    dist2[:, eye] = 1.0  # the diagonal is masked below; avoid dividing by zero
    size = strength * charges[:, :, None] * charges[:, None, :] / dist2**1.5
    size[:, eye] = 0.0
    forces = np.einsum("sij,sijk->sik", size, diff)
    if max_force is not None:
        np.clip(forces, -max_force, max_force, out=forces)
    return forces


def reflect_into_box(
    positions: np.ndarray, velocities: np.ndarray, box_size: float
) -> tuple[np.ndarray, np.ndarray]:
    """Fold positions outside [-box, box] back by an elastic reflection and turn velocities in."""
    pos, vel = positions.copy(), velocities.copy()
    over = pos > box_size
    pos[over] = 2 * box_size - pos[over]
    vel[over] = -np.abs(vel[over])
    under = pos < -box_size
    pos[under] = -2 * box_size - pos[under]
    vel[under] = np.abs(vel[under])
    return pos, vel


def simulate_charged(
    n_samples: int,
    config: ChargedNBodyConfig = ChargedNBodyConfig(),
    rng: np.random.Generator | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Simulate ``n_samples`` independent systems at once.

    Returns ``positions`` and ``velocities`` (S, F, N, 3) at the stored frames, ``charges``
    (S, N) and ``step`` (F,) the integration step of each frame.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    if config.n_steps % config.sample_every != 0:
        raise ValueError("n_steps must be a multiple of sample_every")
    rng = np.random.default_rng() if rng is None else rng
    s, n = n_samples, config.n_particles
    charges = rng.choice(np.array([-1.0, 1.0]), size=(s, n))
    pos = rng.standard_normal((s, n, 3)) * config.loc_std
    vel = rng.standard_normal((s, n, 3))
    vel *= config.vel_norm / np.linalg.norm(vel, axis=-1, keepdims=True)
    pos, vel = reflect_into_box(pos, vel, config.box_size)

    max_force = config.max_force if config.clip_force else None
    dt, strength = config.dt, config.interaction_strength
    n_frames = config.n_frames
    out_pos = np.empty((s, n_frames, n, 3))
    out_vel = np.empty((s, n_frames, n, 3))
    vel = vel + dt * coulomb_forces(pos, charges, strength, max_force)  # initial half kick
    frame = 0
    for step in tqdm(range(1, config.n_steps), disable=not progress, desc="n-body", leave=False):
        pos = pos + dt * vel
        if step % config.sample_every == 0:
            out_pos[:, frame], out_vel[:, frame] = pos, vel
            frame += 1
        vel = vel + dt * coulomb_forces(pos, charges, strength, max_force)
    steps = config.sample_every * np.arange(1, n_frames + 1)
    return {"positions": out_pos, "velocities": out_vel, "charges": charges, "step": steps}


SPLITS = ("train", "valid", "test")


def generate_nbody(
    out_dir: str | Path,
    *,
    n_train: int = 3000,
    n_valid: int = 2000,
    n_test: int = 2000,
    seed: int = 43,
    config: ChargedNBodyConfig = ChargedNBodyConfig(),
    chunk: int = 500,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Write ``train.h5``, ``valid.h5`` and ``test.h5`` in the particle schema under ``out_dir``.

    Each sample is one trajectory of ``config.n_frames`` frames; the splits draw from
    independent random streams spawned from ``seed``. Existing complete files are kept unless
    ``overwrite``.
    """
    out_dir = Path(out_dir)
    counts = {"train": n_train, "valid": n_valid, "test": n_test}
    streams = np.random.SeedSequence(seed).spawn(len(SPLITS))
    paths: dict[str, Path] = {}
    for split, stream in zip(SPLITS, streams, strict=True):
        path = out_dir / f"{split}.h5"
        paths[split] = path
        if path.exists() and not overwrite:
            continue
        rng = np.random.default_rng(stream)
        parts = []
        bar = tqdm(total=counts[split], desc=f"n-body {split}", unit="traj", disable=not progress)
        for start in range(0, counts[split], chunk):
            size = min(chunk, counts[split] - start)
            parts.append(simulate_charged(size, config, rng))
            bar.update(size)
        bar.close()
        _write_split(path, parts, config, seed, split)
    return paths


def _write_split(
    path: Path,
    parts: list[dict[str, np.ndarray]],
    config: ChargedNBodyConfig,
    seed: int,
    split: str,
) -> None:
    """Flatten simulated samples into ragged frames: one trajectory per sample."""
    pos = np.concatenate([p["positions"] for p in parts])  # (S, F, N, 3)
    vel = np.concatenate([p["velocities"] for p in parts])
    charges = np.concatenate([p["charges"] for p in parts])  # (S, N)
    s, f, n, _ = pos.shape
    steps = parts[0]["step"]
    write_frames(
        path,
        n_atoms=np.full(s * f, n, dtype=np.int64),
        positions=pos.reshape(-1, 3),
        velocities=vel.reshape(-1, 3),
        charges=np.repeat(charges[:, None, :], f, axis=1).reshape(-1),
        trajectory=np.repeat(np.arange(s, dtype=np.int64), f),
        time=np.tile(steps * config.dt, s),
        attrs={
            "dataset_name": "charged_nbody",
            "split": split,
            "seed": seed,
            "generator": "simsurrogate.sims.nbody",
            "config": {**asdict(config), "n_frames": config.n_frames},
        },
        units={"positions": "1", "velocities": "1", "charges": "1", "time": "1"},
        overwrite=True,
    )
