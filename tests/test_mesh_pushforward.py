"""Pushforward (multi-step) training of mesh simulators and fine-tuning from a checkpoint."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import rectangle_mesh, smoothing_trajectory

from simsurrogate.checkpoint import KEY, CheckpointError, read_checkpoint, save_model
from simsurrogate.data.errors import DataError
from simsurrogate.data.mesh import MeshReader, MeshWriter
from simsurrogate.data.mesh_dynamics import MeshDataModule, MeshSteps
from simsurrogate.data.node_types import NodeType, predicted_nodes
from simsurrogate.models import MeshGraphNet
from simsurrogate.rollout.mesh import MeshRollout, MeshState
from simsurrogate.tasks import MeshDynamicsTask

FIELDS = ["velocity", "pressure"]
N_STEPS = 12


@pytest.fixture(scope="module")
def moving_inflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two trajectories of the toy smoothing flow, 12 steps, whose inflow velocity changes
    every step (so holding it at the truth differs from holding it at its first value)."""
    pos, cells, node_type = rectangle_mesh()
    path = tmp_path_factory.mktemp("pushforward") / "train.h5"
    inflow = node_type == NodeType.INFLOW
    with MeshWriter(path) as w:
        for seed in range(2):
            fields = smoothing_trajectory(pos, cells, node_type, N_STEPS, seed)
            fields["velocity"][:, inflow, 0] = 1.0 + 0.1 * np.arange(N_STEPS)[:, None]
            w.add_trajectory(
                mesh_pos=pos,
                cells=cells,
                node_type=node_type,
                fields=fields,
                time=np.arange(N_STEPS) * 0.01,
            )
    return path


def _model() -> MeshGraphNet:
    torch.manual_seed(0)
    return MeshGraphNet(latent=16, n_message_passing=2)


def _task(**kw) -> MeshDynamicsTask:
    task = MeshDynamicsTask(_model(), **kw)
    task.log = lambda *a, **k: None  # no trainer attached
    return task


def _warm_normalizers(task: MeshDynamicsTask, ds: MeshSteps) -> None:
    """Give the normalisers statistics, as a trained model has."""
    for i in range(4):
        task._step("train", ds[i])


def test_window_holds_the_true_fields_of_the_next_steps(moving_inflow: Path) -> None:
    ds = MeshSteps(moving_inflow, FIELDS, unroll_steps=3)
    # only start steps whose window t .. t + 4 fits: 12 - 1 - 3 per trajectory
    assert len(ds) == 2 * (N_STEPS - 4)
    assert ds.index[:, 1].max() == N_STEPS - 5
    with MeshReader(moving_inflow) as reader:
        truth = reader.window(1, 0, N_STEPS, FIELDS)
    i = int(np.flatnonzero((ds.index[:, 0] == 1) & (ds.index[:, 1] == 5))[0])
    g = ds[i]
    assert g.nodes["future_velocity"].shape == (72, 4, 2)
    assert g.nodes["future_pressure"].shape == (72, 4, 1)
    np.testing.assert_array_equal(g.nodes["velocity"].numpy(), truth["velocity"][5])
    for j in range(4):
        np.testing.assert_array_equal(
            g.nodes["future_velocity"][:, j].numpy(), truth["velocity"][6 + j]
        )
        np.testing.assert_array_equal(
            g.nodes["future_pressure"][:, j].numpy(), truth["pressure"][6 + j]
        )
    torch.testing.assert_close(g.nodes["next_velocity"], g.nodes["future_velocity"][:, 0])


def test_no_unroll_gives_the_one_step_samples(moving_inflow: Path) -> None:
    plain = MeshSteps(moving_inflow, FIELDS)
    assert len(plain) == 2 * (N_STEPS - 1)
    assert sorted(plain[3].nodes) == sorted(
        ["mesh_pos", "node_type", "velocity", "pressure", "next_velocity", "next_pressure"]
    )
    windowed = MeshSteps(moving_inflow, FIELDS, unroll_steps=2)
    assert plain.index[3].tolist() == windowed.index[3].tolist()  # same (trajectory, step)
    for key, value in plain[3].nodes.items():
        torch.testing.assert_close(windowed[3].nodes[key], value)
    # a task drawing k = 0 scores exactly the one-step loss
    task = _task(noise_std=0.0, unroll_steps=2)
    one = task._step("val", plain[3])
    pushed = task._step("val", task._pushforward(windowed[3], 0))
    torch.testing.assert_close(pushed, one)


def test_validation_stays_one_step(moving_inflow: Path) -> None:
    dm = MeshDataModule(str(moving_inflow), str(moving_inflow), unroll_steps=3)
    assert "future_velocity" in dm.dataset("train")[0].nodes
    assert "future_velocity" not in dm.dataset("val")[0].nodes
    assert dm.dataset("val").unroll_steps == 0
    assert len(dm.dataset("val")) == 2 * (N_STEPS - 1)  # every transition, not only windows


