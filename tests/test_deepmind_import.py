"""Import of DeepMind MeshGraphNets datasets (meta.json + .tfrecord) into the mesh schema.

The datasets here are synthetic but byte-for-byte in DeepMind's layout: one tf.train.Example
per trajectory, each feature one bytes value holding the array's raw little-endian bytes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("tfrecord")
from tfrecord.writer import TFRecordWriter  # noqa: E402

from simsurrogate.cli import main  # noqa: E402
from simsurrogate.data.errors import DataError  # noqa: E402
from simsurrogate.data.importers.deepmind import import_deepmind, orient_ccw  # noqa: E402
from simsurrogate.data.mesh import MeshReader, validate_mesh  # noqa: E402
from simsurrogate.data.node_types import NodeType  # noqa: E402

DT = 0.01
N_STEPS = 5


def _grid_mesh(nx: int, ny: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A rectangle of nx x ny nodes: mesh_pos (N, 2) float32, cells (C, 3) int32 with every
    third triangle clockwise, node_type (N,) int32 (inflow left, outflow right, walls)."""
    x, y = np.meshgrid(np.linspace(0.0, 1.6, nx), np.linspace(0.0, 0.4, ny), indexing="ij")
    pos = np.stack([x.ravel(), y.ravel()], axis=1).astype(np.float32)
    idx = np.arange(nx * ny).reshape(nx, ny)
    cells = []
    for i in range(nx - 1):
        for j in range(ny - 1):
            a, b, c, d = idx[i, j], idx[i + 1, j], idx[i + 1, j + 1], idx[i, j + 1]
            cells += [[a, b, c], [a, c, d]]  # counter-clockwise
    cells = np.array(cells, dtype=np.int32)
    cells[::3] = cells[::3, ::-1]  # clockwise, as DeepMind's files may have them
    node_type = np.full((nx, ny), int(NodeType.NORMAL), np.int32)
    node_type[:, 0] = node_type[:, -1] = int(NodeType.WALL_BOUNDARY)
    node_type[0, :] = int(NodeType.INFLOW)
    node_type[-1, :] = int(NodeType.OUTFLOW)
    return pos, cells, node_type.ravel()


def _cylinder_record(k: int) -> dict[str, np.ndarray]:
    """Trajectory k in DeepMind's raw shapes; the mesh size differs per trajectory."""
    pos, cells, node_type = _grid_mesh(4 + k, 3)
    rng = np.random.default_rng(k)
    n = len(pos)
    return {
        "cells": cells[None],
        "mesh_pos": pos[None],
        "node_type": node_type[None, :, None],
        "velocity": rng.normal(size=(N_STEPS, n, 2)).astype(np.float32),
        "pressure": rng.normal(size=(N_STEPS, n, 1)).astype(np.float32),
    }


def _cloth_record(k: int) -> dict[str, np.ndarray]:
    """A flag: 2-D rest mesh, 3-D world positions, two handle nodes."""
    pos, cells, _ = _grid_mesh(3 + k, 4)
    node_type = np.zeros(len(pos), np.int32)
    node_type[[0, 3]] = int(NodeType.HANDLE)
    rng = np.random.default_rng(10 + k)
    world = np.concatenate([pos, np.zeros((len(pos), 1), np.float32)], axis=1)
    world_pos = world[None] + 0.01 * rng.normal(size=(N_STEPS, len(pos), 3)).astype(np.float32)
    return {
        "cells": cells[None],
        "mesh_pos": pos[None],
        "node_type": node_type[None, :, None],
        "world_pos": world_pos.astype(np.float32),
    }


def _meta(records: dict[str, np.ndarray], **extra) -> dict:
    """meta.json for records of the given raw arrays (static: leading axis 1)."""
    features = {}
    for name, arr in records.items():
        shape = list(arr.shape)
        shape[1] = -1
        kind = "static" if name in ("cells", "mesh_pos", "node_type") else "dynamic"
        features[name] = {"type": kind, "shape": shape, "dtype": arr.dtype.name}
    return {
        "simulator": "comsol",
        "dt": DT,
        "collision_radius": None,
        "features": features,
        "field_names": list(records),
        "trajectory_length": N_STEPS,
        **extra,
    }


def _write_dataset(
    root: Path, splits: dict[str, list[dict[str, np.ndarray]]], meta: dict | None = None
) -> Path:
    """A DeepMind dataset directory: meta.json and one <split>.tfrecord per split."""
    root.mkdir(parents=True, exist_ok=True)
    first = next(iter(splits.values()))[0]
    (root / "meta.json").write_text(json.dumps(meta or _meta(first)))
    for split, records in splits.items():
        writer = TFRecordWriter(str(root / f"{split}.tfrecord"))
        for record in records:
            writer.write({name: (arr.tobytes(), "byte") for name, arr in record.items()})
        writer.close()
    return root


