"""Atomistic reference data: EMT metals and GFN2-xTB molecules (labels, options, files, CLI)."""

from __future__ import annotations

import functools
from pathlib import Path

import ase.data
import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.collections import g2
from ase.stress import voigt_6_to_full_3x3_stress

from simsurrogate.cli import main
from simsurrogate.data.importers.ase_import import frames_to_atoms
from simsurrogate.data.particles import FrameReader
from simsurrogate.sims._atomistic_common import generate_splits
from simsurrogate.sims.emt_metals import (
    KINDS,
    EMTMetalsConfig,
    emt_chunk,
    emt_lattice_constant,
    emt_structure,
    generate_emt_metals,
)
from simsurrogate.sims.xtb_molecules import (
    ALL_HCNOF,
    XTBMoleculesConfig,
    generate_xtb_molecules,
    xtb_calculator,
)

# small and short: a fraction of a second per frame
EMT_SMALL = EMTMetalsConfig(size_range=(8, 24), md_steps=10)
XTB_SMALL = XTBMoleculesConfig(
    molecules=("H2O", "CH4", "CH3OH"), equilibration=5, interval=3, snapshots=2
)


def read_all(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    with FrameReader(path) as reader:
        return reader.frames(np.arange(len(reader))), reader.attrs


@pytest.fixture(scope="module")
def emt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("emt")
    generate_emt_metals(
        out, n_train=16, n_valid=4, n_test=4, seed=3, config=EMT_SMALL, workers=1, progress=False
    )
    return out


@pytest.fixture(scope="module")
def xtb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("xtb")
    generate_xtb_molecules(
        out, n_train=6, n_valid=2, n_test=2, seed=3, config=XTB_SMALL, workers=1, progress=False
    )
    return out


# -- EMT metals --------------------------------------------------------------------------------


def test_emt_lattice_constant_is_emt_equilibrium() -> None:
    for symbol in ("Cu", "Al"):
        atoms = bulk(symbol, "fcc", a=emt_lattice_constant(symbol), cubic=True)
        atoms.calc = EMT()
        assert np.abs(atoms.get_stress()[:3]).max() < 1e-8  # eV/Å³: zero pressure
    assert 3.55 < emt_lattice_constant("Cu") < 3.62  # experiment 3.61 Å


def test_emt_files_validate_and_record_their_making(emt_dir: Path, capsys) -> None:
    for split, count in (("train", 16), ("valid", 4), ("test", 4)):
        assert main(["data", "validate", str(emt_dir / f"{split}.h5")]) == 0
        data, attrs = read_all(emt_dir / f"{split}.h5")
        assert len(data["n_atoms"]) == count
        assert attrs["split"] == split and attrs["seed"] == 3
        assert attrs["kinds"] == KINDS
        assert attrs["parameters"]["size_range"] == [8, 24]
        assert attrs["versions"]["ase"] == ase.__version__
    assert "valid" in capsys.readouterr().out
    assert not (emt_dir / "parts").exists()


def test_emt_labels_equal_a_fresh_emt_calculation(emt_dir: Path) -> None:
    with FrameReader(emt_dir / "train.h5") as reader:
        kinds = set()
        for i in range(len(reader)):
            frame = reader[i]
            kinds.add(int(frame["kind"]))
            atoms = frames_to_atoms(reader, i)
            atoms.calc = EMT()
            assert frame["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-9)
            np.testing.assert_allclose(frame["forces"], atoms.get_forces(), atol=1e-9)
            periodic = bool(frame["pbc"].all())
            assert bool(frame["has_stress"]) == periodic
            if periodic:
                expected = voigt_6_to_full_3x3_stress(atoms.get_stress())
                np.testing.assert_allclose(frame["stress"], expected, atol=1e-10)
            else:
                assert not frame["stress"].any()
    assert kinds == set(KINDS.values())  # this seed draws every kind


def test_emt_forces_and_stress_are_energy_derivatives(emt_dir: Path) -> None:
    """Finite differences of the EMT energy at a stored frame reproduce its stored labels."""
    with FrameReader(emt_dir / "train.h5") as reader:
        i = next(k for k in range(len(reader)) if reader[k]["kind"] == KINDS["md"])
        frame, atoms = reader[i], frames_to_atoms(reader, i)
    atoms.calc = EMT()
    h = 1e-4

    def energy(positions=None, cell=None) -> float:
        a = atoms.copy()
        if cell is not None:
            a.set_cell(cell, scale_atoms=True)
        if positions is not None:
            a.positions = positions
        a.calc = EMT()
        return a.get_potential_energy()

    for atom, axis in ((0, 0), (3, 2), (len(atoms) - 1, 1)):
        plus, minus = atoms.positions.copy(), atoms.positions.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        fd = -(energy(plus) - energy(minus)) / (2 * h)
        assert fd == pytest.approx(frame["forces"][atom, axis], abs=1e-6)
    volume = atoms.get_volume()
    for a, b in ((0, 0), (1, 2)):
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = h / 2 if a != b else h
        e_plus = energy(cell=atoms.cell.array @ (np.eye(3) + eps))
        e_minus = energy(cell=atoms.cell.array @ (np.eye(3) - eps))
        # dE/dε_ab for a symmetric strain counts the (a, b) and (b, a) components
        fd = (e_plus - e_minus) / (2 * h) / volume
        assert fd == pytest.approx(frame["stress"][a, b], abs=1e-7)


def test_emt_structures_follow_their_kind(emt_dir: Path) -> None:
    data, attrs = read_all(emt_dir / "train.h5")
    n = data["n_atoms"]
    offsets = np.concatenate(([0], np.cumsum(n)))
    lo, hi = EMT_SMALL.size_range
    assert ((lo <= n) & (n <= hi)).all()
    elements = [ase.data.atomic_numbers[s] for s in attrs["elements"]]
    for i, kind in enumerate(data["kind"]):
        numbers = data["numbers"][offsets[i] : offsets[i + 1]]
        assert list(data["composition"][i]) == [int((numbers == z).sum()) for z in elements]
        assert len(np.unique(numbers)) <= EMT_SMALL.max_components
        if kind == KINDS["surface"]:
            assert list(data["pbc"][i]) == [True, True, False]
            z = data["positions"][offsets[i] : offsets[i + 1], 2]
            gap = data["cell"][i][2, 2] - (z.max() - z.min())
            assert gap > 2 * EMT_SMALL.vacuum - 1.0  # vacuum on both sides
        else:
            assert data["pbc"][i].all()
            # cubic supercells hold 4 n1 n2 n3 atoms; vacancies cut one or two
            assert n[i] % 4 in ((2, 3) if kind == KINDS["vacancy"] else (0,))
        if kind == KINDS["md"]:
            assert 300 <= data["temperature"][i] <= 1500
        else:
            assert data["temperature"][i] == 0.0


def test_emt_md_snapshots_are_thermal_at_their_drawn_temperature() -> None:
    """The kinetic temperature at the end of the Langevin runs averages the drawn one."""
    config = EMTMetalsConfig(kinds=("md",), size_range=(8, 16))
    ratios = []
    for i in range(12):
        atoms, _, temperature = emt_structure(config, 0, "valid", i)
        ratios.append(atoms.get_temperature() / temperature)
    # one frame of 8-16 atoms scatters by ~25 %, the mean of 12 by ~7 %
    assert 0.8 < np.mean(ratios) < 1.2


def test_emt_same_seed_same_data_other_seed_other_data(emt_dir: Path, tmp_path: Path) -> None:
    generate_emt_metals(
        tmp_path,
        n_train=16,
        n_valid=4,
        n_test=4,
        seed=3,
        config=EMT_SMALL,
        progress=False,
        workers=1,
    )
    for split in ("train", "test"):
        a, _ = read_all(emt_dir / f"{split}.h5")
        b, _ = read_all(tmp_path / f"{split}.h5")
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert (emt_dir / f"{split}.h5").read_bytes() == (tmp_path / f"{split}.h5").read_bytes()
    other = emt_chunk(EMT_SMALL, 4, "train", 0, 4)
    same = emt_chunk(EMT_SMALL, 3, "train", 0, 4)
    assert not np.array_equal(other["energy"], same["energy"])
    # splits draw from independent streams
    train, _ = read_all(emt_dir / "train.h5")
    valid, _ = read_all(emt_dir / "valid.h5")
    assert not np.isin(valid["energy"], train["energy"]).any()


def test_emt_options_restrict_elements_temperatures_and_alloys() -> None:
    config = EMTMetalsConfig(
        elements=("Cu", "Au"), temperature_range=(300, 800), size_range=(8, 16), md_steps=5
    )
    data = emt_chunk(config, 0, "train", 0, 24)
    assert set(np.unique(data["numbers"])) <= {29, 79}
    md = data["kind"] == KINDS["md"]
    assert md.any() and ((300 <= data["temperature"][md]) & (data["temperature"][md] <= 800)).all()
    assert data["composition"].shape == (24, 2)
    pure = EMTMetalsConfig(max_components=1, kinds=("bulk",), size_range=(8, 16))
    data = emt_chunk(pure, 0, "train", 0, 10)
    assert ((data["composition"] > 0).sum(axis=1) == 1).all()
    only = EMTMetalsConfig(kinds=("surface",), size_range=(12, 30))
    for i in range(5):
        atoms, kind, _ = emt_structure(only, 0, "test", i)
        assert kind == "surface" and 12 <= len(atoms) <= 30


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"elements": ("Cu", "Fe")}, "unknown: \\['Fe'\\]"),
        ({"elements": ()}, "elements"),
        ({"kinds": ("bulk", "liquid")}, "kinds"),
        ({"temperature_range": (800, 300)}, "temperature_range"),
        ({"temperature_range": (-5, 300)}, "temperature_range"),
        ({"size_range": (8, 10), "kinds": ("surface",)}, "needs a slab"),
        ({"size_range": (5, 7)}, "needs a cubic fcc supercell"),
        ({"strain": 0.5}, "strain"),
        ({"max_components": 0}, "max_components"),
    ],
)
def test_emt_bad_options_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EMTMetalsConfig(**kwargs)


