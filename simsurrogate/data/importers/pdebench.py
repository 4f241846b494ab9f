"""Import PDEBench HDF5 files (Takamoto et al., NeurIPS 2022) into The Well's grid layout.

PDEBench ships its data sets in three HDF5 layouts. The two that its FNO/U-Net loaders read
(``pdebench/models/{fno,unet}/utils.py``) and its writers produce
(``pdebench/data_gen/data_gen_NLE/Data_Merge.py``, ``pdebench/data_gen/gen_*.py``) are
imported here:

- ``"tensor"``: scalar equations (1D advection, Burgers, reaction-diffusion; 2D Darcy flow).
  Dataset ``tensor`` (n_samples, n_t, *spatial), coordinates ``x-coordinate`` (and
  ``y-coordinate`` in 2D), ``t-coordinate`` (n_t or n_t + 1 entries: the writers store one
  more time than there are saved steps), and the equation's parameter (``beta``, ``Nu``...) as
  a root attribute. Darcy files have ``tensor`` (n_samples, 1, n_x, n_y), the steady solution,
  plus ``nu`` (n_samples, n_x, n_y), the permeability, and no ``t-coordinate``.
- ``"cfd"``: compressible Navier-Stokes in 1D/2D/3D. Datasets ``density``, ``pressure``,
  ``Vx`` [, ``Vy`` [, ``Vz``]] each (n_samples, n_t, *spatial), coordinates
  ``x-coordinate`` [, ``y-coordinate`` [, ``z-coordinate``]], ``t-coordinate``, and the root
  attributes ``eta``, ``zeta`` [, ``M``].
- ``"groups"``: one group per sample named by its zero-padded seed (``"0000"``, ``"0001"``...;
  2D diffusion-reaction, 2D shallow water / radial dam break, 1D diffusion-sorption), each
  holding ``data`` (n_t, *spatial, n_channels) and a ``grid`` subgroup with ``x`` [, ``y``],
  ``t``; the group attribute ``config`` (the generator's YAML) is not imported.

The third layout, 2D incompressible Navier-Stokes (root datasets ``velocity``, ``particles``,
``force``, ``t`` and no grid coordinates), is recognised and refused with a clear error.

Values and coordinates are copied unchanged (PDEBench's non-dimensional units). Root attributes
that are numbers become simulation parameters of the written file.

Memory: the source is read in blocks of samples (tensor, cfd) or one sample at a time
(groups), so only the imported samples are ever read; but :func:`write_well` takes whole
arrays, so those samples are held in memory together (about ``max_samples`` x the size of one
sample, plus one read block). Use ``max_samples`` to import a part of a multi-GB file; a
streaming import needs an appendable writer in :mod:`simsurrogate.data.grid`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from simsurrogate.data._io import open_h5, reading
from simsurrogate.data.errors import DataError
from simsurrogate.data.grid import GridField, write_well

_SPATIAL = ("x", "y", "z")
_VELOCITY = ("Vx", "Vy", "Vz")
_NS_INCOMP_KEYS = {"velocity", "particles", "force"}
_BLOCK_BYTES = 64 * 2**20  # how much of a dataset one read may bring into memory


def detect_pdebench_layout(path: str | Path) -> str:
    """Which PDEBench layout an HDF5 file has: ``"tensor"``, ``"cfd"`` or ``"groups"``.

    Raises a :class:`DataError` naming the file's top-level keys when it is none of these
    (and saying so when it is PDEBench's unsupported incompressible Navier-Stokes layout).
    """
    path = Path(path)
    with open_h5(path) as f:
        return _detect(f, path)


def _detect(f: h5py.File, path: Path) -> str:
    keys = sorted(f.keys())
    if isinstance(f.get("tensor"), h5py.Dataset):
        return "tensor"
    if isinstance(f.get("density"), h5py.Dataset) and isinstance(f.get("Vx"), h5py.Dataset):
        return "cfd"
    if keys and all(isinstance(f[k], h5py.Group) for k in keys):
        if isinstance(f[keys[0]].get("data"), h5py.Dataset):
            return "groups"
    if _NS_INCOMP_KEYS <= set(keys):
        raise DataError(
            "PDEBench incompressible Navier-Stokes layout (velocity/particles/force/t, no grid "
            "coordinates) is not supported",
            path=path,
            found=f"top-level keys {keys}",
        )
    raise DataError(
        "not a PDEBench file",
        path=path,
        expected="a 'tensor' dataset, 'density'+'Vx' datasets, or per-sample groups with 'data'",
        found=f"top-level keys {keys}",
    )


def import_pdebench(
    source: str | Path,
    dest: str | Path,
    *,
    field_names: list[str] | None = None,
    dataset_name: str | None = None,
    max_samples: int | None = None,
    periodic: bool | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert one PDEBench HDF5 file into a Well-format file at ``dest``; return its path.

    Fields: ``tensor`` files give one t0 field named ``field_names[0]`` (default ``"u"``),
    plus a time-constant t0 field ``nu`` for Darcy files; CFD files give t0 fields
    ``density`` and ``pressure`` and a t1 field ``velocity`` whose last axis holds
    (Vx[, Vy[, Vz]]); per-sample group files give one t0 field per channel of ``data``,
    named ``field_names`` or ``c0, c1, ...``. ``field_names`` is refused for CFD files, whose
    names are fixed. Only the first ``max_samples`` samples (all by default; groups in sorted
    order) are read. ``periodic=True`` records a PERIODIC boundary condition on every spatial
    dim, ``False`` records none, and ``None`` records PERIODIC when the file name contains
    ``periodic`` (PDEBench names CFD files by their boundary condition). ``dataset_name``
    defaults to the source file's stem.

    Bad input (not a PDEBench layout, missing coordinates, samples of different shapes or
    grids, NaN/inf values) raises a :class:`DataError` naming the file, group and field;
    ``dest`` is written atomically, so nothing there is lost on failure.
    """
    source, dest = Path(source), Path(dest)
    if dest.exists() and not overwrite:
        raise DataError("file exists; pass overwrite=True to replace it", path=dest)
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    with open_h5(source) as f:
        layout = _detect(f, source)
        if layout == "tensor":
            dims, time, fields = _read_tensor(f, source, field_names, max_samples)
        elif layout == "cfd":
            if field_names is not None:
                raise DataError(
                    "field_names cannot rename CFD fields (density, pressure, velocity)",
                    path=source,
                )
            dims, time, fields = _read_cfd(f, source, max_samples)
        else:
            dims, time, fields = _read_groups(f, source, field_names, max_samples)
        params = _numeric_attrs(f.attrs)
    if periodic is None:
        periodic = "periodic" in source.name.lower()
    bcs = [
        {"name": f"{d}_periodic", "bc_type": "PERIODIC", "associated_dims": [d]}
        for d in dims
        if periodic
    ]
    return write_well(
        dest,
        dataset_name=dataset_name or source.stem,
        dimensions=dims,
        time=time,
        fields=fields,
        boundary_conditions=bcs,
        simulation_parameters=params,
        overwrite=overwrite,
    )


# --------------------------------------------------------------------------------------------
# readers, one per layout: each returns (coordinates per spatial dim, time (T,), fields)

_Read = tuple[dict[str, np.ndarray], np.ndarray, list[GridField]]


def _read_tensor(
    f: h5py.File, path: Path, field_names: Sequence[str] | None, max_samples: int | None
) -> _Read:
    """``tensor`` (B, T, *spatial) as one t0 field; Darcy's ``nu`` (B, *spatial) as another."""
    names = _names(field_names, ["u"], path)
    tensor = f["tensor"]
    n_spatial = _n_spatial(tensor, 2, path)
    n = _n_samples(tensor.shape[0], max_samples)
    dims = _root_coords(f, path, tensor.shape[2:], n_spatial)
    time = _time(f.get("t-coordinate"), tensor.shape[1], path, "/")
    fields = [GridField(names[0], _read_rows(tensor, n, path), 0)]
    nu = f.get("nu")
    if isinstance(nu, h5py.Dataset):
        if nu.shape[1:] != tensor.shape[2:] or nu.shape[0] != tensor.shape[0]:
            raise DataError(
                "shape does not match 'tensor' (n_samples, *spatial)",
                path=path,
                field="nu",
                expected=(tensor.shape[0], *tensor.shape[2:]),
                found=nu.shape,
            )
        fields.append(GridField("nu", _read_rows(nu, n, path), 0, time_varying=False))
    return dims, time, fields


def _read_cfd(f: h5py.File, path: Path, max_samples: int | None) -> _Read:
    """``density``, ``pressure`` as t0 fields and ``Vx``[, ``Vy``[, ``Vz``]] as ``velocity``."""
    density = f["density"]
    shape = density.shape
    n_spatial = _n_spatial(density, 2, path)
    components = _VELOCITY[:n_spatial]
    for name in ("pressure", *components):
        dset = f.get(name)
        if not isinstance(dset, h5py.Dataset):
            raise DataError(
                f"missing dataset {name!r} of a {n_spatial}D CFD file",
                path=path,
                found=f"top-level keys {sorted(f.keys())}",
            )
        if dset.shape != shape:
            raise DataError(
                "shape does not match 'density'",
                path=path,
                field=name,
                expected=shape,
                found=dset.shape,
            )
    n = _n_samples(shape[0], max_samples)
    dims = _root_coords(f, path, shape[2:], n_spatial)
    time = _time(f.get("t-coordinate"), shape[1], path, "/")
    velocity = np.empty((n, *shape[1:], n_spatial), dtype=f["Vx"].dtype)
    for k, name in enumerate(components):
        _read_rows(f[name], n, path, out=velocity[..., k])
    fields = [
        GridField("density", _read_rows(density, n, path), 0),
        GridField("pressure", _read_rows(f["pressure"], n, path), 0),
        GridField("velocity", velocity, 1),
    ]
    return dims, time, fields


def _read_groups(
    f: h5py.File, path: Path, field_names: Sequence[str] | None, max_samples: int | None
) -> _Read:
    """Per-sample groups ``data`` (T, *spatial, C), read one sample at a time, one t0 field
    per channel; every sample must match the first one's shape and grid."""
    keys = sorted(f.keys())
    keys = keys[: _n_samples(len(keys), max_samples)]
    first = f[keys[0]]
    shape = first["data"].shape
    n_spatial = _n_spatial(first["data"], 2, path, group=first.name)
    names = _names(field_names, [f"c{c}" for c in range(shape[-1])], path)
    grid = _group_grid(first, path, shape[1:-1], n_spatial)
    time = _time(first["grid"].get("t"), shape[0], path, f"{first.name}/grid")
    channels = [np.empty((len(keys), *shape[:-1]), dtype=first["data"].dtype) for _ in names]
    for i, key in enumerate(keys):
        group = f[key]
        data = group.get("data") if isinstance(group, h5py.Group) else None
        if not isinstance(data, h5py.Dataset) or data.shape != shape:
            raise DataError(
                "sample does not match the first sample's 'data'",
                path=path,
                group=f"/{key}",
                field="data",
                expected=f"{shape} like {first.name}",
                found=None if data is None else data.shape,
            )
        if i:
            other = _group_grid(group, path, shape[1:-1], n_spatial)
            other["t"] = _time(group["grid"].get("t"), shape[0], path, f"/{key}/grid")
            for name, ref in {**grid, "t": time}.items():
                if not np.array_equal(other[name], ref):
                    raise DataError(
                        f"grid differs from the first sample's ({first.name})",
                        path=path,
                        group=f"/{key}/grid",
                        field=name,
                    )
        with reading(path, f"/{key}", "data"):
            sample = data[()]
        for c, channel in enumerate(channels):
            channel[i] = sample[..., c]
    return grid, time, [GridField(n, c, 0) for n, c in zip(names, channels, strict=True)]


# --------------------------------------------------------------------------------------------
# helpers


def _names(field_names: Sequence[str] | None, default: list[str], path: Path) -> list[str]:
    """The caller's field names, one per field there is, or ``default`` when none are given."""
    if field_names is None:
        return default
    if len(field_names) != len(default):
        raise DataError(
            "wrong number of field_names",
            path=path,
            expected=len(default),
            found=list(field_names),
        )
    return list(field_names)


def _n_spatial(dset: h5py.Dataset, n_lead: int, path: Path, group: str | None = None) -> int:
    """Number of spatial axes of a dataset with ``n_lead`` other axes; must be 1, 2 or 3."""
    n_spatial = dset.ndim - n_lead
    if not 1 <= n_spatial <= 3:
        raise DataError(
            f"expected {n_lead} non-spatial axes and 1 to 3 spatial ones",
            path=path,
            group=group,
            field=dset.name,
            found=dset.shape,
        )
    return n_spatial


def _n_samples(available: int, max_samples: int | None) -> int:
    return available if max_samples is None else min(available, max_samples)


def _coord(dset: Any, size: int, path: Path, group: str, name: str) -> np.ndarray:
    """A 1-D coordinate dataset of length ``size``, read whole (it is small)."""
    if not isinstance(dset, h5py.Dataset):
        raise DataError("missing coordinate dataset", path=path, group=group, field=name)
    with reading(path, group, name):
        arr = np.asarray(dset[()])
    if arr.shape != (size,):
        raise DataError(
            "coordinate length does not match the data",
            path=path,
            group=group,
            field=name,
            expected=(size,),
            found=arr.shape,
        )
    return arr


def _root_coords(
    f: h5py.File, path: Path, sizes: Sequence[int], n_spatial: int
) -> dict[str, np.ndarray]:
    """``x-coordinate`` [, ``y-coordinate`` [, ``z-coordinate``]] of a tensor or CFD file."""
    return {
        d: _coord(f.get(f"{d}-coordinate"), sizes[i], path, "/", f"{d}-coordinate")
        for i, d in enumerate(_SPATIAL[:n_spatial])
    }


def _group_grid(
    group: h5py.Group, path: Path, sizes: Sequence[int], n_spatial: int
) -> dict[str, np.ndarray]:
    """``grid/x`` [, ``grid/y`` [, ``grid/z``]] of one sample group."""
    grid = group.get("grid")
    where = f"{group.name}/grid"
    if not isinstance(grid, h5py.Group):
        raise DataError("missing 'grid' subgroup", path=path, group=group.name)
    return {
        d: _coord(grid.get(d), sizes[i], path, where, d) for i, d in enumerate(_SPATIAL[:n_spatial])
    }


def _time(dset: Any, n_t: int, path: Path, group: str) -> np.ndarray:
    """Times of the ``n_t`` saved steps.

    PDEBench's NLE writers store ``n_t + 1`` times (``arange(n_t + 1) * dt_save``) for
    ``n_t`` saved steps; the first ``n_t`` are the steps' times. A file without times (Darcy,
    one steady state) gets the step index 0, 1, ...
    """
    if dset is None:
        return np.arange(n_t, dtype=np.float64)
    if not isinstance(dset, h5py.Dataset):
        raise DataError("time coordinate is not a dataset", path=path, group=group)
    name = dset.name.rsplit("/", 1)[-1]
    with reading(path, group, name):
        arr = np.asarray(dset[()])
    if arr.ndim != 1 or len(arr) not in (n_t, n_t + 1):
        raise DataError(
            "time coordinate does not match the number of time steps",
            path=path,
            group=group,
            field=name,
            expected=f"({n_t},) or ({n_t + 1},)",
            found=arr.shape,
        )
    return arr[:n_t]


def _read_rows(dset: h5py.Dataset, n: int, path: Path, out: np.ndarray | None = None) -> np.ndarray:
    """The first ``n`` rows (samples) of a dataset, read in blocks of about ``_BLOCK_BYTES``.

    Writes into ``out`` (which may be a strided view, e.g. one velocity component) when given.
    """
    if out is None:
        out = np.empty((n, *dset.shape[1:]), dtype=dset.dtype)
    row_bytes = dset.dtype.itemsize * max(1, math.prod(dset.shape[1:]))
    step = max(1, _BLOCK_BYTES // row_bytes)
    with reading(path, "/", dset.name.lstrip("/")):
        for start in range(0, n, step):
            stop = min(n, start + step)
            out[start:stop] = dset[start:stop]
    return out


def _numeric_attrs(attrs: h5py.AttributeManager) -> dict[str, float]:
    """Root attributes that are single numbers (``beta``, ``Nu``, ``eta``, ``zeta``, ``M``)."""
    params = {}
    for key, value in attrs.items():
        arr = np.asarray(value)
        if arr.size == 1 and arr.dtype.kind in "fiu":
            params[key] = arr.reshape(()).item()
    return params
