"""The grid-operator rollout engine, its netCDF stream and the grid rollout report (CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import NS_HISTORY as HISTORY
from conftest import fit_ns_recipe, tiny_fno

from simsurrogate.checkpoint import KEY, make_metadata
from simsurrogate.cli import main
from simsurrogate.data.grid import WellReader
from simsurrogate.models import FNO
from simsurrogate.models.operators.stepping import unroll
from simsurrogate.rollout import GridRollout, RolloutError


def _initial(n: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"vorticity": rng.standard_normal((HISTORY, n, n)).astype(np.float32)}


def test_streamed_rollout_reads_back_through_xarray(tmp_path: Path) -> None:
    model = tiny_fno().eval()
    engine = GridRollout(model, ["vorticity"], HISTORY, "autoregressive")
    initial = _initial()
    result = engine.run(initial, 6, out=tmp_path / "r.nc", t0=3.0, dt=0.5)
    in_memory = engine.run(initial, 6)
    x = torch.from_numpy(initial["vorticity"])[None]
    with torch.no_grad():
        expected = torch.cat(list(unroll(model, x, 6, "autoregressive", HISTORY)), dim=1)[0]
    with xr.open_dataset(result.path, engine="h5netcdf") as ds:
        assert ds["vorticity"].dims == ("time", "x", "y")
        np.testing.assert_allclose(ds["time"].values, 3.0 + 0.5 * np.arange(1, 7))
        assert ds["step"].values.tolist() == [1, 2, 3, 4, 5, 6]
        assert ds.attrs["history"] == HISTORY and ds.attrs["mode"] == "autoregressive"
        np.testing.assert_allclose(ds["vorticity"].values, expected.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(ds["vorticity"].values, in_memory.fields["vorticity"])
    np.testing.assert_array_equal(result.final["vorticity"], ds["vorticity"].values[-HISTORY:])


class _BlowUp(torch.nn.Module):
    """Multiplies the newest snapshot by 1e30 each step: inf at the second step in float32."""

    config = {"modes": [4, 4]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, -1:] * 1e30


def test_non_finite_prediction_names_the_step_and_keeps_earlier_steps(tmp_path: Path) -> None:
    engine = GridRollout(_BlowUp(), ["vorticity"], HISTORY, "autoregressive")
    initial = {"vorticity": np.ones((HISTORY, 8, 8), dtype=np.float32)}
    with pytest.raises(RolloutError, match=r"non-finite 'vorticity' at step 2 .*steps 1\.\.1"):
        engine.run(initial, 5, out=tmp_path / "r.nc")
    with xr.open_dataset(tmp_path / "r.nc", engine="h5netcdf") as ds:
        assert ds.sizes["time"] == 1 and ds["vorticity"].values.max() == np.float32(1e30)


def test_initial_state_must_hold_the_history() -> None:
    engine = GridRollout(tiny_fno(), ["vorticity"], HISTORY, "autoregressive")
    with pytest.raises(RolloutError, match=f"last {HISTORY} snapshots"):
        engine.run({"vorticity": np.zeros((HISTORY + 1, 16, 16))}, 2)
    with pytest.raises(RolloutError, match="lacks fields"):
        engine.run({"pressure": np.zeros((HISTORY, 16, 16))}, 2)


def _flow(n: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """A state of a vector field (2 components) and a scalar field."""
    rng = np.random.default_rng(seed)
    return {
        "velocity": rng.standard_normal((HISTORY, n, n, 2)).astype(np.float32),
        "pressure": rng.standard_normal((HISTORY, n, n)).astype(np.float32),
    }


def _flow_engine() -> GridRollout:
    """An FNO stepping (velocity, pressure): 3 channels per snapshot."""
    torch.manual_seed(0)
    model = FNO(
        3 * HISTORY, 3, [4, 4], width=8, n_layers=2, lifting_channels=8, projection_channels=8
    )
    return GridRollout(model, ["velocity", "pressure"], HISTORY, "autoregressive")


def test_a_batch_predicts_what_single_runs_do() -> None:
    engine = _flow_engine()
    states = [_flow(seed=i) for i in range(3)]
    batch = engine.run(states, 5)
    for i, state in enumerate(states):
        single = engine.run(state, 5)
        for name in engine.fields:
            np.testing.assert_allclose(
                batch.fields[name][i], single.fields[name], rtol=1e-5, atol=1e-6
            )
            np.testing.assert_allclose(
                batch.final[name][i], single.final[name], rtol=1e-5, atol=1e-6
            )
    assert batch.fields["velocity"].shape == (3, 5, 16, 16, 2)
    assert batch.final["pressure"].shape == (3, HISTORY, 16, 16)
    assert batch.steps == 5


def test_a_streamed_batch_reads_back_through_xarray(tmp_path: Path) -> None:
    engine = _flow_engine()
    states = [_flow(seed=i) for i in range(3)]
    result = engine.run(states, 4, out=tmp_path / "b.nc", t0=1.0, dt=0.25)
    in_memory = engine.run(states, 4)
    assert result.fields is None and result.final["velocity"].shape == (3, HISTORY, 16, 16, 2)
    with xr.open_dataset(result.path, engine="h5netcdf") as ds:
        assert ds["velocity"].dims == ("trajectory", "time", "x", "y", "velocity_0")
        assert ds["pressure"].dims == ("trajectory", "time", "x", "y")
        assert ds["trajectory"].values.tolist() == [0, 1, 2]
        assert ds["step"].values.tolist() == [1, 2, 3, 4]
        np.testing.assert_allclose(ds["time"].values, 1.0 + 0.25 * np.arange(1, 5))
        # one chunk per snapshot of one trajectory: memory stays flat
        assert ds["velocity"].encoding["chunksizes"] == (1, 1, 16, 16, 2)
        for name in engine.fields:
            np.testing.assert_array_equal(ds[name].values, in_memory.fields[name])
        np.testing.assert_array_equal(result.final["velocity"], ds["velocity"].values[:, -HISTORY:])


def test_non_finite_prediction_in_a_batch_names_the_trajectory(tmp_path: Path) -> None:
    engine = GridRollout(_BlowUp(), ["vorticity"], HISTORY, "autoregressive")
    ones, zeros = np.ones((HISTORY, 8, 8), np.float32), np.zeros((HISTORY, 8, 8), np.float32)
    match = r"non-finite 'vorticity' at step 2 .*in trajectory 1 \(also in trajectories \[2\]\)"
    with pytest.raises(RolloutError, match=match) as info:
        engine.run(
            [{"vorticity": zeros}, {"vorticity": ones}, {"vorticity": ones}],
            5,
            out=tmp_path / "b.nc",
        )
    assert (info.value.step, info.value.trajectory, info.value.field) == (2, 1, "vorticity")
    with xr.open_dataset(tmp_path / "b.nc", engine="h5netcdf") as ds:
        assert ds.sizes["time"] == 1 and ds.sizes["trajectory"] == 3
        first = ds["vorticity"].values[:, 0].max(axis=(1, 2))
        np.testing.assert_array_equal(first, np.float32([0.0, 1e30, 1e30]))


def test_a_batch_must_be_states_of_the_same_fields_and_shapes() -> None:
    engine = GridRollout(tiny_fno(), ["vorticity"], HISTORY, "autoregressive")
    with pytest.raises(RolloutError, match="batch is empty"):
        engine.run([], 2)
    with pytest.raises(RolloutError, match="differ in shape: trajectory 0 .* trajectory 1"):
        engine.run([_initial(16), _initial(8)], 2)
    with pytest.raises(RolloutError, match="different fields"):
        engine.run([_initial(), {**_initial(), "pressure": np.zeros((HISTORY, 16, 16))}], 2)
    with pytest.raises(RolloutError, match="trajectory 0 lacks fields"):
        engine.run([{"pressure": np.zeros((HISTORY, 16, 16))}] * 2, 2)
    bad = _initial()
    bad["vorticity"][0, 0, 0] = np.nan
    with pytest.raises(RolloutError, match="'vorticity' in the initial state of trajectory 1"):
        engine.run([_initial(), bad], 2)


def test_rollout_cli_dispatches_grid_checkpoints_and_scores(
    tiny_ns: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    modes = ("--model.init_args.model.init_args.modes", "[4, 4]")
    ckpt = fit_ns_recipe(tiny_ns, "ns_fno2d.yaml", tmp_path / "fit", *modes)
    out, test = tmp_path / "roll", tiny_ns["test"]
    args = ["rollout", "--checkpoint", str(ckpt), "--data", str(test), "--trajectory", "1"]
    assert main([*args, "--start", "1", "--steps", "7", "--out", str(out)]) == 0
    assert "relative L2 over 5 steps" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "autoregressive" and metrics["given_steps"] == [1, 3]
    assert metrics["steps_with_truth"] == 5 and len(metrics["rel_l2_per_step"]) == 5
    for name in ("rollout.nc", "rollout.png", "rollout.gif"):
        assert (out / name).stat().st_size > 0
    # the rollout relative L2 is the norm over all steps with truth together
    with xr.open_dataset(out / "rollout.nc", engine="h5netcdf") as ds, WellReader(test) as r:
        pred = ds["vorticity"].values[:5].astype(np.float64)
        truth = r.window(1, 4, 5, ["vorticity"])["vorticity"].astype(np.float64)
    expected = np.linalg.norm(pred - truth) / np.linalg.norm(truth)
    assert metrics["rel_l2"] == pytest.approx(expected, rel=1e-6)
    assert main([*args, "--start", "7", "--steps", "2", "--out", str(out)]) == 2
    assert "start step 7" in capsys.readouterr().err


def test_a_checkpoint_that_is_no_time_stepper_is_refused(tmp_path: Path) -> None:
    model = tiny_fno()
    meta = make_metadata(
        model,
        "FieldOperatorTask",
        {
            "mode": "step",
            "input_fields": ["coefficient"],
            "target_fields": ["solution"],
            "window": {"history": 1, "target_offset": 0, "horizon": 1},
        },
    )
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({KEY: meta, "state_dict": state}, tmp_path / "darcy.ckpt")
    with pytest.raises(ValueError, match="not a time stepper"):
        GridRollout.from_checkpoint(tmp_path / "darcy.ckpt")