# -- xTB molecules -----------------------------------------------------------------------------


def test_xtb_files_validate_and_hold_md_frames(xtb_dir: Path) -> None:
    for split in ("train", "valid", "test"):
        assert main(["data", "validate", str(xtb_dir / f"{split}.h5")]) == 0
    data, attrs = read_all(xtb_dir / "train.h5")
    assert attrs["molecules"] == ["H2O", "CH4", "CH3OH"]
    assert attrs["versions"]["tblite"] and attrs["parameters"]["snapshots"] == 2
    assert "stress" not in data and not data["cell"].any() and not data["pbc"].any()
    # 6 frames = 3 runs of 2 snapshots, 3 steps of 0.5 fs apart after 5 steps
    np.testing.assert_array_equal(data["trajectory"], [0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(data["time"], [4.0, 5.5] * 3)
    offsets = np.concatenate(([0], np.cumsum(data["n_atoms"])))
    for i, m in enumerate(data["molecule"]):
        reference = g2[attrs["molecules"][m]].numbers
        np.testing.assert_array_equal(data["numbers"][offsets[i] : offsets[i + 1]], reference)
    assert ((300 <= data["temperature"]) & (data["temperature"] <= 1000)).all()


def test_xtb_labels_equal_a_fresh_calculation_and_are_gradients(xtb_dir: Path) -> None:
    with FrameReader(xtb_dir / "test.h5") as reader:
        frames = [(reader[i], frames_to_atoms(reader, i)) for i in range(len(reader))]
    for frame, atoms in frames:
        atoms.calc = xtb_calculator(XTB_SMALL)
        # the MD reuses the previous SCF solution as a guess: same minimum within SCF tolerance
        assert frame["energy"] == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(frame["forces"], atoms.get_forces(), atol=2e-4)
    frame, atoms = frames[-1]
    h = 1e-3
    for atom, axis in ((0, 0), (1, 2), (len(atoms) - 1, 1)):
        e = []
        for sign in (1, -1):
            a = atoms.copy()
            a.positions[atom, axis] += sign * h
            a.calc = xtb_calculator(XTB_SMALL)
            e.append(a.get_potential_energy())
        assert -(e[0] - e[1]) / (2 * h) == pytest.approx(frame["forces"][atom, axis], abs=5e-4)
    assert np.abs(frame["forces"]).max() > 0.05  # a thermal frame, not a minimum


def test_xtb_same_seed_same_data_and_options(xtb_dir: Path, tmp_path: Path) -> None:
    generate_xtb_molecules(
        tmp_path,
        n_train=0,
        n_valid=0,
        n_test=2,
        seed=3,
        config=XTB_SMALL,
        progress=False,
        workers=1,
    )
    assert (tmp_path / "test.h5").read_bytes() == (xtb_dir / "test.h5").read_bytes()
    assert not (tmp_path / "train.h5").exists()
    generate_xtb_molecules(
        tmp_path / "b",
        n_train=0,
        n_valid=0,
        n_test=2,
        seed=4,
        config=XTB_SMALL,
        progress=False,
        workers=1,
    )
    assert not np.array_equal(
        read_all(tmp_path / "b" / "test.h5")[0]["energy"],
        read_all(xtb_dir / "test.h5")[0]["energy"],
    )
    cool = XTBMoleculesConfig(
        molecules=("NH3",), temperature_range=(300, 350), equilibration=2, interval=2, snapshots=1
    )
    generate_xtb_molecules(
        tmp_path / "c", n_train=3, n_valid=0, n_test=0, config=cool, progress=False, workers=1
    )
    data, _ = read_all(tmp_path / "c" / "train.h5")
    assert set(data["numbers"]) == {1, 7}
    assert ((300 <= data["temperature"]) & (data["temperature"] <= 350)).all()
    every = XTBMoleculesConfig(molecules=(ALL_HCNOF,))
    assert (
        "C6H6" in every.molecules and "CH3" not in every.molecules and "O2" not in every.molecules
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"molecules": ("H2O", "unobtainium")}, "unknown: \\['unobtainium'\\]"),
        ({"molecules": ("CH3",)}, "'CH3' is a single atom or open-shell"),
        ({"molecules": ("O",)}, "'O' is a single atom"),
        ({"temperature_range": (300, 200)}, "temperature_range"),
        ({"snapshots": 0}, "snapshots"),
        ({"timestep": 0.0}, "timestep"),
    ],
)
def test_xtb_bad_options_are_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        XTBMoleculesConfig(**kwargs)


