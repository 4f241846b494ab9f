"""Mesh trajectories (MeshGraphNet data: fluids, cloth, fracture) in HDF5 / netCDF-4.

Layout, written with h5netcdf (netCDF-4 dimension scales) and read with h5py::

    /                         attrs schema = "simsurrogate.mesh", schema_version = 1, user attrs
    /trajectories/000000      one group per trajectory (000000, 000001, ...)
        dims   node, cell, vertex (nodes per cell), spatial (2 or 3), time,
               edge and endpoint (= 2) when edges are stored, one dim per field component axis
        mesh_pos   (node, spatial)      float, rest / reference positions
        cells      (cell, vertex)       int64, node indices; 2-D triangles counter-clockwise
        node_type  (node,)              int64
        edge_index (endpoint, edge)     int64, (sender, receiver) rows; only with edges
        time       (time,)              float64 coordinate, s (step index when not given)
        <field>    (time, node, ...) or (time, edge, ...), one chunk per time step
        <static>   (node | cell | edge, ...) static extra fields

A component axis is named ``spatial`` when it has the spatial size, otherwise ``<field>_dim``
(``<field>_dim0``, ``<field>_dim1``... for several axes): ``velocity`` is (time, node, spatial)
and ``pressure`` (time, node, pressure_dim). Any trajectory opens in xarray with
``xarray.open_dataset(path, group="trajectories/000000", engine="h5netcdf")``.

Attributes: strings, ints and floats are stored as they are; anything else (dicts, lists,
bools) as JSON text, its key listed in the attribute ``json_attrs``; readers decode both.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5netcdf
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
from simsurrogate.data.node_types import check_node_types

SCHEMA = "simsurrogate.mesh"
SCHEMA_VERSION = 1
TRAJECTORIES = "trajectories"
_STATIC = ("mesh_pos", "cells", "node_type", "edge_index")
_RESERVED = {*_STATIC, "time", "node", "cell", "vertex", "spatial", "edge", "endpoint"}
_STATIC_DIMS = {
    "mesh_pos": ("node", "spatial"),
    "cells": ("cell", "vertex"),
    "node_type": ("node",),
    "edge_index": ("endpoint", "edge"),
    "time": ("time",),
}
_PHONY = "This is a netCDF dimension but not a netCDF variable"
_RESERVED_ATTRS = ("schema", "schema_version", "json_attrs", "_NCProperties")


# --------------------------------------------------------------------------------------------
# attributes


def _encode_attrs(attrs: Mapping[str, Any] | None, path: Path, group: str) -> dict[str, Any]:
    """User attributes for netCDF: str/int/float as they are, anything else as JSON."""
    out: dict[str, Any] = {}
    as_json = []
    for key, value in (attrs or {}).items():
        if key in _RESERVED_ATTRS:
            raise DataError(f"attribute name {key!r} is reserved", path=path, group=group)
        if isinstance(value, str | int | float | np.integer | np.floating) and not isinstance(
            value, bool | np.bool_
        ):
            out[key] = value
            continue
        try:
            out[key] = json.dumps(value.tolist() if isinstance(value, np.ndarray) else value)
        except TypeError as exc:
            raise DataError(
                f"attribute {key!r} is neither a number, a string nor JSON-serialisable ({exc})",
                path=path,
                group=group,
            ) from None
        as_json.append(key)
    if as_json:
        out["json_attrs"] = as_json
    return out


def _decode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`_encode_attrs`, for attributes read by h5py or xarray."""
    as_json = set(attr_texts(attrs.get("json_attrs", [])))
    out = {}
    for key, value in attrs.items():
        if key in _RESERVED_ATTRS:
            continue
        value = attr_plain(value)
        if isinstance(value, list) and len(value) == 1:  # netCDF stores numbers as 1-element arrays
            value = value[0]
        out[key] = json.loads(value) if key in as_json else value
    return out


# --------------------------------------------------------------------------------------------
# checks shared by the writer (arrays in memory) and the validator (arrays read from a file)


def _check_kind(arr: np.ndarray, kinds: str, what: str, path: Path, group: str, name: str) -> None:
    if arr.dtype.kind not in kinds:
        raise DataError(
            "bad dtype", path=path, group=group, field=name, expected=what, found=arr.dtype
        )


