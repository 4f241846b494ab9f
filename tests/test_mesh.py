"""Mesh trajectories: writers, reader, xarray view, validator and bad inputs."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import xarray as xr
from torch.utils.data import DataLoader, Dataset

from simsurrogate.data.errors import DataError
from simsurrogate.data.mesh import (
    SCHEMA,
    MeshReader,
    MeshWriter,
    info_mesh,
    to_xarray_mesh,
    validate_mesh,
    write_mesh,
)

T = 10
GROUP = "trajectories/000000"


def square_mesh(n: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n x n nodes on the unit square, two counter-clockwise triangles per quad."""
    x, y = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="ij")
    pos = np.stack([x.ravel(), y.ravel()], axis=1).astype(np.float32)
    node = np.arange(n * n).reshape(n, n)
    a, b, c, d = node[:-1, :-1], node[1:, :-1], node[1:, 1:], node[:-1, 1:]
    cells = np.concatenate([np.stack([a, b, c], -1), np.stack([a, c, d], -1)]).reshape(-1, 3)
    node_type = np.zeros(n * n, dtype=np.int64)
    node_type[(pos == 0).any(1) | (pos == 1).any(1)] = 1
    return pos, cells.astype(np.int64), node_type


def trajectory(seed: int) -> dict:
    pos, cells, node_type = square_mesh()
    rng = np.random.default_rng(seed)
    return {
        "mesh_pos": pos,
        "cells": cells,
        "node_type": node_type,
        "fields": {
            "velocity": rng.standard_normal((T, len(pos), 2)).astype(np.float32),
            "pressure": rng.standard_normal((T, len(pos), 1)).astype(np.float32),
        },
        "time": 0.01 * np.arange(T),
        "attrs": {"inflow": 1.5 + seed, "solver": {"name": "fem", "dt": 0.01}},
    }


@pytest.fixture
def trajs() -> list[dict]:
    return [trajectory(0), trajectory(1)]


@pytest.fixture
def mesh_file(tmp_path: Path, trajs) -> Path:
    return write_mesh(tmp_path / "flow.nc", trajs, attrs={"dataset": "toy", "nu": 1e-3})


def test_round_trip(mesh_file: Path, trajs) -> None:
    validate_mesh(mesh_file)
    r = MeshReader(mesh_file)
    assert r.trajectories == ["trajectories/000000", "trajectories/000001"]
    assert r.attrs == {"dataset": "toy", "nu": 1e-3}
    for i, traj in enumerate(trajs):
        static = r.static(i)
        for key in ("mesh_pos", "cells", "node_type"):
            np.testing.assert_array_equal(static[key], traj[key])
        assert static["cells"].dtype == np.int64 and static["node_type"].dtype == np.int64
        window = r.window(i, 0, T)
        for name, data in traj["fields"].items():
            np.testing.assert_array_equal(window[name], data)
        np.testing.assert_array_equal(r.time(i), traj["time"])
        assert r.attrs_of(i) == traj["attrs"]
    assert r.n_steps(1) == T and r.n_nodes(0) == 25
    assert sorted(r.fields("000001")) == ["pressure", "velocity"]
    w = r.window("trajectories/000001", 3, 4, fields=["pressure"])
    assert list(w) == ["pressure"] and w["pressure"].shape == (4, 25, 1)
    np.testing.assert_array_equal(w["pressure"], trajs[1]["fields"]["pressure"][3:7])
    with pytest.raises(IndexError, match="outside"):
        r.window(0, 8, 3)
    assert "25 nodes" in info_mesh(mesh_file)
    with h5py.File(mesh_file) as f:
        assert f.attrs["schema"] == SCHEMA
        assert f[GROUP]["velocity"].chunks == (1, 25, 2)


def test_streaming_equals_one_shot(tmp_path: Path, mesh_file: Path, trajs) -> None:
    path = tmp_path / "streamed.nc"
    with MeshWriter(path, attrs={"dataset": "toy", "nu": 1e-3}) as writer:
        for traj in trajs:
            stream = writer.begin_trajectory(
                mesh_pos=traj["mesh_pos"],
                cells=traj["cells"],
                node_type=traj["node_type"],
                field_shapes={k: v.shape[1:] for k, v in traj["fields"].items()},
                attrs=traj["attrs"],
            )
            for k in range(T):
                stream.append(traj["time"][k], **{n: v[k] for n, v in traj["fields"].items()})
            assert stream.n_steps == T
        assert not path.exists()  # renamed into place only on close
    validate_mesh(path)
    a, b = MeshReader(mesh_file), MeshReader(path)
    assert a.trajectories == b.trajectories and a.attrs == b.attrs
    for i in range(2):
        for x, y in ((a.static(i), b.static(i)), (a.window(i, 0, T), b.window(i, 0, T))):
            assert x.keys() == y.keys()
            for key in x:
                np.testing.assert_array_equal(x[key], y[key])
        np.testing.assert_array_equal(a.time(i), b.time(i))
        assert a.attrs_of(i) == b.attrs_of(i)
    assert to_xarray_mesh(path, 1).identical(to_xarray_mesh(mesh_file, 1))


