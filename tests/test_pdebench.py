"""PDEBench importer: small files laid out as PDEBench's writers lay them out, imported into
The Well's layout, validated and read back exactly; and the errors for bad inputs."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from simsurrogate.data.errors import DataError
from simsurrogate.data.grid import GridField, WellReader, validate_well, write_well
from simsurrogate.data.importers import pdebench
from simsurrogate.data.importers.pdebench import detect_pdebench_layout, import_pdebench

B, T, NX, NY, NZ = 3, 4, 8, 6, 5
DT = 0.05


def _cell_centres(n: int) -> np.ndarray:
    """Cell centres on [0, 1], as PDEBench's NLE generators store ``x-coordinate``."""
    edges = np.linspace(0.0, 1.0, n + 1, dtype=np.float32)
    return edges[:-1] + 0.5 * (edges[1] - edges[0])


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


def _make_tensor_1d(path: Path) -> dict[str, np.ndarray]:
    """1D advection/Burgers/reaction-diffusion: ``tensor`` (B, T, X), n_t + 1 times."""
    a = {
        "tensor": _rng().standard_normal((B, T, NX), dtype=np.float32),
        "x": _cell_centres(NX),
        "t": np.arange(T + 1, dtype=np.float32) * DT,
    }
    with h5py.File(path, "w") as f:
        f.create_dataset("tensor", data=a["tensor"])
        f.create_dataset("x-coordinate", data=a["x"])
        f.create_dataset("t-coordinate", data=a["t"])
        f.attrs["beta"] = 0.4
    return a


def _make_darcy(path: Path) -> dict[str, np.ndarray]:
    """2D Darcy flow: ``tensor`` (B, 1, X, Y), ``nu`` (B, X, Y), no ``t-coordinate``."""
    rng = _rng()
    a = {
        "tensor": rng.random((B, 1, NX, NY), dtype=np.float32),
        "nu": rng.random((B, NX, NY), dtype=np.float32),
        "x": _cell_centres(NX),
        "y": _cell_centres(NY),
    }
    with h5py.File(path, "w") as f:
        f.create_dataset("tensor", data=a["tensor"])
        f.create_dataset("nu", data=a["nu"])
        f.create_dataset("x-coordinate", data=a["x"])
        f.create_dataset("y-coordinate", data=a["y"])
        f.attrs["beta"] = 1.0
    return a


def _make_cfd(path: Path, n_dims: int) -> dict[str, np.ndarray]:
    """Compressible NS: density/pressure/Vx[/Vy[/Vz]] (B, T, *spatial) and coordinates."""
    rng = _rng()
    sizes = (NX, NY, NZ)[:n_dims]
    a = {
        name: rng.standard_normal((B, T, *sizes), dtype=np.float32)
        for name in ("density", "pressure", "Vx", "Vy", "Vz")[: 2 + n_dims]
    }
    with h5py.File(path, "w") as f:
        for name, arr in a.items():
            f.create_dataset(name, data=arr)
        for d, n in zip("xyz", sizes, strict=False):
            a[d] = _cell_centres(n)
            f.create_dataset(f"{d}-coordinate", data=a[d])
        a["t"] = np.arange(T + 1, dtype=np.float32) * DT
        f.create_dataset("t-coordinate", data=a["t"])
        f.attrs["eta"] = 0.01
        f.attrs["zeta"] = 0.01
        if n_dims > 1:
            f.attrs["M"] = 0.1
    return a


def _make_groups(path: Path, n_dims: int, n_channels: int, n_samples: int = B) -> np.ndarray:
    """Per-sample groups "0000"... with ``data`` (T, *spatial, C) and ``grid/{x,y,t}``."""
    sizes = (NX, NY)[:n_dims]
    data = _rng().standard_normal((n_samples, T, *sizes, n_channels), dtype=np.float32)
    with h5py.File(path, "w") as f:
        for i in range(n_samples):
            key = str(i).zfill(4)
            f.create_dataset(f"{key}/data", data=data[i], compression="lzf")
            for d, n in zip("xy", sizes, strict=False):
                f.create_dataset(f"{key}/grid/{d}", data=np.linspace(-1, 1, n, dtype="f"))
            f.create_dataset(f"{key}/grid/t", data=np.arange(T, dtype="f") * DT)
            f[key].attrs["config"] = f"sim:\n  seed: {i}\n"
    return data


def _read_back(path: Path) -> WellReader:
    validate_well(path)
    return WellReader(path)


