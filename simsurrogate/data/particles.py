"""Particle and atomistic frames: ragged frames stored contiguously with per-frame counts.

One file holds many frames (snapshots) of particle systems whose size may differ from frame
to frame: charged N-body trajectories, interatomic-potential training sets (energy, forces,
stress, cell, pbc) and streamed molecular-dynamics output.

Layout (a netCDF-4 file, so ``xarray.open_dataset(path, engine="h5netcdf")`` opens it):

* root attributes ``schema = "simsurrogate.particles"``, ``schema_version = 1`` and free user
  attributes (dicts and other non-numeric values stored as JSON strings);
* dimensions ``frame`` and ``atom`` (unlimited; ``atom`` counts atoms over all frames),
  ``spatial = 3`` and ``spatial_j = 3`` (second index of ``cell`` and ``stress``);
* per-frame variables on ``frame``: ``n_atoms`` (int64, required), ``trajectory`` (int64,
  default 0), ``time``, ``energy``, ``cell`` (frame, 3, 3), ``pbc`` (frame, 3), ``stress``
  (frame, 3, 3) and any extra per-frame field;
* per-atom variables on ``atom``: ``positions`` (atom, 3, required), ``numbers`` (int64),
  ``velocities``, ``forces``, ``charges``, ``masses`` and any extra per-atom field.

Atoms of frame ``i`` are rows ``offsets[i]:offsets[i + 1]`` of every per-atom variable, where
``offsets`` is the cumulative sum of ``n_atoms``. Boolean fields (``pbc``) are stored as int8
with the attribute ``dtype = "bool"`` (xarray's convention) and read back as bool. Units follow
ASE (Å, eV, eV/Å, eV/Å³, fs, amu, e) unless the writer is given other ones; they are stored in
each variable's ``units`` attribute, ``"1"`` meaning dimensionless.

Files are written with h5netcdf (real netCDF-4 dimension scales) and read with h5py.
"""

from __future__ import annotations

import contextlib
import json
import operator
import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5netcdf
import h5py
import numpy as np

from simsurrogate.data._io import LazyH5, atomic_path, check_finite, open_h5
from simsurrogate.data.errors import DataError

if TYPE_CHECKING:
    import xarray as xr

SCHEMA = "simsurrogate.particles"
SCHEMA_VERSION = 1

FRAME_DIM = "frame"
ATOM_DIM = "atom"
SPATIAL_DIMS = ("spatial", "spatial_j")

#: Names that are always per-frame, whatever their length.
FRAME_FIELDS = frozenset({"n_atoms", "trajectory", "time", "energy", "cell", "pbc", "stress"})
#: Names that are always per-atom, whatever their length.
ATOM_FIELDS = frozenset({"positions", "numbers", "velocities", "forces", "charges", "masses"})
REQUIRED_FIELDS = ("n_atoms", "positions")

#: Units written when the writer is not told otherwise (ASE conventions).
ASE_UNITS: dict[str, str] = {
    "positions": "Angstrom",
    "cell": "Angstrom",
    "velocities": "Angstrom/fs",
    "forces": "eV/Angstrom",
    "energy": "eV",
    "stress": "eV/Angstrom^3",
    "time": "fs",
    "masses": "amu",
    "charges": "e",
}

# Dimensions of every known field; the first entry is FRAME_DIM or ATOM_DIM.
_KNOWN_DIMS: dict[str, tuple[str, ...]] = {
    "n_atoms": ("frame",),
    "trajectory": ("frame",),
    "time": ("frame",),
    "energy": ("frame",),
    "cell": ("frame", "spatial", "spatial_j"),
    "pbc": ("frame", "spatial"),
    "stress": ("frame", "spatial", "spatial_j"),
    "positions": ("atom", "spatial"),
    "numbers": ("atom",),
    "velocities": ("atom", "spatial"),
    "forces": ("atom", "spatial"),
    "charges": ("atom",),
    "masses": ("atom",),
}
_INT_FIELDS = frozenset({"n_atoms", "trajectory", "numbers"})
_BOOL_FIELDS = frozenset({"pbc"})
_FLOAT_FIELDS = frozenset(_KNOWN_DIMS) - _INT_FIELDS - _BOOL_FIELDS
_RESERVED_ATTRS = frozenset({"schema", "schema_version"})
_STORABLE_DTYPES = frozenset(
    np.dtype(t) for t in ("i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f4", "f8")
)
_CHUNK_BYTES = 1 << 20  # target size of one HDF5 chunk
_CHUNK_ROWS = 8192  # at most this many frames/atoms per chunk
_SCAN_ROWS = 1 << 16  # rows per block when scanning a whole variable
_MAX_GAP = 4096  # frames(): rows between two requested ranges still read in one go


