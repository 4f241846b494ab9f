"""Advance fluid states on meshes with a trained mesh model (MeshGraphNet), batched and streamed.

The engine is a plain object that simulation pipelines call; it never sees a DataLoader or
ground truth. Per step, every trajectory of the batch goes through one model call:

    u_{k+1} = model(u_k)                 on nodes of a predicted type (normal, outflow)
    u_{k+1} = u_0, or boundary(t_{k+1})  on every other node (walls, obstacle, inflow)
    p_{k+1} = model(u_k)                 output fields (pressure) on every node

with t_k = t_0 + k dt. Each step is checked for NaN/inf, then streamed to a mesh-schema file
(one trajectory group per input state) and to XDMF for ParaView, so memory stays flat.

Example::

    engine = MeshRollout.from_checkpoint("best.ckpt", device="cuda")
    state = MeshState.from_file("test.h5", trajectory=0, step=0)
    result = engine.run([state], steps=600, dt=0.01, out="rollout/rollout.h5")
    result.final[0].fields["velocity"]       # (N, 2), the state after 600 steps
"""

from __future__ import annotations

import contextlib
import math
import time as _time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from simsurrogate.checkpoint import load
from simsurrogate.data.mesh import MeshReader, MeshWriter, TrajectoryStream
from simsurrogate.data.node_types import PREDICTED_TYPES, check_node_types, hold_boundary
from simsurrogate.graph import Graph, cells_to_edges
from simsurrogate.models.base import SurrogateModel
from simsurrogate.models.meshgraphnet import MeshGraphNet
from simsurrogate.rollout.allocator import pad_heap
from simsurrogate.rollout.errors import RolloutError
from simsurrogate.rollout.xdmf import XdmfSeries, XdmfWriter, heavy_path

__all__ = [
    "BoundaryFn",
    "MeshRollout",
    "MeshRolloutResult",
    "MeshState",
    "is_mesh_model",
    "is_mesh_model_class",
    "xdmf_paths",
]

ArrayLike = np.ndarray | Tensor

#: ``boundary(time) -> one (N_i, dim) velocity array (or None: keep the initial values) per
#: trajectory``; called with the time (s) of each new step; only held nodes' rows are used.
BoundaryFn = Callable[[float], Sequence[ArrayLike | None]]

_MESH_MODEL_ATTRS = ("fields", "velocity_field", "output_fields", "dim", "predict")


def is_mesh_model(model: object) -> bool:
    """Whether ``model`` offers the mesh-simulator interface the engine drives:
    ``predict(graph) -> {field: (N, ...)}``, ``fields``, ``velocity_field``,
    ``output_fields`` and ``dim`` (as :class:`MeshGraphNet` does)."""
    return all(hasattr(model, a) for a in _MESH_MODEL_ATTRS)


def is_mesh_model_class(name: str) -> bool:
    """Whether a checkpoint's model class name (``meta["model"]["class"]``) is a mesh model."""
    import simsurrogate.models  # noqa: F401  (registers the built-in models)

    cls = SurrogateModel.registry.get(name)
    return cls is not None and issubclass(cls, MeshGraphNet)


def _numpy(x: Any) -> np.ndarray:
    """An array or tensor (any device) as a C-contiguous numpy array."""
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x)


@dataclass
class MeshState:
    """One mesh trajectory's state at one time.

    Attributes:
        mesh_pos: (N, dim) rest positions of the nodes, m.
        cells: (C, V) node indices of the cells (triangles CCW in 2-D); may be None when
            ``edge_index`` is given.
        node_type: (N,) :class:`~simsurrogate.data.node_types.NodeType` codes.
        fields: node fields name -> (N, ...) arrays, e.g. ``velocity`` (N, dim) m/s and
            ``pressure`` (N, 1); the values on boundary-held nodes are the boundary condition.
            Fields the model does not use are ignored.
        time: time of the state, s.
        edge_index: optional (2, E) mesh edges (sender, receiver); default: both directions
            of every cell side.
    """

    mesh_pos: ArrayLike
    cells: ArrayLike | None
    node_type: ArrayLike
    fields: dict[str, ArrayLike] = field(default_factory=dict)
    time: float = 0.0
    edge_index: ArrayLike | None = None

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        trajectory: int | str = 0,
        step: int = 0,
        fields: Sequence[str] | None = None,
    ) -> MeshState:
        """Step ``step`` of a trajectory of a mesh-schema file (fields default: all)."""
        with MeshReader(path) as reader:
            static = reader.static(trajectory)
            time = float(reader.time(trajectory)[step])
            window = reader.window(trajectory, step, 1, fields)
        return cls(
            mesh_pos=static["mesh_pos"],
            cells=static["cells"],
            node_type=static["node_type"],
            fields={k: v[0] for k, v in window.items()},
            time=time,
            edge_index=static.get("edge_index"),
        )


