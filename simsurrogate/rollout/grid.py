"""Advance fields on regular grids with a trained grid operator (FNO, U-Net), batched and
streamed to netCDF.

The engine is a plain object that pipelines call; it never sees a DataLoader or ground truth.
It holds the last ``history`` snapshots of the state fields of one trajectory or of a batch of
them and, per model call (all trajectories together), predicts one snapshot (autoregressive
models), a block of them (space-time models) or what one call of a single-step model covers
(:mod:`simsurrogate.models.operators.stepping`); every predicted snapshot is checked for
NaN/inf and appended to a netCDF-4 file, so memory stays flat::

    engine = GridRollout.from_checkpoint("best.ckpt")
    with WellReader("test.hdf5") as r:
        first = r.window(0, 1, engine.history, engine.fields)
        batch = [r.window(i, 1, engine.history, engine.fields) for i in range(8)]
    engine.run(first, steps=40, out="rollout/one.nc", dt=1.0)
    xarray.open_dataset("rollout/one.nc", engine="h5netcdf")["vorticity"]  # (time, x, y)
    engine.run(batch, steps=40, out="rollout/batch.nc", dt=1.0)  # one model call per step
    xarray.open_dataset("rollout/batch.nc", engine="h5netcdf")["vorticity"]  # (8, time, x, y)
"""

from __future__ import annotations

import math
import time as _time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5netcdf
import numpy as np
import torch
from tqdm.auto import tqdm

from simsurrogate.checkpoint import KEY, CheckpointError, load, read_checkpoint
from simsurrogate.data.well import to_channels
from simsurrogate.models.base import SurrogateModel
from simsurrogate.models.operators.stepping import check_mode, unroll
from simsurrogate.rollout.errors import RolloutError

__all__ = ["GridRollout", "GridRolloutResult", "is_grid_operator_checkpoint"]

#: the training task whose checkpoints this engine rolls out
TASK = "FieldOperatorTask"

#: one trajectory's state: per field, its last snapshots (history, *spatial, *components)
State = Mapping[str, np.ndarray]


def is_grid_operator_checkpoint(meta: Mapping) -> bool:
    """Whether checkpoint metadata (``ckpt["simsurrogate"]``) comes from a grid-operator task."""
    return meta.get("task") == TASK


