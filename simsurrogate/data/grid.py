"""Grid fields in The Well's HDF5 layout (PolymathicAI/the_well), for neural operators.

Files from The Well load unchanged and files written here follow its layout, as described in
the_well's ``docs/data_format.md`` and read by ``the_well/data/datasets.py``:

- root attributes ``dataset_name``, ``grid_type`` (``"cartesian"``), ``n_spatial_dims``,
  ``n_trajectories`` (B), ``simulation_parameters`` (names) and one attribute per parameter;
- ``dimensions/``: attribute ``spatial_dims`` (axis order of every field); dataset ``time``,
  (T,) or (B, T) when ``sample_varying``; one coordinate dataset per spatial dim, (n_i,);
- ``boundary_conditions/<name>/``: attributes ``associated_dims``, ``associated_fields``,
  ``bc_type`` (WALL / OPEN / PERIODIC), ``sample_varying``, ``time_varying``; dataset ``mask``
  (bool over the associated dims, True where the condition holds) and, when the condition sets
  values, ``values`` (one per True mask entry);
- ``scalars/``: attribute ``field_names``; one dataset per scalar, (B?, T?): a constant one is
  written 0-d, as the_well's own loader and test data have it (its docs show (1,), also read;
  from a (1,) scalar its ``WellDataset`` makes ``constant_scalars`` (1, n), not (n,));
- ``t0_fields/``, ``t1_fields/``, ``t2_fields/``: attribute ``field_names``; one dataset per
  field shaped (B?, T?, *spatial, *(D,) * order). B and T are present only when the attributes
  ``sample_varying`` / ``time_varying`` are true, and a spatial axis only where ``dim_varying``
  is true (absent axes are broadcast on read). t2 fields also carry ``symmetric`` and
  ``antisymmetric``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from simsurrogate.data._io import (
    LazyH5,
    atomic_path,
    attr_plain,
    attr_text,
    attr_texts,
    check_finite,
    check_finite_dataset,
    open_h5,
    reading,
)
from simsurrogate.data.errors import DataError

ORDER_GROUPS = ("t0_fields", "t1_fields", "t2_fields")
REQUIRED_GROUPS = ("dimensions", "boundary_conditions", "scalars", *ORDER_GROUPS)
REQUIRED_ROOT_ATTRS = (
    "dataset_name",
    "grid_type",
    "n_spatial_dims",
    "n_trajectories",
    "simulation_parameters",
)
BC_TYPES = ("WALL", "OPEN", "PERIODIC")
GRID_TYPES = ("cartesian", "spherical")
_BC_KEYS = {
    "name",
    "bc_type",
    "associated_dims",
    "associated_fields",
    "mask",
    "values",
    "sample_varying",
    "time_varying",
}
_CHUNK_BYTES = 16 * 2**20  # upper bound for one chunk of a written field


def _flag(obj: h5py.HLObject, key: str, path: Path, group: str, fld: str | None, default=None):
    """A boolean attribute; ``default=None`` makes it required."""
    if key not in obj.attrs:
        if default is None:
            raise DataError(f"missing attribute {key!r}", path=path, group=group, field=fld)
        return default
    return bool(np.asarray(obj.attrs[key]).reshape(-1)[0])


def _int_attr(obj: h5py.HLObject, key: str, path: Path, group: str) -> int:
    value = np.asarray(obj.attrs[key])
    if value.size != 1 or value.dtype.kind not in "iu":
        raise DataError(
            f"attribute {key!r} must be an integer", path=path, group=group, found=value
        )
    return int(value.reshape(()))


def _component_names(name: str, order: int, spatial_dims: Sequence[str]) -> list[str]:
    """Per-component names as The Well flattens them: ``velocity_x``, ``stress_xy``..."""
    if order == 0:
        return [name]
    return [f"{name}_{''.join(c)}" for c in itertools.product(spatial_dims, repeat=order)]


# --------------------------------------------------------------------------------------------
# layout: the structure of a file, checked without reading field data


@dataclass(frozen=True)
class WellFieldInfo:
    """How one field (or scalar) is stored: tensor order, which axes exist, stored shape."""

    name: str
    order: int
    sample_varying: bool
    time_varying: bool
    dim_varying: tuple[bool, ...]
    shape: tuple[int, ...]
    dtype: np.dtype


@dataclass(frozen=True)
class _BCInfo:
    name: str
    bc_type: str
    associated_dims: tuple[str, ...]
    associated_fields: tuple[str, ...]
    sample_varying: bool
    time_varying: bool


@dataclass(frozen=True)
class _Layout:
    dataset_name: str
    grid_type: str
    n_trajectories: int
    n_steps: int
    spatial_dims: tuple[str, ...]
    spatial_shape: tuple[int, ...]
    time_sample_varying: bool
    coord_sample_varying: dict[str, bool]
    simulation_parameters: dict[str, Any]
    scalars: dict[str, WellFieldInfo]
    fields: dict[str, WellFieldInfo]
    bcs: list[_BCInfo]


def _stored_shape(
    info: WellFieldInfo, n_traj: int, n_steps: int, sizes: Sequence[int], keep: bool = False
) -> tuple[int, ...]:
    """Shape a field is stored with: non-varying spatial axes dropped, or kept as length 1.

    The Well's docs/data_format.md drops them (and its export.py expects that), while its
    datasets.py loader tiles a kept length-1 axis; both are accepted, dropping is written.
    """
    lead = (n_traj,) * info.sample_varying + (n_steps,) * info.time_varying
    pairs = zip(sizes, info.dim_varying, strict=True)
    space = tuple(n if v else 1 for n, v in pairs) if keep else tuple(n for n, v in pairs if v)
    return lead + space + (len(sizes),) * info.order


def _shape_ok(info: WellFieldInfo, n_traj: int, n_steps: int, sizes: Sequence[int]) -> bool:
    return any(info.shape == _stored_shape(info, n_traj, n_steps, sizes, k) for k in (0, 1))


def _dataset(group: h5py.Group, name: str, path: Path) -> h5py.Dataset:
    obj = group.get(name)
    if not isinstance(obj, h5py.Dataset):
        raise DataError(f"missing dataset {name!r}", path=path, group=group.name)
    return obj


def _listed(group: h5py.Group, path: Path) -> list[str]:
    """Names in a group's ``field_names`` attribute; each must name a dataset of the group."""
    if "field_names" not in group.attrs:
        raise DataError("missing attribute 'field_names'", path=path, group=group.name)
    names = attr_texts(group.attrs["field_names"])
    for name in names:
        if not isinstance(group.get(name), h5py.Dataset):
            raise DataError(
                f"field_names lists {name!r} but the group has no dataset of that name",
                path=path,
                group=group.name,
                field=name,
            )
    return names