# --------------------------------------------------------------------------------------------
# attributes


def _encode_attrs(attrs: Mapping[str, Any] | None, path: Path) -> dict[str, Any]:
    """Turn user attributes into netCDF-storable values; dicts and the like become JSON."""
    out: dict[str, Any] = {}
    for key, value in (attrs or {}).items():
        if not isinstance(key, str) or not key or key.startswith("_") or key in _RESERVED_ATTRS:
            raise DataError(
                "attribute name is reserved or invalid",
                path=path,
                field=str(key),
                expected="a non-empty str not starting with '_' and not schema/schema_version",
                found=repr(key),
            )
        if isinstance(value, (bool, np.bool_)):
            out[key] = int(value)
        elif isinstance(value, (str, int, float, np.integer, np.floating)):
            out[key] = value
        elif isinstance(value, np.ndarray) and value.dtype in _STORABLE_DTYPES:
            out[key] = value
        elif (
            isinstance(value, (list, tuple))
            and value
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
        ):
            out[key] = np.asarray(value)
        else:
            try:
                out[key] = json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise DataError(
                    f"attribute is not JSON-serialisable: {exc}",
                    path=path,
                    field=key,
                    found=type(value),
                ) from None
    return out


def _decode_attr(value: Any) -> Any:
    """Undo h5py/netCDF storage quirks: bytes to str, 1-element arrays to scalars, JSON."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return value.item() if value.size == 1 else value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _user_attrs(f: h5py.File) -> dict[str, Any]:
    return {
        k: _decode_attr(v)
        for k, v in f.attrs.items()
        if k not in _RESERVED_ATTRS and not k.startswith("_")
    }


# --------------------------------------------------------------------------------------------
# writing


@dataclass(frozen=True)
class _Spec:
    """How one field is stored: per-frame or per-atom, dtype, trailing shape, bool flag."""

    kind: str  # FRAME_DIM or ATOM_DIM
    dtype: np.dtype
    trailing: tuple[int, ...]
    is_bool: bool


def _storage_dtype(name: str, arr: np.ndarray, path: Path) -> tuple[np.dtype, bool]:
    """Return (dtype stored on disk, is_bool) for a field, or raise naming the field."""
    kind = arr.dtype.kind
    if name in _BOOL_FIELDS or (name not in _KNOWN_DIMS and kind == "b"):
        if kind == "b" or (kind in "iu" and np.isin(arr, (0, 1)).all()):
            return np.dtype("i1"), True
        expected = "booleans (or integers 0/1)"
    elif name in _INT_FIELDS:
        if kind in "iu":
            return np.dtype("i8"), False
        expected = "an integer dtype"
    elif name in _FLOAT_FIELDS:
        if kind in "iu":
            return np.dtype("f8"), False
        if kind == "f":
            return (np.dtype("f4") if arr.dtype.itemsize <= 4 else np.dtype("f8")), False
        expected = "a real floating-point dtype"
    else:
        if kind == "f" and arr.dtype.itemsize < 4:
            return np.dtype("f4"), False
        if arr.dtype.newbyteorder("=") in _STORABLE_DTYPES:
            return arr.dtype.newbyteorder("="), False
        expected = "bool, (u)int8-64 or float32/64"
    raise DataError("unsupported dtype", path=path, field=name, expected=expected, found=arr.dtype)


def _chunks(trailing: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    row_bytes = dtype.itemsize * int(np.prod(trailing, dtype=np.int64))
    rows = max(1, min(_CHUNK_ROWS, _CHUNK_BYTES // max(row_bytes, 1)))
    return (rows, *trailing)


class FrameWriter:
    """Stream frames into a particle file; the file appears under ``path`` only on success.

    Data go to a temporary file next to ``path`` that :meth:`close` renames into place. If an
    exception leaves the ``with`` block, the temporary file is deleted and an existing file at
    ``path`` is left untouched. Every batch is fully validated (shapes, dtypes, finiteness)
    before anything of it is written, so a rejected :meth:`append` can be corrected and retried.

    ``units`` maps field names to unit strings; it is merged over :data:`ASE_UNITS`, so toy data
    pass e.g. ``{"positions": "1"}`` to mark a field dimensionless. ``per_frame`` / ``per_atom``
    name extra fields whose kind cannot be told from their length (a batch with as many frames
    as atoms). ``gzip_level`` (1-9) turns on compression, which is off by default for speed.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        attrs: dict | None = None,
        units: dict[str, str] | None = None,
        overwrite: bool = False,
        per_frame: Collection[str] = (),
        per_atom: Collection[str] = (),
        gzip_level: int | None = None,
    ) -> None:
        self.path = Path(path)
        self._overwrite = overwrite
        if self.path.exists() and not overwrite:
            raise DataError("file exists; pass overwrite=True to replace it", path=self.path)
        if self.path.is_dir():
            raise DataError("is a directory", path=self.path)
        clash = set(per_frame) & set(per_atom) | set(per_frame) & ATOM_FIELDS
        clash |= set(per_atom) & FRAME_FIELDS
        if clash:
            raise DataError(f"fields declared both per-frame and per-atom: {sorted(clash)}")
        if gzip_level is not None and not 1 <= gzip_level <= 9:
            raise DataError("gzip_level must be 1-9 or None", found=gzip_level)
        self._root_attrs = _encode_attrs(attrs, self.path)
        self._units = {**ASE_UNITS, **(units or {})}
        self._user_units = set(units or {})
        self._per_frame = frozenset(per_frame)
        self._per_atom = frozenset(per_atom)
        self._gzip = gzip_level
        self._specs: dict[str, _Spec] | None = None
        self._h5: h5py.File | None = None
        self._datasets: dict[str, h5py.Dataset] = {}
        self._default_trajectory = False
        self._n_frames = 0
        self._n_atoms = 0
        self._failed = False
        self._closed = True  # until the temporary file exists
        self._atomic = atomic_path(self.path)
        try:
            self._tmp = self._atomic.__enter__()
        except OSError as exc:
            raise DataError(f"cannot create file: {exc}", path=self.path) from None
        self._closed = False

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.close()
        else:
            self._discard(exc)

    def __del__(self) -> None:
        # Never committed: leave no temporary file behind.
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self._discard(DataError("writer dropped before close()", path=self.path))

    @property
    def n_frames(self) -> int:
        """Number of frames appended so far."""
        return self._n_frames

    def append(self, *, n_atoms: Any, positions: Any, **fields: Any) -> None:
        """Append a batch of F frames.

        ``n_atoms`` (F,) atoms per frame, ``positions`` (sum(n_atoms), 3). Other fields are
        per-frame (leading length F) or per-atom (leading length sum(n_atoms)); known names
        decide first (see :data:`FRAME_FIELDS`, :data:`ATOM_FIELDS`). The first batch fixes the
        set of fields, their dtypes and trailing shapes; later batches must match.
        """
        if self._closed:
            raise DataError("writer is closed", path=self.path)
        if self._failed:
            raise DataError(
                "an earlier write failed; this writer can only be closed", path=self.path
            )
        batch, specs = self._prepare({"n_atoms": n_atoms, "positions": positions, **fields})
        n_frames = len(batch["n_atoms"])
        if n_frames == 0:
            return
        n_atoms_batch = int(batch["n_atoms"].sum())
        f0, a0 = self._n_frames, self._n_atoms
        try:
            if self._specs is None:
                self._create_file(specs)
                self._default_trajectory = "trajectory" not in fields
            # Plain h5py from here: resizing the dimension scales and their variables together
            # keeps the netCDF-4 structure h5netcdf created, at a fraction of its overhead.
            self._datasets[FRAME_DIM].resize((f0 + n_frames,))
            self._datasets[ATOM_DIM].resize((a0 + n_atoms_batch,))
            for name, spec in specs.items():
                start = f0 if spec.kind == FRAME_DIM else a0
                stop = start + len(batch[name])
                self._datasets[name].resize(stop, axis=0)
                self._datasets[name][start:stop] = batch[name]
        except BaseException as exc:
            self._failed = True
            if isinstance(exc, (OSError, ValueError, TypeError)):
                raise DataError(f"write failed: {exc}", path=self.path) from exc
            raise
        self._n_frames += n_frames
        self._n_atoms += n_atoms_batch

    def close(self) -> None:
        """Finish the file and move it to its final name (atomic rename)."""
        if self._closed:
            return
        if self._failed:
            self._discard(DataError("an earlier write failed", path=self.path))
            raise DataError("an earlier write failed; nothing was written", path=self.path)
        try:
            if self._specs is None:  # no frames: still a valid, empty file
                self._create_file(
                    {
                        "n_atoms": _Spec(FRAME_DIM, np.dtype("i8"), (), False),
                        "positions": _Spec(ATOM_DIM, np.dtype("f8"), (3,), False),
                    }
                )
            self._h5.close()
            if self.path.exists() and not self._overwrite:
                raise DataError("file appeared while writing; not replaced", path=self.path)
        except BaseException as exc:
            self._discard(exc)
            if isinstance(exc, OSError):
                raise DataError(f"could not finish file: {exc}", path=self.path) from None
            raise
        self._closed = True
        self._atomic.__exit__(None, None, None)

    def _discard(self, exc: BaseException) -> None:
        """Drop the temporary file; ``path`` keeps whatever it held before."""
        if self._closed:
            return
        self._closed = True
        if self._h5 is not None:
            with contextlib.suppress(Exception):  # the file is being thrown away
                self._h5.close()
        self._atomic.__exit__(type(exc), exc, exc.__traceback__)

    # -- validation -------------------------------------------------------------------------

    def _prepare(self, raw: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, _Spec]]:
        """Check and convert one batch; raise DataError before anything is written.

        Returns the arrays in their stored dtypes and the field specs (those of the file, or
        new ones derived from this batch when it is the first).
        """
        arrays: dict[str, np.ndarray] = {}
        for name, value in raw.items():
            try:
                arrays[name] = np.asarray(value)
            except (ValueError, TypeError) as exc:
                raise DataError(f"not an array: {exc}", path=self.path, field=name) from None
        n_atoms = arrays["n_atoms"]
        if n_atoms.ndim != 1 or n_atoms.dtype.kind not in "iu":
            raise DataError(
                "n_atoms must be a 1-D integer array",
                path=self.path,
                field="n_atoms",
                found=f"shape {n_atoms.shape}, dtype {n_atoms.dtype}",
            )
        if (n_atoms < 0).any():
            first = int(np.flatnonzero(n_atoms < 0)[0])
            raise DataError(
                f"negative atom count {n_atoms[first]} at index {first}",
                path=self.path,
                field="n_atoms",
            )
        n_frames, n_atoms_total = len(n_atoms), int(n_atoms.sum())
        if n_frames == 0:
            return {"n_atoms": n_atoms.astype(np.int64)}, self._specs or {}
        if "trajectory" not in arrays and (self._specs is None or self._default_trajectory):
            arrays["trajectory"] = np.zeros(n_frames, np.int64)
        if self._specs is None:
            specs = {
                name: self._new_spec(name, arr, n_frames, n_atoms_total)
                for name, arr in arrays.items()
            }
            unknown_units = sorted(self._user_units - set(specs))
            if unknown_units:
                raise DataError(
                    "units given for fields that are not written",
                    path=self.path,
                    expected=sorted(specs),
                    found=unknown_units,
                )
        else:
            specs = self._specs
            missing = sorted(set(specs) - set(arrays))
            extra = sorted(set(arrays) - set(specs))
            if missing or extra:
                raise DataError(
                    "fields differ from the first appended batch",
                    path=self.path,
                    expected=sorted(specs),
                    found=f"missing {missing}, unexpected {extra}",
                )
        out: dict[str, np.ndarray] = {}
        for name, arr in arrays.items():
            spec = specs[name]
            length = n_frames if spec.kind == FRAME_DIM else n_atoms_total
            expected_shape = (length, *spec.trailing)
            if arr.shape != expected_shape:
                raise DataError(
                    f"wrong shape for a per-{spec.kind} field",
                    path=self.path,
                    field=name,
                    expected=expected_shape,
                    found=arr.shape,
                )
            dtype, is_bool = _storage_dtype(name, arr, self.path)
            if is_bool != spec.is_bool or not np.can_cast(dtype, spec.dtype, "same_kind"):
                raise DataError(
                    "dtype differs from the first appended batch",
                    path=self.path,
                    field=name,
                    expected=spec.dtype,
                    found=arr.dtype,
                )
            check_finite(arr, path=self.path, group=None, field=name)
            out[name] = arr.astype(spec.dtype, copy=False)
        return out, specs

    def _new_spec(self, name: str, arr: np.ndarray, n_frames: int, n_atoms: int) -> _Spec:
        """Decide how a field of the first batch is stored: its kind, dtype, trailing shape."""
        lead = arr.shape[0] if arr.ndim else None
        if name in FRAME_FIELDS or name in self._per_frame:
            kind = FRAME_DIM
        elif name in ATOM_FIELDS or name in self._per_atom:
            kind = ATOM_DIM
        elif lead == n_frames and lead == n_atoms:
            raise DataError(
                f"cannot tell per-frame from per-atom ({n_frames} frames and {n_atoms} atoms "
                "in this batch); name it in per_frame= or per_atom=",
                path=self.path,
                field=name,
            )
        elif lead == n_frames:
            kind = FRAME_DIM
        elif lead == n_atoms:
            kind = ATOM_DIM
        else:
            raise DataError(
                "leading length matches neither the frame count nor the atom count",
                path=self.path,
                field=name,
                expected=f"{n_frames} (per-frame) or {n_atoms} (per-atom)",
                found=arr.shape,
            )
        if name in _KNOWN_DIMS:
            trailing = (3,) * (len(_KNOWN_DIMS[name]) - 1)
        else:
            trailing = arr.shape[1:]
        dtype, is_bool = _storage_dtype(name, arr, self.path)
        return _Spec(kind, dtype, trailing, is_bool)

    def _create_file(self, specs: dict[str, _Spec]) -> None:
        """Create the netCDF-4 structure with h5netcdf, then reopen it with h5py to append."""
        extra = {"compression": "gzip", "compression_opts": self._gzip} if self._gzip else {}
        with h5netcdf.File(self._tmp, "w") as nc:
            nc.dimensions = {FRAME_DIM: None, ATOM_DIM: None, **dict.fromkeys(SPATIAL_DIMS, 3)}
            nc.attrs["schema"] = SCHEMA
            nc.attrs["schema_version"] = SCHEMA_VERSION
            for key, value in self._root_attrs.items():
                nc.attrs[key] = value
            for name in sorted(specs, key=lambda n: (specs[n].kind != FRAME_DIM, n)):
                spec = specs[name]
                if name in _KNOWN_DIMS:
                    dims = _KNOWN_DIMS[name]
                else:
                    dims = (spec.kind, *(f"{name}_{k}" for k in range(len(spec.trailing))))
                    for dim, size in zip(dims[1:], spec.trailing, strict=True):
                        nc.dimensions[dim] = size
                var = nc.create_variable(
                    name, dims, spec.dtype, chunks=_chunks(spec.trailing, spec.dtype), **extra
                )
                if spec.is_bool:
                    var.attrs["dtype"] = "bool"
                if name in self._units:
                    var.attrs["units"] = self._units[name]
        self._h5 = h5py.File(self._tmp, "r+")
        self._datasets = {name: self._h5[name] for name in (*specs, FRAME_DIM, ATOM_DIM)}
        self._specs = specs