def _cylinder_dataset(root: Path) -> tuple[Path, dict[str, list[dict[str, np.ndarray]]]]:
    splits = {
        "train": [_cylinder_record(k) for k in range(3)],
        "valid": [_cylinder_record(k) for k in range(3, 5)],
        "test": [_cylinder_record(5)],
    }
    return _write_dataset(root, splits), splits


def _signed_areas(pos: np.ndarray, cells: np.ndarray) -> np.ndarray:
    a, b, c = (pos[cells[:, k]].astype(np.float64) for k in range(3))
    return 0.5 * ((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0])


def _same_triangles(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(np.sort(a, axis=1), np.sort(b, axis=1))


def _leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


# --------------------------------------------------------------------------------------------
# round trips


def test_cylinder_round_trip(tmp_path: Path) -> None:
    src, splits = _cylinder_dataset(tmp_path / "cylinder_flow")
    paths = import_deepmind(src, tmp_path / "out", progress=False)
    assert paths == {s: tmp_path / "out" / f"{s}.h5" for s in ("train", "valid", "test")}
    meta = json.loads((src / "meta.json").read_text())
    for split, records in splits.items():
        validate_mesh(paths[split])
        with MeshReader(paths[split]) as reader:
            assert len(reader) == len(records)
            assert reader.attrs["simulator"] == "comsol"
            assert reader.attrs["dt"] == DT
            assert reader.attrs["meta"] == meta
            assert reader.attrs["split"] == split
            assert reader.attrs["source"] == str(src)
            for k, raw in enumerate(records):
                static = reader.static(k)
                pos = raw["mesh_pos"][0]
                np.testing.assert_array_equal(static["mesh_pos"], pos)
                assert static["mesh_pos"].dtype == np.float32
                assert static["node_type"].dtype == np.int64
                np.testing.assert_array_equal(static["node_type"], raw["node_type"][0, :, 0])
                assert static["cells"].dtype == np.int64
                assert _same_triangles(static["cells"], raw["cells"][0])
                assert (_signed_areas(pos, static["cells"]) > 0).all()
                assert (_signed_areas(pos, raw["cells"][0]) < 0).any()  # there was work to do
                n_cw = int((_signed_areas(pos, raw["cells"][0]) < 0).sum())
                assert reader.attrs_of(k)["reoriented_cells"] == n_cw
                assert reader.attrs_of(k)["source_index"] == k
                np.testing.assert_allclose(reader.time(k), np.arange(N_STEPS) * DT)
                window = reader.window(k, 0, N_STEPS)
                assert set(window) == {"velocity", "pressure"}
                np.testing.assert_array_equal(window["velocity"], raw["velocity"])
                np.testing.assert_array_equal(window["pressure"], raw["pressure"])
    ds = xr.open_dataset(paths["train"], group="trajectories/000000", engine="h5netcdf")
    with ds:
        assert ds["velocity"].dims == ("time", "node", "spatial")
        assert ds["pressure"].dims == ("time", "node", "pressure_dim")
        assert ds["cells"].dims == ("cell", "vertex")
        np.testing.assert_allclose(ds["time"].values, np.arange(N_STEPS) * DT)
        np.testing.assert_array_equal(ds["velocity"].values, splits["train"][0]["velocity"])


def test_cloth_oriented_by_mesh_pos(tmp_path: Path) -> None:
    records = [_cloth_record(k) for k in range(2)]
    src = _write_dataset(tmp_path / "flag_simple", {"valid": records})
    paths = import_deepmind(src, tmp_path / "out", splits=["valid"], progress=False)
    assert list(paths) == ["valid"]
    validate_mesh(paths["valid"])
    with MeshReader(paths["valid"]) as reader:
        for k, raw in enumerate(records):
            static = reader.static(k)
            assert static["mesh_pos"].shape[1] == 2
            assert (_signed_areas(raw["mesh_pos"][0], static["cells"]) > 0).all()
            assert _same_triangles(static["cells"], raw["cells"][0])
            np.testing.assert_array_equal(static["node_type"], raw["node_type"][0, :, 0])
            assert (static["node_type"] == int(NodeType.HANDLE)).sum() == 2
            world = reader.window(k, 0, N_STEPS)["world_pos"]
            np.testing.assert_array_equal(world, raw["world_pos"])
    ds = xr.open_dataset(paths["valid"], group="trajectories/000001", engine="h5netcdf")
    with ds:
        assert ds["world_pos"].dims == ("time", "node", "world_pos_dim")
        assert ds.sizes["world_pos_dim"] == 3


def test_3d_tetrahedra_kept_as_they_are(tmp_path: Path) -> None:
    """deforming_plate-like: 3-D mesh_pos, tetrahedra, world_pos and stress; no reorienting."""
    pos = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, -1]], np.float32)
    cells = np.array([[0, 1, 2, 3], [0, 2, 1, 4]], np.int32)
    record = {
        "cells": cells[None],
        "mesh_pos": pos[None],
        "node_type": np.array([[[0], [1], [0], [3], [0]]], np.int32),
        "world_pos": np.repeat(pos[None], N_STEPS, axis=0),
        "stress": np.arange(N_STEPS * 5, dtype=np.float32).reshape(N_STEPS, 5, 1),
    }
    src = _write_dataset(tmp_path / "plate", {"test": [record]})
    paths = import_deepmind(src, tmp_path / "out", splits=("test",), progress=False)
    validate_mesh(paths["test"])
    with MeshReader(paths["test"]) as reader:
        np.testing.assert_array_equal(reader.static(0)["cells"], cells)
        np.testing.assert_array_equal(reader.window(0, 0, N_STEPS)["stress"], record["stress"])
        assert reader.window(0, 0, 1)["world_pos"].shape == (1, 5, 3)


