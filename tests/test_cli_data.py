"""`simsurrogate data info|validate|import` on every kind of file, good and bad."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from simsurrogate.cli import main
from simsurrogate.data.grid import GridField, write_well
from simsurrogate.data.mesh import write_mesh
from simsurrogate.data.particles import FrameReader


def _well(path: Path) -> Path:
    x, y = np.linspace(0, 1, 8), np.linspace(0, 1, 6)
    data = np.random.default_rng(0).normal(size=(2, 4, 8, 6)).astype(np.float32)
    return write_well(
        path,
        dataset_name="toy",
        dimensions={"x": x, "y": y},
        time=np.arange(4.0),
        fields=[GridField("density", data, order=0)],
    )


def _mesh(path: Path) -> Path:
    pos = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    cells = np.array([[0, 1, 2], [1, 3, 2]])
    traj = {
        "mesh_pos": pos,
        "cells": cells,
        "node_type": np.zeros(4, np.int64),
        "fields": {"velocity": np.zeros((3, 4, 2), np.float32)},
    }
    return write_mesh(path, [traj])


@pytest.mark.parametrize("kind", ["particles", "mesh", "well"])
def test_info_and_validate_every_kind(kind: str, nbody_dir: Path, tmp_path: Path, capsys) -> None:
    path = {
        "particles": lambda: nbody_dir / "valid.h5",
        "mesh": lambda: _mesh(tmp_path / "m.h5"),
        "well": lambda: _well(tmp_path / "w.h5"),
    }[kind]()
    assert main(["data", "info", str(path)]) == 0
    assert main(["data", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "valid" in out and str(path) in out


def test_validate_names_the_problem_and_exits_non_zero(tmp_path: Path) -> None:
    path = _mesh(tmp_path / "m.h5")
    with h5py.File(path, "r+") as fh:
        group = fh["trajectories"][next(iter(fh["trajectories"]))]
        group["velocity"][1, 2, 0] = np.nan
    proc = subprocess.run(
        [sys.executable, "-m", "simsurrogate.cli", "data", "validate", str(path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "velocity" in proc.stderr and "non-finite" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "content, message",
    [(b"not hdf5 at all", "not an HDF5 file"), (b"\x89HDF\r\n\x1a\n" + b"\0" * 64, "truncated")],
)
def test_bad_files_get_one_line_errors(
    tmp_path: Path, capsys, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.h5"
    path.write_bytes(content)
    assert main(["data", "validate", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_unknown_schema_is_named(tmp_path: Path, capsys) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as fh:
        fh.attrs["schema"] = "somebody.else"
    assert main(["data", "info", str(path)]) == 2
    assert "somebody.else" in capsys.readouterr().err


def test_import_extxyz(tmp_path: Path) -> None:
    images = []
    for k in range(3):
        atoms = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0.1 * k]])
        atoms.calc = SinglePointCalculator(atoms, energy=-14.0 + k, forces=np.full((3, 3), 0.1 * k))
        images.append(atoms)
    src = tmp_path / "water.extxyz"
    write(src, images)
    dest = tmp_path / "water.h5"
    assert main(["data", "import", str(src), str(dest)]) == 0
    assert main(["data", "validate", str(dest)]) == 0
    reader = FrameReader(dest)
    assert len(reader) == 3
    np.testing.assert_allclose(reader[2]["energy"], -12.0)
    np.testing.assert_allclose(reader[2]["forces"], 0.2)
    reader.close()


def test_generate_darcy_through_the_cli(tmp_path: Path) -> None:
    args = ["--out", str(tmp_path), "--n-train", "2", "--n-test", "1"]
    assert (
        main(["data", "generate", "darcy", *args, "--resolution", "21", "--stored", "21", "11"])
        == 0
    )
    for name in ("train_21", "train_11", "test_21", "test_11"):
        assert main(["data", "validate", str(tmp_path / f"{name}.h5")]) == 0


def test_generate_navier_stokes_through_the_cli(tmp_path: Path) -> None:
    args = ["--out", str(tmp_path), "--n-train", "1", "--n-test", "1", "--t-final", "0.02"]
    args += ["--dt", "0.01", "--record-every", "0.01", "--resolution", "16", "--stored", "8"]
    assert main(["data", "generate", "navier-stokes", *args, "--scheme", "heun"]) == 0
    assert main(["data", "validate", str(tmp_path / "train.hdf5")]) == 0
    bad = ["--out", str(tmp_path / "bad"), "--viscosity", "-1"]
    assert main(["data", "generate", "navier-stokes", *bad]) == 2


def test_generate_burgers_through_the_cli(tmp_path: Path) -> None:
    args = ["--out", str(tmp_path), "--n-train", "2", "--n-test", "1"]
    assert main(["data", "generate", "burgers", *args, "--resolution", "64", "--stored", "32"]) == 0
    assert main(["data", "validate", str(tmp_path / "train.h5")]) == 0


def test_import_pdebench_through_the_cli(tmp_path: Path) -> None:
    src = tmp_path / "1D_Advection_Sols_beta0.1.hdf5"
    with h5py.File(src, "w") as fh:
        fh["tensor"] = np.random.default_rng(0).normal(size=(3, 4, 16)).astype(np.float32)
        fh["x-coordinate"] = (np.arange(16) + 0.5) / 16
        fh["t-coordinate"] = np.linspace(0, 2, 5)
        fh.attrs["beta"] = 0.1
    dest = tmp_path / "advection.h5"
    assert main(["data", "import", str(src), str(dest), "--from", "pdebench"]) == 0
    assert main(["data", "validate", str(dest)]) == 0