# -- resuming, workers, CLI, import ------------------------------------------------------------


class FailOnce:
    """emt_chunk that fails once for frames starting at ``fail_at`` (a killed run)."""

    def __init__(self, fail_at: int) -> None:
        self.fail_at = fail_at
        self.calls: list[int] = []

    def __call__(self, split: str, start: int, stop: int) -> dict:
        self.calls.append(start)
        if start == self.fail_at:
            self.fail_at = -1
            raise RuntimeError("killed")
        return emt_chunk(EMT_SMALL, 7, split, start, stop)


def test_interrupted_run_resumes_and_workers_do_not_change_the_data(tmp_path: Path) -> None:
    kwargs = {
        "name": "emt-metals",
        "counts": {"train": 9},
        "chunk_frames": 3,
        "attrs": {"seed": 7},
        "per_frame": ("kind", "temperature", "has_stress", "composition"),
        "progress": False,
    }
    chunk = FailOnce(fail_at=3)
    with pytest.raises(RuntimeError, match="train frames 3-5 failed.*re-run the same command"):
        generate_splits(tmp_path / "a", make_chunk=chunk, workers=1, **kwargs)
    assert (tmp_path / "a" / "parts" / "train" / "000000000.h5").exists()
    generate_splits(tmp_path / "a", make_chunk=chunk, workers=1, **kwargs)
    assert chunk.calls == [0, 3, 3, 6]  # frames 0-2 were not made again
    generate_splits(
        tmp_path / "b", make_chunk=functools.partial(emt_chunk, EMT_SMALL, 7), workers=2, **kwargs
    )
    a, _ = read_all(tmp_path / "a" / "train.h5")
    b, _ = read_all(tmp_path / "b" / "train.h5")
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # other parameters than the existing file: refused, not mixed
    with pytest.raises(ValueError, match="other emt-metals parameters"):
        generate_splits(tmp_path / "a", make_chunk=chunk, workers=1, **{**kwargs, "attrs": {}})