@dataclass
class MeshRolloutResult:
    """What :meth:`MeshRollout.run` returns.

    Attributes:
        final: the state of each trajectory after the last step (numpy arrays, on the CPU).
        steps: model steps taken.
        dt: time step, s.
        fields: without ``out`` only: per trajectory, field -> (steps + 1, N, C) array, the
            initial state first; None when the trajectory was streamed to ``out``.
        time: without ``out`` only: per trajectory, (steps + 1,) times, s.
        path: the mesh-schema file written (``out``), or None.
        xdmf: the XDMF files written, one per trajectory.
        wall_time_s: time of the whole run (model, checks, transfers, writing), s.
        model_time_s: time spent in the model's ``predict``, s.
    """

    final: list[MeshState]
    steps: int
    dt: float
    fields: list[dict[str, np.ndarray]] | None = None
    time: list[np.ndarray] | None = None
    path: Path | None = None
    xdmf: list[Path] = field(default_factory=list)
    wall_time_s: float = 0.0
    model_time_s: float = 0.0

    @property
    def steps_per_s(self) -> float:
        """Rollout speed over the whole run, steps/s."""
        return self.steps / self.wall_time_s if self.wall_time_s > 0 else math.inf

    @property
    def model_s_per_step(self) -> float:
        """Model time per step (all trajectories together), s."""
        return self.model_time_s / self.steps if self.steps else 0.0


def xdmf_paths(out: str | Path, n_trajectories: int) -> list[Path]:
    """XDMF files written next to the mesh file ``out``: ``run.h5`` -> ``run.xdmf`` for one
    trajectory, ``run_000000.xdmf``, ``run_000001.xdmf``... for several."""
    out = Path(out)
    if n_trajectories == 1:
        return [out.with_suffix(".xdmf")]
    return [out.with_name(f"{out.stem}_{i:06d}.xdmf") for i in range(n_trajectories)]


@dataclass
class _Prepared:
    """A checked state: numpy arrays for writing, a graph for the model."""

    mesh_pos: np.ndarray
    cells: np.ndarray  # cells to write: the state's, or its undirected edges as lines
    node_type: np.ndarray
    edge_index: np.ndarray | None
    fields: dict[str, np.ndarray]  # the model's fields, each (N, C) float32
    time: float
    graph: Graph

    @property
    def n(self) -> int:
        return len(self.mesh_pos)