def _check_dtype(dset: h5py.Dataset, kinds: str, what: str, path: Path, group: str, name: str):
    if dset.dtype.kind not in kinds:
        raise DataError(
            "bad dtype", path=path, group=group, field=name, expected=what, found=dset.dtype
        )


def _check_shape(dset: h5py.Dataset, expected: tuple, path: Path, group: str, name: str, why: str):
    if dset.shape != tuple(expected):
        raise DataError(
            f"shape inconsistent with {why}",
            path=path,
            group=group,
            field=name,
            expected=tuple(expected),
            found=dset.shape,
        )


def _read_layout(f: h5py.File, path: Path) -> _Layout:
    """Check the structure of an open Well file (no field data read) and describe it."""
    with reading(path):
        for name in REQUIRED_GROUPS:
            if not isinstance(f.get(name), h5py.Group):
                raise DataError(f"not a Well-format file: missing group {name!r}", path=path)
        for key in REQUIRED_ROOT_ATTRS:
            if key not in f.attrs:
                raise DataError(f"missing root attribute {key!r}", path=path, group="/")
        n_spatial = _int_attr(f, "n_spatial_dims", path, "/")
        n_traj = _int_attr(f, "n_trajectories", path, "/")
        params = {}
        for p in attr_texts(f.attrs["simulation_parameters"]):
            if p not in f.attrs:
                raise DataError(
                    f"simulation parameter {p!r} has no root attribute", path=path, group="/"
                )
            params[p] = attr_plain(f.attrs[p])

        dims = f["dimensions"]
        if "spatial_dims" not in dims.attrs:
            raise DataError("missing attribute 'spatial_dims'", path=path, group="/dimensions")
        spatial = tuple(attr_texts(dims.attrs["spatial_dims"]))
        if len(spatial) != n_spatial:
            raise DataError(
                "spatial_dims does not match n_spatial_dims",
                path=path,
                group="/dimensions",
                expected=n_spatial,
                found=list(spatial),
            )
        time = _dataset(dims, "time", path)
        time_sv = _flag(time, "sample_varying", path, "/dimensions", "time", default=False)
        _check_dtype(time, "fiu", "a real number", path, "/dimensions", "time")
        if time.ndim != 1 + time_sv or (time_sv and time.shape[0] != n_traj):
            raise DataError(
                "shape inconsistent with n_trajectories / sample_varying",
                path=path,
                group="/dimensions",
                field="time",
                expected="(n_trajectories, T)" if time_sv else "(T,)",
                found=time.shape,
            )
        n_steps = time.shape[-1]
        sizes, coord_sv = [], {}
        for d in spatial:
            coord = _dataset(dims, d, path)
            coord_sv[d] = _flag(coord, "sample_varying", path, "/dimensions", d, default=False)
            if _flag(coord, "time_varying", path, "/dimensions", d, default=False):
                raise DataError(
                    "time-varying coordinates are not supported by The Well",
                    path=path,
                    group="/dimensions",
                    field=d,
                )
            _check_dtype(coord, "fiu", "a real number", path, "/dimensions", d)
            if coord.ndim != 1 + coord_sv[d] or (coord_sv[d] and coord.shape[0] != n_traj):
                raise DataError(
                    "shape inconsistent with n_trajectories / sample_varying",
                    path=path,
                    group="/dimensions",
                    field=d,
                    expected="(n_trajectories, n)" if coord_sv[d] else "(n,)",
                    found=coord.shape,
                )
            sizes.append(coord.shape[-1])

        scalars = {}
        for name in _listed(f["scalars"], path):
            dset = f["scalars"][name]
            info = WellFieldInfo(
                name,
                0,
                _flag(dset, "sample_varying", path, "/scalars", name),
                _flag(dset, "time_varying", path, "/scalars", name),
                (),
                dset.shape,
                dset.dtype,
            )
            expected = _stored_shape(info, n_traj, n_steps, ())
            if not (dset.shape == expected or (expected == () and dset.shape == (1,))):
                _check_shape(dset, expected, path, "/scalars", name, "n_trajectories/time")
            _check_dtype(dset, "fiub", "a real number", path, "/scalars", name)
            scalars[name] = info

        fields: dict[str, WellFieldInfo] = {}
        for order, gname in enumerate(ORDER_GROUPS):
            group = f[gname]
            for name in _listed(group, path):
                if name in fields:
                    raise DataError(
                        f"field name also used in t{fields[name].order}_fields",
                        path=path,
                        group=group.name,
                        field=name,
                    )
                dset = group[name]
                if "dim_varying" not in dset.attrs:
                    raise DataError(
                        "missing attribute 'dim_varying'", path=path, group=group.name, field=name
                    )
                dim_varying = tuple(bool(v) for v in np.asarray(dset.attrs["dim_varying"]).ravel())
                if len(dim_varying) != n_spatial:
                    raise DataError(
                        "dim_varying needs one entry per spatial dim",
                        path=path,
                        group=group.name,
                        field=name,
                        expected=n_spatial,
                        found=len(dim_varying),
                    )
                info = WellFieldInfo(
                    name,
                    order,
                    _flag(dset, "sample_varying", path, group.name, name),
                    _flag(dset, "time_varying", path, group.name, name),
                    dim_varying,
                    dset.shape,
                    dset.dtype,
                )
                if not _shape_ok(info, n_traj, n_steps, sizes):
                    expected = _stored_shape(info, n_traj, n_steps, sizes)
                    why = f"n_trajectories/time/spatial dims/tensor order {order}"
                    _check_shape(dset, expected, path, group.name, name, why)
                _check_dtype(dset, "f", "floating point", path, group.name, name)
                fields[name] = info

        bcs = []
        for name, bc in f["boundary_conditions"].items():
            where = f"/boundary_conditions/{name}"
            if not isinstance(bc, h5py.Group):
                raise DataError("boundary condition must be a group", path=path, group=where)
            for key in ("bc_type", "associated_dims"):
                if key not in bc.attrs:
                    raise DataError(f"missing attribute {key!r}", path=path, group=where)
            bc_type = attr_text(bc.attrs["bc_type"]).upper()
            if bc_type not in BC_TYPES:
                raise DataError(
                    "unknown bc_type", path=path, group=where, expected=BC_TYPES, found=bc_type
                )
            assoc = tuple(attr_texts(bc.attrs["associated_dims"]))
            unknown = [d for d in assoc if d not in spatial]
            if unknown:
                raise DataError(
                    f"associated_dims names unknown dims {unknown}", path=path, group=where
                )
            info = _BCInfo(
                name,
                bc_type,
                assoc,
                tuple(attr_texts(bc.attrs.get("associated_fields", []))),
                _flag(bc, "sample_varying", path, where, None, default=False),
                _flag(bc, "time_varying", path, where, None, default=False),
            )
            mask = _dataset(bc, "mask", path)
            expected = (n_traj,) * info.sample_varying + (n_steps,) * info.time_varying
            expected += tuple(sizes[spatial.index(d)] for d in assoc)
            _check_shape(mask, expected, path, where, "mask", "associated_dims")
            _check_dtype(mask, "biu", "bool", path, where, "mask")
            bcs.append(info)

        return _Layout(
            dataset_name=attr_text(f.attrs["dataset_name"]),
            grid_type=attr_text(f.attrs["grid_type"]),
            n_trajectories=n_traj,
            n_steps=n_steps,
            spatial_dims=spatial,
            spatial_shape=tuple(sizes),
            time_sample_varying=time_sv,
            coord_sample_varying=coord_sv,
            simulation_parameters=params,
            scalars=scalars,
            fields=fields,
            bcs=bcs,
        )


