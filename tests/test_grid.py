"""The Well layout: writer, validator, reader, xarray view, and a file built by hand."""

from __future__ import annotations

import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

from simsurrogate.data.errors import DataError
from simsurrogate.data.grid import (
    GridField,
    WellReader,
    info_well,
    to_xarray_well,
    validate_well,
    write_well,
)

B, T, NX, NY = 2, 5, 8, 6


@pytest.fixture
def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x": np.linspace(0.0, 1.0, NX, dtype=np.float32),
        "y": np.linspace(0.0, 0.5, NY, dtype=np.float32),
        "time": np.arange(T, dtype=np.float32) * 0.1,
        "density": rng.random((B, T, NX, NY), dtype=np.float32),
        "velocity": rng.standard_normal((B, T, NX, NY, 2), dtype=np.float32),
        "obstacle": (rng.random((B, NX, NY)) > 0.8).astype(np.float32),
        "energy": rng.random((B, T)),
    }


def _write(path: Path, a: dict[str, np.ndarray], **overrides) -> Path:
    kwargs = dict(
        dataset_name="toy_flow",
        dimensions={"x": a["x"], "y": a["y"]},
        time=a["time"],
        fields=[
            GridField("density", a["density"], 0),
            GridField("velocity", a["velocity"], 1),
            GridField("obstacle", a["obstacle"], 0, time_varying=False),
        ],
        scalars={"energy": a["energy"]},
        simulation_parameters={"Re": 100.0},
        boundary_conditions=[
            {"name": "x_periodic", "bc_type": "periodic", "associated_dims": ["x"]}
        ],
    )
    kwargs.update(overrides)
    return write_well(path, **kwargs)


@pytest.fixture
def well(tmp_path: Path, arrays) -> Path:
    return _write(tmp_path / "toy.hdf5", arrays)


def test_written_file_follows_the_well_layout(well: Path, arrays) -> None:
    validate_well(well)
    with h5py.File(well) as f:
        assert f.attrs["dataset_name"] == "toy_flow"
        assert f.attrs["grid_type"] == "cartesian"
        assert f.attrs["n_spatial_dims"] == 2 and f.attrs["n_trajectories"] == B
        assert list(f.attrs["simulation_parameters"]) == ["Re"] and f.attrs["Re"] == 100.0
        assert list(f["dimensions"].attrs["spatial_dims"]) == ["x", "y"]
        assert f["dimensions/time"].attrs["sample_varying"] == np.False_
        bc = f["boundary_conditions/x_periodic"]
        assert bc.attrs["bc_type"] == "PERIODIC" and list(bc.attrs["associated_dims"]) == ["x"]
        assert bc["mask"][()].tolist() == [True] + [False] * (NX - 2) + [True]
        assert list(f["scalars"].attrs["field_names"]) == ["Re", "energy"]
        # constant scalars 0-d, as the_well's WellDataset needs to give constant_scalars (n,)
        assert f["scalars/Re"].shape == () and not f["scalars/Re"].attrs["time_varying"]
        assert list(f["t0_fields"].attrs["field_names"]) == ["density", "obstacle"]
        assert list(f["t1_fields"].attrs["field_names"]) == ["velocity"]
        assert list(f["t2_fields"].attrs["field_names"]) == []
        vel = f["t1_fields/velocity"]
        assert vel.shape == (B, T, NX, NY, 2) and vel.chunks == (1, 1, NX, NY, 2)
        assert list(vel.attrs["dim_varying"]) == [True, True]
        assert f["t0_fields/obstacle"].shape == (B, NX, NY)
        assert not f["t0_fields/obstacle"].attrs["time_varying"]
        np.testing.assert_array_equal(f["t1_fields/velocity"][()], arrays["velocity"])
        np.testing.assert_array_equal(f["scalars/energy"][()], arrays["energy"])


def test_reader_round_trip_and_windows(well: Path, arrays) -> None:
    r = WellReader(well)
    assert (r.n_trajectories, r.n_steps, r.spatial_dims, r.spatial_shape) == (
        B,
        T,
        ("x", "y"),
        (NX, NY),
    )
    assert r.field_names == {0: ["density"], 1: ["velocity_x", "velocity_y"], 2: []}
    assert r.constant_field_names == {0: ["obstacle"], 1: [], 2: []}
    w = r.window(1, 2, 3)
    np.testing.assert_array_equal(w["density"], arrays["density"][1, 2:5])
    np.testing.assert_array_equal(w["velocity"], arrays["velocity"][1, 2:5])
    assert w["obstacle"].shape == (3, NX, NY)
    np.testing.assert_array_equal(
        w["obstacle"], np.broadcast_to(arrays["obstacle"][1], (3, NX, NY))
    )
    np.testing.assert_array_equal(r.window(0, 0, T)["density"], arrays["density"][0])
    np.testing.assert_array_equal(r.time(), arrays["time"])
    np.testing.assert_array_equal(r.coordinates()["y"], arrays["y"])
    np.testing.assert_array_equal(r.scalars(1)["energy"], arrays["energy"][1])
    assert r.scalars(0)["Re"] == 100.0 and r.simulation_parameters == {"Re": 100.0}
    (bc,) = r.boundary_conditions
    assert bc["bc_type"] == "PERIODIC" and bc["associated_dims"] == ["x"]
    with pytest.raises(IndexError, match="outside"):
        r.window(0, 3, 3)
    clone = pickle.loads(pickle.dumps(r))  # as in a spawned DataLoader worker
    np.testing.assert_array_equal(clone.window(0, 1, 1)["velocity"], arrays["velocity"][0, 1:2])
    r.close()
    assert "toy_flow" in info_well(well) and "t1 velocity" in info_well(well)


