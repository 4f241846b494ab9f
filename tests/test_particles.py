"""Particle / atomistic frames schema: writer, reader, validator, xarray view, ASE importer."""

from __future__ import annotations

import pickle
from pathlib import Path

import ase
import ase.io
import ase.units
import h5py
import numpy as np
import pytest
import xarray as xr
from ase.calculators.singlepoint import SinglePointCalculator

from simsurrogate.data import particles
from simsurrogate.data.errors import DataError
from simsurrogate.data.importers.ase_import import atoms_to_fields, frames_to_atoms, import_ase
from simsurrogate.data.particles import (
    SCHEMA,
    FrameReader,
    FrameWriter,
    info,
    to_xarray,
    validate,
    write_frames,
)


def make_fields(n_frames: int = 7, seed: int = 0, n_traj: int = 2) -> dict:
    """Ragged frames with every kind of field: known, extra per-frame/per-atom, bool, float32."""
    rng = np.random.default_rng(seed)
    n_atoms = rng.integers(0, 6, n_frames)  # includes empty frames
    n_atoms[0] = 3
    total = int(n_atoms.sum())
    return {
        "n_atoms": n_atoms,
        "positions": rng.normal(size=(total, 3)),
        "numbers": rng.integers(1, 30, total),
        "velocities": rng.normal(size=(total, 3)).astype(np.float32),
        "forces": rng.normal(size=(total, 3)),
        "charges": rng.normal(size=total),
        "masses": rng.uniform(1, 20, total),
        "trajectory": np.arange(n_frames) % n_traj,
        "time": np.arange(n_frames, dtype=float),
        "energy": rng.normal(size=n_frames),
        "cell": rng.normal(size=(n_frames, 3, 3)),
        "pbc": rng.integers(0, 2, (n_frames, 3)).astype(bool),
        "stress": rng.normal(size=(n_frames, 3, 3)),
        "dipole": rng.normal(size=(n_frames, 3)).astype(np.float32),  # extra per-frame
        "spin": rng.integers(-2, 3, total).astype(np.int8),  # extra per-atom
        "fixed": rng.integers(0, 2, total).astype(bool),  # extra per-atom bool
    }


def split_batches(fields: dict, bounds: list[int]) -> list[dict]:
    """Cut a fields dict into batches at the given frame indices."""
    offsets = np.concatenate(([0], np.cumsum(fields["n_atoms"])))
    frame_keys = particles.FRAME_FIELDS | {"dipole"}
    edges = [0, *bounds, len(fields["n_atoms"])]
    batches = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        a, b = offsets[lo], offsets[hi]
        batches.append({k: (v[lo:hi] if k in frame_keys else v[a:b]) for k, v in fields.items()})
    return batches


@pytest.fixture
def fields() -> dict:
    return make_fields()


@pytest.fixture
def written(tmp_path: Path, fields: dict) -> Path:
    return write_frames(
        tmp_path / "frames.nc", attrs={"name": "demo", "gen": {"seed": 3}}, **fields
    )


def assert_frame_equal(frame: dict, fields: dict, i: int) -> None:
    offsets = np.concatenate(([0], np.cumsum(fields["n_atoms"])))
    frame_keys = particles.FRAME_FIELDS | {"dipole"}
    assert set(frame) == set(fields)
    for key, value in fields.items():
        expected = value[i] if key in frame_keys else value[offsets[i] : offsets[i + 1]]
        np.testing.assert_array_equal(frame[key], expected, err_msg=key)
        assert frame[key].dtype == np.asarray(expected).dtype or key in particles._INT_FIELDS


# ------------------------------------------------------------------------------------------
# round trips


def test_round_trip_every_field_kind(written: Path, fields: dict) -> None:
    reader = FrameReader(written)
    assert len(reader) == len(fields["n_atoms"])
    np.testing.assert_array_equal(reader.offsets[1:], np.cumsum(fields["n_atoms"]))
    assert set(reader.frame_fields) == {
        "n_atoms", "trajectory", "time", "energy", "cell", "pbc", "stress", "dipole"
    }  # fmt: skip
    assert set(reader.atom_fields) == set(fields) - set(reader.frame_fields)
    for i in range(len(reader)):
        assert_frame_equal(reader[i], fields, i)
    assert_frame_equal(reader[-1], fields, len(reader) - 1)
    assert reader.units["forces"] == "eV/Angstrom" and reader.units["stress"] == "eV/Angstrom^3"
    assert reader.attrs == {"name": "demo", "gen": {"seed": 3}}
    all_frames = reader.frames(np.arange(len(reader)))
    for key, value in fields.items():
        np.testing.assert_array_equal(all_frames[key], value, err_msg=key)
    with pytest.raises(IndexError):
        reader[len(reader)]
    validate(written)