def test_xarray_opens_groups_with_named_dims(mesh_file: Path, trajs) -> None:
    with xr.open_dataset(mesh_file, group=GROUP, engine="h5netcdf") as ds:
        assert ds["velocity"].dims == ("time", "node", "spatial")
        assert ds["pressure"].dims == ("time", "node", "pressure_dim")
        assert ds["mesh_pos"].dims == ("node", "spatial")
        assert ds["cells"].dims == ("cell", "vertex")
        assert ds["node_type"].dims == ("node",)
        assert dict(ds.sizes) == {
            "time": T,
            "node": 25,
            "spatial": 2,
            "cell": 32,
            "vertex": 3,
            "pressure_dim": 1,
        }
        assert ds["time"].attrs["units"] == "s"
        np.testing.assert_allclose(ds["time"], trajs[0]["time"])
        np.testing.assert_array_equal(
            ds["velocity"].isel(time=4), trajs[0]["fields"]["velocity"][4]
        )
    ds = to_xarray_mesh(mesh_file, "000001")
    assert ds.attrs == trajs[1]["attrs"]
    np.testing.assert_array_equal(ds["pressure"], trajs[1]["fields"]["pressure"])
    ds.close()


def test_edges_and_static_fields(tmp_path: Path) -> None:
    traj = trajectory(0)
    edges = np.unique(np.sort(traj["cells"][:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), 1), axis=0).T
    bond = np.ones((T, edges.shape[1]), dtype=np.float32)
    path = write_mesh(
        tmp_path / "bonds.nc",
        [
            {
                **traj,
                "edge_index": edges,
                "edge_fields": {"bond_intact": bond},
                "static_fields": {"density": np.full(25, 2.0)},
            }
        ],
    )
    validate_mesh(path)
    r = MeshReader(path)
    np.testing.assert_array_equal(r.static(0)["edge_index"], edges)
    np.testing.assert_array_equal(r.window(0, 2, 2, ["bond_intact"])["bond_intact"], bond[2:4])
    with xr.open_dataset(path, group=GROUP, engine="h5netcdf") as ds:
        assert ds["bond_intact"].dims == ("time", "edge")
        assert ds["edge_index"].dims == ("endpoint", "edge")
        assert ds["density"].dims == ("node",)


class _Windows(Dataset):
    def __init__(self, reader: MeshReader) -> None:
        self.reader = reader

    def __len__(self) -> int:
        return 2 * (T - 1)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        traj, start = divmod(i, T - 1)
        w = self.reader.window(traj, start, 2)
        return {k: torch.from_numpy(v) for k, v in w.items()}


def test_reader_in_dataloader_workers(mesh_file: Path, trajs) -> None:
    reader = MeshReader(mesh_file)
    reader.window(0, 0, 1)  # parent opens its handle first: workers must not reuse it
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.static(1)["cells"], trajs[1]["cells"])
    for context in ("fork", "spawn"):  # fork inherits the open handle, spawn pickles the reader
        loader = DataLoader(
            _Windows(reader), batch_size=3, num_workers=2, multiprocessing_context=context
        )
        velocity = torch.cat([b["velocity"] for b in loader])
        assert velocity.shape == (18, 2, 25, 2)
        expected = trajs[1]["fields"]["velocity"][4:6]
        np.testing.assert_array_equal(velocity[T - 1 + 4].numpy(), expected)


# --- bad inputs -----------------------------------------------------------------------------


def _mutated(path: Path, mutate) -> Path:
    with h5py.File(path, "r+") as f:
        mutate(f[GROUP], f)
    return path


def _cell_out_of_range(g, f) -> None:
    g["cells"][3, 1] = 99


def _unreferenced(g, f) -> None:
    cells = g["cells"][()]
    cells[cells == 24] = 23  # node 24 (a corner) no longer used
    g["cells"][...] = cells


def _duplicate(g, f) -> None:
    g["mesh_pos"][7] = g["mesh_pos"][6]


def _inverted(g, f) -> None:
    g["cells"][5] = g["cells"][5][::-1]


