"""CylinderFlow dataset generator: schema, parameters, worker processes and resuming."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from simsurrogate.cli import main
from simsurrogate.data.errors import DataError
from simsurrogate.data.mesh import MeshReader, MeshWriter, validate_mesh
from simsurrogate.data.node_types import NodeType
from simsurrogate.sims.cylinder_dataset import (
    CylinderFlowConfig,
    generate_cylinder_flow,
    solve_trajectory,
    trajectory_parameters,
)

# coarse and short: seconds per trajectory
SMALL = CylinderFlowConfig(n_steps=6, warmup=0.0, ramp_time=0.0, h_max=0.05, h_obstacle=0.015)


def test_parameters_depend_only_on_seed_split_and_index() -> None:
    a = trajectory_parameters(SMALL, 0, "train", 3)
    assert a == trajectory_parameters(SMALL, 0, "train", 3)
    assert a != trajectory_parameters(SMALL, 0, "test", 3)
    assert a != trajectory_parameters(SMALL, 1, "train", 3)
    for i in range(50):
        p = trajectory_parameters(SMALL, 0, "train", i)
        assert SMALL.radius[0] <= p["radius"] <= SMALL.radius[1]
        assert SMALL.u_mean[0] <= p["u_mean"] <= SMALL.u_mean[1]
        assert 2 * p["radius"] < p["center_y"] < SMALL.height - 2 * p["radius"]


def _fake_trajectory_file(path: Path, attrs: dict, params: dict | None = None) -> None:
    """A one-trajectory mesh file with the given file and trajectory attributes, unsolved."""
    pos = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    with MeshWriter(path, attrs=attrs) as w:
        w.add_trajectory(
            mesh_pos=pos,
            cells=np.array([[0, 1, 2]]),
            node_type=np.zeros(3, dtype=np.int64),
            fields={"velocity": np.zeros((2, 3, 2), dtype=np.float32)},
            time=np.array([0.0, 0.01]),
            attrs=params,
        )


def test_a_finished_split_of_another_size_is_refused(tmp_path: Path) -> None:
    """A merged split is kept as it is; asking for a different number of trajectories is an
    error naming the file, not a silent return of the old one."""
    out = tmp_path / "cyl"
    _fake_trajectory_file(out / "valid.h5", {"seed": 0, **asdict(SMALL)})
    with pytest.raises(DataError, match=r"already holds 1 trajectories but 4 were asked"):
        generate_cylinder_flow(out, n_train=0, n_valid=4, n_test=0, config=SMALL, progress=False)
    kept = generate_cylinder_flow(out, n_train=0, n_valid=1, n_test=0, config=SMALL, progress=False)
    assert kept == {"valid": out / "valid.h5"}


def _one(out: Path, split: str, seed: int = 0, config: CylinderFlowConfig = SMALL) -> dict:
    """Generate one trajectory of ``split`` (and none of the others) under ``out``."""
    counts = {"n_train": 0, "n_valid": 0, "n_test": 0, f"n_{split}": 1}
    return generate_cylinder_flow(out, seed=seed, config=config, progress=False, **counts)


def test_files_made_with_other_settings_are_refused(tmp_path: Path) -> None:
    """A re-run with another seed or configuration than the files on disk were made with is
    an error naming what differs, for a finished split and for the parts of an interrupted
    run alike, never a dataset that mixes two configurations."""
    out = tmp_path / "cyl"
    _fake_trajectory_file(out / "test.h5", {"seed": 0, **asdict(SMALL)})
    with pytest.raises(DataError, match=r"other settings.*'n_steps': \(6, 7\)"):
        _one(out, "test", config=replace(SMALL, n_steps=7))
    with pytest.raises(DataError, match=r"other settings.*'seed': \(0, 3\)"):
        _one(out, "test", seed=3)
    # the part an interrupted run left: other settings are refused before anything is solved
    part = out / "parts" / "train" / "000000.h5"
    _fake_trajectory_file(part, asdict(SMALL), trajectory_parameters(SMALL, 0, "train", 0))
    with pytest.raises(DataError, match=r"000000.h5 was made with other settings.*'dt'"):
        _one(out, "train", config=replace(SMALL, dt=0.02))
    with pytest.raises(DataError, match=r"other settings.*'u_mean'"):
        _one(out, "train", seed=1)
    # with the settings it was made with, the part counts as finished and is merged as it is
    with MeshReader(_one(out, "train")["train"]) as reader:
        assert reader.attrs["seed"] == 0 and reader.attrs["n_steps"] == SMALL.n_steps
        assert reader.attrs_of(0) == trajectory_parameters(SMALL, 0, "train", 0)


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(ValueError, match="radius"):
        CylinderFlowConfig(radius=(0.05, 0.01))


@pytest.mark.slow
def test_generate_writes_the_mesh_schema_with_workers_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "cyl"
    # a run killed after one trajectory: its part file exists, nothing else
    params = trajectory_parameters(SMALL, 5, "train", 0)
    part = solve_trajectory(SMALL, params, out / "parts" / "train" / "000000.h5")
    first_seconds = MeshReader(part).attrs_of(0)["solver_seconds"]

    paths = generate_cylinder_flow(
        out, n_train=2, n_valid=0, n_test=1, seed=5, config=SMALL, workers=2, progress=False
    )
    assert set(paths) == {"train", "test"}
    assert not (out / "parts").exists()
    reader = MeshReader(paths["train"])
    assert len(reader) == 2
    # trajectory 0 was taken from the part file, not solved again
    assert reader.attrs_of(0)["solver_seconds"] == first_seconds
    assert reader.attrs_of(1)["radius"] == trajectory_parameters(SMALL, 5, "train", 1)["radius"]
    for path in paths.values():
        validate_mesh(path)
    static = reader.static(1)
    types = set(np.unique(static["node_type"]).tolist())
    assert types == {
        int(t)
        for t in (
            NodeType.NORMAL,
            NodeType.OBSTACLE,
            NodeType.INFLOW,
            NodeType.OUTFLOW,
            NodeType.WALL_BOUNDARY,
        )
    }
    steps = reader.window(1, 0, SMALL.n_steps)
    assert steps["velocity"].shape == (SMALL.n_steps, len(static["mesh_pos"]), 2)
    assert steps["pressure"].shape == (SMALL.n_steps, len(static["mesh_pos"]), 1)
    np.testing.assert_allclose(np.diff(reader.time(1)), SMALL.dt, rtol=1e-9)
    # walls and obstacle are no-slip at every step; inflow is the parabolic profile
    wall = np.isin(static["node_type"], [NodeType.WALL_BOUNDARY, NodeType.OBSTACLE])
    assert np.abs(steps["velocity"][:, wall]).max() < 1e-6
    inflow = static["node_type"] == NodeType.INFLOW
    y = static["mesh_pos"][inflow, 1]
    u_max = 1.5 * reader.attrs_of(1)["u_mean"]
    profile = 4 * u_max * y * (SMALL.height - y) / SMALL.height**2
    np.testing.assert_allclose(steps["velocity"][-1, inflow, 0], profile, rtol=1e-4, atol=1e-5)
    reader.close()
    with xr.open_dataset(paths["test"], group="trajectories/000000", engine="h5netcdf") as ds:
        assert ds["velocity"].dims == ("time", "node", "spatial")

    # a finished split is left alone by a re-run
    before = paths["train"].stat().st_mtime_ns
    generate_cylinder_flow(
        out, n_train=2, n_valid=0, n_test=1, seed=5, config=SMALL, workers=1, progress=False
    )
    assert paths["train"].stat().st_mtime_ns == before


def test_cli_generates_cylinder_flow(tmp_path: Path) -> None:
    code = main(
        [
            "data",
            "generate",
            "cylinder-flow",
            "--out",
            str(tmp_path),
            "--n-train",
            "1",
            "--n-valid",
            "0",
            "--n-test",
            "0",
            "--steps",
            "3",
            "--h-max",
            "0.05",
            "--h-obstacle",
            "0.015",
            "--workers",
            "1",
            "--warmup",
            "0",
        ]
    )
    assert code == 0
    assert len(MeshReader(tmp_path / "train.h5")) == 1


def test_cli_ranges_reach_the_generator(tmp_path: Path, capsys) -> None:
    """--radius/--center-x/--center-y/--u-mean set the ranges trajectories are drawn from;
    the help states the generator's own defaults."""
    with pytest.raises(SystemExit):
        main(["data", "generate", "cylinder-flow", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    defaults = CylinderFlowConfig()
    for name in ("radius", "center_x", "center_y", "u_mean"):
        low, high = getattr(defaults, name)
        assert f"--{name.replace('_', '-')} LOW HIGH" in text
        assert f"(default {low} {high})" in text
    args = ["data", "generate", "cylinder-flow", "--out", str(tmp_path), "--n-train", "1"]
    args += ["--n-valid", "0", "--n-test", "0", "--steps", "2", "--warmup", "0", "--workers", "1"]
    args += ["--h-max", "0.05", "--h-obstacle", "0.015", "--u-mean", "0.6", "0.6"]
    args += ["--radius", "0.04", "0.04", "--center-x", "0.3", "0.3", "--center-y", "0.2", "0.2"]
    assert main(args) == 0
    with MeshReader(tmp_path / "train.h5") as reader:
        assert reader.attrs["u_mean"] == [0.6, 0.6]
        params = reader.attrs_of(0)
    assert (params["u_mean"], params["radius"]) == (0.6, 0.04)
    assert (params["center_x"], params["center_y"]) == (0.3, 0.2)
    assert params["reynolds"] == pytest.approx(48.0)
