"""ASE <-> particle files: import extxyz / ASE trajectories / ASE databases, export ``Atoms``.

Anything :func:`ase.io.read` understands becomes a particle file (see
:mod:`simsurrogate.data.particles`) in ASE units: positions and cell in Å, energy in eV, forces
in eV/Å, stress in eV/Å³ (3x3, ASE sign convention), velocities in Å/fs, masses in amu,
charges in e. Calculator results are taken as stored (``calc.results``); nothing is computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ase
import ase.io
import ase.units
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from simsurrogate.data.errors import DataError
from simsurrogate.data.particles import ATOM_FIELDS, FRAME_FIELDS, FrameReader, write_frames

INFO_PREFIX = "info_"
# Optional fields that must be present in every frame or in none.
_CALC_FIELDS = ("energy", "forces", "stress")


def _numeric_scalar(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _frame_values(atoms: ase.Atoms) -> dict[str, Any]:
    """The optional per-frame and per-atom values one ``Atoms`` carries (absent: not a key)."""
    values: dict[str, Any] = {}
    if "momenta" in atoms.arrays:
        values["velocities"] = atoms.get_velocities() * ase.units.fs  # Å/(ASE time) -> Å/fs
    if "masses" in atoms.arrays:
        values["masses"] = atoms.get_masses()
    results = atoms.calc.results if atoms.calc is not None else {}
    if "energy" in results:
        values["energy"] = atoms.get_potential_energy(apply_constraint=False)
    if "forces" in results:
        values["forces"] = atoms.get_forces(apply_constraint=False)
    if "stress" in results:
        values["stress"] = atoms.get_stress(voigt=False, apply_constraint=False)
    for key, value in atoms.info.items():
        if _numeric_scalar(value):
            values[INFO_PREFIX + key] = value
    return values


def atoms_to_fields(images: Sequence[ase.Atoms], *, source: str | Path | None = None) -> dict:
    """Turn ASE images into particle-file fields (arguments of :func:`write_frames`).

    Always: ``n_atoms`` (F,), ``positions`` (A, 3), ``numbers`` (A,), ``cell`` (F, 3, 3),
    ``pbc`` (F, 3). When the images carry them: ``velocities`` (A, 3) Å/fs, ``masses`` (A,),
    ``charges`` (A,) (initial charges, kept only if any is nonzero), ``energy`` (F,),
    ``forces`` (A, 3), ``stress`` (F, 3, 3) and numeric scalars of ``atoms.info`` as
    ``info_<key>`` (F,). An optional value present in some frames but not in others is a
    :class:`DataError` naming the first frame without it (``source`` names the file).
    """
    images = list(images)
    if not images:
        raise DataError("no frames to convert", path=source)
    per_frame = [_frame_values(atoms) for atoms in images]
    keys = sorted({key for values in per_frame for key in values})
    for key in keys:
        having = [i for i, values in enumerate(per_frame) if key in values]
        if len(having) != len(images):
            missing = next(i for i, values in enumerate(per_frame) if key not in values)
            raise DataError(
                f"frame {missing} has no {key!r} but frame {having[0]} has one "
                "(every frame must have it, or none)",
                path=source,
                field=key,
            )
    fields: dict[str, Any] = {
        "n_atoms": np.array([len(atoms) for atoms in images], dtype=np.int64),
        "positions": np.concatenate([atoms.positions for atoms in images]).reshape(-1, 3),
        "numbers": np.concatenate([atoms.numbers for atoms in images]).astype(np.int64),
        "cell": np.stack([atoms.cell.array for atoms in images]),
        "pbc": np.stack([atoms.pbc for atoms in images]),
    }
    charges = np.concatenate([atoms.get_initial_charges() for atoms in images])
    if charges.any():
        fields["charges"] = charges
    for key in keys:
        stacked = [values[key] for values in per_frame]
        if key in ATOM_FIELDS:
            fields[key] = np.concatenate(stacked).reshape(-1, *np.shape(stacked[0])[1:])
        else:
            fields[key] = np.asarray(stacked)
    return fields


def import_ase(
    source: str | Path,
    dest: str | Path,
    *,
    index: str | int | slice = ":",
    format: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert any ASE-readable file (extxyz, .traj, ASE db, ...) into a particle file.

    ``index`` and ``format`` are passed to :func:`ase.io.read`. Read failures and
    inconsistent frames become a :class:`DataError` naming the source file.
    """
    source, dest = Path(source), Path(dest)
    if dest.exists() and not overwrite:
        raise DataError("file exists; pass overwrite=True to replace it", path=dest)
    if not source.exists():
        raise DataError("no such file", path=source)
    try:
        images = ase.io.read(source, index=index, format=format)
    except Exception as exc:  # ASE raises many types for unreadable input
        raise DataError(
            f"ASE could not read it: {type(exc).__name__}: {exc}", path=source
        ) from None
    if isinstance(images, ase.Atoms):
        images = [images]
    fields = atoms_to_fields(images, source=source)
    attrs = {"source": str(source), "importer": "ase", "ase_version": ase.__version__}
    info_keys = [key for key in fields if key.startswith(INFO_PREFIX)]
    return write_frames(dest, attrs=attrs, overwrite=overwrite, per_frame=info_keys, **fields)