def check_mesh(
    mesh_pos: np.ndarray,
    cells: np.ndarray,
    node_type: np.ndarray,
    *,
    path: str | Path | None = None,
    group: str | None = None,
) -> None:
    """Check a static mesh; raise a :class:`DataError` naming the first problem.

    ``mesh_pos`` (N, 2 or 3) float, ``cells`` (C, V) int node indices, ``node_type`` (N,) int.
    Checked in order: dtypes and shapes, NaN/inf, node types outside the MeshGraphNets codes
    (:class:`~simsurrogate.data.node_types.NodeType`), cells referencing nodes out of range, nodes
    no cell uses, duplicate nodes (identical positions), degenerate cells (zero area or
    volume) and, for 2-D triangles, inverted ones (clockwise, negative signed area).
    """
    path = None if path is None else Path(path)
    _check_kind(mesh_pos, "f", "float", path, group, "mesh_pos")
    _check_kind(cells, "iu", "integer", path, group, "cells")
    _check_kind(node_type, "iu", "integer", path, group, "node_type")
    if mesh_pos.ndim != 2 or mesh_pos.shape[1] not in (2, 3):
        raise DataError(
            "bad shape",
            path=path,
            group=group,
            field="mesh_pos",
            expected="(node, 2 or 3)",
            found=mesh_pos.shape,
        )
    n = mesh_pos.shape[0]
    if cells.ndim != 2 or cells.shape[1] < 2:
        raise DataError(
            "bad shape",
            path=path,
            group=group,
            field="cells",
            expected="(cell, vertex >= 2)",
            found=cells.shape,
        )
    if node_type.shape != (n,):
        raise DataError(
            "shape inconsistent with node count",
            path=path,
            group=group,
            field="node_type",
            expected=(n,),
            found=node_type.shape,
        )
    check_finite(mesh_pos, path=path, group=group, field="mesh_pos")
    try:
        check_node_types(node_type)
    except ValueError as exc:
        raise DataError(str(exc), path=path, group=group, field="node_type") from None
    _check_node_indices(cells, n, path, group, "cells")
    unused = np.bincount(cells.ravel().astype(np.int64), minlength=n) == 0
    if unused.any():
        raise DataError(
            f"node {int(np.argmax(unused))} is not used by any cell (unreferenced node)",
            path=path,
            group=group,
            field="cells",
        )
    _, first, inverse = np.unique(mesh_pos, axis=0, return_index=True, return_inverse=True)
    dup = np.flatnonzero(first[inverse.ravel()] != np.arange(n))
    if dup.size:
        j = int(dup[0])
        i = int(first[inverse.ravel()[j]])
        raise DataError(
            f"duplicate nodes {i} and {j}: identical mesh_pos {mesh_pos[j].tolist()}",
            path=path,
            group=group,
            field="mesh_pos",
        )
    _check_cell_sizes(mesh_pos.astype(np.float64), cells, path, group)


def _check_cell_sizes(pos: np.ndarray, cells: np.ndarray, path: Path | None, group: str | None):
    """Degenerate triangles/tets; inverted (clockwise) triangles in 2-D."""
    n_vertex, dim = cells.shape[1], pos.shape[1]
    if not (n_vertex == 3 or (n_vertex == 4 and dim == 3)):
        return  # quads and other polygons: no size check
    extent = float(np.ptp(pos, axis=0).max()) or 1.0
    corners = [pos[cells[:, k]] for k in range(n_vertex)]
    edges = [c - corners[0] for c in corners[1:]]
    if n_vertex == 3 and dim == 2:
        size = 0.5 * (edges[0][:, 0] * edges[1][:, 1] - edges[0][:, 1] * edges[1][:, 0])
        what, tol = "signed area", 1e-12 * extent**2
    elif n_vertex == 3:
        size = 0.5 * np.linalg.norm(np.cross(edges[0], edges[1]), axis=1)
        what, tol = "area", 1e-12 * extent**2
    else:
        size = np.abs(np.einsum("ij,ij->i", np.cross(edges[0], edges[1]), edges[2])) / 6.0
        what, tol = "volume", 1e-18 * extent**3
    bad = size <= tol
    if bad.any():
        c = int(np.argmax(bad))
        kind = "inverted (clockwise)" if size[c] < -tol else "degenerate"
        raise DataError(
            f"cell {c} {cells[c].tolist()} is {kind}",
            path=path,
            group=group,
            field="cells",
            expected="counter-clockwise, non-zero area" if what == "signed area" else "> 0",
            found=f"{what} {size[c]:.3g}",
        )


