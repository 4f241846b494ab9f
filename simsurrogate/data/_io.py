"""Low-level file helpers shared by every schema: safe opening and atomic writing."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from simsurrogate.data.errors import DataError

_SCAN_BYTES = 64 * 2**20  # block size when scanning a dataset for NaN/inf


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
        if mode != "r":
            raise DataError(f"cannot open HDF5 file for writing: {exc}", path=path) from None
        with open(path, "rb") as fh:
            head = fh.read(8)
        if head != b"\x89HDF\r\n\x1a\n" and not h5py.is_hdf5(path):
            raise DataError("not an HDF5 file", path=path) from None
        raise DataError(
            f"HDF5 file is truncated or corrupt (signature present, data unreadable: {exc})",
            path=path,
        ) from None


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


@contextlib.contextmanager
def reading(path: str | Path, group: str | None = None, field: str | None = None) -> Iterator[None]:
    """Turn HDF5 read failures (truncated or corrupt data) into a :class:`DataError`."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        raise DataError(
            f"cannot read data, file truncated or corrupt? ({exc})",
            path=path,
            group=group,
            field=field,
        ) from None


def check_finite_dataset(
    dset: h5py.Dataset, *, path: str | Path, group: str | None, field: str
) -> None:
    """Scan an HDF5 dataset block by block (memory stays flat) for NaN/inf.

    Raises a :class:`DataError` naming the field and the first bad index in the dataset.
    """
    if dset.dtype.kind not in "fc":
        return
    with reading(path, group, field):
        if dset.ndim == 0 or dset.size == 0:
            check_finite(dset[()], path=path, group=group, field=field)
            return
        row_bytes = dset.dtype.itemsize * max(1, math.prod(dset.shape[1:]))
        step = max(1, _SCAN_BYTES // row_bytes)
        for start in range(0, dset.shape[0], step):
            block = dset[start : start + step]
            bad = ~np.isfinite(block)
            if bad.any():
                first = np.argwhere(bad)[0]
                value = block[tuple(first)]
                first[0] += start
                raise DataError(
                    f"non-finite value {value!r} at index {tuple(int(i) for i in first)}",
                    path=path,
                    group=group,
                    field=field,
                )


class LazyH5:
    """Base for readers: opens the HDF5 file on first use in each process.

    Safe in DataLoader workers: the handle is reopened when the process id changes (fork)
    and is dropped when pickled (spawn), so no h5py handle ever crosses a process boundary.
    """

    path: Path
    _h5: h5py.File | None = None
    _pid: int | None = None
    _datasets: dict[str, h5py.Dataset]

    def _file(self) -> h5py.File:
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = open_h5(self.path)
            self._pid = os.getpid()
            self._datasets = {}
        return self._h5

    def _ds(self, name: str) -> h5py.Dataset:
        """Dataset ``name`` of this process's handle, looked up once and cached."""
        f = self._file()
        ds = self._datasets.get(name)
        if ds is None:
            ds = self._datasets[name] = f[name]
        return ds

    def close(self) -> None:
        """Close the handle of this process (it is reopened on the next read)."""
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5, self._pid, self._datasets = None, None, {}

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_h5=None, _pid=None, _datasets={})
        return state

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def attr_text(value: Any) -> str:
    """An HDF5 string attribute (str, bytes or a one-element array of either) as ``str``."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.reshape(()).item()
    if isinstance(value, bytes | np.bytes_):
        return value.decode()
    return str(value)


def attr_texts(value: Any) -> list[str]:
    """A list-of-names attribute as ``list[str]``; a single string counts as one name."""
    if isinstance(value, str | bytes | np.bytes_):
        return [attr_text(value)]
    return [attr_text(v) for v in np.asarray(value).ravel()]


def attr_plain(value: Any) -> Any:
    """An attribute as plain Python: numbers, ``str`` or lists of them."""
    if isinstance(value, str | bytes | np.bytes_):
        return attr_text(value)
    arr = np.asarray(value)
    if arr.dtype.kind in "OSU":
        return attr_texts(arr) if arr.ndim else attr_text(arr)
    return arr.item() if arr.ndim == 0 else arr.tolist()
