"""Import DeepMind MeshGraphNets datasets (``meta.json`` + ``.tfrecord``) into the mesh schema.

The MeshGraphNets release (Pfaff et al., ICLR 2021) ships each dataset (``cylinder_flow``,
``airfoil``, ``flag_simple``, ``deforming_plate``...) as a directory holding ``meta.json`` and
``train.tfrecord``, ``valid.tfrecord``, ``test.tfrecord``. Each TFRecord record is one
trajectory: a ``tf.train.Example`` whose features are single bytes values holding an array's raw
little-endian bytes, to be reshaped with ``meta.json``'s ``features[name]["shape"]`` (one
``-1`` standing for the number of nodes or cells) and ``dtype``:

- ``"static"`` features have a leading axis of 1 (the same for every step): ``mesh_pos``
  (1, N, 2 or 3), ``cells`` (1, C, V), ``node_type`` (1, N, 1), and possibly others;
- ``"dynamic"`` features are (T, N, ...): ``velocity``, ``pressure``, ``density``,
  ``world_pos`` (cloth: 3-D world positions on a 2-D ``mesh_pos`` rest mesh), ``stress``...;
- ``"dynamic_varlen"`` features (remeshing datasets such as ``flag_dynamic_sizing``) are
  refused with a clear error: not supported yet.

Each split becomes one mesh-schema file (``train.h5``...; see :mod:`simsurrogate.data.mesh`),
one trajectory group per record: ``mesh_pos``, ``cells`` and ``node_type`` (squeezed, ints as
int64), every dynamic feature as a time-dependent node field (T, N, ...) with its dtype, other
static features as static fields, and ``time = step * dt`` (s; the step index when meta.json
has no ``dt``). DeepMind's triangles are not consistently oriented; the schema wants 2-D
triangles counter-clockwise, so triangles with a negative signed area in ``mesh_pos`` are
reoriented (two vertices swapped) when ``mesh_pos`` is 2-D, cloth included (its 3-D
``world_pos`` does not matter). Node types use the same numbering as
:class:`simsurrogate.data.node_types.NodeType` and are only checked.

Memory: records are read and written one at a time, so memory holds one trajectory (the
record's bytes plus its arrays), never a whole split. Every output file is written atomically:
on error nothing appears under its name (splits already finished before the failing one stay).

Reading needs the ``tfrecord`` package (no TensorFlow): ``pip install 'tfrecord>=1.14'``.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from simsurrogate.data.errors import DataError
from simsurrogate.data.mesh import MeshWriter
from simsurrogate.data.node_types import check_node_types

SOURCE_FORMAT = "deepmind-meshgraphnets"
SPLITS: tuple[str, ...] = ("train", "valid", "test")
MESH_FEATURES = ("mesh_pos", "cells", "node_type")
#: dtypes ``tf.io.decode_raw`` produces that the schema can store (bytes are little-endian)
_DTYPES = {
    name: np.dtype(name).newbyteorder("<")
    for name in (
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
    )
}
_KINDS = ("static", "dynamic")


@dataclass(frozen=True)
class Feature:
    """One feature of ``meta.json``: its kind (static/dynamic), raw shape and dtype."""

    name: str
    kind: str
    shape: tuple[int, ...]  #: as in meta.json, at most one -1 (node or cell count)
    dtype: np.dtype  #: little-endian dtype of the raw bytes

    def decode(self, raw: Any, path: Path, index: int) -> np.ndarray:
        """The array of one record's raw bytes, reshaped to :attr:`shape` (read-only view).

        Raises a :class:`DataError` naming ``path``, the trajectory ``index`` and the field
        if ``raw`` is not one bytes value or its length does not fit the shape and dtype.
        """
        if not isinstance(raw, bytes):
            raise DataError(
                f"trajectory {index}: expected one bytes value holding the raw array",
                path=path,
                field=self.name,
                found=_describe(raw),
            )
        known = math.prod(s for s in self.shape if s != -1) * self.dtype.itemsize
        n = len(raw)
        free = -1 in self.shape
        if n == 0 or (n % known if free else n != known):
            shape = ", ".join("-1" if s == -1 else str(s) for s in self.shape)
            raise DataError(
                f"trajectory {index}: byte count does not match meta.json's shape [{shape}] "
                f"and dtype {self.dtype.name}",
                path=path,
                field=self.name,
                expected=(f"a positive multiple of {known} bytes" if free else f"{known} bytes"),
                found=f"{n} bytes",
            )
        return np.frombuffer(raw, dtype=self.dtype).reshape(self.shape)


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of {value.size} values"
    return type(value).__name__


# --------------------------------------------------------------------------------------------
# meta.json


def read_meta(src_dir: str | Path) -> dict[str, Any]:
    """The parsed ``meta.json`` of a DeepMind dataset directory (not checked)."""
    path = Path(src_dir) / "meta.json"
    if not path.is_file():
        raise DataError(
            "missing meta.json (a DeepMind MeshGraphNets dataset directory holds meta.json and "
            "train/valid/test.tfrecord)",
            path=path,
        )
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read meta.json as JSON ({exc})", path=path) from None
    if not isinstance(meta, dict):
        raise DataError("meta.json is not a JSON object", path=path, found=type(meta).__name__)
    return meta


def parse_features(meta: Mapping[str, Any], path: str | Path) -> dict[str, Feature]:
    """The ``features`` of a meta.json (``path`` names it in errors), checked.

    Refuses ``dynamic_varlen`` and other unknown feature types, unknown dtypes, malformed
    shapes, static features without a leading axis of 1, and a missing or ill-typed
    ``mesh_pos`` (float, 2 or 3 components), ``cells`` (int) or ``node_type`` (int, one
    component); at least one dynamic feature is required.
    """
    path = Path(path)
    features = meta.get("features")
    if not isinstance(features, dict) or not features:
        raise DataError("meta.json has no 'features' object", path=path, found=_describe(features))
    out = {}
    for name, spec in features.items():
        if not isinstance(spec, dict):
            raise DataError("feature is not a JSON object", path=path, field=name)
        kind = spec.get("type")
        if kind == "dynamic_varlen":
            raise DataError(
                "'dynamic_varlen' features (remeshing datasets such as flag_dynamic_sizing or "
                "sphere_dynamic_sizing) are not supported yet",
                path=path,
                field=name,
            )
        if kind not in _KINDS:
            raise DataError(
                "unsupported feature type", path=path, field=name, expected=_KINDS, found=kind
            )
        dtype = _DTYPES.get(spec.get("dtype")) if isinstance(spec.get("dtype"), str) else None
        if dtype is None:
            raise DataError(
                "unknown dtype",
                path=path,
                field=name,
                expected=sorted(_DTYPES),
                found=spec.get("dtype"),
            )
        shape = spec.get("shape")
        if (
            not isinstance(shape, list)
            or not shape
            or not all(isinstance(s, int) and (s > 0 or s == -1) for s in shape)
            or shape.count(-1) > 1
        ):
            raise DataError(
                "bad shape",
                path=path,
                field=name,
                expected="a list of positive ints with at most one -1",
                found=shape,
            )
        if kind == "static" and shape[0] != 1:
            raise DataError(
                "a static feature must have a leading axis of 1",
                path=path,
                field=name,
                found=shape,
            )
        if kind == "dynamic" and len(shape) < 2:
            raise DataError(
                "a dynamic feature must be (time, node, ...)", path=path, field=name, found=shape
            )
        out[name] = Feature(name, kind, tuple(shape), dtype)
    _check_mesh_features(out, path)
    if not any(f.kind == "dynamic" for f in out.values()):
        raise DataError("meta.json has no dynamic feature (nothing varies in time)", path=path)
    return out


def _check_mesh_features(features: Mapping[str, Feature], path: Path) -> None:
    """``mesh_pos``, ``cells`` and ``node_type`` must be static, of the right kind and rank."""
    rules = {
        "mesh_pos": ("f", lambda s: len(s) == 3 and s[2] in (2, 3), "[1, -1, 2 or 3], float"),
        "cells": ("iu", lambda s: len(s) == 3 and s[2] >= 2, "[1, -1, vertices >= 2], int"),
        "node_type": ("iu", lambda s: s[1:] in ((-1,), (-1, 1)), "[1, -1, 1], int"),
    }
    for name, (kinds, shape_ok, expected) in rules.items():
        feature = features.get(name)
        if feature is None:
            raise DataError(
                f"meta.json has no {name!r} feature; the mesh schema needs "
                "mesh_pos, cells and node_type",
                path=path,
                expected="features mesh_pos, cells, node_type",
                found=sorted(features),
            )
        if (
            feature.kind != "static"
            or feature.dtype.kind not in kinds
            or not shape_ok(feature.shape)
        ):
            raise DataError(
                "unsupported mesh feature",
                path=path,
                field=name,
                expected=f"static, shape {expected}",
                found=f"{feature.kind}, shape {list(feature.shape)}, {feature.dtype.name}",
            )


def _dt(meta: Mapping[str, Any], path: Path) -> float | None:
    dt = meta.get("dt")
    if dt is None:
        return None
    number = isinstance(dt, int | float) and not isinstance(dt, bool)
    if not (number and math.isfinite(dt) and dt > 0):
        raise DataError("dt must be a positive number", path=path, field="dt", found=dt)
    return float(dt)


# --------------------------------------------------------------------------------------------
# records


def count_records(path: str | Path) -> int:
    """Number of records of a TFRecord file, from its length headers (no record is parsed).

    Raises a :class:`DataError` when the file ends inside a record (truncated download).
    """
    path = Path(path)
    size = path.stat().st_size
    n = pos = 0
    with open(path, "rb") as fh:
        while pos < size:
            head = fh.read(8)
            if len(head) != 8:
                raise DataError(f"truncated TFRecord file: record {n} has no length", path=path)
            (length,) = struct.unpack("<Q", head)
            pos += 8 + 4 + length + 4  # length, its CRC, data, data CRC
            if pos > size:
                raise DataError(
                    f"truncated TFRecord file: record {n} ends after the end of the file",
                    path=path,
                    expected=f"{pos} bytes",
                    found=f"{size} bytes",
                )
            fh.seek(pos)
            n += 1
    return n


def _tfrecord_loader():
    try:
        from tfrecord.reader import tfrecord_loader
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            f"importing DeepMind TFRecord files needs the 'tfrecord' package ({exc}); "
            "install it with: pip install 'tfrecord>=1.14' (TensorFlow is not needed)"
        ) from exc
    return tfrecord_loader


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a TFRecord file, one ``{feature: value}`` dict at a time (bytes
    features as ``bytes``); parse failures become a :class:`DataError` naming the record."""
    path = Path(path)
    records = _tfrecord_loader()(str(path), None, None)
    index = 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except Exception as exc:  # protobuf / reader errors of a corrupt file
            raise DataError(
                f"trajectory {index}: cannot parse the record as a tf.train.Example "
                f"({type(exc).__name__}: {exc})",
                path=path,
            ) from None
        yield record
        index += 1