def _check_edge_index(edge_index: np.ndarray, n: int, path: Path, group: str) -> None:
    _check_kind(edge_index, "iu", "integer", path, group, "edge_index")
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise DataError(
            "bad shape",
            path=path,
            group=group,
            field="edge_index",
            expected="(2, edge)",
            found=edge_index.shape,
        )
    _check_node_indices(edge_index, n, path, group, "edge_index")


def _check_node_indices(index: np.ndarray, n: int, path: Path, group: str, name: str) -> None:
    """Raise naming the first entry of a 2-D node-index array outside ``0 <= index < n``."""
    bad = (index < 0) | (index >= n)
    if bad.any():
        r, c = (int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{name}[{r}, {c}] references a node out of range",
            path=path,
            group=group,
            field=name,
            expected=f"0 <= index < {n}",
            found=int(index[r, c]),
        )


def _check_time(time: np.ndarray, path: Path, group: str) -> None:
    _check_kind(time, "fiu", "real", path, group, "time")
    check_finite(time, path=path, group=group, field="time")
    if time.ndim != 1:
        raise DataError("time must be 1-D", path=path, group=group, field="time", found=time.shape)
    if time.size > 1 and not (np.diff(time) > 0).all():
        k = int(np.argmax(np.diff(time) <= 0)) + 1
        raise DataError(
            f"time is not strictly increasing at step {k}",
            path=path,
            group=group,
            field="time",
            found=f"{time[k - 1]} then {time[k]}",
        )


def _component_dims(name: str, comp_shape: tuple[int, ...], n_spatial: int) -> tuple[str, ...]:
    if comp_shape == (n_spatial,):
        return ("spatial",)
    if len(comp_shape) == 1:
        return (f"{name}_dim",)
    return tuple(f"{name}_dim{k}" for k in range(len(comp_shape)))


# --------------------------------------------------------------------------------------------
# writer


@dataclass
class _Var:
    """A variable to create: name, netCDF dims, shape (time axis first if time-dependent)."""

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype
    data: np.ndarray | None = None


class TrajectoryStream:
    """Appends time steps, one at a time, to a trajectory from :meth:`MeshWriter.begin_trajectory`.

    Memory stays flat: each step goes to disk as it is appended (one chunk per step).
    """

    def __init__(self, writer: MeshWriter, group: h5netcdf.Group, shapes: dict[str, tuple]):
        self._writer = writer
        self._group = group
        self._shapes = shapes
        #: group path, e.g. "trajectories/000003"
        self.group: str = group.name.lstrip("/")
        self.n_steps = 0
        self._last_time = -math.inf

    def append(self, time: float, **fields: np.ndarray) -> None:
        """Write step ``n_steps``: its time (s) and every field, each of its per-step shape.

        Raises a :class:`DataError` naming the step if a field is missing, unexpected, of
        the wrong shape or non-finite, or if time does not increase; nothing of that step is
        written then.
        """
        self._writer._check_open()
        k, path, group = self.n_steps, self._writer.path, self.group
        if set(fields) != set(self._shapes):
            raise DataError(
                f"step {k}: fields do not match those the trajectory was begun with",
                path=path,
                group=group,
                expected=sorted(self._shapes),
                found=sorted(fields),
            )
        if not (math.isfinite(time) and time > self._last_time):
            raise DataError(
                f"step {k}: time must be finite and increasing",
                path=path,
                group=group,
                field="time",
                expected=f"> {self._last_time}",
                found=time,
            )
        arrays = {}
        for name, value in fields.items():
            arr = np.asarray(value)
            if arr.shape != self._shapes[name]:
                raise DataError(
                    f"step {k}: wrong shape",
                    path=path,
                    group=group,
                    field=name,
                    expected=self._shapes[name],
                    found=arr.shape,
                )
            if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
                first = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
                raise DataError(
                    f"step {k}: non-finite value {arr[first]!r} at index {(k, *first)}",
                    path=path,
                    group=group,
                    field=name,
                )
            arrays[name] = arr
        self._group.resize_dimension("time", k + 1)
        self._group.variables["time"][k] = time
        for name, arr in arrays.items():
            self._group.variables[name][k] = arr
        self.n_steps = k + 1
        self._last_time = time


