"""One entry point for every schema: detect a file's kind, summarise it, validate it."""

from __future__ import annotations

from pathlib import Path

from simsurrogate.data import grid, mesh, particles
from simsurrogate.data._io import open_h5
from simsurrogate.data.errors import DataError


def detect_kind(path: str | Path) -> str:
    """Return "particles", "mesh" or "well" from a file's root attributes and groups."""
    with open_h5(path) as fh:
        schema = fh.attrs.get("schema")
        if isinstance(schema, bytes):
            schema = schema.decode()
        if schema == particles.SCHEMA:
            return "particles"
        if schema == mesh.SCHEMA:
            return "mesh"
        if schema is not None:
            raise DataError(
                "unknown schema",
                path=path,
                field="schema",
                expected=f"{particles.SCHEMA!r} or {mesh.SCHEMA!r}",
                found=repr(schema),
            )
        if "t0_fields" in fh or "dimensions" in fh:
            return "well"
    raise DataError(
        "not a simsurrogate or The Well file: no 'schema' root attribute and no Well groups",
        path=path,
    )


def info(path: str | Path) -> str:
    """Human-readable summary of any supported file."""
    kind = detect_kind(path)
    return {"particles": particles.info, "mesh": mesh.info_mesh, "well": grid.info_well}[kind](path)


def validate(path: str | Path) -> str:
    """Validate any supported file; raises :class:`DataError` naming the first problem."""
    kind = detect_kind(path)
    {"particles": particles.validate, "mesh": mesh.validate_mesh, "well": grid.validate_well}[kind](
        path
    )
    return kind