def write_frames(
    path: str | Path,
    *,
    n_atoms: Any,
    positions: Any,
    attrs: dict | None = None,
    units: dict[str, str] | None = None,
    overwrite: bool = False,
    per_frame: Collection[str] = (),
    per_atom: Collection[str] = (),
    **fields: Any,
) -> Path:
    """Write all frames at once (see :class:`FrameWriter` for the arguments); return the path."""
    with FrameWriter(
        path, attrs=attrs, units=units, overwrite=overwrite, per_frame=per_frame, per_atom=per_atom
    ) as writer:
        writer.append(n_atoms=n_atoms, positions=positions, **fields)
    return writer.path


# --------------------------------------------------------------------------------------------
# inspecting a file


@dataclass
class _Layout:
    """What :func:`_inspect` learns about a file: fields by kind, counts, bool fields, units."""

    frame_fields: list[str]
    atom_fields: list[str]
    n_atoms: np.ndarray
    bool_fields: frozenset[str]
    units: dict[str, str]
    dims: dict[str, tuple[str, ...]]
    dtypes: dict[str, np.dtype]


def _dim_names(ds: h5py.Dataset) -> tuple[str | None, ...]:
    """Names of the netCDF dimensions attached to a dataset (None where none is attached)."""
    names: list[str | None] = []
    for k in range(ds.ndim):
        scales = ds.dims[k]
        names.append(scales[0].name.rsplit("/", 1)[-1] if len(scales) else None)
    return tuple(names)