def frames_to_atoms(reader_or_dict: FrameReader | Mapping[str, Any], i: int) -> ase.Atoms:
    """Frame ``i`` of a reader, or of a fields dict (``frames()`` / :func:`atoms_to_fields`
    output), as ``ase.Atoms`` with a SinglePointCalculator holding energy/forces/stress.

    Velocities are converted back from Å/fs to ASE units; ``info_<key>`` fields go to
    ``atoms.info[key]``. Other extra fields are not carried over.
    """
    if isinstance(reader_or_dict, FrameReader):
        frame = reader_or_dict[i]
    else:
        frame = _slice_frame(reader_or_dict, i)
    if "numbers" not in frame:
        raise DataError("atomic numbers are needed to build ase.Atoms", field="numbers")
    atoms = ase.Atoms(
        numbers=frame["numbers"],
        positions=frame["positions"],
        cell=frame.get("cell"),
        pbc=frame.get("pbc", False),
    )
    if "masses" in frame:
        atoms.set_masses(frame["masses"])
    if "velocities" in frame:
        atoms.set_velocities(frame["velocities"] / ase.units.fs)
    if "charges" in frame:
        atoms.set_initial_charges(frame["charges"])
    for key, value in frame.items():
        if key.startswith(INFO_PREFIX):
            atoms.info[key[len(INFO_PREFIX) :]] = np.asarray(value).item()
    results: dict[str, Any] = {}
    if "energy" in frame:
        results["energy"] = float(frame["energy"])
    if "forces" in frame:
        results["forces"] = np.asarray(frame["forces"])
    if "stress" in frame:
        results["stress"] = full_3x3_to_voigt_6_stress(np.asarray(frame["stress"]))
    if results:
        atoms.calc = SinglePointCalculator(atoms, **results)
    return atoms


def _slice_frame(fields: Mapping[str, Any], i: int) -> dict[str, np.ndarray]:
    """Frame ``i`` of a fields dict with ragged per-atom arrays and per-frame arrays."""
    n_atoms = np.asarray(fields["n_atoms"])
    if not -len(n_atoms) <= i < len(n_atoms):
        raise IndexError(f"frame {i} out of range for {len(n_atoms)} frames")
    i %= len(n_atoms)
    lo = int(n_atoms[:i].sum())
    hi = lo + int(n_atoms[i])
    frame: dict[str, np.ndarray] = {}
    for key, value in fields.items():
        if key in ATOM_FIELDS:
            frame[key] = np.asarray(value)[lo:hi]
        elif key in FRAME_FIELDS or key.startswith(INFO_PREFIX):
            frame[key] = np.asarray(value)[i]
    return frame
