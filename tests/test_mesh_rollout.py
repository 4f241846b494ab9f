"""The mesh rollout engine (fluids), its XDMF output and the mesh `simsurrogate rollout` report."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import lightning as L
import meshio
import numpy as np
import pytest
import torch
import xarray as xr
from conftest import rectangle_mesh, smoothing_trajectory

from simsurrogate.checkpoint import KEY, make_metadata
from simsurrogate.cli import main
from simsurrogate.data.mesh import MeshReader, MeshWriter
from simsurrogate.data.mesh_dynamics import MeshDataModule
from simsurrogate.data.node_types import PREDICTED_TYPES, NodeType
from simsurrogate.models import EGNN, MeshGraphNet
from simsurrogate.rollout import MeshRollout, MeshState, RolloutError
from simsurrogate.tasks import MeshDynamicsTask


def _model(seed: int = 0, **kw) -> MeshGraphNet:
    torch.manual_seed(seed)
    return MeshGraphNet(latent=16, n_message_passing=2, **kw).eval()


def _state(nx: int = 12, ny: int = 6, seed: int = 0, t0: float = 0.0) -> MeshState:
    pos, cells, node_type = rectangle_mesh(nx, ny)
    flow = smoothing_trajectory(pos, cells, node_type, 1, seed)
    return MeshState(
        mesh_pos=pos,
        cells=cells,
        node_type=node_type,
        fields={"velocity": flow["velocity"][0], "pressure": flow["pressure"][0]},
        time=t0,
    )


def _held(state: MeshState) -> np.ndarray:
    return ~np.isin(state.node_type, PREDICTED_TYPES)


def _save_checkpoint(model, path: Path, task: str = "MeshDynamicsTask") -> Path:
    """A checkpoint as simsurrogate's training writes it (metadata + ``model.`` weights)."""
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({KEY: make_metadata(model, task), "state_dict": state}, path)
    return path


# ------------------------------------------------------------------------------ engine


def test_boundary_nodes_are_held_at_their_initial_values() -> None:
    state = _state()
    result = MeshRollout(_model()).run(state, 6, dt=0.01)
    vel, p = result.fields[0]["velocity"], result.fields[0]["pressure"]
    assert vel.shape == (7, 72, 2) and p.shape == (7, 72, 1)
    held = _held(state)
    assert (state.node_type[held] != NodeType.NORMAL).all() and held.sum() > 10
    # walls keep zero, inflow keeps its profile: bit for bit, at every step
    np.testing.assert_array_equal(vel[:, held], np.broadcast_to(vel[0, held], vel[:, held].shape))
    np.testing.assert_array_equal(vel[0], state.fields["velocity"])
    # predicted nodes move; pressure comes from the model everywhere, walls included
    assert np.abs(vel[-1, ~held] - vel[0, ~held]).max() > 1e-3
    assert np.abs(p[-1, held] - p[0, held]).max() > 1e-3
    np.testing.assert_allclose(result.time[0], np.arange(7) * 0.01)
    assert result.final[0].time == pytest.approx(0.06)
    np.testing.assert_array_equal(result.final[0].fields["velocity"], vel[-1])


def test_time_dependent_inflow_from_a_boundary_function() -> None:
    state = _state(t0=1.0)
    inflow = state.node_type == NodeType.INFLOW
    calls = []

    def boundary(t: float) -> list[np.ndarray]:
        calls.append(t)
        v = np.array(state.fields["velocity"])  # only held nodes' rows are used
        v[inflow] = [t, 0.0]
        return [v]

    result = MeshRollout(_model()).run(state, 3, dt=0.5, boundary=boundary)
    assert calls == pytest.approx([1.5, 2.0, 2.5])
    vel = result.fields[0]["velocity"]
    np.testing.assert_array_equal(vel[1:, inflow, 0].T, np.tile([1.5, 2.0, 2.5], (4, 1)))
    wall = state.node_type == NodeType.WALL_BOUNDARY
    assert (vel[:, wall] == 0).all()
    with pytest.raises(RolloutError, match=r"boundary\(1.5\) returned 2 arrays for 1"):
        MeshRollout(_model()).run(state, 1, dt=0.5, boundary=lambda t: [None, None])