def validate_well(path: str | Path) -> None:
    """Check a Well-format file; raise a :class:`DataError` naming the first problem.

    Structure first (groups, root attributes, ``field_names`` against datasets, shapes against
    ``n_trajectories`` / time / spatial dims / tensor order, dtypes), then values (NaN/inf,
    reported with the field and the first bad index). Data are scanned in blocks.
    """
    path = Path(path)
    with open_h5(path) as f:
        layout = _read_layout(f, path)
        for name in ("time", *layout.spatial_dims):
            check_finite_dataset(f["dimensions"][name], path=path, group="/dimensions", field=name)
        for name in layout.scalars:
            check_finite_dataset(f["scalars"][name], path=path, group="/scalars", field=name)
        for name, info in layout.fields.items():
            group = ORDER_GROUPS[info.order]
            check_finite_dataset(f[group][name], path=path, group=f"/{group}", field=name)
        for bc in layout.bcs:
            group = f["boundary_conditions"][bc.name]
            if "values" in group:
                where = f"/boundary_conditions/{bc.name}"
                check_finite_dataset(group["values"], path=path, group=where, field="values")


# --------------------------------------------------------------------------------------------
# writer


@dataclass
class GridField:
    """One field on the grid, in The Well's storage convention.

    ``data`` has shape (n_traj?, n_time?, *spatial, *(D,) * order): the trajectory axis only if
    ``sample_varying``, the time axis only if ``time_varying``, and a spatial axis only where
    ``dim_varying`` (default: all True) is True, as in The Well's docs; a non-varying axis may
    instead be kept with length 1, which the_well's own WellDataset loader needs. Spatial axes
    follow ``dimensions`` order; D is the number of spatial dims. Units are the dataset's (SI
    unless its card says otherwise).
    """

    name: str
    data: np.ndarray
    order: int
    sample_varying: bool = True
    time_varying: bool = True
    dim_varying: tuple[bool, ...] | None = None