def test_tensor_1d(tmp_path: Path) -> None:
    src = tmp_path / "1D_Advection_Sols_beta0.4.hdf5"
    a = _make_tensor_1d(src)
    assert detect_pdebench_layout(src) == "tensor"
    out = import_pdebench(src, tmp_path / "adv.h5", periodic=True)
    r = _read_back(out)
    assert r.dataset_name == "1D_Advection_Sols_beta0.4"
    assert (r.n_trajectories, r.n_steps, r.spatial_dims) == (B, T, ("x",))
    assert r.simulation_parameters == {"beta": pytest.approx(0.4)}
    np.testing.assert_array_equal(r.time(), a["t"][:T])
    np.testing.assert_array_equal(r.coordinates()["x"], a["x"])
    for b in range(B):
        np.testing.assert_array_equal(r.window(b, 0, T)["u"], a["tensor"][b])
    assert [bc["bc_type"] for bc in r.boundary_conditions] == ["PERIODIC"]


def test_tensor_field_name_and_max_samples(tmp_path: Path) -> None:
    src = tmp_path / "1D_Burgers_Sols_Nu0.01.hdf5"
    a = _make_tensor_1d(src)
    r = _read_back(import_pdebench(src, tmp_path / "b.h5", field_names=["phi"], max_samples=2))
    assert r.n_trajectories == 2 and list(r.fields) == ["phi"]
    np.testing.assert_array_equal(r.window(1, 1, 2)["phi"], a["tensor"][1, 1:3])
    assert r.boundary_conditions == []  # name does not say periodic, none recorded


def test_block_reads_match_whole_reads(tmp_path: Path, monkeypatch) -> None:
    """Reading one sample per block (forced) gives the same file content."""
    monkeypatch.setattr(pdebench, "_BLOCK_BYTES", 1)
    src = tmp_path / "2D_CFD_periodic_Train.hdf5"
    a = _make_cfd(src, 2)
    r = _read_back(import_pdebench(src, tmp_path / "cfd.h5"))
    for b in range(B):
        np.testing.assert_array_equal(r.window(b, 0, T)["density"], a["density"][b])


def test_darcy(tmp_path: Path) -> None:
    src = tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5"
    a = _make_darcy(src)
    r = _read_back(import_pdebench(src, tmp_path / "darcy.h5", field_names=["pressure"]))
    assert (r.n_steps, r.spatial_shape) == (1, (NX, NY))
    assert not r.fields["nu"].time_varying
    np.testing.assert_array_equal(r.time(), [0.0])
    for b in range(B):
        w = r.window(b, 0, 1)
        np.testing.assert_array_equal(w["pressure"], a["tensor"][b])
        np.testing.assert_array_equal(w["nu"], a["nu"][b][None])


@pytest.mark.parametrize("n_dims", [1, 2, 3])
def test_cfd(tmp_path: Path, n_dims: int) -> None:
    src = tmp_path / f"{n_dims}D_CFD_Rand_Eta0.01_Zeta0.01_periodic_Train.hdf5"
    a = _make_cfd(src, n_dims)
    assert detect_pdebench_layout(src) == "cfd"
    r = _read_back(import_pdebench(src, tmp_path / "cfd.h5"))
    dims = tuple("xyz"[:n_dims])
    assert r.spatial_dims == dims and r.fields["velocity"].order == 1
    assert len(r.boundary_conditions) == n_dims  # file name says periodic
    assert r.simulation_parameters["eta"] == pytest.approx(0.01)
    np.testing.assert_array_equal(r.time(), a["t"][:T])
    for d in dims:
        np.testing.assert_array_equal(r.coordinates()[d], a[d])
    velocity = np.stack([a[f"V{d}"] for d in dims], axis=-1)
    for b in range(B):
        w = r.window(b, 0, T)
        np.testing.assert_array_equal(w["density"], a["density"][b])
        np.testing.assert_array_equal(w["pressure"], a["pressure"][b])
        np.testing.assert_array_equal(w["velocity"], velocity[b])


@pytest.mark.parametrize(("n_dims", "n_channels"), [(2, 2), (2, 1), (1, 1)])
def test_groups(tmp_path: Path, n_dims: int, n_channels: int) -> None:
    src = tmp_path / "2D_diff-react_NA_NA.h5"
    data = _make_groups(src, n_dims, n_channels)
    assert detect_pdebench_layout(src) == "groups"
    r = _read_back(import_pdebench(src, tmp_path / "g.h5"))
    names = [f"c{c}" for c in range(n_channels)]
    assert list(r.fields) == names and r.n_trajectories == B
    np.testing.assert_array_equal(r.time(), np.arange(T, dtype="f") * DT)
    for b in range(B):
        w = r.window(b, 0, T)
        for c, name in enumerate(names):
            np.testing.assert_array_equal(w[name], data[b, ..., c])