def _inspect(f: h5py.File, path: Path) -> _Layout:
    """Check everything but the data values; raise a DataError naming the first problem."""
    schema = _decode_attr(f.attrs.get("schema"))
    if schema is None:
        raise DataError(
            "missing root attribute 'schema'; not a particle file", path=path, expected=SCHEMA
        )
    if schema != SCHEMA:
        raise DataError("unknown schema", path=path, expected=SCHEMA, found=repr(schema))
    version = _decode_attr(f.attrs.get("schema_version"))
    if version is None:
        raise DataError("missing root attribute 'schema_version'", path=path)
    if version != SCHEMA_VERSION:
        raise DataError(
            "unsupported schema_version", path=path, expected=SCHEMA_VERSION, found=version
        )
    names = [n for n, obj in f.items() if isinstance(obj, h5py.Dataset) and not obj.is_scale]
    for name in REQUIRED_FIELDS:
        if name not in names:
            raise DataError("required variable missing", path=path, field=name)
    sizes = {
        n: obj.shape[0] for n, obj in f.items() if isinstance(obj, h5py.Dataset) and obj.is_scale
    }
    if FRAME_DIM not in sizes or ATOM_DIM not in sizes:
        raise DataError(
            "missing netCDF dimension",
            path=path,
            expected=[FRAME_DIM, ATOM_DIM],
            found=sorted(sizes),
        )
    layout = _Layout([], [], np.zeros(0, np.int64), frozenset(), {}, {}, {})
    bools = set()
    for name in names:
        ds = f[name]
        dims = _dim_names(ds)
        layout.dims[name], layout.dtypes[name] = dims, ds.dtype
        expected_dims = _KNOWN_DIMS.get(name)
        if expected_dims is not None and dims != expected_dims:
            raise DataError(
                "wrong dimensions", path=path, field=name, expected=expected_dims, found=dims
            )
        if not dims or dims[0] not in (FRAME_DIM, ATOM_DIM) or None in dims:
            raise DataError(
                "first dimension must be 'frame' or 'atom' (netCDF dimension scales)",
                path=path,
                field=name,
                found=dims,
            )
        expected_shape = tuple(sizes.get(d, -1) for d in dims)
        if ds.shape != expected_shape:
            raise DataError(
                f"shape does not match its dimensions {dims}",
                path=path,
                field=name,
                expected=expected_shape,
                found=ds.shape,
            )
        if ds.dtype.kind not in "biuf":
            raise DataError("non-numeric dtype", path=path, field=name, found=ds.dtype)
        if name in _INT_FIELDS and ds.dtype.kind not in "iu":
            raise DataError("expected an integer dtype", path=path, field=name, found=ds.dtype)
        if name in _FLOAT_FIELDS and ds.dtype.kind != "f":
            raise DataError(
                "expected a floating-point dtype", path=path, field=name, found=ds.dtype
            )
        if _decode_attr(ds.attrs.get("dtype")) == "bool":
            bools.add(name)
        if "units" in ds.attrs:
            layout.units[name] = str(_decode_attr(ds.attrs["units"]))
        (layout.frame_fields if dims[0] == FRAME_DIM else layout.atom_fields).append(name)
    n_atoms = _read(f["n_atoms"], slice(None), path, "n_atoms").astype(np.int64)
    if (n_atoms < 0).any():
        first = int(np.flatnonzero(n_atoms < 0)[0])
        raise DataError(
            f"negative atom count {n_atoms[first]} at frame {first}", path=path, field="n_atoms"
        )
    if int(n_atoms.sum()) != sizes[ATOM_DIM]:
        raise DataError(
            "per-frame atom counts do not add up to the atom dimension",
            path=path,
            field="n_atoms",
            expected=f"sum(n_atoms) == {sizes[ATOM_DIM]}",
            found=int(n_atoms.sum()),
        )
    layout.n_atoms = n_atoms
    layout.bool_fields = frozenset(bools)
    return layout