@dataclass
class _BC:
    name: str
    bc_type: str
    associated_dims: list[str]
    associated_fields: list[str] = field(default_factory=list)
    mask: np.ndarray | None = None
    values: np.ndarray | None = None
    sample_varying: bool = False
    time_varying: bool = False


def _str_list(names: Sequence[str]) -> np.ndarray:
    return np.array([str(n) for n in names], dtype=h5py.string_dtype())


def _check_field(
    fld: GridField, sizes: Sequence[int], n_traj: int, n_steps: int, path: Path
) -> WellFieldInfo:
    """Describe a field to be written, checking order, dim_varying, shape, dtype and values."""
    group = f"/{ORDER_GROUPS[fld.order]}" if fld.order in (0, 1, 2) else None
    if group is None:
        raise DataError("tensor order must be 0, 1 or 2", path=path, field=fld.name)
    dim_varying = (True,) * len(sizes) if fld.dim_varying is None else tuple(fld.dim_varying)
    if len(dim_varying) != len(sizes):
        raise DataError(
            "dim_varying needs one entry per spatial dim",
            path=path,
            group=group,
            field=fld.name,
            expected=len(sizes),
            found=len(dim_varying),
        )
    data = np.asarray(fld.data)
    info = WellFieldInfo(
        fld.name,
        fld.order,
        fld.sample_varying,
        fld.time_varying,
        dim_varying,
        data.shape,
        data.dtype,
    )
    if not _shape_ok(info, n_traj, n_steps, sizes):
        expected = _stored_shape(info, n_traj, n_steps, sizes)
        raise DataError(
            f"shape inconsistent with n_trajectories={n_traj}, time={n_steps}, "
            f"spatial sizes {tuple(sizes)}, tensor order {fld.order}",
            path=path,
            group=group,
            field=fld.name,
            expected=expected,
            found=data.shape,
        )
    if data.dtype.kind != "f":
        raise DataError(
            "bad dtype", path=path, group=group, field=fld.name, expected="float", found=data.dtype
        )
    check_finite(data, path=path, group=group, field=fld.name)
    return info


def _as_scalar(name: str, value: Any, n_traj: int, n_steps: int, path: Path) -> GridField:
    """A scalar to be written, as a GridField in stored shape; axes inferred from its shape.

    A number or a one-element array is constant, stored 0-d (see the module docstring); an
    array is (n_traj, T), (T,) or (n_traj,). A GridField states its axes explicitly.
    """
    if isinstance(value, GridField):
        sv, tv, arr = value.sample_varying, value.time_varying, np.asarray(value.data)
    else:
        arr = np.asarray(value)
        sv = arr.ndim == 2 or (arr.ndim == 1 and arr.size == n_traj != n_steps)
        tv = arr.ndim == 2 or (arr.ndim == 1 and arr.size == n_steps != n_traj)
        if arr.ndim == 1 and arr.size > 1 and not (sv or tv):
            raise DataError(
                "cannot tell the scalar's axes from its shape; pass GridField(name, data, 0, "
                "sample_varying=..., time_varying=..., dim_varying=())",
                path=path,
                group="/scalars",
                field=name,
                found=arr.shape,
            )
    expected = (n_traj,) * sv + (n_steps,) * tv
    if arr.shape != expected and not (expected == () and arr.size == 1 and arr.ndim <= 1):
        raise DataError(
            "shape inconsistent with n_trajectories/time",
            path=path,
            group="/scalars",
            field=name,
            expected=expected or "a single number",
            found=arr.shape,
        )
    if arr.dtype.kind not in "fiub":
        raise DataError(
            "bad dtype", path=path, group="/scalars", field=name, expected="real", found=arr.dtype
        )
    check_finite(arr, path=path, group="/scalars", field=name)
    return GridField(name, arr.reshape(expected), 0, sv, tv, ())


