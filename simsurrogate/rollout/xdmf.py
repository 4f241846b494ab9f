"""Streaming XDMF 3 output for ParaView: one temporal collection per mesh trajectory.

Each trajectory is one ``.xdmf`` text file; the heavy data lie in one HDF5 file shared by
every trajectory of a run (``rollout.xdmf`` -> ``rollout.xdmf.h5``)::

    /000000/mesh_pos          (N, 3) float64, 2-D positions padded with z = 0
    /000000/cells             (C, V) int64
    /000000/node_type         (N,) int64
    /000000/<field>/000005    step 5 of a node field: (N,) scalars, (N, 3) vectors (2-D
                              vectors padded with a zero z component), else (N, C)

Every step is a Uniform grid of the temporal collection that references the same topology
and geometry datasets (as FEniCS writes it), so ParaView and ``meshio.xdmf.TimeSeriesReader``
both open the file. The XML is rewritten after every step up to its closing tags, so the
file on disk is complete at all times and memory stays flat over any number of steps.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO
from xml.sax.saxutils import escape, quoteattr

import h5py
import numpy as np

__all__ = ["XdmfSeries", "XdmfWriter", "heavy_path"]

#: XDMF topology name for cells with V vertices in a mesh of spatial dimension dim
_TOPOLOGY = {
    (2, 2): "Polyline",
    (3, 2): "Polyline",
    (2, 3): "Triangle",
    (3, 3): "Triangle",
    (2, 4): "Quadrilateral",
    (3, 4): "Tetrahedron",
    (3, 8): "Hexahedron",
}
_FOOTER = "    </Grid>\n  </Domain>\n</Xdmf>\n"


def heavy_path(xdmf: str | Path) -> Path:
    """The HDF5 heavy-data file next to an XDMF file: ``run.xdmf`` -> ``run.xdmf.h5``."""
    xdmf = Path(xdmf)
    return xdmf.with_name(xdmf.name + ".h5")


def _number_type(dtype: np.dtype) -> str:
    kind = {"f": "Float", "i": "Int", "u": "UInt"}.get(dtype.kind)
    if kind is None:
        raise TypeError(f"XDMF cannot store dtype {dtype}")
    return f'NumberType="{kind}" Precision="{dtype.itemsize}"'


def _data_item(ref: str, shape: tuple[int, ...], dtype: np.dtype) -> str:
    dims = " ".join(str(s) for s in shape)
    return (
        f'<DataItem Dimensions="{dims}" {_number_type(dtype)} Format="HDF">{escape(ref)}</DataItem>'
    )


class XdmfSeries:
    """One trajectory: an XDMF temporal collection streamed step by step.

    Made by :meth:`XdmfWriter.begin`; call :meth:`append` once per step.
    """

    def __init__(
        self,
        writer: XdmfWriter,
        path: Path,
        key: str,
        mesh_pos: np.ndarray,
        cells: np.ndarray,
        node_type: np.ndarray | None,
    ) -> None:
        self.path = path
        self.n_steps = 0
        self._writer = writer
        self._key = key
        self._dim = mesh_pos.shape[1]
        self._n = mesh_pos.shape[0]
        topology = _TOPOLOGY.get((self._dim, cells.shape[1]))
        if topology is None:
            raise ValueError(
                f"no XDMF cell type for {cells.shape[1]}-vertex cells in {self._dim}-D"
            )
        g = writer.h5.create_group(key)
        pos = np.zeros((self._n, 3), dtype=np.float64)
        pos[:, : self._dim] = mesh_pos
        g.create_dataset("mesh_pos", data=pos)
        g.create_dataset("cells", data=np.asarray(cells, dtype=np.int64))
        ref = writer.h5_ref
        static = [
            f'        <Topology TopologyType="{topology}" NumberOfElements="{len(cells)}"'
            + (' NodesPerElement="2"' if topology == "Polyline" else "")
            + ">"
            + _data_item(f"{ref}:/{key}/cells", cells.shape, np.dtype(np.int64))
            + "</Topology>",
            '        <Geometry GeometryType="XYZ">'
            + _data_item(f"{ref}:/{key}/mesh_pos", pos.shape, pos.dtype)
            + "</Geometry>",
        ]
        if node_type is not None:
            g.create_dataset("node_type", data=np.asarray(node_type, dtype=np.int64))
            static.append(
                '        <Attribute Name="node_type" AttributeType="Scalar" Center="Node">'
                + _data_item(f"{ref}:/{key}/node_type", (self._n,), np.dtype(np.int64))
                + "</Attribute>"
            )
        self._static = "\n".join(static) + "\n"
        self._file: IO[str] | None = open(path, "w", encoding="utf-8")
        name = quoteattr(f"trajectory {key}")
        self._file.write(
            '<?xml version="1.0" encoding="utf-8"?>\n<Xdmf Version="3.0">\n  <Domain>\n'
            f'    <Grid Name={name} GridType="Collection" CollectionType="Temporal">\n'
        )
        self._body_end = self._file.tell()
        self._file.write(_FOOTER)
        self._file.flush()

    def _vector(self, name: str, arr: np.ndarray) -> tuple[np.ndarray, str]:
        """The array to store and its XDMF AttributeType."""
        if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
            return arr.reshape(self._n), "Scalar"
        arr = arr.reshape(self._n, -1)
        if arr.shape[1] == self._dim:
            padded = np.zeros((self._n, 3), dtype=arr.dtype)
            padded[:, : self._dim] = arr
            return padded, "Vector"
        return arr, "Matrix"

    def append(self, time: float, fields: dict[str, np.ndarray]) -> None:
        """Write step ``n_steps`` at ``time`` (s): node fields name -> (N, ...) arrays."""
        if self._file is None:
            raise RuntimeError(f"XDMF series {self.path} is closed")
        k, ref = self.n_steps, self._writer.h5_ref
        parts = [
            f'      <Grid Name="step {k:06d}" GridType="Uniform">\n',
            self._static,
            f'        <Time Value="{float(time)!r}"/>\n',
        ]
        for name, value in fields.items():
            arr = np.asarray(value)
            if arr.shape[0] != self._n:
                raise ValueError(f"field {name!r} has {arr.shape[0]} rows, mesh has {self._n}")
            data, kind = self._vector(name, arr)
            h5name = f"{self._key}/{name}/{k:06d}"
            self._writer.h5.create_dataset(h5name, data=data)
            parts.append(
                f'        <Attribute Name={quoteattr(name)} AttributeType="{kind}" Center="Node">'
                + _data_item(f"{ref}:/{h5name}", data.shape, data.dtype)
                + "</Attribute>\n"
            )
        parts.append("      </Grid>\n")
        self._file.seek(self._body_end)
        self._file.write("".join(parts))
        self._body_end = self._file.tell()
        self._file.write(_FOOTER)
        self._file.truncate()
        self._file.flush()
        self.n_steps = k + 1

    def close(self) -> None:
        """Close the text file (it is complete after every step already)."""
        if self._file is not None:
            self._file.close()
            self._file = None


class XdmfWriter:
    """Heavy-data HDF5 file shared by the XDMF series of one run; a context manager.

    Example::

        with XdmfWriter("run.xdmf.h5") as w:
            series = w.begin("run.xdmf", "000000", mesh_pos, cells, node_type)
            series.append(0.0, {"velocity": v0, "pressure": p0})
    """

    def __init__(self, heavy: str | Path) -> None:
        self.path = Path(heavy)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.h5 = h5py.File(self.path, "w")
        self.series: list[XdmfSeries] = []

    @property
    def h5_ref(self) -> str:
        """Name of the heavy file as XDMF files next to it reference it."""
        return self.path.name

    def begin(
        self,
        xdmf: str | Path,
        key: str,
        mesh_pos: np.ndarray,
        cells: np.ndarray,
        node_type: np.ndarray | None = None,
    ) -> XdmfSeries:
        """Start trajectory ``key`` (an HDF5 group name) written as the XDMF file ``xdmf``.

        ``mesh_pos`` (N, 2 or 3), ``cells`` (C, V) node indices, ``node_type`` (N,) ints.
        The XDMF file must lie in the heavy file's folder.
        """
        xdmf = Path(xdmf)
        if xdmf.resolve().parent != self.path.resolve().parent:
            raise ValueError(f"{xdmf} must lie in the folder of its heavy data {self.path}")
        series = XdmfSeries(self, xdmf, key, np.asarray(mesh_pos), np.asarray(cells), node_type)
        self.series.append(series)
        return series

    def flush(self) -> None:
        """Push the heavy data written so far to the file (readable while the run goes on)."""
        self.h5.flush()

    def close(self) -> None:
        """Close every series and the heavy-data file."""
        for series in self.series:
            series.close()
        if self.h5.id.valid:
            self.h5.close()

    def remove(self) -> None:
        """Close and delete every file (used when a run fails before its first step)."""
        self.close()
        for path in [self.path, *(s.path for s in self.series)]:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)

    def __enter__(self) -> XdmfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
