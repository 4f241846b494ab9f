"""Advance fields on regular grids with a trained grid operator (FNO, U-Net), streamed to netCDF.

The engine is a plain object that pipelines call; it never sees a DataLoader or ground truth.
It holds the last ``history`` snapshots of the state fields and, per model call, predicts one
snapshot (autoregressive models), a block of them (space-time models) or what one call of a
single-step model covers (:mod:`simsurrogate.models.operators.stepping`); every predicted
snapshot is checked for NaN/inf and appended to a netCDF-4 file, so memory stays flat::

    engine = GridRollout.from_checkpoint("best.ckpt")
    first = WellReader("test.hdf5").window(0, 1, engine.history, engine.fields)
    result = engine.run(first, steps=40, out="rollout/rollout.nc", dt=1.0)
    xarray.open_dataset("rollout/rollout.nc", engine="h5netcdf")["vorticity"]  # (time, x, y)
"""

from __future__ import annotations

import math
import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5netcdf
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from simsurrogate.checkpoint import KEY, CheckpointError, load, read_checkpoint
from simsurrogate.data.well import to_channels
from simsurrogate.models.base import SurrogateModel
from simsurrogate.models.operators.stepping import check_mode, unroll
from simsurrogate.rollout.errors import RolloutError

__all__ = ["GridRollout", "GridRolloutResult", "is_grid_operator_checkpoint"]

#: the training task whose checkpoints this engine rolls out
TASK = "FieldOperatorTask"


def is_grid_operator_checkpoint(meta: Mapping) -> bool:
    """Whether checkpoint metadata (``ckpt["simsurrogate"]``) comes from a grid-operator task."""
    return meta.get("task") == TASK


@dataclass
class GridRolloutResult:
    """What :meth:`GridRollout.run` returns.

    Attributes:
        steps: snapshots predicted.
        final: per field, the last ``history`` snapshots (history, *spatial, *components).
        fields: without ``out`` only: per field, the predictions (steps, *spatial, *comps).
        path: the netCDF file written (``out``), or None.
        wall_time_s: time of the whole run (model, checks, writing), s.
        model_time_s: time spent in model calls, s.
    """

    steps: int
    final: dict[str, np.ndarray]
    fields: dict[str, np.ndarray] | None = None
    path: Path | None = None
    wall_time_s: float = 0.0
    model_time_s: float = 0.0

    @property
    def steps_per_s(self) -> float:
        """Predicted snapshots per second over the whole run."""
        return self.steps / self.wall_time_s if self.wall_time_s > 0 else math.inf