def test_unroll_is_the_rollout_engine_with_the_true_boundary(moving_inflow: Path) -> None:
    """The unrolled state equals MeshRollout's, driven by the truth on the held nodes."""
    ds = MeshSteps(moving_inflow, FIELDS, unroll_steps=3)
    task = _task(unroll_steps=3)
    _warm_normalizers(task, ds)
    g = ds[2]  # trajectory 0, step 2
    pushed = task._pushforward(g, 3)
    state = pushed.nodes["velocity"]
    held = ~predicted_nodes(g.nodes["node_type"])
    # held nodes carry the truth at t + 3, the others the model's prediction
    torch.testing.assert_close(state[held], g.nodes["future_velocity"][:, 2][held])
    assert not torch.allclose(state[~held], g.nodes["future_velocity"][:, 2][~held])
    # the scored target is the truth at t + 4
    torch.testing.assert_close(pushed.nodes["next_velocity"], g.nodes["future_velocity"][:, 3])
    torch.testing.assert_close(pushed.nodes["next_pressure"], g.nodes["future_pressure"][:, 3])

    truth = g.nodes["future_velocity"]
    engine = MeshRollout(task.model)
    start = MeshState.from_file(moving_inflow, 0, 2, FIELDS)
    result = engine.run(start, 3, dt=0.01, boundary=lambda t: [truth[:, round(t / 0.01) - 3]])
    task.model.train()  # the engine put the shared model in eval mode
    torch.testing.assert_close(torch.as_tensor(result.final[0].fields["velocity"]), state)


def test_unrolled_steps_carry_no_gradient_and_gather_no_statistics(moving_inflow: Path) -> None:
    ds = MeshSteps(moving_inflow, FIELDS, unroll_steps=3)
    task = _task(unroll_steps=3, noise_std=0.02)
    _warm_normalizers(task, ds)
    task.train()
    buffers = {k: v.clone() for k, v in task.model.state_dict().items() if "normalizer" in k}
    pushed = task._pushforward(ds[5], 3)
    assert task.model.training  # back in training mode
    assert not pushed.nodes["velocity"].requires_grad
    assert pushed.nodes["velocity"].grad_fn is None
    for key, value in task.model.state_dict().items():
        if key in buffers:
            torch.testing.assert_close(value, buffers[key], msg=key)
    loss = task._step("train", pushed, accumulate=False)
    loss.backward()
    assert all(p.grad is not None for p in task.model.parameters() if p.requires_grad)


def test_training_step_draws_k_from_zero_to_the_maximum(moving_inflow: Path, monkeypatch) -> None:
    """k is drawn from 0..K; only the k = 0 batches, states of the data, feed the input and
    output normalisers, never a state the model rolled out."""
    ds = MeshSteps(moving_inflow, FIELDS, unroll_steps=2)
    task = _task(unroll_steps=2)
    task.train()
    drawn = []
    real = task._pushforward
    monkeypatch.setattr(task, "_pushforward", lambda g, k: drawn.append(k) or real(g, k))
    normalizers = [task.model.node_normalizer, task.model.output_normalizer]
    torch.manual_seed(0)
    for _ in range(30):
        before = [float(n.accumulations) for n in normalizers]
        task.training_step(ds[0], 0)
        gathered = [float(n.accumulations) - b for n, b in zip(normalizers, before, strict=True)]
        assert gathered == [float(drawn[-1] == 0)] * 2, (drawn[-1], gathered)
    assert set(drawn) == {0, 1, 2}


def test_windows_shorter_than_the_unroll_are_refused(moving_inflow: Path, tmp_path: Path) -> None:
    task = MeshDynamicsTask(_model(), unroll_steps=4)
    dm = MeshDataModule(str(moving_inflow), unroll_steps=2)
    trainer = L.Trainer(max_steps=1, logger=False, default_root_dir=tmp_path)
    with pytest.raises(DataError, match=r"unrolls up to 4 steps.*data.unroll_steps = 2"):
        trainer.fit(task, dm)
    with pytest.raises(DataError, match="unroll_steps = 0"):  # no data module to check first
        task._pushforward(MeshSteps(moving_inflow, FIELDS)[0], 3)
    with pytest.raises(DataError, match="at least 13 time steps"):
        MeshSteps(moving_inflow, FIELDS, unroll_steps=11)


def test_init_checkpoint_copies_weights_and_statistics_and_fine_tunes(
    moving_inflow: Path, tmp_path: Path
) -> None:
    ds = MeshSteps(moving_inflow, FIELDS)
    source = _task()
    _warm_normalizers(source, ds)
    with torch.no_grad():
        for p in source.model.parameters():
            p.add_(0.01)  # weights that differ from a fresh model's
    ckpt = save_model(source.model, tmp_path / "pretrained.ckpt", "MeshDynamicsTask", step=123)

    torch.manual_seed(1)
    task = MeshDynamicsTask(
        MeshGraphNet(latent=16, n_message_passing=2), init_checkpoint=str(ckpt), unroll_steps=2
    )
    theirs = source.model.state_dict()
    for key, value in task.model.state_dict().items():
        torch.testing.assert_close(value, theirs[key], msg=key)

    with pytest.raises(CheckpointError, match=r"'latent': \(16, 32\)"):
        MeshDynamicsTask(MeshGraphNet(latent=32, n_message_passing=2), init_checkpoint=str(ckpt))

    # a fine-tune starts its own step count and optimizer, and records where it came from
    L.seed_everything(0)
    dm = MeshDataModule(str(moving_inflow), unroll_steps=2)
    trainer = L.Trainer(
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, dm)
    assert trainer.global_step == 3
    out = tmp_path / "finetuned.ckpt"
    trainer.save_checkpoint(out)
    meta = read_checkpoint(out)[KEY]
    origin = meta["provenance"]["initialised_from"]
    assert origin["checkpoint"] == str(ckpt) and origin["step"] == 123
    assert len(origin["sha256"]) == 64