def test_appending_batches_equals_one_shot(tmp_path: Path, fields: dict) -> None:
    one = write_frames(tmp_path / "one.nc", **fields)
    with FrameWriter(tmp_path / "many.nc") as writer:
        for batch in split_batches(fields, [1, 2, 5]):
            writer.append(**batch)
        writer.append(**split_batches(fields, [0])[0])  # an empty batch is a no-op
        assert writer.n_frames == len(fields["n_atoms"])
    with h5py.File(one) as a, h5py.File(tmp_path / "many.nc") as b:
        assert sorted(a) == sorted(b)
        for name in a:
            np.testing.assert_array_equal(a[name][...], b[name][...], err_msg=name)
            assert a[name].dtype == b[name].dtype


def test_frames_any_order_matches_single_reads(
    written: Path, fields: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = FrameReader(written)
    for max_gap in (4096, 0):  # one block for everything / one read per range
        monkeypatch.setattr(particles, "_MAX_GAP", max_gap)
        idx = [5, 0, 3, 3, 6, 1]
        got = reader.frames(idx, fields=["energy", "positions", "pbc"])
        assert set(got) == {"n_atoms", "energy", "positions", "pbc"}
        np.testing.assert_array_equal(got["n_atoms"], fields["n_atoms"][idx])
        np.testing.assert_array_equal(got["energy"], fields["energy"][idx])
        np.testing.assert_array_equal(got["pbc"], fields["pbc"][idx])
        expected = np.concatenate([reader[i]["positions"] for i in idx])
        np.testing.assert_array_equal(got["positions"], expected)
    empty = reader.frames([])
    assert empty["positions"].shape == (0, 3) and empty["n_atoms"].shape == (0,)
    with pytest.raises(DataError, match="field 'nope': no such field"):
        reader.frames([0], fields=["nope"])


def test_xarray_opens_file_directly(written: Path, fields: dict) -> None:
    with xr.open_dataset(written, engine="h5netcdf") as ds:
        assert ds.sizes["frame"] == len(fields["n_atoms"])
        assert ds.sizes["atom"] == fields["n_atoms"].sum()
        assert ds.sizes["spatial"] == 3 and ds.sizes["spatial_j"] == 3
        assert ds["positions"].dims == ("atom", "spatial")
        assert ds["stress"].dims == ("frame", "spatial", "spatial_j")
        assert ds["pbc"].dtype == bool
        assert ds["forces"].attrs["units"] == "eV/Angstrom"
        assert ds.attrs["schema"] == SCHEMA
        np.testing.assert_array_equal(ds["positions"].values, fields["positions"])
    with to_xarray(written) as ds:
        assert list(ds["spatial"].values) == ["x", "y", "z"]
        per_frame = ds["masses"].groupby("frame_of_atom").count()
        nonempty = fields["n_atoms"][fields["n_atoms"] > 0]
        np.testing.assert_array_equal(per_frame.values, nonempty)


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_reader_in_dataloader_workers(written: Path, fields: dict, context: str) -> None:
    torch = pytest.importorskip("torch")
    reader = FrameReader(written)  # holds an open handle that forked workers must not use
    loader = torch.utils.data.DataLoader(
        reader, batch_size=None, num_workers=2, multiprocessing_context=context
    )
    items = list(loader)
    assert len(items) == len(reader)
    for i, item in enumerate(items):
        np.testing.assert_array_equal(item["positions"].numpy(), reader[i]["positions"])
        assert float(item["energy"]) == fields["energy"][i]
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._h5 is None
    np.testing.assert_array_equal(clone[2]["forces"], reader[2]["forces"])


def test_trajectory_frames_and_window(tmp_path: Path) -> None:
    fields = make_fields(n_frames=12, n_traj=3)  # frames of 3 trajectories interleaved
    reader = FrameReader(write_frames(tmp_path / "t.nc", **fields))
    np.testing.assert_array_equal(reader.trajectories, [0, 1, 2])
    np.testing.assert_array_equal(reader.trajectory_frames(1), [1, 4, 7, 10])
    window = reader.window(1, start=1, length=2, stride=2)
    assert len(window) == 2
    assert_frame_equal(window[0], fields, 4)
    assert_frame_equal(window[1], fields, 10)
    with pytest.raises(IndexError, match="runs past the end of trajectory 1"):
        reader.window(1, start=2, length=3)
    with pytest.raises(IndexError, match="no trajectory 9"):
        reader.trajectory_frames(9)


def test_info_summarises(written: Path) -> None:
    text = info(written)
    for part in ("simsurrogate.particles v1", "frames: 7 in 2 trajectories", "stress", "demo"):
        assert part in text
    assert "(atom, spatial)  float32  [Angstrom/fs]" in text


# ------------------------------------------------------------------------------------------
# bad files


def test_not_hdf5_and_truncated(tmp_path: Path, written: Path) -> None:
    junk = tmp_path / "junk.nc"
    junk.write_text("not a netCDF file at all")
    for check in (FrameReader, validate, info, to_xarray):
        with pytest.raises(DataError, match="not an HDF5 file"):
            check(junk)
    cut = tmp_path / "cut.nc"
    data = written.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated"):
        validate(cut)
    with pytest.raises(DataError, match="no such file"):
        FrameReader(tmp_path / "missing.nc")


def edit(path: Path, action) -> Path:
    with h5py.File(path, "r+") as f:
        action(f)
    return path


def test_missing_required_variable(written: Path) -> None:
    edit(written, lambda f: f.__delitem__("positions"))
    with pytest.raises(DataError, match="field 'positions': required variable missing"):
        validate(written)
    with pytest.raises(DataError, match="positions"):
        FrameReader(written)


def test_wrong_dimensions_in_file(written: Path, fields: dict) -> None:
    def replace_cell(f: h5py.File) -> None:
        del f["cell"]
        f["cell"] = np.zeros((len(fields["n_atoms"]), 9))

    edit(written, replace_cell)
    with pytest.raises(DataError, match="field 'cell': wrong dimensions"):
        validate(written)


def test_counts_that_do_not_add_up(written: Path) -> None:
    edit(written, lambda f: f["n_atoms"].__setitem__(0, f["n_atoms"][0] + 1))
    for check in (validate, FrameReader):
        with pytest.raises(DataError, match="field 'n_atoms'.*do not add up"):
            check(written)


@pytest.mark.parametrize("scan_rows", [65536, 4])  # NaN in the first / a later scanned block
def test_nan_in_file_names_field_and_index(
    written: Path, scan_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(particles, "_SCAN_ROWS", scan_rows)
    edit(written, lambda f: f["forces"].__setitem__((7, 1), np.nan))
    with pytest.raises(DataError, match=r"field 'forces': non-finite value nan at index \(7, 1\)"):
        validate(written)


@pytest.mark.parametrize(
    ("attr", "value", "message"),
    [("schema_version", 2, "unsupported schema_version"), ("schema", "other", "unknown schema")],
)
def test_unknown_schema(written: Path, attr: str, value: object, message: str) -> None:
    edit(written, lambda f: f.attrs.__setitem__(attr, value))
    for check in (FrameReader, validate):
        with pytest.raises(DataError, match=message):
            check(written)


# ------------------------------------------------------------------------------------------
# bad input to the writer


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"forces": np.zeros((3, 2))}, r"field 'forces': wrong shape.*expected \(9, 3\)"),
        ({"cell": np.zeros((2, 3))}, r"field 'cell': wrong shape"),
        ({"numbers": np.ones(9)}, r"field 'numbers': unsupported dtype"),
        ({"mystery": np.zeros(4)}, r"field 'mystery': leading length matches neither"),
        ({"energy": [0.0, np.inf]}, r"field 'energy': non-finite value .*inf.* at index \(1,\)"),
        ({"n_atoms": [5, -1]}, r"field 'n_atoms': negative atom count"),
    ],
)
def test_writer_rejects_bad_batches(tmp_path: Path, change: dict, message: str) -> None:
    batch = {"n_atoms": [4, 5], "positions": np.zeros((9, 3)), "numbers": np.ones(9, int)}
    batch["energy"] = [0.0, 1.0]
    with FrameWriter(tmp_path / "w.nc") as writer:
        with pytest.raises(DataError, match=message):
            writer.append(**{**batch, **change})
        writer.append(**batch)  # a rejected batch wrote nothing; the writer goes on
    assert len(FrameReader(tmp_path / "w.nc")) == 2