def _default_mask(sizes: Sequence[int]) -> np.ndarray:
    """True on the first and last index along each associated dim (the domain's faces)."""
    mask = np.zeros(tuple(sizes), dtype=bool)
    for axis in range(len(sizes)):
        index = [slice(None)] * len(sizes)
        for end in (0, -1):
            index[axis] = end
            mask[tuple(index)] = True
    return mask


def _as_bc(
    spec: Mapping[str, Any],
    spatial: list[str],
    sizes: list[int],
    n_traj: int,
    n_steps: int,
    path: Path,
) -> _BC:
    """A boundary condition to be written, checked, with its default mask filled in."""
    unknown = set(spec) - _BC_KEYS
    if unknown:
        raise DataError(
            f"unknown boundary-condition keys {sorted(unknown)}",
            path=path,
            group="/boundary_conditions",
            expected=sorted(_BC_KEYS),
        )
    for key in ("name", "bc_type", "associated_dims"):
        if key not in spec:
            raise DataError(
                f"boundary condition lacks {key!r}", path=path, group="/boundary_conditions"
            )
    bc = _BC(**spec)
    where = f"/boundary_conditions/{bc.name}"
    bc.bc_type = str(bc.bc_type).upper()
    if bc.bc_type not in BC_TYPES:
        raise DataError(
            "unknown bc_type", path=path, group=where, expected=BC_TYPES, found=bc.bc_type
        )
    bc.associated_dims = attr_texts(bc.associated_dims)
    if not set(bc.associated_dims) <= set(spatial):
        raise DataError(
            "associated_dims names unknown dims",
            path=path,
            group=where,
            expected=spatial,
            found=bc.associated_dims,
        )
    dim_sizes = tuple(sizes[spatial.index(d)] for d in bc.associated_dims)
    expected = (n_traj,) * bc.sample_varying + (n_steps,) * bc.time_varying + dim_sizes
    if bc.mask is None:
        if bc.sample_varying or bc.time_varying:
            raise DataError("a varying boundary condition needs a mask", path=path, group=where)
        bc.mask = _default_mask(dim_sizes)
    bc.mask = np.asarray(bc.mask)
    if bc.mask.shape != expected or bc.mask.dtype.kind not in "biu":
        raise DataError(
            "mask must be boolean over (trajectories?, time?, *associated dims)",
            path=path,
            group=where,
            field="mask",
            expected=expected,
            found=f"{bc.mask.dtype}{bc.mask.shape}",
        )
    if bc.values is not None:
        bc.values = np.asarray(bc.values)
        check_finite(bc.values, path=path, group=where, field="values")
    return bc