def test_cli_generates_both_datasets_and_refuses_bad_options(tmp_path: Path, capsys) -> None:
    emt = [
        "data",
        "generate",
        "emt-metals",
        "--out",
        str(tmp_path / "emt"),
        "--n-train",
        "3",
        "--n-valid",
        "1",
        "--n-test",
        "1",
        "--elements",
        "Cu,Au",
        "--temperature-range",
        "300",
        "800",
        "--size-range",
        "8",
        "16",
        "--md-steps",
        "5",
        "--workers",
        "1",
        "--seed",
        "2",
    ]
    assert main(emt) == 0
    data, attrs = read_all(tmp_path / "emt" / "train.h5")
    assert attrs["elements"] == ["Cu", "Au"]
    assert attrs["parameters"]["temperature_range"] == [300.0, 800.0]
    assert set(np.unique(data["numbers"])) <= {29, 79}
    xtb = [
        "data",
        "generate",
        "xtb-molecules",
        "--out",
        str(tmp_path / "xtb"),
        "--n-train",
        "2",
        "--n-valid",
        "1",
        "--n-test",
        "1",
        "--molecules",
        "H2O,NH3",
        "--equilibration",
        "2",
        "--interval",
        "2",
        "--snapshots",
        "1",
        "--workers",
        "1",
    ]
    assert main(xtb) == 0
    assert read_all(tmp_path / "xtb" / "valid.h5")[1]["molecules"] == ["H2O", "NH3"]
    capsys.readouterr()
    assert main([*emt[:4], str(tmp_path / "bad"), "--elements", "Cu,Fe"]) == 2
    assert "unknown: ['Fe']" in capsys.readouterr().err
    assert main([*xtb[:4], str(tmp_path / "bad"), "--molecules", "CH3"]) == 2
    assert "'CH3' is a single atom or open-shell" in capsys.readouterr().err
    # same directory, other parameters: refused with a message naming the file
    assert main([*emt, "--strain", "0.01"]) == 2
    assert "train.h5" in capsys.readouterr().err