def test_to_xarray_named_dims_and_selection(well: Path, arrays) -> None:
    ds = to_xarray_well(well)
    assert ds["velocity"].dims == ("sample", "time", "x", "y", "i")
    assert ds["obstacle"].dims == ("sample", "x", "y")
    assert ds["energy"].dims == ("sample", "time") and ds["Re"].dims == ()
    assert ds["bc_x_periodic"].dims == ("x",)
    np.testing.assert_array_equal(ds["x"], arrays["x"])
    np.testing.assert_array_equal(ds["time"], arrays["time"])
    assert list(ds["i"].values) == ["x", "y"]
    np.testing.assert_array_equal(ds["velocity"].sel(i="y"), arrays["velocity"][..., 1])
    one = to_xarray_well(well, trajectories=slice(1, 2))
    assert one.sizes["sample"] == 1 and int(one["sample"][0]) == 1
    np.testing.assert_array_equal(one["density"][0], arrays["density"][1])
    assert ds.attrs["dataset_name"] == "toy_flow"


def _hand_built_well_file(path: Path) -> dict[str, np.ndarray]:
    """A file laid out as The Well's docs/data_format.md shows, written with raw h5py.

    Independent of write_well: Python-list attributes, bools as Python bools, a constant
    scalar stored as (1,), ``time`` with only ``sample_varying``, fields constant along ``y``
    (that axis absent as in the docs, or kept with length 1 as the_well's loader tiles it), a
    t2 field with symmetric/antisymmetric, a WALL boundary whose associated_dims is a bare
    string and an empty ``associated_fields`` list.
    """
    rng = np.random.default_rng(1)
    x, y, t = (np.linspace(0, 1, n, dtype=np.float32) for n in (NX, NY, T))
    data = {
        "pressure": rng.random((B, T, NX, NY), dtype=np.float32),
        "profile": rng.random((B, T, NX), dtype=np.float32),  # dim_varying [True, False]
        "inflow": rng.random((B, T, NX, 1), dtype=np.float32),  # the same, y axis kept
        "velocity": rng.random((B, T, NX, NY, 2), dtype=np.float32),
        "conformation": rng.random((B, T, NX, NY, 2, 2), dtype=np.float32),
    }
    with h5py.File(path, "w") as f:
        f.attrs["simulation_parameters"] = ["Wi"]
        f.attrs["Wi"] = 50.0
        f.attrs["dataset_name"] = "hand_built"
        f.attrs["grid_type"] = "cartesian"
        f.attrs["n_spatial_dims"] = 2
        f.attrs["n_trajectories"] = B
        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = ["x", "y"]
        dims.create_dataset("time", data=t).attrs["sample_varying"] = False
        for name, coord in (("x", x), ("y", y)):
            d = dims.create_dataset(name, data=coord)
            d.attrs["sample_varying"] = False
            d.attrs["time_varying"] = False
        wall = f.create_group("boundary_conditions").create_group("y_wall")
        wall.attrs["associated_dims"] = "y"
        wall.attrs["associated_fields"] = []
        wall.attrs["bc_type"] = "WALL"
        wall.attrs["sample_varying"] = False
        wall.attrs["time_varying"] = False
        mask = np.zeros(NY, dtype=bool)
        mask[[0, -1]] = True
        wall.create_dataset("mask", data=mask)
        wall.create_dataset("values", data=np.zeros(2, dtype=np.float32))
        scalars = f.create_group("scalars")
        scalars.attrs["field_names"] = ["Wi"]
        s = scalars.create_dataset("Wi", data=np.array([50.0]))
        s.attrs["sample_varying"] = False
        s.attrs["time_varying"] = False
        for order, names in enumerate(
            (["pressure", "profile", "inflow"], ["velocity"], ["conformation"])
        ):
            group = f.create_group(f"t{order}_fields")
            group.attrs["field_names"] = names
            for name in names:
                d = group.create_dataset(name, data=data[name])
                d.attrs["dim_varying"] = [True, name not in ("profile", "inflow")]
                d.attrs["sample_varying"] = True
                d.attrs["time_varying"] = True
                if order == 2:
                    d.attrs["antisymmetric"] = False
                    d.attrs["symmetric"] = False
    return data