class MeshWriter:
    """Writes a mesh-trajectory file; use as a context manager (or call :meth:`close`).

    The whole file is written under a temporary name and renamed to ``path`` on
    :meth:`close`; if the ``with`` block raises, the temporary file is removed and nothing
    appears under ``path`` (an existing file there stays untouched).
    """

    def __init__(
        self, path: str | Path, *, attrs: Mapping[str, Any] | None = None, overwrite: bool = False
    ) -> None:
        self.path = Path(path)
        if self.path.exists() and not overwrite:
            raise DataError("file exists; pass overwrite=True to replace it", path=self.path)
        root_attrs = _encode_attrs(attrs, self.path, "/")
        with contextlib.ExitStack() as stack:  # removes the temporary file if this fails
            tmp = stack.enter_context(atomic_path(self.path))
            self._nc: h5netcdf.File | None = stack.enter_context(h5netcdf.File(tmp, "w"))
            self._nc.attrs["schema"] = SCHEMA
            self._nc.attrs["schema_version"] = np.int64(SCHEMA_VERSION)
            self._nc.attrs.update(root_attrs)
            self._trajectories = self._nc.create_group(TRAJECTORIES)
            self._stack = stack.pop_all()
        self._count = 0

    def _check_open(self) -> None:
        if self._nc is None:
            raise RuntimeError(f"MeshWriter for {self.path} is closed")

    def _static_vars(
        self,
        group: str,
        mesh_pos: np.ndarray,
        cells: np.ndarray,
        node_type: np.ndarray,
        edge_index: np.ndarray | None,
        static_fields: Mapping[str, np.ndarray] | None,
    ) -> list[_Var]:
        """Checked static variables of a new trajectory."""
        mesh_pos, cells, node_type = (np.asarray(a) for a in (mesh_pos, cells, node_type))
        check_mesh(mesh_pos, cells, node_type, path=self.path, group=group)
        out = [
            _Var("mesh_pos", _STATIC_DIMS["mesh_pos"], mesh_pos.shape, mesh_pos.dtype, mesh_pos),
            _Var("cells", _STATIC_DIMS["cells"], cells.shape, np.dtype(np.int64), cells),
            _Var("node_type", ("node",), node_type.shape, np.dtype(np.int64), node_type),
        ]
        if edge_index is not None:
            edge_index = np.asarray(edge_index)
            _check_edge_index(edge_index, len(mesh_pos), self.path, group)
            out.append(
                _Var(
                    "edge_index",
                    _STATIC_DIMS["edge_index"],
                    edge_index.shape,
                    np.dtype(np.int64),
                    edge_index,
                )
            )
        sizes = {"node": len(mesh_pos), "cell": len(cells)}
        if edge_index is not None:
            sizes["edge"] = edge_index.shape[1]
        for name, value in (static_fields or {}).items():
            arr = np.asarray(value)
            first = next((d for d, n in sizes.items() if arr.ndim and arr.shape[0] == n), None)
            if first is None:
                raise DataError(
                    "static field must have a leading node, cell or edge axis",
                    path=self.path,
                    group=group,
                    field=name,
                    expected=sizes,
                    found=arr.shape,
                )
            out.append(
                self._field_var(group, name, arr, (first,), arr.shape[1:], mesh_pos.shape[1])
            )
        return out

    def _field_var(
        self,
        group: str,
        name: str,
        arr: np.ndarray | None,
        lead: tuple[str, ...],
        comp: tuple[int, ...],
        n_spatial: int,
        dtype: np.dtype | None = None,
    ) -> _Var:
        if name in _RESERVED:
            raise DataError("field name is reserved", path=self.path, group=group, field=name)
        dtype = np.dtype(dtype if arr is None else arr.dtype)
        if dtype.kind not in "fiu":
            raise DataError(
                "bad dtype",
                path=self.path,
                group=group,
                field=name,
                expected="float or int",
                found=dtype,
            )
        if arr is not None:
            check_finite(arr, path=self.path, group=group, field=name)
        shape = () if arr is None else arr.shape
        return _Var(name, lead + _component_dims(name, comp, n_spatial), shape, dtype, arr)

    def _create(
        self,
        static: list[_Var],
        fields: list[_Var],
        time: np.ndarray | None,
        attrs: dict[str, Any],
        time_units: str = "s",
    ) -> h5netcdf.Group:
        """Create the next trajectory group; time unlimited (streaming) when ``time`` is None."""
        name = f"{self._count:06d}"
        group = self._trajectories.create_group(name)
        dims: dict[str, int | None] = {"time": None if time is None else len(time)}
        for var in static + fields:
            lead = 1 if var.dims[0] == "time" else 0
            dims.update(zip(var.dims[lead:], var.shape[lead:], strict=True))
        group.dimensions = dims
        if time is None:
            tvar = group.create_variable("time", ("time",), np.float64, chunks=(512,))
        else:
            tvar = group.create_variable("time", ("time",), data=time)
        tvar.attrs["units"] = time_units
        for var in static:
            group.create_variable(var.name, var.dims, var.dtype, data=var.data)
        for var in fields:
            chunks = (1, *(dims[d] for d in var.dims[1:]))
            if var.dims[0] != "time":
                chunks = None
            group.create_variable(var.name, var.dims, var.dtype, data=var.data, chunks=chunks)
        group.attrs.update(attrs)
        self._count += 1
        return group

    def add_trajectory(
        self,
        *,
        mesh_pos: np.ndarray,
        cells: np.ndarray,
        node_type: np.ndarray,
        fields: Mapping[str, np.ndarray],
        time: np.ndarray | None = None,
        edge_index: np.ndarray | None = None,
        edge_fields: Mapping[str, np.ndarray] | None = None,
        static_fields: Mapping[str, np.ndarray] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> str:
        """Write one whole trajectory; return its group path (e.g. ``"trajectories/000000"``).

        ``fields`` are (T, N, ...) node fields, ``edge_fields`` (T, E, ...) with
        ``edge_index`` (2, E); ``time`` (T,) in s, default the step index. Everything is
        checked (:func:`check_mesh`, shapes, dtypes, NaN/inf) before anything is written.
        """
        self._check_open()
        group = f"{TRAJECTORIES}/{self._count:06d}"
        if edge_fields and edge_index is None:
            raise DataError("edge_fields need edge_index", path=self.path, group=group)
        static = self._static_vars(group, mesh_pos, cells, node_type, edge_index, static_fields)
        n_nodes, n_spatial = static[0].shape
        all_fields = {**dict(fields), **dict(edge_fields or {})}
        if not all_fields:
            raise DataError("no time-dependent fields given", path=self.path, group=group)
        units = "s" if time is not None else "1"  # no time given: the step index
        n_steps = len(time) if time is not None else np.shape(next(iter(all_fields.values())))[0]
        time = np.arange(n_steps, dtype=np.float64) if time is None else np.asarray(time)
        _check_time(time, self.path, group)
        out = []
        for name, value in all_fields.items():
            arr = np.asarray(value)
            edge = name not in fields
            n = edge_index.shape[1] if edge else n_nodes
            if arr.ndim < 2 or arr.shape[:2] != (n_steps, n):
                raise DataError(
                    f"shape inconsistent with time count / {'edge' if edge else 'node'} count",
                    path=self.path,
                    group=group,
                    field=name,
                    expected=f"({n_steps}, {n}, ...)",
                    found=arr.shape,
                )
            lead = ("time", "edge" if edge else "node")
            out.append(self._field_var(group, name, arr, lead, arr.shape[2:], n_spatial))
        duplicate = set(fields) & set(edge_fields or {}) | set(all_fields) & set(
            static_fields or {}
        )
        if duplicate:
            raise DataError(
                f"field names used twice: {sorted(duplicate)}", path=self.path, group=group
            )
        encoded = _encode_attrs(attrs, self.path, group)
        return self._create(static, out, time, encoded, units).name.lstrip("/")

    def begin_trajectory(
        self,
        *,
        mesh_pos: np.ndarray,
        cells: np.ndarray,
        node_type: np.ndarray,
        field_shapes: Mapping[str, tuple[int, ...]],
        dtype: np.dtype | type = np.float32,
        edge_index: np.ndarray | None = None,
        edge_field_shapes: Mapping[str, tuple[int, ...]] | None = None,
        static_fields: Mapping[str, np.ndarray] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> TrajectoryStream:
        """Start a trajectory written step by step with :meth:`TrajectoryStream.append`.

        ``field_shapes`` are per-step shapes (N, ...) of node fields, ``edge_field_shapes``
        (E, ...) of edge fields (these need ``edge_index``); all are stored as ``dtype``.
        """
        self._check_open()
        group = f"{TRAJECTORIES}/{self._count:06d}"
        if edge_field_shapes and edge_index is None:
            raise DataError("edge_field_shapes need edge_index", path=self.path, group=group)
        static = self._static_vars(group, mesh_pos, cells, node_type, edge_index, static_fields)
        n_nodes, n_spatial = static[0].shape
        shapes = {**dict(field_shapes), **dict(edge_field_shapes or {})}
        out = []
        for name, shape in shapes.items():
            shape = tuple(int(s) for s in shape)
            edge = name not in field_shapes
            n = edge_index.shape[1] if edge else n_nodes
            if not shape or shape[0] != n:
                raise DataError(
                    f"per-step shape must start with the {'edge' if edge else 'node'} count",
                    path=self.path,
                    group=group,
                    field=name,
                    expected=f"({n}, ...)",
                    found=shape,
                )
            lead = ("time", "edge" if edge else "node")
            var = self._field_var(group, name, None, lead, shape[1:], n_spatial, np.dtype(dtype))
            var.shape = (0, *shape)
            out.append(var)
            shapes[name] = shape
        encoded = _encode_attrs(attrs, self.path, group)
        return TrajectoryStream(self, self._create(static, out, None, encoded), shapes)

    def close(self) -> None:
        """Finish the file and move it to its final name."""
        if self._nc is not None:
            self._nc = None
            self._stack.close()  # closes the netCDF file, then renames it

    def _abort(self, exc_type, exc, tb) -> None:
        if self._nc is not None:
            self._nc = None
            self._stack.__exit__(exc_type, exc, tb)  # closes the file, then removes it

    def __enter__(self) -> MeshWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._abort(exc_type, exc, tb)


def write_mesh(
    path: str | Path,
    trajectories: Sequence[Mapping[str, Any]],
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write trajectories, each a dict of :meth:`MeshWriter.add_trajectory` arguments."""
    with MeshWriter(path, attrs=attrs, overwrite=overwrite) as writer:
        for trajectory in trajectories:
            writer.add_trajectory(**trajectory)
    return Path(path)


# --------------------------------------------------------------------------------------------
# reading


@dataclass(frozen=True)
class _VarInfo:
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: np.dtype


def _check_schema(f: h5py.File, path: Path) -> list[str]:
    """Check the root attributes; return the trajectory group paths in order."""
    if "schema" not in f.attrs:
        raise DataError(f"not a {SCHEMA} file: missing root attribute 'schema'", path=path)
    schema = attr_text(f.attrs["schema"])
    if schema != SCHEMA:
        raise DataError("unknown schema", path=path, group="/", expected=SCHEMA, found=schema)
    if "schema_version" not in f.attrs:
        raise DataError("missing root attribute 'schema_version'", path=path, group="/")
    version = np.asarray(f.attrs["schema_version"]).ravel()
    if version.size != 1 or version.dtype.kind not in "iu" or int(version[0]) != SCHEMA_VERSION:
        raise DataError(
            "unknown schema_version",
            path=path,
            group="/",
            expected=SCHEMA_VERSION,
            found=version.tolist(),
        )
    if not isinstance(f.get(TRAJECTORIES), h5py.Group):
        raise DataError(f"missing group {TRAJECTORIES!r}", path=path)
    return [f"{TRAJECTORIES}/{name}" for name in sorted(f[TRAJECTORIES])]


def _var_dims(dset: h5py.Dataset, path: Path, group: str, name: str) -> tuple[str, ...]:
    """The netCDF dimension names of a variable, from its HDF5 dimension scales."""
    if attr_text(dset.attrs.get("CLASS", b"")) == "DIMENSION_SCALE":
        return (name,)  # a coordinate variable (e.g. time) is its own dimension
    names = []
    for axis in dset.dims:
        if len(axis) == 0:
            raise DataError(
                "variable has no netCDF dimension (write files with MeshWriter / h5netcdf)",
                path=path,
                group=group,
                field=name,
            )
        names.append(axis[0].name.rsplit("/", 1)[-1])
    return tuple(names)


def _scan_group(g: h5py.Group, path: Path) -> dict[str, _VarInfo]:
    """Variables of a trajectory group with their dims; checks required ones and sizes."""
    group = g.name.lstrip("/")
    out = {}
    with reading(path, group):
        for name, dset in g.items():
            if not isinstance(dset, h5py.Dataset):
                raise DataError(f"unexpected subgroup {name!r}", path=path, group=group)
            if attr_text(dset.attrs.get("NAME", b"")).startswith(_PHONY):
                continue  # a dimension without a variable
            out[name] = _VarInfo(_var_dims(dset, path, group, name), dset.shape, dset.dtype)
    for name in ("mesh_pos", "cells", "node_type", "time"):
        if name not in out:
            raise DataError(f"missing variable {name!r}", path=path, group=group)
    sizes: dict[str, int] = {}
    static_first = sorted(
        out, key=lambda n: list(_STATIC_DIMS).index(n) if n in _STATIC_DIMS else 9
    )
    for name in static_first:
        var = out[name]
        want = _STATIC_DIMS.get(name)
        if want is not None and var.dims != want:
            raise DataError(
                "wrong dimensions",
                path=path,
                group=group,
                field=name,
                expected=want,
                found=var.dims,
            )
        for dim, n in zip(var.dims, var.shape, strict=True):
            if sizes.setdefault(dim, n) != n:
                raise DataError(
                    f"shape inconsistent with the {dim} count",
                    path=path,
                    group=group,
                    field=name,
                    expected=f"{dim} = {sizes[dim]}",
                    found=var.shape,
                )
        if name in _STATIC_DIMS:
            continue
        if var.dims[0] == "time" and (len(var.dims) < 2 or var.dims[1] not in ("node", "edge")):
            raise DataError(
                "a time-dependent field must be (time, node, ...) or (time, edge, ...)",
                path=path,
                group=group,
                field=name,
                found=var.dims,
            )
        if var.dtype.kind not in "fiu":
            raise DataError(
                "bad dtype",
                path=path,
                group=group,
                field=name,
                expected="float or int",
                found=var.dtype,
            )
    if "edge" in sizes and "edge_index" not in out:
        raise DataError("edge fields without edge_index", path=path, group=group)
    return out


def validate_mesh(path: str | Path) -> None:
    """Check a mesh-trajectory file; raise a :class:`DataError` naming the first problem.

    Schema and version; then per trajectory: required variables and their dims, sizes against
    the node / cell / edge / time counts, dtypes, the mesh (:func:`check_mesh`), edge_index
    range, time (finite, increasing) and NaN/inf in every field (scanned in blocks).
    """
    path = Path(path)
    with open_h5(path) as f:
        for group in _check_schema(f, path):
            g = f[group]
            variables = _scan_group(g, path)
            with reading(path, group):
                mesh_pos, cells, node_type, time = (
                    g[n][()] for n in ("mesh_pos", "cells", "node_type", "time")
                )
                check_mesh(mesh_pos, cells, node_type, path=path, group=group)
                if "edge_index" in variables:
                    _check_edge_index(g["edge_index"][()], len(mesh_pos), path, group)
                _check_time(time, path, group)
            for name in variables:
                if name not in _STATIC_DIMS:
                    check_finite_dataset(g[name], path=path, group=group, field=name)


class MeshReader(LazyH5):
    """Random-access reader of a mesh-trajectory file (h5py, lazy, picklable).

    Opening checks the schema and lists trajectories; per-trajectory metadata is read on
    first use. :meth:`window` reads only the requested time steps.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open_h5(self.path) as f:
            #: trajectory group paths, e.g. ["trajectories/000000", ...]
            self.trajectories: list[str] = _check_schema(f, self.path)
            with reading(self.path):
                #: user attributes of the file
                self.attrs: dict[str, Any] = _decode_attrs(f.attrs)
        self._meta: dict[str, dict[str, _VarInfo]] = {}

    def __len__(self) -> int:
        return len(self.trajectories)

    def _group(self, traj: int | str) -> str:
        if isinstance(traj, int | np.integer):
            return self.trajectories[traj]
        name = traj if traj.startswith(f"{TRAJECTORIES}/") else f"{TRAJECTORIES}/{traj}"
        if name not in self.trajectories:
            raise KeyError(f"no trajectory {traj!r} in {self.path}")
        return name

    def _vars(self, traj: int | str) -> dict[str, _VarInfo]:
        group = self._group(traj)
        if group not in self._meta:
            self._meta[group] = _scan_group(self._file()[group], self.path)
        return self._meta[group]

    def n_steps(self, traj: int | str) -> int:
        """Number of time steps of a trajectory."""
        return self._vars(traj)["time"].shape[0]

    def n_nodes(self, traj: int | str) -> int:
        """Number of mesh nodes of a trajectory."""
        return self._vars(traj)["mesh_pos"].shape[0]

    def fields(self, traj: int | str) -> list[str]:
        """Names of the time-dependent fields of a trajectory."""
        return [n for n, v in self._vars(traj).items() if v.dims[0] == "time" and n != "time"]

    def attrs_of(self, traj: int | str) -> dict[str, Any]:
        """User attributes of a trajectory."""
        group = self._group(traj)
        with reading(self.path, group):
            return _decode_attrs(self._file()[group].attrs)

    def time(self, traj: int | str) -> np.ndarray:
        """Time of each step (s, or step index), (T,)."""
        group = self._group(traj)
        with reading(self.path, group, "time"):
            return self._file()[group]["time"][()]

    def static(self, traj: int | str) -> dict[str, np.ndarray]:
        """Static variables: mesh_pos (N, S), cells (C, V), node_type (N,), edge_index
        (2, E) when present, and static extra fields."""
        group = self._group(traj)
        g = self._file()[group]
        out = {}
        for name, var in self._vars(traj).items():
            if var.dims[0] != "time":
                with reading(self.path, group, name):
                    out[name] = g[name][()]
        return out

    def window(
        self, traj: int | str, start: int, length: int, fields: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Steps ``start .. start + length - 1`` of the given fields (default all), each
        (length, N or E, ...). Only those steps are read from disk."""
        group = self._group(traj)
        n_steps = self.n_steps(traj)
        if length < 1 or start < 0 or start + length > n_steps:
            raise IndexError(f"window [{start}, {start + length}) outside the {n_steps} steps")
        names = self.fields(traj) if fields is None else list(fields)
        unknown = set(names) - set(self.fields(traj))
        if unknown:
            raise KeyError(f"no fields {sorted(unknown)} in {self.path}:{group}")
        g = self._file()[group]
        out = {}
        for name in names:
            with reading(self.path, group, name):
                out[name] = g[name][start : start + length]
        return out

    def __repr__(self) -> str:
        return f"MeshReader({str(self.path)!r}: {len(self.trajectories)} trajectories)"


def to_xarray_mesh(path: str | Path, trajectory: int | str = 0) -> xr.Dataset:
    """One trajectory as an ``xarray.Dataset`` (lazy; opened with h5netcdf), attrs decoded."""
    reader = MeshReader(path)
    group = reader._group(trajectory)
    try:
        ds = xr.open_dataset(reader.path, group=group, engine="h5netcdf")
    except (OSError, ValueError) as exc:
        raise DataError(f"xarray cannot open the group ({exc})", path=path, group=group) from None
    ds.attrs = _decode_attrs(ds.attrs)
    return ds


def info_mesh(path: str | Path, max_trajectories: int = 5) -> str:
    """A short human-readable summary of a mesh-trajectory file (no data scan)."""
    with MeshReader(path) as r:
        lines = [f"{r.path}: {SCHEMA} v{SCHEMA_VERSION}, {len(r)} trajectories"]
        if r.attrs:
            lines.append(f"  attrs: {r.attrs}")
        for traj in r.trajectories[:max_trajectories]:
            v = r._vars(traj)
            cells = v["cells"].shape
            lines.append(
                f"  {traj}: {v['mesh_pos'].shape[0]} nodes in {v['mesh_pos'].shape[1]}-D, "
                f"{cells[0]} cells x {cells[1]} vertices, {v['time'].shape[0]} steps"
            )
            for name, var in v.items():
                if name not in _STATIC_DIMS:
                    dims = ", ".join(f"{d}={n}" for d, n in zip(var.dims, var.shape, strict=True))
                    lines.append(f"    {name} ({dims}) {var.dtype}")
        if len(r) > max_trajectories:
            lines.append(f"  ... {len(r) - max_trajectories} more trajectories")
    return "\n".join(lines)