def test_extxyz_round_trip_keeps_labels_and_metadata(
    emt_dir: Path, xtb_dir: Path, tmp_path: Path
) -> None:
    for source in (emt_dir / "valid.h5", xtb_dir / "train.h5"):
        with FrameReader(source) as reader:
            images = []
            for i in range(len(reader)):
                atoms = frames_to_atoms(reader, i)
                atoms.info["temperature"] = float(reader[i]["temperature"])
                images.append(atoms)
            original = reader.frames(np.arange(len(reader)))
        xyz = tmp_path / f"{source.parent.name}.extxyz"
        ase.io.write(xyz, images, format="extxyz")
        dest = tmp_path / f"{source.parent.name}.h5"
        assert main(["data", "import", str(xyz), str(dest)]) == 0
        back, _ = read_all(dest)
        for key in ("n_atoms", "numbers", "pbc"):
            np.testing.assert_array_equal(back[key], original[key], err_msg=key)
        # extxyz stores 8 decimals
        for key in ("positions", "cell", "energy", "forces"):
            np.testing.assert_allclose(back[key], original[key], rtol=0, atol=1e-8, err_msg=key)
        np.testing.assert_array_equal(back["info_temperature"], original["temperature"])
        if "stress" in original:
            np.testing.assert_allclose(back["stress"], original["stress"], rtol=0, atol=1e-8)
        else:
            assert "stress" not in back