class _Sink:
    """The files of one run: a mesh-schema file and, optionally, XDMF series.

    On an error after the first step was written, :meth:`fail` finishes both files so every
    step written so far stays readable (a MeshWriter used as a context manager would delete
    its file instead); before that, it removes them.
    """

    def __init__(
        self, out: Path, xdmf: bool, prepared: list[_Prepared], attrs: dict[str, Any]
    ) -> None:
        self.path = out
        self.writer = MeshWriter(out, attrs=attrs, overwrite=True)
        self.streams: list[TrajectoryStream] = []
        self.series: list[XdmfSeries] = []
        self.xdmf_files = xdmf_paths(out, len(prepared)) if xdmf else []
        self.xdmf: XdmfWriter | None = None
        try:
            for i, p in enumerate(prepared):
                shapes = {name: v.shape for name, v in p.fields.items()}
                self.streams.append(
                    self.writer.begin_trajectory(
                        mesh_pos=p.mesh_pos,
                        cells=p.cells,
                        node_type=p.node_type,
                        field_shapes=shapes,
                        edge_index=p.edge_index,
                        attrs={"input_state": i},
                    )
                )
            if xdmf:
                self.xdmf = XdmfWriter(heavy_path(out.with_suffix(".xdmf")))
                for stream, p, path in zip(self.streams, prepared, self.xdmf_files, strict=True):
                    key = stream.group.rsplit("/", 1)[-1]
                    self.series.append(self.xdmf.begin(path, key, p.mesh_pos, p.cells, p.node_type))
        except BaseException as exc:
            self._remove(exc)
            raise

    @property
    def n_steps(self) -> int:
        """Steps written to every trajectory."""
        return min((s.n_steps for s in self.streams), default=0)

    def write(self, times: np.ndarray, fields: list[dict[str, np.ndarray]]) -> None:
        """Append one step: per trajectory its time (s) and fields."""
        for i, stream in enumerate(self.streams):
            stream.append(float(times[i]), **fields[i])
        for i, series in enumerate(self.series):
            series.append(float(times[i]), fields[i])
        if self.xdmf is not None:
            self.xdmf.flush()

    def close(self) -> None:
        """Finish every file."""
        try:
            self.writer.close()
        finally:
            if self.xdmf is not None:
                self.xdmf.close()

    def fail(self, exc: BaseException) -> None:
        """Keep the steps written so far (finish the files), or remove them if there are none."""
        if self.n_steps == 0:
            self._remove(exc)
            return
        with contextlib.suppress(Exception):  # the original error matters more
            self.close()

    def _remove(self, exc: BaseException) -> None:
        with contextlib.suppress(Exception):
            self.writer.__exit__(type(exc), exc, exc.__traceback__)  # removes the temp file
        if self.xdmf is not None:
            with contextlib.suppress(Exception):
                self.xdmf.remove()