def orient_ccw(mesh_pos: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, int]:
    """Triangles (C, 3) made counter-clockwise in the 2-D ``mesh_pos`` (N, 2); return
    ``(cells, number reoriented)``. Other meshes (3-D positions, non-triangles) are returned
    as they are. Zero-area triangles are left alone (the schema rejects them)."""
    if mesh_pos.shape[1] != 2 or cells.shape[1] != 3:
        return cells, 0
    pos = mesh_pos.astype(np.float64)
    a, b, c = (pos[cells[:, k]] for k in range(3))
    area2 = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    flip = area2 < 0
    if flip.any():
        cells = cells.copy()
        cells[flip, 1], cells[flip, 2] = cells[flip, 2], cells[flip, 1].copy()
    return cells, int(flip.sum())


def _check_finite(arr: np.ndarray, path: Path, index: int, name: str) -> None:
    if arr.dtype.kind != "f":
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"trajectory {index}: non-finite value {arr[first].item()} at index {first}",
            path=path,
            field=name,
        )


def convert_record(
    record: Mapping[str, Any],
    features: Mapping[str, Feature],
    dt: float | None,
    *,
    path: str | Path,
    index: int,
) -> dict[str, Any]:
    """One parsed record as :meth:`MeshWriter.add_trajectory` arguments.

    ``mesh_pos`` (N, S), ``cells`` (C, V) int64 counter-clockwise in 2-D, ``node_type`` (N,)
    int64, ``fields`` {name: (T, N, ...)}, ``static_fields`` {name: (N or C, ...)}, ``time``
    (T,) s (None without ``dt``) and ``attrs`` (source record index, cells reoriented).
    ``path`` and ``index`` name the record in errors.
    """
    path = Path(path)
    arrays = {}
    for name, feature in features.items():
        if name not in record:
            raise DataError(
                f"trajectory {index}: field listed in meta.json is absent from the record",
                path=path,
                field=name,
                expected=f"record fields including {sorted(features)}",
                found=f"record fields {sorted(record)}",
            )
        arr = feature.decode(record[name], path, index)
        _check_finite(arr, path, index, name)
        if feature.kind == "static":
            arr = arr[0]
        if arr.dtype == np.float16:
            arr = arr.astype(np.float32)  # netCDF-4 has no half precision
        arrays[name] = arr
    mesh_pos = arrays.pop("mesh_pos")
    node_type = arrays.pop("node_type").reshape(-1).astype(np.int64)
    cells, n_flipped = orient_ccw(mesh_pos, arrays.pop("cells").astype(np.int64))
    n_nodes = len(mesh_pos)
    if len(node_type) != n_nodes:
        raise DataError(
            f"trajectory {index}: node count differs from mesh_pos's",
            path=path,
            field="node_type",
            expected=n_nodes,
            found=len(node_type),
        )
    try:
        check_node_types(node_type)
    except ValueError as exc:
        raise DataError(f"trajectory {index}: {exc}", path=path, field="node_type") from None
    fields = {n: a for n, a in arrays.items() if features[n].kind == "dynamic"}
    static = {n: a for n, a in arrays.items() if features[n].kind == "static"}
    n_steps = {n: a.shape[0] for n, a in fields.items()}
    for name, arr in fields.items():
        if arr.shape[1] != n_nodes:
            raise DataError(
                f"trajectory {index}: a dynamic field must be (time, node, ...); its node "
                "count differs from mesh_pos's",
                path=path,
                field=name,
                expected=f"(T, {n_nodes}, ...)",
                found=arr.shape,
            )
        if arr.shape[0] != max(n_steps.values()):
            raise DataError(
                f"trajectory {index}: dynamic fields have different numbers of steps",
                path=path,
                field=name,
                expected=max(n_steps.values()),
                found=n_steps,
            )
    n_t = next(iter(n_steps.values()))
    return {
        "mesh_pos": mesh_pos,
        "cells": cells,
        "node_type": node_type,
        "fields": fields,
        "static_fields": static,
        "time": None if dt is None else np.arange(n_t, dtype=np.float64) * dt,
        "attrs": {"source_index": index, "reoriented_cells": n_flipped},
    }