def test_hand_built_well_file_reads_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "hand.hdf5"
    data = _hand_built_well_file(path)
    validate_well(path)
    r = WellReader(path)
    assert r.field_names == {
        0: ["pressure", "profile", "inflow"],
        1: ["velocity_x", "velocity_y"],
        2: ["conformation_xx", "conformation_xy", "conformation_yx", "conformation_yy"],
    }
    w = r.window(1, 1, 2)
    np.testing.assert_array_equal(w["pressure"], data["pressure"][1, 1:3])
    np.testing.assert_array_equal(w["conformation"], data["conformation"][1, 1:3])
    assert w["profile"].shape == (2, NX, NY)
    np.testing.assert_array_equal(w["profile"][:, :, 3], data["profile"][1, 1:3])
    np.testing.assert_array_equal(w["inflow"], np.repeat(data["inflow"][1, 1:3], NY, axis=-1))
    assert r.scalars()["Wi"] == 50.0 and r.simulation_parameters == {"Wi": 50.0}
    (bc,) = r.boundary_conditions
    assert (bc["bc_type"], bc["associated_dims"], bc["associated_fields"]) == ("WALL", ["y"], [])
    ds = to_xarray_well(path)
    assert ds["conformation"].dims == ("sample", "time", "x", "y", "i", "j")
    assert ds["profile"].dims == ds["inflow"].dims == ("sample", "time", "x")
    assert "hand_built" in info_well(path)


# --- bad inputs -----------------------------------------------------------------------------


def _drop_group(f: h5py.File) -> None:
    del f["scalars"]


def _ghost_field(f: h5py.File) -> None:
    f["t0_fields"].attrs["field_names"] = ["density", "ghost", "obstacle"]


def _wrong_shape(f: h5py.File) -> None:
    attrs = dict(f["t1_fields/velocity"].attrs)
    del f["t1_fields/velocity"]
    d = f["t1_fields"].create_dataset("velocity", data=np.zeros((B, T, NX, NY, 3), np.float32))
    d.attrs.update(attrs)


def _nan(f: h5py.File) -> None:
    f["t0_fields/density"][1, 3, 2, 4] = np.nan


def _int_dtype(f: h5py.File) -> None:
    attrs = dict(f["t0_fields/density"].attrs)
    del f["t0_fields/density"]
    f["t0_fields"].create_dataset("density", data=np.zeros((B, T, NX, NY), np.int32))
    f["t0_fields/density"].attrs.update(attrs)


def _no_root_attr(f: h5py.File) -> None:
    del f.attrs["n_trajectories"]


def _wrong_n_traj(f: h5py.File) -> None:
    f.attrs["n_trajectories"] = 3


@pytest.mark.parametrize(
    ("corrupt", "message", "structural"),
    [
        (_drop_group, "missing group 'scalars'", True),
        (_ghost_field, "field_names lists 'ghost'", True),
        (_wrong_shape, r"field 'velocity': shape inconsistent.*\(2, 5, 8, 6, 2\)", True),
        (_nan, r"field 'density': non-finite value .* at index \(1, 3, 2, 4\)", False),
        (_int_dtype, "field 'density': bad dtype", True),
        (_no_root_attr, "missing root attribute 'n_trajectories'", True),
        (_wrong_n_traj, "shape inconsistent with n_trajectories", True),
    ],
)
def test_bad_files_raise_data_error(well: Path, corrupt, message: str, structural: bool) -> None:
    with h5py.File(well, "r+") as f:
        corrupt(f)
    with pytest.raises(DataError, match=message) as err:
        validate_well(well)
    assert str(well) in str(err.value)
    if structural:
        with pytest.raises(DataError, match=message):
            WellReader(well)


def test_not_hdf5_truncated_and_non_well_files(tmp_path: Path, well: Path) -> None:
    text = tmp_path / "notes.hdf5"
    text.write_text("not HDF5 at all\n")
    with pytest.raises(DataError, match="not an HDF5 file"):
        validate_well(text)
    truncated = tmp_path / "truncated.hdf5"
    truncated.write_bytes(well.read_bytes()[: well.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated"):
        validate_well(truncated)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["foo"] = np.zeros(3)
    with pytest.raises(DataError, match="not a Well-format file: missing group 'dimensions'"):
        WellReader(other)
    with pytest.raises(DataError, match="no such file"):
        WellReader(tmp_path / "missing.hdf5")


def test_writer_rejects_bad_input_and_writes_nothing(tmp_path: Path, arrays) -> None:
    path = tmp_path / "bad.hdf5"
    bad_shape = [GridField("density", arrays["density"][:, :, :-1], 0)]
    with pytest.raises(DataError, match=r"field 'density': shape inconsistent.*\(2, 5, 8, 6\)"):
        _write(path, arrays, fields=bad_shape)
    nan = arrays["velocity"].copy()
    nan[0, 4, 1, 1, 1] = np.inf
    with pytest.raises(
        DataError, match=r"'velocity': non-finite value .*inf.* at index \(0, 4, 1, 1, 1\)"
    ):
        _write(path, arrays, fields=[GridField("velocity", nan, 1)])
    with pytest.raises(DataError, match="unknown bc_type"):
        _write(
            path,
            arrays,
            boundary_conditions=[{"name": "b", "bc_type": "x", "associated_dims": ["x"]}],
        )
    assert list(tmp_path.iterdir()) == []
    _write(path, arrays)
    with pytest.raises(DataError, match="file exists"):
        _write(path, arrays)