def test_writer_checks_batches_against_the_first(tmp_path: Path) -> None:
    batch = {"n_atoms": [1, 2], "positions": np.zeros((3, 3)), "numbers": [1, 2, 3]}
    with FrameWriter(tmp_path / "w.nc") as writer:
        writer.append(**batch)
        with pytest.raises(DataError, match="fields differ from the first appended batch"):
            writer.append(**batch, energy=[1.0, 2.0])
        with pytest.raises(DataError, match="field 'numbers': unsupported dtype"):
            writer.append(**{**batch, "numbers": [1.0, 2.0, 3.0]})
    with FrameWriter(tmp_path / "x.nc") as writer:  # 1 frame of 1 atom: kind is ambiguous
        with pytest.raises(DataError, match="per_frame= or per_atom="):
            writer.append(n_atoms=[1], positions=np.zeros((1, 3)), tag=[7])
    path = write_frames(
        tmp_path / "y.nc", n_atoms=[1], positions=np.zeros((1, 3)), tag=[7], per_frame=["tag"]
    )
    assert FrameReader(path).frame_fields == ["n_atoms", "tag", "trajectory"]


def test_failed_writer_leaves_nothing_and_keeps_existing(tmp_path: Path, fields: dict) -> None:
    target = tmp_path / "out.nc"
    batches = split_batches(fields, [3])
    with pytest.raises(RuntimeError), FrameWriter(target) as writer:
        writer.append(**batches[0])
        raise RuntimeError("simulation blew up")
    assert list(tmp_path.iterdir()) == []
    write_frames(target, **fields)
    before = target.read_bytes()
    with pytest.raises(DataError, match="file exists"):
        FrameWriter(target)
    with pytest.raises(DataError, match="non-finite"), FrameWriter(target, overwrite=True) as w:
        w.append(**batches[0])
        w.append(**{**batches[1], "energy": np.full(len(batches[1]["energy"]), np.nan)})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.nc"]