def test_groups_named_fields_and_max_samples(tmp_path: Path) -> None:
    src = tmp_path / "rd.h5"
    data = _make_groups(src, 2, 2)
    r = _read_back(import_pdebench(src, tmp_path / "g.h5", field_names=["u", "v"], max_samples=2))
    assert r.n_trajectories == 2
    np.testing.assert_array_equal(r.window(1, 0, T)["v"], data[1, ..., 1])
    with pytest.raises(DataError, match="wrong number of field_names"):
        import_pdebench(src, tmp_path / "bad.h5", field_names=["u"])


# --------------------------------------------------------------------------------------------
# bad inputs


def test_other_layout_names_keys(tmp_path: Path) -> None:
    well = write_well(
        tmp_path / "well.h5",
        dataset_name="w",
        dimensions={"x": np.arange(4.0)},
        time=np.arange(2.0),
        fields=[GridField("u", np.zeros((1, 2, 4)), 0)],
    )
    with pytest.raises(DataError, match="not a PDEBench file.*dimensions.*t0_fields"):
        detect_pdebench_layout(well)
    with pytest.raises(DataError, match="not a PDEBench file"):
        import_pdebench(well, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_incompressible_ns_layout_refused(tmp_path: Path) -> None:
    src = tmp_path / "ns_incom_inhom_2d_512-0.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("velocity", shape=(1, T, NX, NY, 2), dtype="f")
        f.create_dataset("particles", shape=(1, T, NX, NY, 1), dtype="f")
        f.create_dataset("force", shape=(1, NX, NY, 2), dtype="f")
        f.create_dataset("t", shape=(1, T), dtype="f")
    with pytest.raises(DataError, match="incompressible Navier-Stokes"):
        import_pdebench(src, tmp_path / "out.h5")


def test_inconsistent_sample_shapes_name_group(tmp_path: Path) -> None:
    src = tmp_path / "rd.h5"
    _make_groups(src, 2, 2)
    with h5py.File(src, "a") as f:
        del f["0001/data"]
        f.create_dataset("0001/data", data=np.zeros((T, NX, NY + 1, 2), dtype="f"))
    with pytest.raises(DataError, match="group '/0001'.*data"):
        import_pdebench(src, tmp_path / "out.h5")


def test_inconsistent_sample_grid_names_group(tmp_path: Path) -> None:
    src = tmp_path / "rd.h5"
    _make_groups(src, 2, 1)
    with h5py.File(src, "a") as f:
        f["0002/grid/y"][0] = 5.0
    with pytest.raises(DataError, match="group '/0002/grid', field 'y'"):
        import_pdebench(src, tmp_path / "out.h5")


def test_nan_reported_by_writer(tmp_path: Path) -> None:
    src = tmp_path / "adv.hdf5"
    _make_tensor_1d(src)
    with h5py.File(src, "a") as f:
        f["tensor"][1, 2, 3] = np.nan
    with pytest.raises(DataError, match="field 'u': non-finite value nan at index \\(1, 2, 3\\)"):
        import_pdebench(src, tmp_path / "out.h5")
    groups = tmp_path / "rd.h5"
    _make_groups(groups, 2, 2)
    with h5py.File(groups, "a") as f:
        f["0002/data"][0, 0, 0, 1] = np.nan
    with pytest.raises(DataError, match="field 'c1': non-finite"):
        import_pdebench(groups, tmp_path / "out.h5")
    assert not (tmp_path / "out.h5").exists()


def test_time_coordinate_length_checked(tmp_path: Path) -> None:
    src = tmp_path / "adv.hdf5"
    _make_tensor_1d(src)
    with h5py.File(src, "a") as f:
        del f["t-coordinate"]
        f.create_dataset("t-coordinate", data=np.arange(T + 3, dtype="f"))
    with pytest.raises(DataError, match="field 't-coordinate'.*time steps"):
        import_pdebench(src, tmp_path / "out.h5")


def test_missing_file_and_existing_dest(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        import_pdebench(tmp_path / "absent.hdf5", tmp_path / "out.h5")
    src = tmp_path / "adv.hdf5"
    _make_tensor_1d(src)
    dest = tmp_path / "out.h5"
    dest.write_bytes(b"keep")
    with pytest.raises(DataError, match="file exists"):
        import_pdebench(src, dest)
    assert dest.read_bytes() == b"keep"
    import_pdebench(src, dest, overwrite=True)
    validate_well(dest)


def test_cfd_rejects_field_names(tmp_path: Path) -> None:
    src = tmp_path / "1D_CFD.hdf5"
    _make_cfd(src, 1)
    with pytest.raises(DataError, match="field_names cannot rename CFD fields"):
        import_pdebench(src, tmp_path / "out.h5", field_names=["rho"])