def test_orient_ccw_swaps_only_clockwise_triangles() -> None:
    pos = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    cells, n = orient_ccw(pos, np.array([[0, 1, 2], [0, 2, 1]]))
    assert n == 1
    np.testing.assert_array_equal(cells, [[0, 1, 2], [0, 1, 2]])
    tets = np.array([[0, 1, 2, 3]])
    assert orient_ccw(np.zeros((4, 3)), tets)[0] is tets


def test_max_trajectories_overwrite_and_no_dt(tmp_path: Path) -> None:
    src, splits = _cylinder_dataset(tmp_path / "cyl")
    out = tmp_path / "out"
    paths = import_deepmind(src, out, max_trajectories=2, progress=False)
    with MeshReader(paths["train"]) as reader:
        assert len(reader) == 2
    with MeshReader(paths["test"]) as reader:
        assert len(reader) == 1
    with pytest.raises(DataError, match="file exists"):
        import_deepmind(src, out, progress=False)
    meta = _meta(splits["train"][0])
    del meta["dt"]
    (src / "meta.json").write_text(json.dumps(meta))
    paths = import_deepmind(src, out, splits=["train"], overwrite=True, progress=False)
    with MeshReader(paths["train"]) as reader:
        assert len(reader) == 3
        np.testing.assert_array_equal(reader.time(0), np.arange(N_STEPS))  # step index
        assert "dt" not in reader.attrs


# --------------------------------------------------------------------------------------------
# errors: each names the file, the trajectory and the field; nothing is left in the output


def _drop_pressure(records: list[dict]) -> None:
    del records[1]["pressure"]


def _short_velocity(records: list[dict]) -> None:
    records[1]["velocity"] = records[1]["velocity"].ravel()[:-1]


def _bad_node_type(records: list[dict]) -> None:
    records[2]["node_type"][0, 3, 0] = 12


def _nan_velocity(records: list[dict]) -> None:
    records[1]["velocity"][2, 4, 1] = np.nan


def _varlen(meta: dict) -> None:
    meta["features"]["velocity"]["type"] = "dynamic_varlen"


def _odd_type(meta: dict) -> None:
    meta["features"]["pressure"]["type"] = "sequence"


def _odd_dtype(meta: dict) -> None:
    meta["features"]["pressure"]["dtype"] = "complex64"


def _no_cells(meta: dict) -> None:
    del meta["features"]["cells"]


RECORD_ERRORS: list[tuple[Callable, str]] = [
    (_drop_pressure, r"train\.tfrecord.*'pressure'.*trajectory 1: field listed in meta\.json is "),
    (_short_velocity, r"train\.tfrecord.*'velocity'.*trajectory 1: byte count does not match"),
    (_bad_node_type, r"'node_type'.*trajectory 2: unknown node type 12 at node 3"),
    (_nan_velocity, r"'velocity'.*trajectory 1: non-finite value nan at index \(2, 4, 1\)"),
]
META_ERRORS: list[tuple[Callable, str]] = [
    (_varlen, r"meta\.json.*'velocity'.*'dynamic_varlen' features .* not supported yet"),
    (_odd_type, r"meta\.json.*'pressure'.*unsupported feature type"),
    (_odd_dtype, r"meta\.json.*'pressure'.*unknown dtype.*complex64"),
    (_no_cells, r"meta\.json.*no 'cells' feature"),
]