def _read(ds: h5py.Dataset, sel: Any, path: Path, name: str) -> np.ndarray:
    """Read ``ds[sel]``, turning HDF5 read failures (truncated data) into a DataError."""
    try:
        return ds[sel]
    except OSError as exc:
        raise DataError(
            f"unreadable data (corrupt or truncated file): {exc}", path=path, field=name
        ) from None


def _open_layout(path: str | Path) -> tuple[h5py.File, _Layout]:
    """Open a particle file and check its layout; the caller closes the returned handle."""
    path = Path(path)
    f = open_h5(path, "r")
    try:
        return f, _inspect(f, path)
    except (OSError, KeyError, RuntimeError) as exc:  # h5py on corrupt metadata
        f.close()
        raise DataError(f"unreadable file structure (corrupt file?): {exc}", path=path) from None
    except BaseException:
        f.close()
        raise


# --------------------------------------------------------------------------------------------
# reading


def _ragged_arange(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(s, s + n)`` for every (s, n), without a Python loop."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    shift = np.repeat(starts - np.concatenate(([0], np.cumsum(lengths)[:-1])), lengths)
    return shift + np.arange(total, dtype=np.int64)


@dataclass(frozen=True)
class _ReadPlan:
    """Contiguous blocks to read and the rows of their concatenation to keep (None: all)."""

    blocks: list[tuple[int, int]]
    take: np.ndarray | None


def _plan(starts: np.ndarray, stops: np.ndarray, order: np.ndarray | None) -> _ReadPlan:
    """Plan reads of sorted, disjoint row ranges; ranges closer than _MAX_GAP share one read.

    ``order`` (optional) indexes the requested rows, in range order, to put them into the
    caller's order (duplicates allowed).
    """
    if len(starts) == 0:
        return _ReadPlan([(0, 0)], None)
    new_block = np.concatenate(([True], starts[1:] - stops[:-1] > _MAX_GAP))
    block_of = np.cumsum(new_block) - 1
    b_start = starts[new_block]
    b_stop = stops[np.append(new_block[1:], True)]
    b_off = np.concatenate(([0], np.cumsum(b_stop - b_start)[:-1]))
    lengths = stops - starts
    take = _ragged_arange(b_off[block_of] + starts - b_start[block_of], lengths)
    if order is not None:
        take = take[order]
    if len(take) == int((b_stop - b_start).sum()) and (take == np.arange(len(take))).all():
        take = None
    return _ReadPlan([(int(a), int(b)) for a, b in zip(b_start, b_stop, strict=True)], take)


class FrameReader(LazyH5):
    """Random access to the frames of a particle file, reading only what is asked for.

    Picklable and safe in torch DataLoader workers: the HDF5 handle is opened lazily in each
    process (and reopened after a fork), never pickled. The file's layout is checked on
    construction (schema, version, dimensions, counts); :func:`validate` also scans values.

    Attributes: ``n_atoms`` (F,) atoms per frame; ``offsets`` (F + 1,), atoms of frame ``i``
    are rows ``offsets[i]:offsets[i + 1]``; ``trajectory`` (F,) trajectory id of each frame and
    ``trajectories`` the sorted distinct ids; ``fields`` = ``frame_fields`` + ``atom_fields``;
    ``units`` {field: unit}; ``attrs`` the user attributes (JSON strings decoded).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        f, layout = _open_layout(self.path)
        self._h5: h5py.File | None = f
        self._pid: int | None = os.getpid()
        self._datasets: dict[str, h5py.Dataset] = {}
        self.n_atoms: np.ndarray = layout.n_atoms
        self.offsets: np.ndarray = np.concatenate(([0], np.cumsum(self.n_atoms)))
        self.frame_fields: list[str] = layout.frame_fields
        self.atom_fields: list[str] = layout.atom_fields
        self.fields: list[str] = self.frame_fields + self.atom_fields
        self.units: dict[str, str] = layout.units
        self.attrs: dict[str, Any] = _user_attrs(f)
        self._bool = layout.bool_fields
        if "trajectory" in self.frame_fields:
            traj = _read(f["trajectory"], slice(None), self.path, "trajectory").astype(np.int64)
        else:
            traj = np.zeros(len(self.n_atoms), np.int64)
        self.trajectory: np.ndarray = traj
        self._traj_order = np.argsort(traj, kind="stable")
        ids, first = np.unique(traj[self._traj_order], return_index=True)
        self.trajectories: np.ndarray = ids
        self._traj_bounds = np.append(first, len(traj))

    # -- access -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.n_atoms)

    def _index(self, i: Any) -> int:
        i = operator.index(i)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"frame {i} out of range for {n} frames in {self.path}")
        return i % n

    def _get(self, name: str, sel: Any) -> np.ndarray:
        data = _read(self._ds(name), sel, self.path, name)
        return data.astype(bool) if name in self._bool else data

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        """One frame: per-frame values (0-d or small arrays) and its per-atom rows."""
        i = self._index(i)
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        out = {name: np.asarray(self._get(name, i)) for name in self.frame_fields}
        out.update({name: self._get(name, slice(lo, hi)) for name in self.atom_fields})
        return out

    def _select(self, fields: Iterable[str] | None) -> list[str]:
        if fields is None:
            return self.fields
        names = list(fields)
        for name in names:
            if name not in self.fields:
                raise DataError(
                    "no such field", path=self.path, field=name, expected=self.fields, found=name
                )
        return names

    def frames(
        self, indices: Sequence[int] | np.ndarray, fields: list[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Many frames at once, in the order given (repeats allowed).

        Per-frame fields come back stacked (len(indices), ...), per-atom fields concatenated
        (sum of their n_atoms, ...), plus ``n_atoms``. Requested frames are sorted and read as
        few contiguous blocks, not one read per frame.
        """
        try:
            idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"frame indices must be integers: {exc}") from None
        n = len(self)
        if len(idx) and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"frame index out of range for {n} frames in {self.path}")
        idx = idx % max(n, 1)
        uniq, inverse = np.unique(idx, return_inverse=True)
        in_order = len(uniq) == len(idx) and (uniq == idx).all()
        counts = self.n_atoms[uniq]
        frame_plan = _plan(uniq, uniq + 1, None if in_order else inverse)
        atom_order = None
        if not in_order:
            u_off = np.concatenate(([0], np.cumsum(counts)[:-1]))
            atom_order = _ragged_arange(u_off[inverse], counts[inverse])
        atom_plan = _plan(self.offsets[uniq], self.offsets[uniq + 1], atom_order)
        out = {"n_atoms": self.n_atoms[idx]}
        for name in self._select(fields):
            if name == "n_atoms":
                continue
            plan = frame_plan if name in self.frame_fields else atom_plan
            parts = [self._get(name, slice(a, b)) for a, b in plan.blocks]
            data = parts[0] if len(parts) == 1 else np.concatenate(parts)
            out[name] = data if plan.take is None else data[plan.take]
        return out

    def trajectory_frames(self, trajectory: int) -> np.ndarray:
        """Frame indices of one trajectory, in file order."""
        k = int(np.searchsorted(self.trajectories, trajectory))
        if k == len(self.trajectories) or self.trajectories[k] != trajectory:
            raise IndexError(f"no trajectory {trajectory} in {self.path}")
        return self._traj_order[self._traj_bounds[k] : self._traj_bounds[k + 1]]

    def window(
        self, trajectory: int, start: int, length: int, stride: int = 1
    ) -> list[dict[str, np.ndarray]]:
        """``length`` frames of one trajectory: positions start, start + stride, ... in it."""
        if start < 0 or length < 1 or stride < 1:
            raise ValueError(
                f"need start >= 0, length >= 1, stride >= 1; got {start}, {length}, {stride}"
            )
        frames = self.trajectory_frames(trajectory)
        sel = frames[start : start + (length - 1) * stride + 1 : stride]
        if len(sel) != length:
            raise IndexError(
                f"window start={start} length={length} stride={stride} runs past the end of "
                f"trajectory {trajectory} ({len(frames)} frames) in {self.path}"
            )
        data = self.frames(sel)
        bounds = np.concatenate(([0], np.cumsum(data["n_atoms"])))
        return [
            {
                name: (
                    np.asarray(data[name][k])
                    if name in self.frame_fields
                    else data[name][bounds[k] : bounds[k + 1]]
                )
                for name in data
            }
            for k in range(length)
        ]


