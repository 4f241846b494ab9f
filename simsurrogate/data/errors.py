"""Errors raised by the data layer: they name the file, group, field and what was expected."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A data file or an array breaks its schema.

    The message always says where (file, group, field) and, when known, what was expected
    and what was found, so a user can fix the file without reading a traceback.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        group: str | None = None,
        field: str | None = None,
        expected: Any = None,
        found: Any = None,
    ) -> None:
        self.path = None if path is None else str(path)
        self.group = group
        self.field = field
        self.expected = expected
        self.found = found
        where = []
        if self.path is not None:
            where.append(f"file {self.path}")
        if group is not None:
            where.append(f"group {group!r}")
        if field is not None:
            where.append(f"field {field!r}")
        text = message
        if where:
            text = f"{', '.join(where)}: {message}"
        if expected is not None or found is not None:
            text += f" (expected {expected}, found {found})"
        super().__init__(text)