@pytest.mark.parametrize(
    ("corrupt", "message"), RECORD_ERRORS, ids=lambda v: getattr(v, "__name__", "")
)
def test_bad_records_raise_and_leave_nothing(tmp_path: Path, corrupt, message: str) -> None:
    records = [_cylinder_record(k) for k in range(3)]
    meta = _meta(records[0])
    corrupt(records)
    src = _write_dataset(tmp_path / "src", {"train": records}, meta)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=message):
        import_deepmind(src, out, splits=["train"], progress=False)
    assert _leftovers(out) == []


@pytest.mark.parametrize(
    ("corrupt", "message"), META_ERRORS, ids=lambda v: getattr(v, "__name__", "")
)
def test_bad_meta_raises_before_writing(tmp_path: Path, corrupt, message: str) -> None:
    records = [_cylinder_record(0)]
    meta = _meta(records[0])
    corrupt(meta)
    src = _write_dataset(tmp_path / "src", {"train": records}, meta)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=message):
        import_deepmind(src, out, splits=["train"], progress=False)
    assert _leftovers(out) == []


def test_missing_meta_split_and_truncated_file(tmp_path: Path) -> None:
    src, _ = _cylinder_dataset(tmp_path / "src")
    out = tmp_path / "out"
    data = (src / "valid.tfrecord").read_bytes()
    (src / "valid.tfrecord").write_bytes(data[:-10])
    with pytest.raises(DataError, match=r"valid\.tfrecord.*truncated TFRecord file: record 1"):
        import_deepmind(src, out, splits=["valid"], progress=False)
    with pytest.raises(DataError, match=r"nope\.tfrecord.*split 'nope' has no TFRecord file"):
        import_deepmind(src, out, splits=["train", "nope"], progress=False)
    (src / "meta.json").unlink()
    with pytest.raises(DataError, match=r"meta\.json.*missing meta\.json"):
        import_deepmind(src, out, progress=False)
    assert _leftovers(out) == []


def test_mesh_the_schema_rejects_names_the_trajectory(tmp_path: Path) -> None:
    records = [_cylinder_record(k) for k in range(2)]
    records[1]["cells"] = records[1]["cells"][:, :2].copy()  # most nodes in no cell
    src = _write_dataset(tmp_path / "src", {"train": records}, _meta(records[0]))
    with pytest.raises(DataError, match=r"train\.tfrecord.*trajectory 1 does not fit the mesh"):
        import_deepmind(src, tmp_path / "out", splits=["train"], progress=False)
    assert _leftovers(tmp_path / "out") == []


def test_missing_tfrecord_package_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    src, _ = _cylinder_dataset(tmp_path / "src")
    monkeypatch.setitem(sys.modules, "tfrecord.reader", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'tfrecord>=1\.14'"):
        import_deepmind(src, tmp_path / "out", progress=False)


# --------------------------------------------------------------------------------------------
# CLI


def test_cli_import_deepmind(tmp_path: Path, capsys) -> None:
    src, _ = _cylinder_dataset(tmp_path / "cylinder_flow")
    out = tmp_path / "out"
    assert main(["data", "import", "--from", "deepmind", str(src), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for split in ("train", "valid", "test"):
        assert f"wrote {out / f'{split}.h5'}" in printed
        assert main(["data", "validate", str(out / f"{split}.h5")]) == 0
    args = ["data", "import", "--from", "deepmind", str(src), str(tmp_path / "o2")]
    assert main([*args, "--splits", "valid", "--max-samples", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "o2").iterdir()) == ["valid.h5"]
    with MeshReader(tmp_path / "o2" / "valid.h5") as reader:
        assert len(reader) == 1


def test_cli_import_deepmind_errors(tmp_path: Path, capsys) -> None:
    src, _ = _cylinder_dataset(tmp_path / "src")
    (src / "meta.json").unlink()
    assert main(["data", "import", "--from", "deepmind", str(src), "--out", str(tmp_path)]) == 2
    assert "missing meta.json" in capsys.readouterr().err
    assert main(["data", "import", "--from", "deepmind", str(src)]) == 2
    assert "DEST or as --out" in capsys.readouterr().err