# --------------------------------------------------------------------------------------------
# validation, xarray view, summary


def validate(path: str | Path) -> None:
    """Check a particle file completely; raise a DataError naming the first problem.

    Checks the schema attributes, required variables, dimensions and shapes, dtypes,
    ``sum(n_atoms)`` against the atom dimension, and NaN/inf in every float variable (reporting
    the field and the first bad index).
    """
    path = Path(path)
    f, layout = _open_layout(path)
    with f:
        for name in layout.frame_fields + layout.atom_fields:
            if layout.dtypes[name].kind != "f":
                continue
            ds = f[name]
            for start in range(0, ds.shape[0], _SCAN_ROWS):
                block = _read(ds, slice(start, start + _SCAN_ROWS), path, name)
                bad = ~np.isfinite(block)
                if bad.any():
                    local = tuple(int(k) for k in np.argwhere(bad)[0])
                    index = (local[0] + start, *local[1:])
                    raise DataError(
                        f"non-finite value {block[local].item()} at index {index}",
                        path=path,
                        field=name,
                    )


def to_xarray(path: str | Path) -> xr.Dataset:
    """Open a particle file as a lazy ``xarray.Dataset`` with labelled dimensions.

    Adds coordinates ``frame``, ``atom``, ``spatial``/``spatial_j`` = ['x', 'y', 'z'] and
    ``frame_of_atom`` (atom,) so that per-atom data can be grouped by frame.
    """
    import xarray as xr

    path = Path(path)
    f, layout = _open_layout(path)
    f.close()
    try:
        ds = xr.open_dataset(path, engine="h5netcdf")
    except (OSError, ValueError) as exc:
        raise DataError(f"xarray could not open the file: {exc}", path=path) from None
    n_frames = len(layout.n_atoms)
    xyz = ["x", "y", "z"]
    return ds.assign_coords(
        frame=np.arange(n_frames),
        atom=np.arange(int(layout.n_atoms.sum())),
        spatial=xyz,
        spatial_j=xyz,
        frame_of_atom=("atom", np.repeat(np.arange(n_frames), layout.n_atoms)),
    )


