"""Low-level file helpers shared by every schema: safe opening and atomic writing."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from simsurrogate.data.errors import DataError


def open_h5(path: str | Path, mode: str = "r") -> h5py.File:
    """Open an HDF5 file, turning h5py's low-level failures into a :class:`DataError`.

    A missing file, a file that is not HDF5 and a truncated file each get a message that
    names the file and says which of these it is.
    """
    path = Path(path)
    if mode == "r" and not path.exists():
        raise DataError("no such file", path=path)
    if mode == "r" and path.is_dir():
        raise DataError("is a directory, not an HDF5 file", path=path)
    try:
        return h5py.File(path, mode)
    except OSError as exc:
        if mode == "r" and not h5py.is_hdf5(path):
            with open(path, "rb") as fh:
                head = fh.read(8)
            if head == b"\x89HDF\r\n\x1a\n":
                raise DataError(
                    "HDF5 file is truncated or corrupt (signature present, data unreadable)",
                    path=path,
                ) from None
            raise DataError("not an HDF5 file", path=path) from None
        raise DataError(f"cannot open HDF5 file: {exc}", path=path) from None


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` only on success.

    A writer that fails part-way therefore never leaves a half-written file under the final
    name, and an existing file there is left untouched until the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the file the mode an ordinary open() would have
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def check_finite(
    values: np.ndarray, *, path: str | Path | None, group: str | None, field: str
) -> None:
    """Raise a :class:`DataError` naming the field and first bad index if any value is NaN/inf."""
    arr = np.asarray(values)
    if arr.dtype.kind not in "fc":
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"non-finite value {arr[first].item()} at index {first}",
            path=path,
            group=group,
            field=field,
        )