@dataclass
class GridRolloutResult:
    """What :meth:`GridRollout.run` returns.

    Shapes are those of one state; a batch of B states adds a leading B dim.

    Attributes:
        steps: snapshots predicted (per trajectory).
        final: per field, the last ``history`` snapshots (history, *spatial, *components),
            or (B, history, *spatial, *components) for a batch.
        fields: without ``out`` only: per field, the predictions (steps, *spatial, *comps),
            or (B, steps, *spatial, *comps) for a batch.
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
    per snapshot. With ``batch`` (B trajectories) there is also a ``trajectory`` coordinate
    (0..B-1) and each field is (trajectory, time, *spatial, *components), one chunk per
    snapshot of one trajectory.
    """

    def __init__(
        self,
        path: Path,
        coords: Mapping[str, np.ndarray],
        shapes: Mapping[str, tuple[int, ...]],
        attrs: Mapping[str, object],
        batch: int | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.n, self.batched = path, 0, batch is not None
        self._nc = h5netcdf.File(path, "w")
        self._nc.dimensions = {"time": None, **{d: len(v) for d, v in coords.items()}}
        lead: tuple[str, ...] = ("time",)
        if batch is not None:
            self._nc.dimensions["trajectory"] = batch
            self._nc.create_variable("trajectory", ("trajectory",), data=np.arange(batch))
            lead = ("trajectory", "time")
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
            chunks = (*(1 for _ in lead), *shape)
            self._nc.create_variable(name, (*lead, *spatial, *comps), "f4", chunks=chunks)

    def append(self, step: int, time: float, fields: Mapping[str, np.ndarray]) -> None:
        """Write one snapshot: per field (B, *spatial, *components), B = 1 without ``batch``."""
        self._nc.resize_dimension("time", self.n + 1)
        self._nc["time"][self.n] = time
        self._nc["step"][self.n] = step
        for name, value in fields.items():
            if self.batched:
                self._nc[name][:, self.n] = value
            else:
                self._nc[name][self.n] = value[0]
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

    def _check(self, state: State, which: str) -> tuple[tuple[int, ...], ...]:
        """Check one initial state (``which`` names it in errors); its state fields' shapes."""
        missing = [f for f in self.fields if f not in state]
        if missing:
            raise RolloutError(f"{which} lacks fields {missing} (needs {self.fields})")
        shapes = {name: np.shape(state[name]) for name in self.fields}
        if {s[:1] for s in shapes.values()} != {(self.history,)}:
            raise RolloutError(
                f"{which} must hold the last {self.history} snapshots of each field, "
                f"got shapes {shapes}"
            )
        for name in self.fields:
            if not np.isfinite(state[name]).all():
                raise RolloutError(f"{name!r} in {which} is not finite")
        return tuple(shapes.values())

    def _states(self, initial: State | Sequence[State]) -> list[State]:
        """The initial states as a list (one for a single state), checked to match each other."""
        if isinstance(initial, Mapping):
            self._check(initial, "the initial state")
            return [initial]
        states = list(initial)
        if not states:
            raise RolloutError("no initial states: the batch is empty")
        if not all(isinstance(state, Mapping) for state in states):
            raise RolloutError("initial states must be mappings of field -> array")
        first = self._check(states[0], "the initial state of trajectory 0")
        for i, state in enumerate(states[1:], start=1):
            if set(state) != set(states[0]):
                raise RolloutError(
                    f"the initial states hold different fields: trajectory 0 "
                    f"{sorted(states[0])}, trajectory {i} {sorted(state)}"
                )
            shapes = self._check(state, f"the initial state of trajectory {i}")
            if shapes != first:
                raise RolloutError(
                    f"the initial states differ in shape: trajectory 0 "
                    f"{dict(zip(self.fields, first, strict=True))}, trajectory {i} "
                    f"{dict(zip(self.fields, shapes, strict=True))}"
                )
        return states

    @torch.no_grad()
    def run(
        self,
        initial: State | Sequence[State],
        steps: int,
        out: str | Path | None = None,
        t0: float = 0.0,
        dt: float = 1.0,
        coords: Mapping[str, np.ndarray] | None = None,
        attrs: Mapping[str, object] | None = None,
        progress: bool = False,
    ) -> GridRolloutResult:
        """Predict ``steps`` snapshots after ``initial``, all trajectories in one model call.

        Args:
            initial: one state: per state field, its last ``history`` snapshots (history,
                *spatial, *components), oldest first (e.g. ``WellReader.window`` output);
                or a sequence of B such states with the same fields and shapes, rolled out
                together as a batch (the model sees (B, history * C, *spatial)).
            steps: snapshots to predict (per trajectory).
            out: netCDF file to stream to (see :class:`_NetCDFStream`), one for the whole
                batch with a leading ``trajectory`` dim; without it the predictions are
                returned in memory.
            t0, dt: time of the last given snapshot and between snapshots (shared by the
                batch); snapshot k (k = 1..steps) is at t0 + k dt.
            coords: coordinates per spatial dim (default x, y, z: j / n).
            attrs: extra global attributes of the file (plain numbers and strings).

        Raises RolloutError naming the step, field and (for a batch) trajectory where a
        prediction is not finite; the snapshots before it stay in ``out``.
        """
        start_wall = _time.perf_counter()
        batched = not isinstance(initial, Mapping)
        states = self._states(initial)
        d = self.n_spatial
        x = torch.stack(
            [
                to_channels({k: np.asarray(s[k]) for k in self.fields}, self.fields, d)
                for s in states
            ]
        ).to(self.device)
        b, spatial = len(states), tuple(x.shape[2:])
        comps = {name: np.shape(states[0][name])[1 + d :] for name in self.fields}
        sizes = [math.prod(comps[name]) for name in self.fields]
        if coords is None:
            coords = {name: np.arange(n) / n for name, n in zip("xyz", spatial, strict=False)}
        stream = None
        if out is not None:
            shapes = {name: (*spatial, *comps[name]) for name in self.fields}
            meta = {"history": self.history, "mode": self.mode, "dt": dt, **(attrs or {})}
            stream = _NetCDFStream(Path(out), coords, shapes, meta, b if batched else None)
        # per field, predictions (without out) and the last history snapshots, each (B, ...)
        kept: dict[str, list[np.ndarray]] = {name: [] for name in self.fields}
        recent = {
            name: deque(np.stack([np.asarray(s[name]) for s in states], axis=1), self.history)
            for name in self.fields
        }
        model_time = 0.0
        try:
            snapshots = unroll(self.model, x, steps, self.mode, self.history, self.block)
            bar = tqdm(total=steps, desc="rollout", disable=not progress)
            for k in range(1, steps + 1):
                tic = _time.perf_counter()
                pred = next(snapshots).cpu().numpy()  # (B, C, *spatial)
                model_time += _time.perf_counter() - tic
                snapshot = {}
                parts = np.split(pred, np.cumsum(sizes)[:-1], axis=1)
                for name, part in zip(self.fields, parts, strict=True):
                    value = np.moveaxis(part, 1, -1).reshape(b, *spatial, *comps[name])
                    bad = np.flatnonzero(~np.isfinite(value.reshape(b, -1)).all(axis=1))
                    if bad.size:
                        raise self._non_finite(name, k, t0 + k * dt, bad if batched else None, out)
                    snapshot[name] = value
                if stream is not None:
                    stream.append(k, t0 + k * dt, snapshot)
                for name in self.fields:
                    if stream is None:
                        kept[name].append(snapshot[name])
                    recent[name].append(snapshot[name])
                bar.update()
            bar.close()
        finally:
            if stream is not None:
                stream.close()

        def stacked(snapshots: Sequence[np.ndarray]) -> np.ndarray:
            """Snapshots (B, ...) -> (B, n, ...) for a batch, (n, ...) for a single state."""
            a = np.stack(snapshots, axis=1)
            return a if batched else a[0]

        return GridRolloutResult(
            steps=steps,
            final={name: stacked(recent[name]) for name in self.fields},
            fields=None if out is not None else {k: stacked(v) for k, v in kept.items() if v},
            path=None if out is None else Path(out),
            wall_time_s=_time.perf_counter() - start_wall,
            model_time_s=model_time,
        )

    @staticmethod
    def _non_finite(
        name: str, k: int, t: float, bad: np.ndarray | None, out: str | Path | None
    ) -> RolloutError:
        """The error for a non-finite ``name`` at step ``k`` (time ``t``), in the trajectories
        ``bad`` of a batch (None for a single state); it also carries ``step``, ``field`` and
        ``trajectory`` (None for a single state) as attributes."""
        where = "" if bad is None else f" in trajectory {bad[0]}"
        if bad is not None and bad.size > 1:
            where += f" (also in trajectories {bad[1:].tolist()})"
        kept_note = f"; steps 1..{k - 1} are in {out}" if out else ""
        err = RolloutError(f"non-finite {name!r} at step {k} (t = {t:g}){where}{kept_note}")
        err.step, err.field = k, name  # type: ignore[attr-defined]
        err.trajectory = None if bad is None else int(bad[0])  # type: ignore[attr-defined]
        return err