def test_batched_meshes_of_different_sizes_equal_single_runs() -> None:
    engine = MeshRollout(_model())
    a, b = _state(12, 6, seed=1), _state(9, 5, seed=2, t0=0.3)
    both = engine.run([a, b], 4, dt=0.1)
    for state, fields, t in zip((a, b), both.fields, both.time, strict=True):
        alone = engine.run(state, 4, dt=0.1)
        for name in ("velocity", "pressure"):
            np.testing.assert_allclose(fields[name], alone.fields[0][name], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(t, alone.time[0])
    assert both.fields[1]["velocity"].shape == (5, 45, 2)
    assert both.final[1].time == pytest.approx(0.7)


def _nan_after(model: MeshGraphNet, step: int, rows: slice, column: slice) -> None:
    """From model call ``step`` on, the decoder writes NaN into ``[rows, column]``."""
    calls = []

    def hook(module, args, output):
        calls.append(1)
        if len(calls) >= step:
            output = output.clone()
            output[rows, column] = float("nan")
        return output

    model.net.register_forward_hook(hook)


def test_non_finite_state_names_step_trajectory_field_and_keeps_files(tmp_path: Path) -> None:
    model = _model()
    _nan_after(model, 3, slice(72, None), slice(2, 3))  # pressure of trajectory 1 only
    out = tmp_path / "bad.h5"
    with pytest.raises(RolloutError, match=r"non-finite pressure at step 3 .*trajectory 1") as e:
        MeshRollout(model).run([_state(), _state(seed=3)], 10, dt=0.01, out=out)
    assert e.value.step == 3 and e.value.trajectory == 1 and e.value.field == "pressure"
    assert "keeps steps 0..2" in str(e.value)
    # the mesh file is finished (not left as a temporary file) and holds steps 0..2
    assert out.exists() and not list(tmp_path.glob(".bad.h5.*"))
    for group in ("trajectories/000000", "trajectories/000001"):
        ds = xr.open_dataset(out, group=group, engine="h5netcdf")
        assert ds.sizes["time"] == 3 and np.isfinite(ds["pressure"].values).all()
    with meshio.xdmf.TimeSeriesReader(tmp_path / "bad_000001.xdmf") as reader:
        reader.read_points_cells()
        assert reader.num_steps == 3


def test_non_finite_velocity_without_a_file() -> None:
    model = _model()
    _nan_after(model, 2, slice(None), slice(None))
    with pytest.raises(
        RolloutError,
        match=r"non-finite velocity at step 2 \(time 0.02\) in "
        r"trajectory 0: 44 of 72 nodes, first node 7",
    ):
        MeshRollout(model).run(_state(), 5, dt=0.01)


def test_failure_before_the_first_step_leaves_no_file(tmp_path: Path) -> None:
    state = _state()
    state.cells = state.cells[:, ::-1]  # clockwise triangles: the mesh file refuses them
    with pytest.raises(ValueError, match="inverted"):
        MeshRollout(_model()).run(state, 2, out=tmp_path / "r.h5")
    assert list(tmp_path.iterdir()) == []


def test_states_that_do_not_fit_the_model_are_named(tmp_path: Path) -> None:
    engine = MeshRollout(_model())
    s = _state()
    no_pressure = MeshState(s.mesh_pos, s.cells, s.node_type, {"velocity": s.fields["velocity"]})
    with pytest.raises(RolloutError, match=r"state 0 lacks field 'pressure'"):
        engine.run(no_pressure, 1)
    three = MeshState(s.mesh_pos, s.cells, s.node_type, {**s.fields, "velocity": np.zeros((72, 3))})
    with pytest.raises(RolloutError, match=r"'velocity' has shape \(72, 3\).*\(72, 2\)"):
        engine.run([s, three], 1)
    bad_type = MeshState(s.mesh_pos, s.cells, np.where(s.node_type == 4, 12, s.node_type), s.fields)
    with pytest.raises(RolloutError, match="unknown node type 12"):
        engine.run(bad_type, 1)
    flat = MeshState(np.c_[s.mesh_pos, np.zeros(72)], s.cells, s.node_type, s.fields)
    with pytest.raises(RolloutError, match="mesh is 3-D .* model is 2-D"):
        engine.run(flat, 1)
    no_edges = MeshState(s.mesh_pos, None, s.node_type, s.fields)
    with pytest.raises(RolloutError, match="cells or edge_index"):
        engine.run(no_edges, 1)

    # a checkpoint trained on other fields
    other = _model(velocity_field="momentum", output_fields={"density": 1})
    ckpt = _save_checkpoint(other, tmp_path / "other.ckpt")
    with pytest.raises(RolloutError, match=r"lacks field 'momentum'.*\['momentum', 'density'\]"):
        MeshRollout.from_checkpoint(ckpt).run(s, 1)
    egnn = _save_checkpoint(EGNN(hidden=8, n_layers=1), tmp_path / "egnn.ckpt", "Particles")
    with pytest.raises(RolloutError, match="holds a EGNN, not a mesh model"):
        MeshRollout.from_checkpoint(egnn)


def test_files_read_back_equal_to_what_the_engine_produced(tmp_path: Path) -> None:
    engine = MeshRollout(_model())
    a, b = _state(seed=4, t0=2.0), _state(9, 5, seed=5, t0=2.0)
    ref = engine.run([a, b], 5, dt=0.25)
    result = engine.run([a, b], 5, dt=0.25, out=tmp_path / "run.h5")
    assert result.fields is None and result.time is None  # streamed, not kept
    assert result.xdmf == [tmp_path / "run_000000.xdmf", tmp_path / "run_000001.xdmf"]
    for i, state in enumerate((a, b)):
        ds = xr.open_dataset(result.path, group=f"trajectories/{i:06d}", engine="h5netcdf")
        np.testing.assert_allclose(ds["time"].values, 2.0 + 0.25 * np.arange(6))
        np.testing.assert_array_equal(ds["node_type"].values, state.node_type)
        np.testing.assert_array_equal(ds["cells"].values, state.cells)
        for name in ("velocity", "pressure"):
            np.testing.assert_allclose(ds[name].values, ref.fields[i][name], rtol=1e-6)
        np.testing.assert_array_equal(
            result.final[i].fields["velocity"], ref.final[i].fields["velocity"]
        )
        with meshio.xdmf.TimeSeriesReader(result.xdmf[i]) as reader:
            points, cells = reader.read_points_cells()
            assert reader.num_steps == 6
            np.testing.assert_array_equal(points[:, :2], state.mesh_pos)
            assert (points[:, 2] == 0).all()
            np.testing.assert_array_equal(cells[0].data, state.cells)
            for k in range(6):
                t, point_data, _ = reader.read_data(k)
                assert t == pytest.approx(2.0 + 0.25 * k)
                vel = point_data["velocity"]
                assert vel.shape == (len(state.mesh_pos), 3) and (vel[:, 2] == 0).all()
                np.testing.assert_array_equal(vel[:, :2], ref.fields[i]["velocity"][k])
                np.testing.assert_array_equal(
                    point_data["pressure"], ref.fields[i]["pressure"][k, :, 0]
                )
                np.testing.assert_array_equal(point_data["node_type"], state.node_type)
    text = result.xdmf[0].read_text()
    assert 'AttributeType="Vector"' in text and "run.xdmf.h5:/000000/velocity/000005" in text


def test_memory_stays_flat_when_streaming(tmp_path: Path) -> None:
    engine = MeshRollout(_model())
    state = _state(40, 20)  # 800 nodes: keeping a step costs ~10 kB

    def peak(steps: int, stream: bool) -> int:
        out = tmp_path / f"r{steps}.h5" if stream else None
        tracemalloc.start()
        result = engine.run(state, steps, dt=0.01, out=out, xdmf=False)
        size = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert (result.fields is None) == stream  # streamed runs return the last state only
        return size

    peak(2, True)  # warm caches
    kept = peak(60, False) - peak(10, False)
    streamed = peak(60, True) - peak(10, True)
    assert kept > 400_000 and streamed < 100_000, (kept, streamed)


# ------------------------------------------------------------------------------ the report


@pytest.fixture(scope="module")
def trained_mesh(mesh_dynamics_files: dict[str, Path], tmp_path_factory) -> Path:
    """A tiny MeshGraphNet fitted for a few steps, saved as training saves it."""
    root = tmp_path_factory.mktemp("mesh_ckpt")
    L.seed_everything(0)
    task = MeshDynamicsTask(MeshGraphNet(latent=16, n_message_passing=2), lr=3e-3, noise_std=0.0)
    dm = MeshDataModule(str(mesh_dynamics_files["train"]), batch_size=4)
    trainer = L.Trainer(
        max_steps=20,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=root,
    )
    trainer.fit(task, dm)
    trainer.save_checkpoint(root / "mgn.ckpt")
    return root / "mgn.ckpt"


def _long_file(path: Path, n_steps: int = 60) -> Path:
    """A 60-step trajectory whose stored wall velocity is wrong (5 m/s) from step 3 on: a rollout
    that copied boundary values from the truth would show it."""
    pos, cells, node_type = rectangle_mesh()
    fields = smoothing_trajectory(pos, cells, node_type, n_steps, seed=7)
    wall = node_type == NodeType.WALL_BOUNDARY
    fields["velocity"][3:, wall] = 5.0
    with MeshWriter(path) as w:
        w.add_trajectory(
            mesh_pos=pos,
            cells=cells,
            node_type=node_type,
            fields=fields,
            time=0.5 + np.arange(n_steps) * 0.01,
        )
    return path


def test_rollout_cli_writes_every_file_and_scores(
    trained_mesh: Path, tmp_path: Path, capsys
) -> None:
    data = _long_file(tmp_path / "long.h5")
    out = tmp_path / "roll"
    args = [
        "rollout",
        "--checkpoint",
        str(trained_mesh),
        "--data",
        str(data),
        "--steps",
        "55",
        "--start",
        "2",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "steps/s" in line and "RMSE at 1/50/all steps" in line
    for name in ("rollout.h5", "rollout.xdmf", "rollout.xdmf.h5", "metrics.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "rollout.png").stat().st_size > 20_000
    assert (out / "rollout.gif").stat().st_size > 20_000
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps_with_truth"] == 55 and metrics["dt"] == pytest.approx(0.01)
    for field in ("velocity", "pressure"):
        rmse = metrics["rmse"][field]
        assert set(rmse) == {"1", "50", "all"} and all(v > 0 for v in rmse.values()), rmse
        assert len(metrics["rmse_per_step"][field]) == 55
        assert rmse["1"] == pytest.approx(metrics["rmse_per_step"][field][0])
    assert metrics["speed"]["steps_per_s"] > 0 and metrics["speed"]["model_ms_per_step"] > 0

    # the rollout starts at stored step 2 and never reads the truth's (wrong) wall values
    with MeshReader(out / "rollout.h5") as r, MeshReader(data) as truth:
        node_type = r.static(0)["node_type"]
        wall = node_type == NodeType.WALL_BOUNDARY
        pred = r.window(0, 0, 56, ["velocity"])["velocity"]
        assert (pred[:, wall] == 0).all()
        np.testing.assert_array_equal(pred[0], truth.window(0, 2, 1)["velocity"][0])
        np.testing.assert_allclose(r.time(0), 0.52 + 0.01 * np.arange(56))
    with meshio.xdmf.TimeSeriesReader(out / "rollout.xdmf") as reader:
        reader.read_points_cells()
        assert reader.num_steps == 56


def test_rollout_cli_without_truth_for_50_steps_and_bad_start(
    trained_mesh: Path, mesh_dynamics_files: dict[str, Path], tmp_path: Path, capsys
) -> None:
    data = mesh_dynamics_files["test"]  # 20 steps
    out = tmp_path / "roll"
    base = ["rollout", "--checkpoint", str(trained_mesh), "--data", str(data), "--out", str(out)]
    assert main([*base, "--steps", "8", "--start", "15"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps_with_truth"] == 4
    assert metrics["rmse"]["velocity"]["50"] is None and metrics["rmse"]["velocity"]["all"] > 0
    assert "velocity " in capsys.readouterr().out
    assert main([*base, "--start", "99"]) == 2
    assert "start step 99" in capsys.readouterr().err


def test_bf16_mixed_rollout_keeps_float32_state_and_tracks_float32(
    trained_mesh: Path, tmp_path: Path, capsys
) -> None:
    """bf16-mixed runs the model's products in bfloat16; the state stays float32, boundary
    nodes stay exact, and over 50 steps it stays within a small fraction of the float32
    rollout's change from the initial state."""
    data = _long_file(tmp_path / "long.h5")
    state = MeshState.from_file(data, 0, 0)
    runs = {
        p: MeshRollout.from_checkpoint(trained_mesh, precision=p).run([state], 50, dt=0.01)
        for p in ("32", "bf16-mixed")
    }
    u32, u16 = (runs[p].fields[0]["velocity"] for p in ("32", "bf16-mixed"))
    assert u16.dtype == np.float32
    held = ~np.isin(np.asarray(state.node_type), PREDICTED_TYPES)
    np.testing.assert_array_equal(u16[:, held], u32[:, held])
    change = np.abs(u32[-1] - u32[0]).max()
    assert change > 0 and np.abs(u16 - u32).max() < 0.05 * change
    with pytest.raises(RolloutError, match="precision"):
        MeshRollout.from_checkpoint(trained_mesh, precision="fp8")
    base = ["rollout", "--checkpoint", str(trained_mesh), "--data", str(data), "--steps", "5"]
    assert main([*base, "--out", str(tmp_path / "r"), "--precision", "bf16-mixed"]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["speed"]["precision"] == "bf16-mixed"