# ------------------------------------------------------------------------------------------
# ASE


def make_images() -> list[ase.Atoms]:
    rng = np.random.default_rng(1)
    images = []
    for k, n in enumerate((2, 3, 1)):
        atoms = ase.Atoms(
            numbers=rng.integers(1, 30, n),
            positions=rng.normal(size=(n, 3)),
            cell=np.diag([5.0, 6.0, 7.0]) + 0.1 * k,
            pbc=[True, True, k != 1],
        )
        atoms.set_velocities(rng.normal(size=(n, 3)) * 0.01)
        atoms.info["temperature"] = 300.0 + k
        atoms.info["step"] = k
        atoms.info["label"] = "text is skipped"
        stress = rng.normal(size=6) * 0.01
        atoms.calc = SinglePointCalculator(
            atoms, energy=-1.5 * n, forces=rng.normal(size=(n, 3)), stress=stress
        )
        images.append(atoms)
    return images


def test_extxyz_round_trip(tmp_path: Path) -> None:
    originals = make_images()
    xyz = tmp_path / "data.extxyz"
    ase.io.write(xyz, originals, format="extxyz")
    images = ase.io.read(xyz, ":")  # extxyz rounds to 8 decimals: compare with what it holds
    path = import_ase(xyz, tmp_path / "data.nc")
    validate(path)
    reader = FrameReader(path)
    assert len(reader) == 3 and reader.attrs["importer"] == "ase"
    eq = np.testing.assert_array_equal
    for i, atoms in enumerate(images):
        frame = reader[i]
        eq(frame["positions"], atoms.positions)
        eq(frame["numbers"], atoms.numbers)
        eq(frame["cell"], atoms.cell.array)
        eq(frame["pbc"], atoms.pbc)
        eq(frame["energy"], atoms.get_potential_energy())
        eq(frame["forces"], atoms.get_forces())
        eq(frame["stress"], atoms.get_stress(voigt=False))
        eq(frame["velocities"], atoms.get_velocities() * ase.units.fs)
        np.testing.assert_allclose(
            frame["velocities"], originals[i].get_velocities() * ase.units.fs, atol=1e-9
        )
        assert frame["info_temperature"] == 300.0 + i and frame["info_step"] == i
        back = frames_to_atoms(reader, i)
        eq(back.positions, atoms.positions)
        np.testing.assert_allclose(back.get_velocities(), atoms.get_velocities(), rtol=1e-14)
        eq(back.get_stress(), atoms.get_stress())
        eq(back.get_forces(), atoms.get_forces())
        assert back.get_potential_energy() == atoms.get_potential_energy()
        assert back.info == {"temperature": 300.0 + i, "step": i}
        eq(back.pbc, atoms.pbc)
    again = atoms_to_fields([frames_to_atoms(reader, i) for i in range(len(reader))])
    everything = reader.frames(range(len(reader)))
    assert set(again) == set(everything) - {"trajectory"}
    for key, value in again.items():
        np.testing.assert_allclose(value, everything[key], rtol=1e-14, err_msg=key)
    eq(frames_to_atoms(again, 2).positions, images[2].positions)


def test_ase_mixed_presence_and_unreadable(tmp_path: Path) -> None:
    images = make_images()
    images[1].calc = None
    with pytest.raises(DataError, match=r"field 'energy': frame 1 has no 'energy'"):
        atoms_to_fields(images)
    xyz = tmp_path / "mixed.extxyz"
    ase.io.write(xyz, images, format="extxyz")
    with pytest.raises(DataError, match=r"mixed.extxyz.*frame 1 has no"):
        import_ase(xyz, tmp_path / "mixed.nc")
    bad = tmp_path / "bad.extxyz"
    bad.write_text("3\nnot a valid header\nH 0 0\n")
    with pytest.raises(DataError, match="bad.extxyz: ASE could not read it"):
        import_ase(bad, tmp_path / "bad.nc")
    assert not (tmp_path / "mixed.nc").exists() and not (tmp_path / "bad.nc").exists()