def _nan(g, f) -> None:
    g["velocity"][6, 11, 1] = np.nan


def _version(g, f) -> None:
    f.attrs["schema_version"] = np.int64(2)


def _wrong_field_shape(g, f) -> None:
    d = g.create_dataset("temperature", data=np.zeros((T, 24), np.float32))
    d.dims[0].attach_scale(g["time"])
    d.dims[1].attach_scale(g["node"])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_cell_out_of_range, r"field 'cells': cells\[3, 1\] references a node out of range"),
        (_unreferenced, "node 24 is not used by any cell"),
        (_duplicate, "duplicate nodes 6 and 7"),
        (_inverted, r"cell 5 .* is inverted \(clockwise\)"),
        (_nan, r"field 'velocity': non-finite value .* at index \(6, 11, 1\)"),
        (_version, r"unknown schema_version \(expected 1, found \[2\]\)"),
        (_wrong_field_shape, r"field 'temperature': shape inconsistent with the node count"),
    ],
)
def test_bad_files_raise_data_error(mesh_file: Path, mutate, message: str) -> None:
    _mutated(mesh_file, mutate)
    with pytest.raises(DataError, match=message) as err:
        validate_mesh(mesh_file)
    assert str(mesh_file) in str(err.value)


def test_unknown_version_refused_by_reader(mesh_file: Path) -> None:
    _mutated(mesh_file, _version)
    with pytest.raises(DataError, match="unknown schema_version"):
        MeshReader(mesh_file)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cells": np.array([[0, 1, 30]])}, r"cells\[0, 2\] references a node out of range"),
        ({"node_type": np.zeros(24, np.int64)}, "node_type': shape inconsistent"),
        ({"node_type": np.full(25, 12, np.int64)}, "unknown node type 12 at node 0"),
        ({"time": np.zeros(T)}, "time is not strictly increasing at step 1"),
    ],
)
def test_writer_checks_mesh_before_writing(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        write_mesh(tmp_path / "bad.nc", [{**trajectory(0), **change}])
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_wrong_field_shape_and_nan(tmp_path: Path) -> None:
    traj = trajectory(0)
    wrong = {**traj["fields"], "pressure": np.zeros((T, 24, 1), np.float32)}
    with pytest.raises(DataError, match="'pressure': shape inconsistent with time count / node"):
        write_mesh(tmp_path / "a.nc", [{**traj, "fields": wrong}])
    pos, cells, node_type = square_mesh()
    with MeshWriter(tmp_path / "b.nc") as writer:
        stream = writer.begin_trajectory(
            mesh_pos=pos, cells=cells, node_type=node_type, field_shapes={"velocity": (25, 2)}
        )
        stream.append(0.0, velocity=np.zeros((25, 2)))
        bad = np.zeros((25, 2))
        bad[3, 0] = np.inf
        with pytest.raises(DataError, match=r"step 1: non-finite value .* at index \(1, 3, 0\)"):
            stream.append(0.1, velocity=bad)
        with pytest.raises(DataError, match="step 1: wrong shape"):
            stream.append(0.1, velocity=np.zeros((24, 2)))
    # the rollout caught the errors and closed normally: the good step is kept
    assert MeshReader(tmp_path / "b.nc").n_steps(0) == 1


def test_failing_writer_leaves_no_file(tmp_path: Path) -> None:
    path = tmp_path / "out.nc"
    bad = trajectory(1)
    bad["fields"]["velocity"][2, 3, 0] = np.nan
    with pytest.raises(DataError, match="velocity"), MeshWriter(path) as writer:
        writer.add_trajectory(**trajectory(0))
        writer.add_trajectory(**bad)
    assert list(tmp_path.iterdir()) == []
    path.write_bytes(b"previous contents")
    with pytest.raises(RuntimeError, match="boom"), MeshWriter(path, overwrite=True) as writer:
        writer.add_trajectory(**trajectory(0))
        raise RuntimeError("boom")
    assert path.read_bytes() == b"previous contents"
    assert list(tmp_path.iterdir()) == [path]


def test_not_hdf5_truncated_and_foreign_files(tmp_path: Path, mesh_file: Path) -> None:
    text = tmp_path / "notes.nc"
    text.write_text("hello")
    with pytest.raises(DataError, match="not an HDF5 file"):
        MeshReader(text)
    truncated = tmp_path / "cut.nc"
    truncated.write_bytes(mesh_file.read_bytes()[: mesh_file.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated"):
        validate_mesh(truncated)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataError, match="missing root attribute 'schema'"):
        validate_mesh(foreign)