class MeshRollout:
    """Roll mesh states forward with a mesh simulator such as :class:`MeshGraphNet`.

    Args:
        model: a model with the mesh-simulator interface (:func:`is_mesh_model`).
        device: torch device the model runs on (``"cuda"`` for a GPU).
        precision: ``"32"`` (float32 throughout) or ``"bf16-mixed"``: the model's matrix
            products in bfloat16 under autocast, the state, the boundary values and the
            integration of the velocity in float32 (faster where the device has bfloat16
            units; ``benchmarks/mgn_rollout_speed.py`` measures both).
    """

    PRECISIONS = ("32", "bf16-mixed")

    def __init__(
        self, model: SurrogateModel, device: str | torch.device = "cpu", precision: str = "32"
    ) -> None:
        if precision not in self.PRECISIONS:
            raise RolloutError(f"precision must be one of {self.PRECISIONS}, got {precision!r}")
        self.precision = precision
        if not is_mesh_model(model):
            missing = [a for a in _MESH_MODEL_ATTRS if not hasattr(model, a)]
            raise RolloutError(
                f"{type(model).__name__} is not a mesh model (it lacks {missing}); "
                "MeshRollout drives models such as MeshGraphNet"
            )
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        if self.device.type == "cpu":
            pad_heap()  # steps reuse their memory instead of page-faulting (see allocator.py)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "cpu", precision: str = "32"
    ) -> MeshRollout:
        """Build the engine from a checkpoint file alone."""
        model = load(path, map_location=device)
        if not is_mesh_model(model):
            raise RolloutError(
                f"checkpoint {path} holds a {type(model).__name__}, not a mesh model; "
                "roll it out with the engine of its family (e.g. ParticleRollout)"
            )
        return cls(model, device, precision)

    # ------------------------------------------------------------------ checks
    def _prepare(self, i: int, state: MeshState) -> _Prepared:
        """Check one state against the model; raise a :class:`RolloutError` naming the state
        and the field."""
        model = self.model
        where = f"state {i}"
        pos = _numpy(state.mesh_pos)
        if pos.ndim != 2 or pos.dtype.kind != "f":
            raise RolloutError(
                f"{where}: mesh_pos must be a float (N, dim) array, got {pos.dtype} {pos.shape}"
            )
        n, dim = pos.shape
        if dim != model.dim:
            raise RolloutError(
                f"{where}: the mesh is {dim}-D (mesh_pos {pos.shape}) but the model is "
                f"{model.dim}-D"
            )
        node_type = _numpy(state.node_type)
        if node_type.shape != (n,) or node_type.dtype.kind not in "iu":
            raise RolloutError(
                f"{where}: node_type must be an integer ({n},) array, got "
                f"{node_type.dtype} {node_type.shape}"
            )
        try:
            check_node_types(node_type)
        except ValueError as exc:
            raise RolloutError(f"{where}: node_type: {exc}") from None
        edge_index = None if state.edge_index is None else _numpy(state.edge_index)
        cells = None if state.cells is None else _numpy(state.cells)
        for name, idx, rows in (("cells", cells, None), ("edge_index", edge_index, 2)):
            if idx is None:
                continue
            if idx.ndim != 2 or idx.dtype.kind not in "iu" or (rows and idx.shape[0] != rows):
                want = "(2, E)" if rows else "(C, V)"
                raise RolloutError(
                    f"{where}: {name} must be an integer {want} array, got {idx.dtype} {idx.shape}"
                )
            if idx.size and (idx.min() < 0 or idx.max() >= n):
                raise RolloutError(
                    f"{where}: {name} references nodes outside 0..{n - 1} "
                    f"(min {idx.min()}, max {idx.max()})"
                )
        if cells is None and edge_index is None:
            raise RolloutError(f"{where}: give cells or edge_index")
        if cells is None:
            assert edge_index is not None
            lines = edge_index[:, edge_index[0] < edge_index[1]].T
            cells = np.unique(np.sort(lines, axis=1), axis=0)
        fields = {}
        for name in model.fields:
            if name not in state.fields:
                raise RolloutError(
                    f"{where} lacks field {name!r} that the model needs: "
                    f"{type(model).__name__} was trained on fields {model.fields}, the state "
                    f"has {sorted(state.fields)}"
                )
            size = model.dim if name == model.velocity_field else model.output_fields[name]
            arr = _numpy(state.fields[name])
            if arr.shape == (n,) and size == 1:
                arr = arr[:, None]
            if arr.shape != (n, size) or arr.dtype.kind not in "fiu":
                raise RolloutError(
                    f"{where}: field {name!r} has shape {arr.shape} ({arr.dtype}); the "
                    f"{model.dim}-D model expects a real ({n}, {size}) array"
                )
            bad = ~np.isfinite(arr).all(axis=1)
            if bad.any():
                raise RolloutError(
                    f"{where}: field {name!r} is non-finite at node {int(np.argmax(bad))}"
                )
            fields[name] = np.ascontiguousarray(arr, dtype=np.float32)
        time = float(state.time)
        if not math.isfinite(time):
            raise RolloutError(f"{where}: time must be finite, got {time}")
        graph_edges = cells_to_edges(cells) if edge_index is None else edge_index
        graph = Graph(
            nodes={
                "mesh_pos": torch.as_tensor(pos, dtype=torch.float32),
                "node_type": torch.as_tensor(node_type, dtype=torch.long),
                model.velocity_field: torch.as_tensor(fields[model.velocity_field]),
            },
            edge_index=torch.as_tensor(graph_edges, dtype=torch.long),
        )
        return _Prepared(pos, cells, node_type, edge_index, fields, time, graph)

    def _boundary(
        self, boundary: BoundaryFn, t: float, k: int, prepared: list[_Prepared], initial: Tensor
    ) -> Tensor:
        """Held velocities (N_total, dim) at time ``t`` of step ``k`` from the caller's
        boundary function (only the rows of held nodes are used)."""
        values = list(boundary(t))
        if len(values) != len(prepared):
            raise RolloutError(
                f"step {k}: boundary({t:g}) returned {len(values)} arrays for "
                f"{len(prepared)} trajectories"
            )
        parts, start = [], 0
        for i, (p, v) in enumerate(zip(prepared, values, strict=True)):
            if v is None:
                parts.append(initial[start : start + p.n])
            else:
                arr = torch.as_tensor(_numpy(v), dtype=torch.float32)
                if arr.shape != (p.n, self.model.dim):
                    raise RolloutError(
                        f"step {k}: boundary({t:g})[{i}] has shape {tuple(arr.shape)}, "
                        f"expected ({p.n}, {self.model.dim}) velocities of trajectory {i}"
                    )
                held = ~np.isin(p.node_type, PREDICTED_TYPES)
                if not torch.isfinite(arr[torch.as_tensor(held)]).all():
                    raise RolloutError(
                        f"step {k}: boundary({t:g})[{i}] is non-finite on held nodes "
                        f"(trajectory {i})"
                    )
                parts.append(arr.to(self.device))
            start += p.n
        return torch.cat(parts)

    # ------------------------------------------------------------------ run
    @torch.no_grad()
    def run(
        self,
        states: MeshState | Sequence[MeshState],
        steps: int,
        dt: float | None = None,
        out: str | Path | None = None,
        xdmf: bool = True,
        progress: bool = False,
        boundary: BoundaryFn | None = None,
    ) -> MeshRolloutResult:
        """Advance every state ``steps`` times, all trajectories in one model call per step.

        Args:
            states: one state or several (meshes of different sizes allowed).
            steps: model steps to take.
            dt: time step, s (None: 1, so that time counts steps). Step k lies at
                ``state.time + k dt``.
            out: mesh-schema file streamed step by step (one trajectory group per state,
                step 0 = the initial state); then only the final state is kept in memory.
                Without it the whole trajectory is returned (for small runs).
            xdmf: with ``out``, also write XDMF for ParaView next to it (:func:`xdmf_paths`,
                heavy data in ``<name>.xdmf.h5``).
            progress: show a progress bar.
            boundary: time-dependent boundary condition (:data:`BoundaryFn`); default:
                held nodes keep their initial velocity. Needs states of one start time.

        Files: the mesh file appears under ``out`` when the run ends (written under a
        temporary name until then, replacing an older file only then); the XDMF files are
        complete after every step, so ParaView can follow a long run. If the run stops with
        an error or an interrupt after step 0 was written, both are finished with every
        step completed so far; before that, nothing is left behind.

        Raises:
            RolloutError: a state does not fit the model, or a step went non-finite (the
                message names the step, trajectory and field, also set as the error's
                ``step``, ``trajectory`` and ``field`` attributes; the files keep every step
                before it).
        """
        model = self.model
        states = [states] if isinstance(states, MeshState) else list(states)
        if not states:
            raise RolloutError("no states to roll out")
        if steps < 0:
            raise RolloutError(f"steps must be >= 0, got {steps}")
        dt = 1.0 if dt is None else float(dt)
        if not (math.isfinite(dt) and dt > 0):
            raise RolloutError(f"dt must be a positive number of seconds, got {dt}")
        prepared = [self._prepare(i, s) for i, s in enumerate(states)]
        t0 = np.array([p.time for p in prepared], dtype=np.float64)
        if boundary is not None and not (t0 == t0[0]).all():
            raise RolloutError(
                f"a boundary function needs states of one start time, got times {t0.tolist()}"
            )
        vel, names = model.velocity_field, list(model.fields)
        tic = _time.perf_counter()

        graph = Graph.batch([p.graph for p in prepared]).to(self.device)
        static_nodes = {k: v for k, v in graph.nodes.items() if k != vel}
        n_total = graph.num_nodes
        offsets = graph.node_offsets.tolist()
        node_type = graph.nodes["node_type"]
        initial = graph.nodes[vel]  # (N_total, dim): the boundary values by default
        state = {
            name: torch.cat([torch.as_tensor(p.fields[name]) for p in prepared]).to(self.device)
            for name in names
        }

        def split(arrays: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
            return [
                {name: a[offsets[i] : offsets[i + 1]] for name, a in arrays.items()}
                for i in range(len(prepared))
            ]

        keep = out is None  # the whole trajectory stays in memory only without a file
        history: list[list[dict[str, np.ndarray]]] = [[p.fields] for p in prepared]
        attrs = {
            "rollout": type(self).__name__,
            "model": model.spec() if hasattr(model, "spec") else type(model).__name__,
            "dt": dt,
            "steps_requested": int(steps),
        }
        sink = None if out is None else _Sink(Path(out), xdmf, prepared, attrs)
        model_time = 0.0
        current = [p.fields for p in prepared]
        try:
            if sink is not None:
                sink.write(t0, current)
            cuda = self.device.type == "cuda"
            for k in tqdm(range(1, steps + 1), disable=not progress, desc="rollout"):
                t_model = _time.perf_counter()
                g = Graph(
                    nodes={**static_nodes, vel: state[vel]},
                    edge_index=graph.edge_index,
                    n_nodes=graph.n_nodes,
                    n_edges=graph.n_edges,
                )
                if self.precision == "bf16-mixed":
                    with torch.autocast(self.device.type, torch.bfloat16):
                        pred = {k: v.float() for k, v in model.predict(g).items()}
                else:
                    pred = model.predict(g)
                if cuda:
                    torch.cuda.synchronize(self.device)
                model_time += _time.perf_counter() - t_model
                times = t0 + k * dt
                held_values = initial
                if boundary is not None:
                    held_values = self._boundary(boundary, float(times[0]), k, prepared, initial)
                new = {name: pred[name].reshape(n_total, -1) for name in names}
                new[vel] = hold_boundary(new[vel], held_values, node_type)
                self._check_finite(new, k, times, offsets, sink)
                state = new
                current = split({name: v.cpu().numpy() for name, v in new.items()})
                if sink is not None:
                    sink.write(times, current)
                if keep:
                    for h, c in zip(history, current, strict=True):
                        h.append(c)
        except BaseException as exc:
            if sink is not None:
                sink.fail(exc)
            raise
        if sink is not None:
            sink.close()
        wall = _time.perf_counter() - tic

        final = [
            MeshState(
                mesh_pos=p.mesh_pos,
                cells=None if states[i].cells is None else p.cells,
                node_type=p.node_type,
                fields={name: v.copy() for name, v in c.items()},
                time=float(t0[i] + steps * dt),
                edge_index=p.edge_index,
            )
            for i, (p, c) in enumerate(zip(prepared, current, strict=True))
        ]
        result = MeshRolloutResult(
            final=final,
            steps=steps,
            dt=dt,
            path=None if sink is None else sink.path,
            xdmf=[] if sink is None else list(sink.xdmf_files),
            wall_time_s=wall,
            model_time_s=model_time,
        )
        if keep:
            result.fields = [
                {name: np.stack([step[name] for step in h]) for name in names} for h in history
            ]
            result.time = [t0[i] + np.arange(steps + 1) * dt for i in range(len(prepared))]
        return result

    def _check_finite(
        self,
        new: dict[str, Tensor],
        k: int,
        times: np.ndarray,
        offsets: list[int],
        sink: _Sink | None,
    ) -> None:
        """Raise a :class:`RolloutError` naming step, trajectory and field if any value of
        the new state is NaN/inf (one device sync per step)."""
        bad = {name: ~torch.isfinite(v).all(dim=1) for name, v in new.items()}
        if not bool(torch.stack([b.any() for b in bad.values()]).any()):
            return
        bounds = np.asarray(offsets)
        for name, mask in bad.items():
            nodes = torch.nonzero(mask).flatten().cpu().numpy()
            if nodes.size == 0:
                continue
            trajs = np.searchsorted(bounds, nodes, side="right") - 1
            i = int(trajs[0])
            count = int((trajs == i).sum())
            others = sorted(set(trajs.tolist()) - {i})
            kept = (
                ""
                if sink is None
                else f"; {sink.path} keeps steps 0..{k - 1}"
                + (" (and the XDMF files)" if sink.series else "")
            )
            msg = (
                f"non-finite {name} at step {k} (time {times[i]:g}) in trajectory {i}: "
                f"{count} of {offsets[i + 1] - offsets[i]} nodes, first node "
                f"{int(nodes[0]) - offsets[i]}"
                + (f"; also in trajectories {others}" if others else "")
                + kept
            )
            err = RolloutError(msg)
            err.step, err.trajectory, err.field = k, i, name  # type: ignore[attr-defined]
            raise err