class _NetCDFStream:
    """A netCDF-4 file (h5netcdf) with an unlimited ``time`` dim, appended one snapshot at a time.

    Variables: ``time`` (time,), one coordinate per spatial dim, ``step`` (time,) the model
    step of each snapshot, and each field (time, *spatial, *components), float32, one chunk
    per snapshot.
    """

    def __init__(
        self,
        path: Path,
        coords: Mapping[str, np.ndarray],
        shapes: Mapping[str, tuple[int, ...]],
        attrs: Mapping[str, object],
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.n = path, 0
        self._nc = h5netcdf.File(path, "w")
        self._nc.dimensions = {"time": None, **{d: len(v) for d, v in coords.items()}}
        for key, value in attrs.items():
            self._nc.attrs[key] = value
        for d, values in coords.items():
            self._nc.create_variable(d, (d,), data=np.asarray(values))
        self._nc.create_variable("time", ("time",), "f8")
        self._nc.create_variable("step", ("time",), "i8")
        spatial = tuple(coords)
        for name, shape in shapes.items():
            comps = tuple(f"{name}_{k}" for k in range(len(shape) - len(spatial)))
            for dim, size in zip(comps, shape[len(spatial) :], strict=True):
                self._nc.dimensions[dim] = size
            self._nc.create_variable(name, ("time", *spatial, *comps), "f4", chunks=(1, *shape))

    def append(self, step: int, time: float, fields: Mapping[str, np.ndarray]) -> None:
        """Write one snapshot."""
        self._nc.resize_dimension("time", self.n + 1)
        self._nc["time"][self.n] = time
        self._nc["step"][self.n] = step
        for name, value in fields.items():
            self._nc[name][self.n] = value
        self.n += 1

    def close(self) -> None:
        """Flush and close the file."""
        self._nc.close()


def _model_dims(model: SurrogateModel) -> int:
    """Grid dims a model works on, from its constructor arguments (FNO ``modes``, U-Net ``dim``)."""
    config = getattr(model, "config", {})
    if "modes" in config:
        return len(config["modes"])
    if "dim" in config:
        return int(config["dim"])
    raise RolloutError(f"cannot tell how many grid dims {type(model).__name__} works on")


class GridRollout:
    """Roll a grid operator forward from the last ``history`` snapshots of its state fields.

    Args:
        model: the operator, mapping (B, history * C, *spatial) to one or more snapshots
            of C channels (or, in "space_time" mode, (B, history * C, *spatial, n) to
            (B, C, *spatial, n)).
        fields: the state fields, in the model's channel order (inputs = targets).
        history: snapshots the model sees.
        mode: "step", "autoregressive" or "space_time" (see
            :mod:`simsurrogate.models.operators.stepping`).
        block: time slices per space-time call (its training horizon).
        device: torch device for the model.
    """

    def __init__(
        self,
        model: SurrogateModel,
        fields: Sequence[str],
        history: int,
        mode: str = "autoregressive",
        block: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        check_mode(mode)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.fields, self.history, self.mode, self.block = list(fields), history, mode, block
        #: spatial dims of the fields (a space-time model has one dim more: time)
        self.n_spatial = _model_dims(model) - (mode == "space_time")

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> GridRollout:
        """Build the engine from a checkpoint of :class:`~simsurrogate.tasks.FieldOperatorTask`."""
        meta = read_checkpoint(path)[KEY]
        if not is_grid_operator_checkpoint(meta) or "window" not in meta:
            raise CheckpointError(
                f"checkpoint {path} is not a grid operator trained on Well windows "
                f"(task {meta.get('task')!r}, window {meta.get('window')})"
            )
        if meta["input_fields"] != meta["target_fields"] or meta["window"]["target_offset"] != 1:
            raise CheckpointError(
                f"checkpoint {path} maps {meta['input_fields']} to {meta['target_fields']} "
                f"{meta['window']['target_offset']} step(s) on: not a time stepper, so it cannot "
                "be rolled out"
            )
        return cls(
            load(path, map_location=device),
            meta["input_fields"],
            meta["window"]["history"],
            meta.get("mode", "step"),
            meta["window"]["horizon"],
            device,
        )

    def _state(self, initial: Mapping[str, np.ndarray]) -> tuple[Tensor, int]:
        """The model input (1, history * C, *spatial) and the number of spatial dims."""
        missing = [f for f in self.fields if f not in initial]
        if missing:
            raise RolloutError(f"the initial state lacks fields {missing} (needs {self.fields})")
        shapes = {name: np.shape(initial[name]) for name in self.fields}
        lead = {s[0] for s in shapes.values()}
        if lead != {self.history}:
            raise RolloutError(
                f"the initial state must hold the last {self.history} snapshots of each field, "
                f"got shapes {shapes}"
            )
        d = self.n_spatial
        for name in self.fields:
            if not np.isfinite(initial[name]).all():
                raise RolloutError(f"the initial state of {name!r} is not finite")
        x = to_channels({k: np.asarray(initial[k]) for k in self.fields}, self.fields, d)
        return x[None].to(self.device), d

    @torch.no_grad()
    def run(
        self,
        initial: Mapping[str, np.ndarray],
        steps: int,
        out: str | Path | None = None,
        t0: float = 0.0,
        dt: float = 1.0,
        coords: Mapping[str, np.ndarray] | None = None,
        attrs: Mapping[str, object] | None = None,
        progress: bool = False,
    ) -> GridRolloutResult:
        """Predict ``steps`` snapshots after ``initial``.

        Args:
            initial: per state field, its last ``history`` snapshots (history, *spatial,
                *components), oldest first (e.g. ``WellReader.window`` output).
            steps: snapshots to predict.
            out: netCDF file to stream to (see :class:`_NetCDFStream`); without it the
                predictions are returned in memory.
            t0, dt: time of the last given snapshot and between snapshots; snapshot k
                (k = 1..steps) is at t0 + k dt.
            coords: coordinates per spatial dim (default x, y, z: j / n).
            attrs: extra global attributes of the file (plain numbers and strings).

        Raises RolloutError naming the step and field where a prediction is not finite; the
        snapshots before it stay in ``out``.
        """
        start_wall = _time.perf_counter()
        x, d = self._state(initial)
        spatial = tuple(x.shape[2:])
        comps = {name: np.shape(initial[name])[1 + d :] for name in self.fields}
        sizes = [math.prod(comps[name]) for name in self.fields]
        if coords is None:
            coords = {name: np.arange(n) / n for name, n in zip("xyz", spatial, strict=False)}
        stream = None
        if out is not None:
            shapes = {name: (*spatial, *comps[name]) for name in self.fields}
            meta = {"history": self.history, "mode": self.mode, "dt": dt, **(attrs or {})}
            stream = _NetCDFStream(Path(out), coords, shapes, meta)
        kept: dict[str, list[np.ndarray]] = {name: [] for name in self.fields}
        recent = [{k: np.asarray(v[i]) for k, v in initial.items()} for i in range(self.history)]
        model_time = 0.0
        try:
            snapshots = unroll(self.model, x, steps, self.mode, self.history, self.block)
            bar = tqdm(total=steps, desc="rollout", disable=not progress)
            for k in range(1, steps + 1):
                tic = _time.perf_counter()
                pred = next(snapshots)[0].cpu().numpy()  # (C, *spatial)
                model_time += _time.perf_counter() - tic
                snapshot = {}
                parts = np.split(pred, np.cumsum(sizes)[:-1])
                for name, part in zip(self.fields, parts, strict=True):
                    value = np.moveaxis(part, 0, -1).reshape(*spatial, *comps[name])
                    if not np.isfinite(value).all():
                        kept_note = f"; steps 1..{k - 1} are in {out}" if out else ""
                        raise RolloutError(
                            f"non-finite {name!r} at step {k} (t = {t0 + k * dt:g}){kept_note}"
                        )
                    snapshot[name] = value
                if stream is not None:
                    stream.append(k, t0 + k * dt, snapshot)
                else:
                    for name in self.fields:
                        kept[name].append(snapshot[name])
                recent = [*recent[1:], snapshot]
                bar.update()
            bar.close()
        finally:
            if stream is not None:
                stream.close()
        return GridRolloutResult(
            steps=steps,
            final={name: np.stack([s[name] for s in recent]) for name in self.fields},
            fields=None if out is not None else {k: np.stack(v) for k, v in kept.items() if v},
            path=None if out is None else Path(out),
            wall_time_s=_time.perf_counter() - start_wall,
            model_time_s=model_time,
        )
