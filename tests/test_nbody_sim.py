"""The charged N-body generator: physics, bookkeeping and file output."""

from __future__ import annotations

import numpy as np
import pytest

from simsurrogate.data.particles import FrameReader, validate
from simsurrogate.sims.nbody import (
    ChargedNBodyConfig,
    coulomb_forces,
    reflect_into_box,
    simulate_charged,
)


def test_forces_are_pairwise_coulomb_and_antisymmetric() -> None:
    pos = np.array([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]]])
    q = np.array([[1.0, 1.0]])
    f = coulomb_forces(pos, q, 1.0, None)
    # like charges repel with |F| = q q / r^2 = 1/4
    np.testing.assert_allclose(f[0, 0], [-0.25, 0, 0])
    np.testing.assert_allclose(f[0, 1], [0.25, 0, 0])
    f_opp = coulomb_forces(pos, np.array([[1.0, -1.0]]), 1.0, None)
    np.testing.assert_allclose(f_opp[0, 0], [0.25, 0, 0])
    rng = np.random.default_rng(0)
    many = coulomb_forces(rng.normal(size=(4, 5, 3)), rng.choice([-1.0, 1.0], (4, 5)), 1.0, None)
    np.testing.assert_allclose(many.sum(axis=1), 0.0, atol=1e-12)  # Newton's third law


def test_momentum_conserved_without_force_clipping() -> None:
    config = ChargedNBodyConfig(clip_force=False)
    out = simulate_charged(20, config, np.random.default_rng(1))
    momentum = out["velocities"].sum(axis=2)  # unit masses, (S, F, 3)
    assert np.abs(momentum - momentum[:, :1]).max() < 1e-10


def test_energy_nearly_conserved_by_leapfrog() -> None:
    """Total energy at the stored frames drifts little for systems without close encounters."""
    config = ChargedNBodyConfig(clip_force=False)
    out = simulate_charged(40, config, np.random.default_rng(2))
    pos, vel, q = out["positions"], out["velocities"], out["charges"]
    diff = pos[:, :, :, None] - pos[:, :, None, :]
    r = np.linalg.norm(diff, axis=-1)
    iu = np.triu_indices(5, 1)
    pot = (q[:, None, :, None] * q[:, None, None, :] / np.where(r > 0, r, np.inf))[
        ..., iu[0], iu[1]
    ]
    energy = 0.5 * (vel**2).sum(axis=(2, 3)) + pot.sum(-1)
    closest = r[..., iu[0], iu[1]].min(axis=(1, 2))
    calm = closest > 0.3  # skip systems with near-collisions (half-step velocities stored)
    assert calm.sum() > 10
    drift = np.abs(energy[calm] - energy[calm, :1]).max(axis=1)
    assert np.median(drift) < 1e-3


def test_reflection_puts_state_inside_box() -> None:
    pos = np.array([[[6.0, -7.0, 0.0]]])
    vel = np.array([[[1.0, -1.0, 0.5]]])
    p, v = reflect_into_box(pos, vel, 5.0)
    np.testing.assert_allclose(p, [[[4.0, -3.0, 0.0]]])
    np.testing.assert_allclose(v, [[[-1.0, 1.0, 0.5]]])


def test_frame_bookkeeping_matches_reference() -> None:
    config = ChargedNBodyConfig()
    assert config.n_frames == 49
    out = simulate_charged(2, config, np.random.default_rng(3))
    assert out["positions"].shape == (2, 49, 5, 3)
    # frame k is integration step (k + 1) * 100: frames 30 -> 40 are 1000 steps apart
    assert out["step"][40] - out["step"][30] == 1000
    assert set(np.unique(out["charges"])) <= {-1.0, 1.0}
    np.testing.assert_allclose(
        np.linalg.norm(out["velocities"][:, 0], axis=-1).mean(), 0.5, atol=0.3
    )


def test_generated_files_are_valid_particle_files(nbody_dir) -> None:
    for split, n in (("train", 64), ("valid", 32), ("test", 32)):
        path = nbody_dir / f"{split}.h5"
        validate(path)
        reader = FrameReader(path)
        assert len(reader) == n * 49
        assert len(reader.trajectory_frames(n - 1)) == 49
        reader.close()


def test_bad_sample_count() -> None:
    with pytest.raises(ValueError, match="n_samples"):
        simulate_charged(0)


def test_generation_is_reproducible_byte_for_byte(tmp_path) -> None:
    """Same seed, same files: the dataset card's checksums rely on it."""
    from simsurrogate.sims.nbody import generate_nbody

    sizes = {"n_train": 4, "n_valid": 2, "n_test": 2, "progress": False}
    config = ChargedNBodyConfig(n_steps=1000)
    a = generate_nbody(tmp_path / "a", config=config, **sizes)
    b = generate_nbody(tmp_path / "b", config=config, **sizes)
    for split in a:
        assert a[split].read_bytes() == b[split].read_bytes()
    c = generate_nbody(tmp_path / "c", seed=7, config=config, **sizes)
    assert c["train"].read_bytes() != a["train"].read_bytes()
