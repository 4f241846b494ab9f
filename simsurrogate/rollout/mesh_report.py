"""Roll a mesh model out from a stored state and score it against the stored truth.

Everything is streamed: the engine writes the rollout step by step, and the scores, figure
and animation read the prediction and the truth back one step at a time, so memory stays
flat however long the rollout and however large the mesh.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from simsurrogate.data.errors import DataError
from simsurrogate.data.mesh import MeshReader
from simsurrogate.data.node_types import NodeType
from simsurrogate.models.base import SurrogateModel
from simsurrogate.rollout._plots import curve, panel_animation, pyplot, write_plots
from simsurrogate.rollout.mesh import MeshRollout, MeshState

__all__ = [
    "mesh_rollout_report",
    "rmse_at",
    "score_mesh_rollouts",
    "shedding",
    "wake_cross_velocity",
]

#: horizons (steps) at which the rollout RMSE is reported, besides "all"
HORIZONS = (1, 50)


def rmse_at(mse_per_step: list[float], horizon: int | None) -> float | None:
    """MeshGraphNets rollout RMSE: ``sqrt(mean_{k=1..h} mse_k)``, where ``mse_k`` is the squared
    error at step k averaged over nodes and components; None without truth for h steps.
    ``horizon`` None means every step with truth."""
    h = len(mse_per_step) if horizon is None else horizon
    if h < 1 or h > len(mse_per_step):
        return None
    return float(np.sqrt(np.mean(mse_per_step[:h])))


def _horizons(mse_per_step: list[float]) -> dict[str, float | None]:
    """RMSE at each of :data:`HORIZONS` and over all steps (key ``"all"``)."""
    return {
        **{str(h): rmse_at(mse_per_step, h) for h in HORIZONS},
        "all": rmse_at(mse_per_step, None),
    }


def _mse_per_step(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """(T, N, C) prediction and truth, step 0 the shared initial state -> MSE of steps 1..T-1."""
    diff = pred[1:].astype(np.float64) - truth[1:].astype(np.float64)
    return [float(v) for v in np.mean(diff.reshape(len(diff), -1) ** 2, axis=1)]


def wake_cross_velocity(
    mesh_pos: np.ndarray, node_type: np.ndarray, velocity: np.ndarray
) -> np.ndarray | None:
    """Cross-stream velocity (T, W) at the wake nodes of a 2-D flow past an obstacle.

    ``velocity`` is (T, N, 2) m/s. The wake nodes are the normal nodes 0.1-0.6 m downstream
    of the centre of the obstacle nodes and within 0.1 m of its axis (the vortex street of the
    cylinder-flow data). None when the mesh has no obstacle or no node in that box.
    """
    pos = np.asarray(mesh_pos)
    kind = np.asarray(node_type)
    obstacle = kind == NodeType.OBSTACLE
    if pos.shape[1] != 2 or not obstacle.any():
        return None
    dx, dy = (pos - pos[obstacle].mean(axis=0)).T
    wake = (kind == NodeType.NORMAL) & (dx > 0.1) & (dx < 0.6) & (np.abs(dy) < 0.1)
    if not wake.any():
        return None
    return np.asarray(velocity)[:, wake, 1]


def shedding(pred_vy: np.ndarray, true_vy: np.ndarray) -> dict[str, float]:
    """Does a rollout shed vortices like the truth? From the wake's cross-stream velocity
    (T, W) of both (:func:`wake_cross_velocity`), over the second half of the steps: its
    standard deviation in time (m/s, mean over wake nodes; about 0 for a steady wake) and
    its dominant period (steps, FFT at the node where the truth oscillates most; inf for no
    oscillation)."""
    late = slice(len(true_vy) // 2, None)
    node = int(np.argmax(true_vy[late].std(axis=0)))

    def period(x: np.ndarray) -> float:
        spectrum = np.abs(np.fft.rfft(x - x.mean()))
        spectrum[0] = 0.0
        k = int(np.argmax(spectrum))
        return len(x) / k if k else float("inf")

    out = {}
    for who, vy in (("model", pred_vy), ("truth", true_vy)):
        out[f"{who}_vy_std"] = float(vy[late].std(axis=0).mean())
        out[f"{who}_period_steps"] = period(vy[late, node])
    return out


def wake_error(wake: dict[str, float], min_std: float = 1e-3) -> float:
    """How far a rollout's vortex street is from the truth's, 0 when it matches: ``|ln
    amplitude ratio| + |ln period ratio|`` from a :func:`shedding` result, each term capped
    at 10. A model wake whose std is under ``min_std`` (m/s) counts as steady, so its period
    is infinite (the capped term) rather than the arbitrary period of a near-zero signal."""
    amplitude = abs(np.log(max(wake["model_vy_std"], 1e-12) / wake["truth_vy_std"]))
    period = wake["model_period_steps"] if wake["model_vy_std"] >= min_std else float("inf")
    return min(amplitude, 10.0) + min(abs(np.log(period / wake["truth_period_steps"])), 10.0)


def score_mesh_rollouts(
    model: SurrogateModel | MeshRollout,
    data: str | Path,
    trajectories: Sequence[int] | None = None,
    steps: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Roll a mesh model out from the first stored state of trajectories of ``data`` (all in
    one batch, boundary nodes held by the engine) and score each against its stored truth.

    Args:
        model: a mesh model (e.g. the live model of a training run) or an engine.
        data: mesh-schema file with the truth.
        trajectories: indices to score (default: all).
        steps: model steps (default: as many as the shortest trajectory has after step 0).

    Returns ``{"steps", "dt", "per_trajectory", "mean", "persistence_mean", "wall_time_s",
    "model_s_per_step"}``. Per trajectory: ``rmse`` and ``persistence_rmse`` (field ->
    horizon ``"1"``, ``"50"``, ``"all"`` -> RMSE as :func:`rmse_at`; persistence keeps the
    initial state), ``reynolds`` (NaN when the file does not record it), ``nodes`` and, for
    2-D flows past an obstacle, ``wake`` (:func:`shedding`). ``mean``: the RMSEs averaged
    over the trajectories. The whole rollout is held in memory: meant for the few
    trajectories of a validation or test file.
    """
    if isinstance(model, MeshRollout):
        engine = model
    else:  # on the device the model is on (a live model in training stays there)
        device = next((p.device for p in model.parameters()), "cpu")
        engine = MeshRollout(model, device=device)
    names = list(engine.model.fields)
    with MeshReader(data) as reader:
        picked = list(range(len(reader))) if trajectories is None else list(trajectories)
        if not picked:
            raise DataError("no trajectories to score", path=data)
        for i in picked:
            if not 0 <= i < len(reader):
                raise DataError(
                    f"no trajectory {i}", path=data, expected=f"0..{len(reader) - 1}", found=i
                )
        available = min(reader.n_steps(i) for i in picked) - 1
        n_steps = available if steps is None else int(steps)
        if not 1 <= n_steps <= available:
            raise DataError(
                f"cannot score {n_steps} steps",
                path=data,
                expected=f"1..{available} (steps after the first stored state)",
                found=n_steps,
            )
        time_axis = reader.time(picked[0])
        truth = [reader.window(i, 0, n_steps + 1, names) for i in picked]
        reynolds = [
            float(np.ravel(reader.attrs_of(i).get("reynolds", [np.nan]))[0]) for i in picked
        ]
        states = []  # step 0 of the truth already read, the static mesh from the same file
        for i, window in zip(picked, truth, strict=True):
            static = reader.static(i)
            states.append(
                MeshState(
                    mesh_pos=static["mesh_pos"],
                    cells=static["cells"],
                    node_type=static["node_type"],
                    fields={n: v[0] for n, v in window.items()},
                    time=float(reader.time(i)[0]),
                    edge_index=static.get("edge_index"),
                )
            )
    dt = float(time_axis[1] - time_axis[0])
    result = engine.run(states, n_steps, dt=dt, progress=progress)
    velocity = engine.model.velocity_field
    rows = []
    for j, i in enumerate(picked):
        pred = result.fields[j]
        true = {n: truth[j][n].reshape(pred[n].shape) for n in names}
        still = {n: np.broadcast_to(true[n][:1], true[n].shape) for n in names}
        row: dict[str, Any] = {
            "trajectory": i,
            "reynolds": reynolds[j],
            "nodes": int(pred[names[0]].shape[1]),
            "rmse": {n: _horizons(_mse_per_step(pred[n], true[n])) for n in names},
            "persistence_rmse": {n: _horizons(_mse_per_step(still[n], true[n])) for n in names},
        }
        wake = [
            wake_cross_velocity(states[j].mesh_pos, states[j].node_type, f[velocity])
            for f in (pred, true)
        ]
        if wake[0] is not None:
            row["wake"] = shedding(*wake)
        rows.append(row)

    def mean(key: str) -> dict[str, dict[str, float | None]]:
        """Field -> horizon -> mean over trajectories (None: a horizon past the rollout)."""
        out: dict[str, dict[str, float | None]] = {}
        for n in names:
            out[n] = {}
            for h in rows[0][key][n]:
                values = [r[key][n][h] for r in rows]
                out[n][h] = None if None in values else float(np.mean(values))
        return out

    return {
        "steps": n_steps,
        "dt": dt,
        "per_trajectory": rows,
        "mean": mean("rmse"),
        "persistence_mean": mean("persistence_rmse"),
        "wall_time_s": result.wall_time_s,
        "model_s_per_step": result.model_s_per_step,
    }