def info(path: str | Path) -> str:
    """Human-readable summary: schema, frame/trajectory/atom counts, fields, attributes."""
    path = Path(path)
    f, layout = _open_layout(path)
    n = layout.n_atoms
    with f:
        attrs = _user_attrs(f)
        if "trajectory" in layout.frame_fields:
            traj = _read(f["trajectory"], slice(None), path, "trajectory")
        else:
            traj = np.zeros(len(n), np.int64)
    lines = [
        f"{path}: {SCHEMA} v{SCHEMA_VERSION}",
        f"frames: {len(n)} in {len(np.unique(traj))} trajectories",
        f"atoms: {int(n.sum())} total"
        + (f"; per frame min {n.min()} / mean {n.mean():.2f} / max {n.max()}" if len(n) else ""),
    ]
    for title, names in (("per-frame", layout.frame_fields), ("per-atom", layout.atom_fields)):
        lines.append(f"{title} fields:")
        for name in names:
            unit = f"  [{layout.units[name]}]" if name in layout.units else ""
            dtype = "bool" if name in layout.bool_fields else str(layout.dtypes[name])
            lines.append(f"  {name:<14} ({', '.join(layout.dims[name])})  {dtype}{unit}")
    if attrs:
        lines.append("attributes:")
        lines.extend(f"  {k} = {v!r}" for k, v in attrs.items())
    return "\n".join(lines)