# --------------------------------------------------------------------------------------------
# import


def import_deepmind(
    src_dir: str | Path,
    out_dir: str | Path,
    splits: Sequence[str] = SPLITS,
    *,
    max_trajectories: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Convert a DeepMind MeshGraphNets dataset directory into mesh-schema files.

    Each split ``s`` of ``splits`` (``src_dir/s.tfrecord``, which must exist) becomes
    ``out_dir/s.h5`` holding its first ``max_trajectories`` records (all by default), one
    trajectory each; returns ``{split: path}``. File attributes: ``source``, ``source_format``,
    ``dataset`` (directory name), ``split``, ``simulator`` and ``dt`` (when meta.json has
    them) and ``meta`` (meta.json as a dict). Problems (missing meta.json or split file,
    fields absent from a record, byte counts not matching meta.json, unsupported feature types
    or dtypes, unknown node types, NaN/inf, meshes the schema rejects) raise a
    :class:`DataError` naming the file, the trajectory (record index) and the field.
    """
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    if max_trajectories is not None and max_trajectories < 1:
        raise ValueError(f"max_trajectories must be >= 1, got {max_trajectories}")
    if isinstance(splits, str):
        splits = (splits,)
    _tfrecord_loader()  # fail before any work when the package is missing
    if not src_dir.is_dir():
        raise DataError("no such directory (expected a DeepMind dataset directory)", path=src_dir)
    meta_path = src_dir / "meta.json"
    meta = read_meta(src_dir)
    features = parse_features(meta, meta_path)
    dt = _dt(meta, meta_path)
    sources = {}
    for split in splits:
        source = src_dir / f"{split}.tfrecord"
        if not source.is_file():
            present = sorted(p.name for p in src_dir.glob("*.tfrecord"))
            raise DataError(
                f"split {split!r} has no TFRecord file (pass splits= to import only some)",
                path=source,
                found=present,
            )
        dest = out_dir / f"{split}.h5"
        if dest.exists() and not overwrite:
            raise DataError("file exists; pass overwrite=True to replace it", path=dest)
        sources[split] = source
    attrs = {"source": str(src_dir), "source_format": SOURCE_FORMAT, "dataset": src_dir.name}
    for key in ("simulator", "dt"):
        if meta.get(key) is not None:
            attrs[key] = meta[key]
    attrs["meta"] = meta
    out = {}
    for split, source in sources.items():
        out[split] = _import_split(
            source,
            out_dir / f"{split}.h5",
            features,
            dt,
            {**attrs, "split": split},
            max_trajectories=max_trajectories,
            overwrite=overwrite,
            progress=progress,
        )
    return out


def _import_split(
    source: Path,
    dest: Path,
    features: Mapping[str, Feature],
    dt: float | None,
    attrs: Mapping[str, Any],
    *,
    max_trajectories: int | None,
    overwrite: bool,
    progress: bool,
) -> Path:
    """One TFRecord file into one mesh file, record by record."""
    total = count_records(source)
    if total == 0:
        raise DataError("no records (empty TFRecord file)", path=source)
    if max_trajectories is not None:
        total = min(total, max_trajectories)
    bar = tqdm(total=total, desc=f"deepmind {attrs['split']}", unit="traj", disable=not progress)
    with bar, MeshWriter(dest, attrs=attrs, overwrite=overwrite) as writer:
        for index, record in zip(range(total), iter_records(source), strict=False):
            trajectory = convert_record(record, features, dt, path=source, index=index)
            del record
            try:
                writer.add_trajectory(**trajectory)
            except DataError as exc:
                raise DataError(
                    f"trajectory {index} does not fit the mesh schema: {exc}", path=source
                ) from None
            del trajectory  # hold one trajectory at a time
            bar.update()
    return dest