def mesh_rollout_report(
    checkpoint: str | Path,
    data: str | Path,
    trajectory: int,
    steps: int,
    start: int,
    out: str | Path,
    device: str = "cpu",
    max_frames: int = 60,
    precision: str = "32",
) -> dict[str, Any]:
    """Roll ``steps`` model steps from step ``start`` of ``trajectory`` and write to ``out``.

    The initial state (mesh, node types, fields) is step ``start`` of the file; dt comes
    from its time coordinate. Writes ``rollout.h5`` (mesh schema), ``rollout.xdmf`` and
    ``rollout.xdmf.h5`` (ParaView), ``metrics.json`` (RMSE per field at 1, 50 and all steps
    that have truth, the RMSE per step, speed), ``rollout.png`` (prediction, truth and error
    of the velocity at a few steps, RMSE against step) and ``rollout.gif`` (prediction |
    truth | error, at most ``max_frames`` frames). ``precision``: the engine's
    (:class:`MeshRollout`). Returns the metrics.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    engine = MeshRollout.from_checkpoint(checkpoint, device=device, precision=precision)
    model = engine.model
    names = list(model.fields)
    with MeshReader(data) as reader:
        if not 0 <= trajectory < len(reader):
            raise DataError(
                f"no trajectory {trajectory}",
                path=data,
                expected=f"0..{len(reader) - 1}",
                found=trajectory,
            )
        group = reader.trajectories[trajectory]
        n_file = reader.n_steps(trajectory)
        if not 0 <= start < n_file:
            raise DataError(
                f"start step {start} outside trajectory {trajectory}",
                path=data,
                group=group,
                expected=f"0..{n_file - 1}",
                found=start,
            )
        missing = [f for f in names if f not in reader.fields(trajectory)]
        if missing:
            raise DataError(
                f"the checkpoint's {type(model).__name__} needs fields {missing} that the "
                f"trajectory lacks (it has {reader.fields(trajectory)})",
                path=data,
                group=group,
            )
        time = reader.time(trajectory)
    dt = None
    if n_file > 1:
        k = start if start + 1 < n_file else start - 1
        dt = float(time[k + 1] - time[k])
    state = MeshState.from_file(data, trajectory, start, names)
    result = engine.run(state, steps, dt=dt, out=out / "rollout.h5", xdmf=True)

    n_truth = min(steps, n_file - 1 - start)
    mse: dict[str, list[float]] = {name: [] for name in names}
    with MeshReader(result.path) as pred_reader, MeshReader(data) as truth_reader:
        for k in range(1, n_truth + 1):
            pred = pred_reader.window(0, k, 1, names)
            truth = truth_reader.window(trajectory, start + k, 1, names)
            for name in names:
                diff = pred[name][0].astype(np.float64) - truth[name][0].reshape(
                    pred[name][0].shape
                )
                mse[name].append(float(np.mean(diff**2)))
    rmse = {name: _horizons(mse[name]) for name in names}
    metrics: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "data": str(data),
        "trajectory": trajectory,
        "start_step": start,
        "steps": steps,
        "dt": result.dt,
        "model": type(model).__name__,
        "nodes": int(len(state.mesh_pos)),
        "steps_with_truth": n_truth,
        "rmse": rmse,
        "rmse_definition": "sqrt of the squared error averaged over all nodes, components and "
        "steps 1..h (MeshGraphNets); keys: h = 1, 50 and all steps with truth",
        "rmse_per_step": {name: [float(np.sqrt(v)) for v in mse[name]] for name in names},
        "speed": {
            "device": str(engine.device),
            "precision": engine.precision,
            "steps_per_s": result.steps_per_s if steps else None,
            "model_ms_per_step": 1e3 * result.model_s_per_step if steps else None,
            "wall_time_s": result.wall_time_s,
        },
        "files": {
            "rollout": str(result.path),
            "xdmf": [str(p) for p in result.xdmf],
        },
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plots = _Plots(result.path, data, trajectory, start, n_truth, model.velocity_field, state)
    # 3-D or line meshes: no field plots, the error curve only
    write_plots(plots, metrics["rmse_per_step"], _CURVE, steps, max_frames, out)
    return metrics


def summary_line(metrics: dict[str, Any], out: str | Path) -> str:
    """One line for the terminal: what ran, how fast, how accurate, where it went."""
    speed = metrics["speed"]
    text = (
        f"rollout: {metrics['steps']} steps of {metrics['model']} on trajectory "
        f"{metrics['trajectory']} of {metrics['data']} from step {metrics['start_step']}"
    )
    if speed["steps_per_s"] is not None:
        text += (
            f", {speed['steps_per_s']:.1f} steps/s ({speed['model_ms_per_step']:.2f} ms "
            f"model/step on {speed['device']})"
        )

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.3g}"

    scores = [
        f"{name} {'/'.join(fmt(r[key]) for key in (*map(str, HORIZONS), 'all'))}"
        for name, r in metrics["rmse"].items()
    ]
    horizons = "/".join([*map(str, HORIZONS), "all"])
    text += f"; RMSE at {horizons} steps: " + ", ".join(scores) + f"; wrote {out}"
    return text


# --------------------------------------------------------------------------------------------
# plots


#: error-curve labels of the mesh report
_CURVE = ("RMSE", "error growth along the rollout (nodes and components averaged)")


class _Plots:
    """Velocity magnitude of prediction and truth, and the magnitude of their difference,
    on a 2-D triangle or quad mesh; reads one step at a time from the files."""

    def __init__(
        self,
        rollout: Path,
        data: str | Path,
        trajectory: int,
        start: int,
        n_truth: int,
        field: str,
        state: MeshState,
    ) -> None:
        self.rollout, self.data = rollout, data
        self.trajectory, self.start, self.n_truth, self.field = trajectory, start, n_truth, field
        pos = np.asarray(state.mesh_pos)
        cells = None if state.cells is None else np.asarray(state.cells)
        self.ok = pos.shape[1] == 2 and cells is not None and cells.shape[1] in (3, 4)
        if not self.ok:
            return
        if cells.shape[1] == 4:  # quads as two triangles each
            cells = np.concatenate([cells[:, [0, 1, 2]], cells[:, [0, 2, 3]]])
        import matplotlib.tri as mtri

        self.tri = mtri.Triangulation(pos[:, 0], pos[:, 1], cells)
        self.extent = np.ptp(pos, axis=0)
        self._pred, self._truth = MeshReader(rollout), MeshReader(data)
        self.time = self._pred.time(0)

    def close(self) -> None:
        """Close the files."""
        if self.ok:
            self._pred.close()
            self._truth.close()

    def _step(self, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Predicted and true velocity (N, dim) at step k (truth None where the file ends)."""
        name = self.field
        pred = self._pred.window(0, k, 1, [name])[name][0]
        truth = None
        if k <= self.n_truth:
            truth = self._truth.window(self.trajectory, self.start + k, 1, [name])[name][0]
        return pred, truth

    def _panels(self, k: int) -> list[np.ndarray | None]:
        """|u_pred|, |u_true|, |u_pred - u_true| at step k."""
        pred, truth = self._step(k)
        mag = np.linalg.norm(pred, axis=-1)
        if truth is None:
            return [mag, None, None]
        return [mag, np.linalg.norm(truth, axis=-1), np.linalg.norm(pred - truth, axis=-1)]

    def _limits(self, ks: list[int]) -> tuple[float, float]:
        """Colour limits of |u| and of the error over steps ks: both the largest true |u| (the
        largest predicted |u| without truth), so a prediction that blows up at a few nodes
        saturates there instead of washing out the flow, and the error reads on the field's
        own scale."""
        true_max, pred_max = 0.0, 0.0
        for k in ks:
            pred, truth, _ = self._panels(k)
            pred_max = max(pred_max, float(pred.max()))
            if truth is not None:
                true_max = max(true_max, float(truth.max()))
        vmax = true_max or pred_max or 1.0
        return vmax, vmax

    def _draw(self, ax, values: np.ndarray | None, vmax: float, cmap: str):
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        if values is None:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
            ax.triplot(self.tri, lw=0.2, color="0.8")
            return None
        return ax.tripcolor(self.tri, values, shading="gouraud", cmap=cmap, vmin=0, vmax=vmax)

    def figure(self, steps: int, rmse_per_step: dict[str, list[float]], path: Path) -> None:
        """Rows: prediction, truth, error at up to 4 steps; then the RMSE against step."""
        plt = pyplot()
        last = self.n_truth if self.n_truth > 0 else steps
        ks = sorted({int(round(k)) for k in np.linspace(min(1, last), last, min(4, last + 1))})
        vmax, emax = self._limits(ks)
        ncols = len(ks)
        aspect = float(self.extent[1] / self.extent[0]) if self.extent[0] > 0 else 1.0
        row_h = max(1.2, 3.6 * aspect + 0.5)
        fig = plt.figure(figsize=(3.6 * ncols + 1.2, 3 * row_h + 3))
        grid = fig.add_gridspec(
            4, ncols + 1, height_ratios=[row_h] * 3 + [3], width_ratios=[1] * ncols + [0.06]
        )
        rows = ("prediction |u|", "ground truth |u|", "|u_pred - u_true|")
        for c, k in enumerate(ks):
            for r, values in enumerate(self._panels(k)):
                ax = fig.add_subplot(grid[r, c])
                im = self._draw(
                    ax, values, emax if r == 2 else vmax, "magma" if r == 2 else "viridis"
                )
                if r == 0:
                    ax.set_title(f"step {k} (t = {self.time[k]:.4g} s)")
                if c == 0:
                    ax.set_ylabel(rows[r])
                if c == ncols - 1 and im is not None:
                    fig.colorbar(im, cax=fig.add_subplot(grid[r, ncols]))
        curve(fig.add_subplot(grid[3, :ncols]), rmse_per_step, *_CURVE)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def animation(self, steps: int, max_frames: int, path: Path) -> None:
        """Prediction | truth | error, subsampled to at most ``max_frames`` frames (pillow)."""
        n_frames = max(1, min(steps + 1, max_frames))
        ks = [int(k) for k in np.unique(np.linspace(0, steps, n_frames).round())]
        vmax, emax = self._limits(ks)
        aspect = float(self.extent[1] / self.extent[0]) if self.extent[0] > 0 else 1.0
        zeros = np.zeros(len(self.tri.x))
        panel_animation(
            path,
            ks,
            ("prediction |u|", "ground truth |u|", "|u_pred - u_true|"),
            (12, max(2.0, 4 * aspect + 0.8)),
            lambda ax, r: self._draw(
                ax, zeros, emax if r == 2 else vmax, "magma" if r == 2 else "viridis"
            ),
            self._panels,  # one step read per frame
            lambda k: f"step {k} of {steps}, t = {self.time[k]:.4g} s",
            lambda image, values: image.set_array(values),
        )
