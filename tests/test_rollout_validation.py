"""Rollout scores of mesh models: RMSE against the truth, wake shedding, rollout validation."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import rectangle_mesh, smoothing_trajectory

from simsurrogate.data.errors import DataError
from simsurrogate.data.mesh import MeshReader, MeshWriter
from simsurrogate.data.mesh_dynamics import MeshDataModule
from simsurrogate.data.node_types import NodeType
from simsurrogate.models import MeshGraphNet
from simsurrogate.rollout.mesh import MeshRollout, MeshState
from simsurrogate.rollout.mesh_report import (
    score_mesh_rollouts,
    shedding,
    wake_cross_velocity,
    wake_error,
)
from simsurrogate.tasks import MeshDynamicsTask
from simsurrogate.tasks.callbacks import MeshRolloutValidation


def _model() -> MeshGraphNet:
    torch.manual_seed(0)
    return MeshGraphNet(latent=16, n_message_passing=2)


def test_wake_nodes_are_the_normal_nodes_behind_the_obstacle() -> None:
    pos, _, node_type = rectangle_mesh(nx=25, ny=9)
    obstacle = np.argmin(np.linalg.norm(pos - [0.2, 0.2], axis=1))
    node_type[obstacle] = NodeType.OBSTACLE
    velocity = np.zeros((3, len(pos), 2))
    velocity[..., 1] = pos[:, 0] + 10 * pos[:, 1]  # tags each node by its position
    vy = wake_cross_velocity(pos, node_type, velocity)
    centre = pos[obstacle]
    dx, dy = (pos - centre).T
    expected = (node_type == NodeType.NORMAL) & (dx > 0.1) & (dx < 0.6) & (np.abs(dy) < 0.1)
    assert vy.shape == (3, expected.sum()) and expected.sum() > 10
    np.testing.assert_array_equal(vy[0], velocity[0, expected, 1])
    # no obstacle, no wake
    assert (
        wake_cross_velocity(
            pos, np.where(node_type == NodeType.OBSTACLE, NodeType.NORMAL, node_type), velocity
        )
        is None
    )


def test_shedding_measures_amplitude_and_period_of_the_late_half() -> None:
    steps = np.arange(400)
    truth = 0.2 * np.sin(2 * np.pi * steps / 40)[:, None] * np.ones(5)
    damped = 0.05 * np.sin(2 * np.pi * steps / 25)[:, None] * np.ones(5)
    w = shedding(damped, truth)
    assert w["truth_vy_std"] == pytest.approx(0.2 / np.sqrt(2), rel=1e-3)
    assert w["model_vy_std"] == pytest.approx(0.05 / np.sqrt(2), rel=1e-3)
    assert w["truth_period_steps"] == pytest.approx(40, rel=1e-6)
    assert w["model_period_steps"] == pytest.approx(25, rel=1e-6)
    # a wake that dies out in the first half counts as steady
    dying = truth * (steps < 150)[:, None]
    w = shedding(dying, truth)
    assert w["model_vy_std"] == 0.0 and w["model_period_steps"] == float("inf")


def test_wake_error_is_zero_for_the_true_wake_and_grows_with_its_mismatch() -> None:
    steps = np.arange(400)
    truth = 0.2 * np.sin(2 * np.pi * steps / 40)[:, None] * np.ones(5)
    assert wake_error(shedding(truth, truth)) == pytest.approx(0.0, abs=1e-9)
    # half the amplitude, same period: ln 2
    assert wake_error(shedding(truth / 2, truth)) == pytest.approx(np.log(2), rel=1e-6)
    # same amplitude, period 25 steps against 40: ln 1.6
    faster = 0.2 * np.sin(2 * np.pi * steps / 25)[:, None] * np.ones(5)
    assert wake_error(shedding(faster, truth)) == pytest.approx(np.log(1.6), rel=1e-6)
    # a wake that has died to noise is steady: its period is infinite, as a flat wake's,
    # not the period of the noise (which here would be the truth's)
    flat = wake_error(shedding(np.zeros_like(truth), truth))
    faint = truth * 1e-3 + 1e-5 * np.random.default_rng(0).standard_normal(truth.shape)
    w = shedding(faint, truth)
    assert w["model_vy_std"] < 1e-3 and w["model_period_steps"] == pytest.approx(40, rel=1e-6)
    assert wake_error(w) == pytest.approx(np.log(w["truth_vy_std"] / w["model_vy_std"]) + 10)
    assert flat == pytest.approx(20.0)  # both terms at their cap
    # above the threshold the period counts again
    assert wake_error(w, min_std=1e-4) == pytest.approx(
        np.log(w["truth_vy_std"] / w["model_vy_std"]), rel=1e-6
    )


def test_scores_are_the_rmse_of_the_engine_rollout(mesh_dynamics_files: dict[str, Path]) -> None:
    model = _model()
    data = mesh_dynamics_files["train"]
    scores = score_mesh_rollouts(model, data, trajectories=[1, 3], steps=10)
    assert scores["steps"] == 10 and scores["dt"] == pytest.approx(0.01)
    assert [r["trajectory"] for r in scores["per_trajectory"]] == [1, 3]
    assert "wake" not in scores["per_trajectory"][0]  # no obstacle in this mesh
    engine = MeshRollout(model)
    with MeshReader(data) as reader:
        for row in scores["per_trajectory"]:
            i = row["trajectory"]
            state = MeshState.from_file(data, i, 0)
            pred = engine.run(state, 10, dt=0.01).fields[0]["velocity"]
            truth = reader.window(i, 0, 11, ["velocity"])["velocity"]
            err = (pred[1:] - truth[1:]) ** 2
            assert row["rmse"]["velocity"]["all"] == pytest.approx(np.sqrt(err.mean()), rel=1e-5)
            assert row["rmse"]["velocity"]["1"] == pytest.approx(np.sqrt(err[0].mean()), rel=1e-5)
            assert row["rmse"]["velocity"]["50"] is None  # only 10 steps
            still = np.sqrt(((truth[1:] - truth[0]) ** 2).mean())
            assert row["persistence_rmse"]["velocity"]["all"] == pytest.approx(still, rel=1e-5)
    mean = np.mean([r["rmse"]["pressure"]["all"] for r in scores["per_trajectory"]])
    assert scores["mean"]["pressure"]["all"] == pytest.approx(mean)

    with pytest.raises(DataError, match="no trajectory 9"):
        score_mesh_rollouts(model, data, trajectories=[9])
    with pytest.raises(DataError, match="cannot score 20 steps"):
        score_mesh_rollouts(model, data, steps=20)


def test_rollout_validation_logs_what_the_rollout_scores(
    mesh_dynamics_files: dict[str, Path], tmp_path: Path
) -> None:
    """The callback logs the rollout scores of the weights it validated, a checkpoint callback
    can choose by them, and training goes on in train mode."""
    L.seed_everything(0)
    task = MeshDynamicsTask(_model(), lr=1e-3)
    dm = MeshDataModule(
        str(mesh_dynamics_files["train"]), val=str(mesh_dynamics_files["valid"]), num_workers=0
    )
    rollout_val = MeshRolloutValidation(str(mesh_dynamics_files["valid"]), steps=15)
    best = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path, filename="best", monitor="val/rollout_rmse_velocity", mode="min"
    )
    modes = []

    class Mode(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            modes.append(pl_module.model.training)

    trainer = L.Trainer(
        max_steps=4,
        val_check_interval=2,
        callbacks=[rollout_val, best, Mode()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(task, dm)
    assert all(modes) and len(modes) == 4  # back in train mode after each rollout
    logged = trainer.callback_metrics
    scores = score_mesh_rollouts(task.model, mesh_dynamics_files["valid"], steps=15)
    for horizon, key in (("all", ""), ("1", "_1")):
        assert float(logged[f"val/rollout_rmse_velocity{key}"]) == pytest.approx(
            scores["mean"]["velocity"][horizon], rel=1e-5
        )
    assert "val/rollout_rmse_pressure" in logged
    assert "val/rollout_rmse_velocity_50" not in logged  # only 15 steps
    assert "val/rollout_wake_error" not in logged  # no obstacle, no wake
    assert best.best_model_path.endswith("best.ckpt")
    assert float(best.best_model_score) <= float(logged["val/rollout_rmse_velocity"]) + 1e-7


def test_rollout_validation_logs_the_wake_error(
    mesh_dynamics_files: dict[str, Path], tmp_path: Path
) -> None:
    """Past an obstacle the callback also logs the wake amplitude ratio and the wake error
    (|ln amplitude ratio| + |ln period ratio|) of the rollout it scored."""
    pos, cells, node_type = rectangle_mesh(nx=25, ny=9)
    node_type[np.argmin(np.linalg.norm(pos - [0.2, 0.2], axis=1))] = NodeType.OBSTACLE
    fields = smoothing_trajectory(pos, cells, node_type, 32, seed=0)
    assert wake_cross_velocity(pos, node_type, fields["velocity"]) is not None
    dx = pos[:, 0] - 0.2
    behind = (node_type == NodeType.NORMAL) & (dx > 0.1) & (dx < 0.6)
    fields["velocity"][:, behind, 1] = 0.1 * np.sin(2 * np.pi * np.arange(32) / 8)[:, None]
    path = tmp_path / "wake.h5"
    with MeshWriter(path) as w:
        w.add_trajectory(
            mesh_pos=pos,
            cells=cells,
            node_type=node_type,
            fields=fields,
            time=np.arange(32) * 0.01,
        )
    L.seed_everything(0)
    task = MeshDynamicsTask(_model(), lr=1e-3)
    dm = MeshDataModule(str(mesh_dynamics_files["train"]), val=str(path), num_workers=0)
    trainer = L.Trainer(
        max_steps=2,
        val_check_interval=2,
        callbacks=[MeshRolloutValidation(str(path))],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(task, dm)
    w = score_mesh_rollouts(task.model, path)["per_trajectory"][0]["wake"]
    assert w["truth_vy_std"] == pytest.approx(0.1 / np.sqrt(2), rel=1e-3)
    assert w["truth_period_steps"] == pytest.approx(8.0)
    ratio = w["model_vy_std"] / w["truth_vy_std"]
    error = wake_error(w)
    logged = trainer.callback_metrics
    assert float(logged["val/rollout_wake_amplitude_ratio"]) == pytest.approx(ratio, rel=1e-5)
    assert float(logged["val/rollout_wake_error"]) == pytest.approx(error, rel=1e-5)
    assert float(logged["val/rollout_wake_error"]) > 0.1  # an untrained model does not shed