def write_well(
    path: str | Path,
    *,
    dataset_name: str,
    dimensions: Mapping[str, np.ndarray],
    time: np.ndarray,
    fields: Sequence[GridField],
    boundary_conditions: Sequence[Mapping[str, Any]] | None = None,
    scalars: Mapping[str, float | np.ndarray | GridField] | None = None,
    simulation_parameters: Mapping[str, float] | None = None,
    grid_type: str = "cartesian",
    overwrite: bool = False,
) -> Path:
    """Write grid trajectories as one Well-format HDF5 file; return its path.

    ``dimensions`` maps spatial dim names, in axis order, to 1-D coordinates; ``time`` is (T,)
    (s). ``n_trajectories`` is read off the first sample-varying field (1 if none). Scalars are
    numbers (constant) or arrays whose axes are inferred from their shape; simulation
    parameters become root attributes and, as in The Well, constant scalars too. Boundary
    conditions are dicts with ``name``, ``bc_type``, ``associated_dims`` and optionally
    ``associated_fields``, ``mask`` (default: the faces of the associated dims), ``values``,
    ``sample_varying``, ``time_varying``.

    Everything is checked before anything is written, and the file is written under a
    temporary name and renamed when complete. Time-varying fields are chunked per
    (trajectory, time step) so that :meth:`WellReader.window` reads only its steps.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise DataError("file exists; pass overwrite=True to replace it", path=path)
    if grid_type not in GRID_TYPES:
        raise DataError("unknown grid_type", path=path, expected=GRID_TYPES, found=grid_type)
    spatial = list(dimensions)
    if not spatial:
        raise DataError("no spatial dimensions given", path=path, group="/dimensions")
    coords = {d: np.asarray(v) for d, v in dimensions.items()}
    time = np.asarray(time)
    for name, arr in {"time": time, **coords}.items():
        if arr.ndim != 1 or arr.dtype.kind not in "fiu":
            raise DataError(
                "coordinates must be 1-D real arrays",
                path=path,
                group="/dimensions",
                field=name,
                found=f"{arr.dtype}{arr.shape}",
            )
        check_finite(arr, path=path, group="/dimensions", field=name)
    sizes = [len(coords[d]) for d in spatial]
    n_steps = len(time)
    n_traj = next((np.shape(f.data)[0] for f in fields if f.sample_varying), 1)

    infos: dict[str, WellFieldInfo] = {}
    for fld in fields:
        if fld.name in infos:
            raise DataError("duplicate field name", path=path, field=fld.name)
        infos[fld.name] = _check_field(fld, sizes, n_traj, n_steps, path)
    params = dict(simulation_parameters or {})
    clash = sorted(set(params) & set(REQUIRED_ROOT_ATTRS))
    if clash:
        raise DataError(f"simulation parameter names clash with root attributes {clash}", path=path)
    all_scalars = {**params, **dict(scalars or {})}
    scalar_fields = [_as_scalar(n, v, n_traj, n_steps, path) for n, v in all_scalars.items()]
    bcs = [_as_bc(bc, spatial, sizes, n_traj, n_steps, path) for bc in boundary_conditions or []]

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["dataset_name"] = dataset_name
        f.attrs["grid_type"] = grid_type
        f.attrs["n_spatial_dims"] = np.int64(len(spatial))
        f.attrs["n_trajectories"] = np.int64(n_traj)
        f.attrs["simulation_parameters"] = _str_list(params)
        for p, v in params.items():
            f.attrs[p] = v

        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = _str_list(spatial)
        for name, arr in {"time": time, **coords}.items():
            dset = dims.create_dataset(name, data=arr)
            dset.attrs["sample_varying"] = False
            dset.attrs["time_varying"] = name == "time"

        bc_group = f.create_group("boundary_conditions")
        for bc in bcs:
            g = bc_group.create_group(bc.name)
            g.attrs["associated_dims"] = _str_list(bc.associated_dims)
            g.attrs["associated_fields"] = _str_list(bc.associated_fields)
            g.attrs["bc_type"] = bc.bc_type
            g.attrs["sample_varying"] = bool(bc.sample_varying)
            g.attrs["time_varying"] = bool(bc.time_varying)
            g.create_dataset("mask", data=bc.mask.astype(bool))
            if bc.values is not None:
                g.create_dataset("values", data=bc.values)

        sc_group = f.create_group("scalars")
        sc_group.attrs["field_names"] = _str_list([s.name for s in scalar_fields])
        for sc in scalar_fields:
            dset = sc_group.create_dataset(sc.name, data=sc.data)
            dset.attrs["sample_varying"] = sc.sample_varying
            dset.attrs["time_varying"] = sc.time_varying

        groups = [f.create_group(g) for g in ORDER_GROUPS]
        for order, group in enumerate(groups):
            names = [i.name for i in infos.values() if i.order == order]
            group.attrs["field_names"] = _str_list(names)
        for fld in fields:
            info = infos[fld.name]
            data = np.asarray(fld.data)
            n_lead = info.sample_varying + info.time_varying
            dset = groups[info.order].create_dataset(
                info.name, data=data, chunks=_chunks(data.shape, n_lead, data.dtype.itemsize)
            )
            dset.attrs["dim_varying"] = np.array(info.dim_varying, dtype=bool)
            dset.attrs["sample_varying"] = info.sample_varying
            dset.attrs["time_varying"] = info.time_varying
            if info.order == 2:
                transposed = np.swapaxes(data, -1, -2)
                dset.attrs["symmetric"] = bool(np.array_equal(data, transposed))
                dset.attrs["antisymmetric"] = bool(np.array_equal(data, -transposed))
    return path


def _chunks(shape: tuple[int, ...], n_lead: int, itemsize: int) -> tuple[int, ...] | None:
    """One chunk per leading (trajectory, time) index, halved spatially if over 16 MiB."""
    if n_lead == 0 or 0 in shape:
        return None
    chunk = [1] * n_lead + list(shape[n_lead:])
    while math.prod(chunk) * itemsize > _CHUNK_BYTES:
        axis = n_lead + int(np.argmax(chunk[n_lead:]))
        chunk[axis] = -(-chunk[axis] // 2)
    return tuple(chunk)


# --------------------------------------------------------------------------------------------
# reader


def _check_window(n_traj: int, n_steps: int, trajectory: int, start: int, length: int) -> None:
    if not 0 <= trajectory < n_traj:
        raise IndexError(f"trajectory {trajectory} out of range [0, {n_traj})")
    if length < 1 or start < 0 or start + length > n_steps:
        raise IndexError(f"window [{start}, {start + length}) outside the {n_steps} time steps")


class WellReader(LazyH5):
    """Random-access reader of one Well-format file (h5py, lazy, picklable).

    Opening checks the file's structure (see :func:`validate_well`, minus the value scan) and
    reads only metadata; :meth:`window` then reads just the requested trajectory and steps.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open_h5(self.path) as f:
            self._layout = _read_layout(f, self.path)
        lay = self._layout
        self.dataset_name: str = lay.dataset_name
        self.grid_type: str = lay.grid_type
        self.n_trajectories: int = lay.n_trajectories
        self.n_steps: int = lay.n_steps
        self.spatial_dims: tuple[str, ...] = lay.spatial_dims
        self.spatial_shape: tuple[int, ...] = lay.spatial_shape
        self.simulation_parameters: dict[str, Any] = lay.simulation_parameters
        #: every field by name: order, varying axes, stored shape and dtype
        self.fields: dict[str, WellFieldInfo] = lay.fields
        self.scalar_names: list[str] = list(lay.scalars)

    def _flat_names(self, time_varying: bool) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {0: [], 1: [], 2: []}
        for info in self.fields.values():
            if info.time_varying == time_varying:
                out[info.order] += _component_names(info.name, info.order, self.spatial_dims)
        return out

    @property
    def field_names(self) -> dict[int, list[str]]:
        """Time-varying fields per tensor order, flattened as The Well names them."""
        return self._flat_names(True)

    @property
    def constant_field_names(self) -> dict[int, list[str]]:
        """Time-constant fields per tensor order, flattened as The Well names them."""
        return self._flat_names(False)

    def window(
        self, trajectory: int, start: int, length: int, fields: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Steps ``start .. start + length - 1`` of one trajectory.

        Returns each field (all by default) as (length, *spatial[, D[, D]]); axes that the
        file does not store (constant in time, across trajectories or along a spatial dim)
        are broadcast. Only the requested slice is read from disk.
        """
        _check_window(self.n_trajectories, self.n_steps, trajectory, start, length)
        names = list(self.fields) if fields is None else list(fields)
        f = self._file()
        out = {}
        for name in names:
            if name not in self.fields:
                raise KeyError(f"no field {name!r} in {self.path}; fields: {list(self.fields)}")
            info = self.fields[name]
            index: tuple = (trajectory,) * info.sample_varying
            index += (slice(start, start + length),) * info.time_varying
            group = ORDER_GROUPS[info.order]
            with reading(self.path, f"/{group}", name):
                data = f[group][name][index]
            comps = (len(self.spatial_dims),) * info.order
            full = (length, *self.spatial_shape, *comps)
            stored = (length if info.time_varying else 1,)
            stored += tuple(
                n if v else 1 for n, v in zip(self.spatial_shape, info.dim_varying, strict=True)
            )
            data = data.reshape(stored + comps)
            out[name] = data if data.shape == full else np.broadcast_to(data, full).copy()
        return out

    def time(self, trajectory: int = 0) -> np.ndarray:
        """Time of each step of a trajectory, (T,)."""
        dset = self._file()["dimensions"]["time"]
        with reading(self.path, "/dimensions", "time"):
            return dset[trajectory] if self._layout.time_sample_varying else dset[()]

    def coordinates(self, trajectory: int = 0) -> dict[str, np.ndarray]:
        """Grid coordinates per spatial dim, each (n_i,)."""
        dims = self._file()["dimensions"]
        out = {}
        for d in self.spatial_dims:
            with reading(self.path, "/dimensions", d):
                sv = self._layout.coord_sample_varying[d]
                out[d] = dims[d][trajectory] if sv else dims[d][()]
        return out

    def scalars(self, trajectory: int = 0) -> dict[str, np.ndarray]:
        """Scalars of one trajectory: () when constant in time, (T,) otherwise."""
        group = self._file()["scalars"]
        out = {}
        for name, info in self._layout.scalars.items():
            with reading(self.path, "/scalars", name):
                data = group[name][trajectory] if info.sample_varying else group[name][()]
            out[name] = data if info.time_varying else np.asarray(data).reshape(())
        return out

    @property
    def boundary_conditions(self) -> list[dict[str, Any]]:
        """Each boundary condition: name, bc_type, associated dims/fields, flags, mask, values."""
        group = self._file()["boundary_conditions"]
        out = []
        for bc in self._layout.bcs:
            with reading(self.path, f"/boundary_conditions/{bc.name}"):
                entry = {
                    "name": bc.name,
                    "bc_type": bc.bc_type,
                    "associated_dims": list(bc.associated_dims),
                    "associated_fields": list(bc.associated_fields),
                    "sample_varying": bc.sample_varying,
                    "time_varying": bc.time_varying,
                    "mask": group[bc.name]["mask"][()].astype(bool),
                }
                if "values" in group[bc.name]:
                    entry["values"] = group[bc.name]["values"][()]
            out.append(entry)
        return out

    def __repr__(self) -> str:
        return (
            f"WellReader({str(self.path)!r}: {self.dataset_name}, {self.n_trajectories} "
            f"trajectories x {self.n_steps} steps on {self.spatial_shape})"
        )


# --------------------------------------------------------------------------------------------
# xarray view and summary


def _rows(dset: h5py.Dataset, rows: np.ndarray) -> np.ndarray:
    """Read ``dset[rows]`` along axis 0 with a slice when ``rows`` is contiguous."""
    if len(rows) and np.array_equal(rows, np.arange(rows[0], rows[0] + len(rows))):
        return dset[int(rows[0]) : int(rows[0]) + len(rows)]
    order = np.unique(rows)
    return dset[order][np.searchsorted(order, rows)]


def to_xarray_well(
    path: str | Path, trajectories: int | slice | Sequence[int] | None = None
) -> xr.Dataset:
    """A Well file as an ``xarray.Dataset`` with named dims.

    Dims: ``sample`` (trajectory index), ``time``, the spatial dims (e.g. ``x``, ``y``) and,
    for tensor fields, components ``i`` (t1) and ``i``, ``j`` (t2) labelled by spatial dim.
    Each variable keeps only the axes the file stores (xarray broadcasts the rest); boundary
    masks appear as ``bc_<name>``. Only the selected ``trajectories`` (default: all) are read,
    with numpy (no dask).
    """
    reader = WellReader(path)
    lay = reader._layout
    rows = np.arange(lay.n_trajectories)[slice(None) if trajectories is None else trajectories]
    rows = np.atleast_1d(rows)
    coords: dict[str, Any] = {"sample": rows}
    max_order = max((info.order for info in lay.fields.values()), default=0)
    for comp in ["i", "j"][:max_order]:
        coords[comp] = list(lay.spatial_dims)
    try:
        f = reader._file()
        with reading(reader.path, "/dimensions"):
            for d in ("time", *lay.spatial_dims):
                sv = lay.time_sample_varying if d == "time" else lay.coord_sample_varying[d]
                dset = f["dimensions"][d]
                if sv:  # per-trajectory coordinates cannot be the dim's index
                    coords[f"{d}_per_sample"] = (("sample", d), _rows(dset, rows))
                else:
                    coords[d] = dset[()]
        data_vars = {}
        for name, info in {**lay.scalars, **lay.fields}.items():
            group = "scalars" if name in lay.scalars else ORDER_GROUPS[info.order]
            dset = f[group][name]
            with reading(reader.path, f"/{group}", name):
                data = _rows(dset, rows) if info.sample_varying else dset[()]
            dims = ["sample"] * info.sample_varying + ["time"] * info.time_varying
            attrs = {
                "sample_varying": int(info.sample_varying),
                "time_varying": int(info.time_varying),
            }
            if group == "scalars":
                data = np.asarray(data).reshape(data.shape if dims else ())
            else:  # a kept length-1 axis of a non-varying dim is dropped here
                varying = zip(lay.spatial_dims, lay.spatial_shape, info.dim_varying, strict=True)
                space = [(d, n) for d, n, v in varying if v]
                comps = (len(lay.spatial_dims),) * info.order
                data = data.reshape(data.shape[: len(dims)] + tuple(n for _, n in space) + comps)
                dims += [d for d, _ in space] + ["i", "j"][: info.order]
                attrs["tensor_order"] = info.order
                attrs["dim_varying"] = np.array(info.dim_varying, dtype=np.int8)
            data_vars[name] = xr.Variable(dims, data, attrs)
        for bc in reader.boundary_conditions:
            mask = bc["mask"]
            if bc["sample_varying"]:
                mask = mask[rows]
            dims = ["sample"] * bc["sample_varying"] + ["time"] * bc["time_varying"]
            attrs = {
                "bc_type": bc["bc_type"],
                "associated_dims": bc["associated_dims"],
                "associated_fields": bc["associated_fields"],
            }
            data_vars[f"bc_{bc['name']}"] = xr.Variable(dims + bc["associated_dims"], mask, attrs)
        attrs = {k: attr_plain(v) for k, v in f.attrs.items()}
    finally:
        reader.close()
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def info_well(path: str | Path) -> str:
    """A short human-readable summary of a Well file (structure only, no data scan)."""
    with WellReader(path) as r:
        shape = ", ".join(f"{d}={n}" for d, n in zip(r.spatial_dims, r.spatial_shape, strict=True))
        lines = [
            f"{r.path}: The Well format, dataset {r.dataset_name!r} ({r.grid_type})",
            f"  {r.n_trajectories} trajectories x {r.n_steps} steps on {shape}",
        ]
        if r.simulation_parameters:
            lines.append(f"  simulation parameters: {r.simulation_parameters}")
        for info in r.fields.values():
            axes = "sample " * info.sample_varying + "time " * info.time_varying
            lines.append(
                f"  t{info.order} {info.name}: {info.dtype}{list(info.shape)} "
                f"(varies over {axes or 'nothing '}dims {list(info.dim_varying)})"
            )
        for name, info in r._layout.scalars.items():
            lines.append(f"  scalar {name}: {info.dtype}{list(info.shape)}")
        for bc in r._layout.bcs:
            lines.append(f"  boundary {bc.name}: {bc.bc_type} on {list(bc.associated_dims)}")
    return "\n".join(lines)
