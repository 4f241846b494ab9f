"""The particle rollout engine and the rollout CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import simsurrogate
from simsurrogate.cli import main
from simsurrogate.data.particles import FrameReader
from simsurrogate.models import EGNN
from simsurrogate.rollout import ParticleRollout, RolloutError


def _state(b: int = 2):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(b, 5, 3, generator=g),
        torch.randn(b, 5, 3, generator=g) * 0.5,
        torch.ones(b, 5),
    )


def test_rollout_streams_every_horizon(tmp_path: Path) -> None:
    engine = ParticleRollout(EGNN(hidden=16, n_layers=2, predict_velocity=True))
    pos, vel, q = _state()
    traj = engine.run(pos, vel, q, n_horizons=3, out=tmp_path / "r.h5")
    assert traj["pos"].shape == (4, 2, 5, 3)
    torch.testing.assert_close(traj["pos"][0], pos)
    reader = FrameReader(tmp_path / "r.h5")
    assert len(reader) == 8
    frames = reader.trajectory_frames(1)
    np.testing.assert_allclose(
        reader[int(frames[3])]["positions"], traj["pos"][3, 1].numpy(), rtol=1e-6
    )


def test_single_system_and_one_horizon_position_only_model() -> None:
    engine = ParticleRollout(EGNN(hidden=16, n_layers=2))
    pos, vel, q = _state(1)
    traj = engine.run(pos[0], vel[0], q[0], n_horizons=1)
    assert traj["pos"].shape == (2, 5, 3)
    with pytest.raises(RolloutError, match="predict_velocity"):
        engine.run(pos, vel, q, n_horizons=2)


def test_non_finite_state_names_the_horizon(tmp_path: Path) -> None:
    model = EGNN(hidden=16, n_layers=2, predict_velocity=True)
    with torch.no_grad():
        model.vel_scale_mlp[-1].bias.fill_(1e38)  # velocities overflow, positions follow
    pos, vel, q = _state()
    with pytest.raises(RolloutError, match="horizon 2"):
        ParticleRollout(model).run(pos, vel, q, n_horizons=4, out=tmp_path / "bad.h5")
    assert not (tmp_path / "bad.h5").exists()


def test_bad_shapes_are_named() -> None:
    engine = ParticleRollout(EGNN(hidden=16, n_layers=2))
    with pytest.raises(RolloutError, match="shapes"):
        engine.run(torch.zeros(2, 5, 3), torch.zeros(2, 4, 3), torch.zeros(2, 5), 1)


def test_rollout_cli_writes_metrics_and_plot(
    trained: Path, nbody_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "roll"
    code = main(
        [
            "rollout",
            "--checkpoint",
            str(trained),
            "--data",
            str(nbody_dir / "test.h5"),
            "--trajectory",
            "1",
            "--start",
            "5",
            "--steps",
            "3",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["position_mse_per_step"]) == 3 and metrics["frames_per_step"] == 10
    assert (out / "rollout.png").stat().st_size > 10_000
    assert isinstance(simsurrogate.load(trained), EGNN)


def test_rollout_cli_bad_start_is_clear(
    trained: Path, nbody_dir: Path, tmp_path: Path, capsys
) -> None:
    code = main(
        [
            "rollout",
            "--checkpoint",
            str(trained),
            "--data",
            str(nbody_dir / "test.h5"),
            "--start",
            "99",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 2
    assert "start frame 99" in capsys.readouterr().err
