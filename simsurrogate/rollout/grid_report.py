"""Roll a grid operator out from snapshots of a Well file and score it against the file.

Streamed like the mesh report: the engine writes each predicted snapshot as it comes, and the
scores, figure and animation read prediction and truth back one snapshot at a time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from simsurrogate.data.errors import DataError
from simsurrogate.data.grid import WellReader
from simsurrogate.rollout._plots import curve, panel_animation, pyplot, write_plots
from simsurrogate.rollout.grid import GridRollout

__all__ = ["grid_rollout_report", "grid_summary_line"]

_CURVE = ("relative L2", "error growth along the rollout (all fields)")
#: colour maps of the prediction, truth and error panels
_CMAPS = ("RdBu_r", "RdBu_r", "PuOr")


def grid_rollout_report(
    checkpoint: str | Path,
    data: str | Path,
    trajectory: int,
    steps: int,
    start: int,
    out: str | Path,
    device: str = "cpu",
    max_frames: int = 60,
) -> dict[str, Any]:
    """Give the model snapshots ``start .. start + H - 1`` of ``trajectory``, predict ``steps``.

    H is the checkpoint's history (10 for the FNO paper's Navier–Stokes: ``start=1`` gives
    its window, t = 1..10 given and t = 11..50 predicted). Writes ``rollout.nc`` (netCDF-4:
    the predicted snapshots), ``metrics.json`` (relative L2 per step and over all steps with
    truth: ||pred - true|| / ||true|| over those steps together, the FNO paper's number),
    ``rollout.png`` (prediction, truth and error at a few steps; relative L2 against step)
    and ``rollout.gif`` (prediction | truth | error, at most ``max_frames`` frames) for 2-D
    fields. Returns the metrics.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    engine = GridRollout.from_checkpoint(checkpoint, device=device)
    names, history = engine.fields, engine.history
    with WellReader(data) as reader:
        if not 0 <= trajectory < reader.n_trajectories:
            raise DataError(
                f"no trajectory {trajectory}",
                path=data,
                expected=f"0..{reader.n_trajectories - 1}",
                found=trajectory,
            )
        if not 0 <= start <= reader.n_steps - history:
            raise DataError(
                f"start step {start} leaves no room for the {history} given snapshots",
                path=data,
                expected=f"0..{reader.n_steps - history}",
                found=start,
            )
        missing = [f for f in names if f not in reader.fields]
        if missing:
            raise DataError(
                f"the checkpoint needs fields {missing} that the file lacks",
                path=data,
                expected=names,
                found=sorted(reader.fields),
            )
        initial = reader.window(trajectory, start, history, names)
        time = reader.time(trajectory)
        coords = reader.coordinates(trajectory)
        n_file = reader.n_steps
    last = start + history - 1  # file step of the last given snapshot
    dt = float(time[1] - time[0]) if n_file > 1 else 1.0
    result = engine.run(
        initial,
        steps,
        out=out / "rollout.nc",
        t0=float(time[last]),
        dt=dt,
        coords=coords,
        attrs={"checkpoint": str(checkpoint), "data": str(data), "trajectory": trajectory},
    )
    n_truth = min(steps, n_file - 1 - last)
    frames = _Frames(result.path, data, trajectory, last, n_truth, names)
    err, norm = np.zeros(n_truth), np.zeros(n_truth)
    try:
        for k in range(1, n_truth + 1):
            pred, truth = frames.step(k)
            err[k - 1] = sum(np.sum((pred[n] - truth[n]) ** 2) for n in names)
            norm[k - 1] = sum(np.sum(truth[n] ** 2) for n in names)
    except BaseException:
        frames.close()
        raise
    per_step = np.sqrt(err / np.maximum(norm, 1e-30)).tolist()
    metrics: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "data": str(data),
        "trajectory": trajectory,
        "given_steps": [start, last],
        "steps": steps,
        "dt": dt,
        "mode": engine.mode,
        "model": type(engine.model).__name__,
        "fields": names,
        "steps_with_truth": n_truth,
        "rel_l2": float(np.sqrt(err.sum() / max(norm.sum(), 1e-30))) if n_truth else None,
        "rel_l2_definition": "||pred - true|| / ||true|| over all fields and all predicted "
        "steps with truth together (the FNO paper's Navier–Stokes rollout error)",
        "rel_l2_per_step": per_step,
        "speed": {
            "device": str(engine.device),
            "steps_per_s": result.steps_per_s if steps else None,
            "model_ms_per_step": 1e3 * result.model_time_s / steps if steps else None,
            "wall_time_s": result.wall_time_s,
        },
        "files": {"rollout": str(result.path)},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    # 1-D or 3-D fields: the error curve only
    write_plots(frames, {"+".join(names): per_step}, _CURVE, steps, max_frames, out)
    return metrics


def grid_summary_line(metrics: dict[str, Any], out: str | Path) -> str:
    """One line for the terminal: what ran, how fast, how accurate, where it went."""
    speed = metrics["speed"]
    text = (
        f"rollout: {metrics['steps']} steps of {metrics['model']} ({metrics['mode']}) on "
        f"trajectory {metrics['trajectory']} of {metrics['data']} after steps "
        f"{metrics['given_steps'][0]}..{metrics['given_steps'][1]}"
    )
    if speed["steps_per_s"] is not None:
        text += f", {speed['steps_per_s']:.1f} steps/s on {speed['device']}"
    if metrics["rel_l2"] is not None:
        text += (
            f"; relative L2 over {metrics['steps_with_truth']} steps {metrics['rel_l2']:.4g}, "
            f"at the last {metrics['rel_l2_per_step'][-1]:.4g}"
        )
    return text + f"; wrote {out}"


class _Frames:
    """Prediction, truth and error of the first field on a 2-D grid, read one step at a time
    (vector fields as their magnitude)."""

    def __init__(
        self,
        rollout: Path,
        data: str | Path,
        trajectory: int,
        last: int,
        n_truth: int,
        names: list[str],
    ) -> None:
        self.names, self.trajectory, self.last, self.n_truth = names, trajectory, last, n_truth
        self._pred = h5py.File(rollout, "r")
        self._truth = WellReader(data)
        self.time = self._pred["time"][()]
        self.ok = len(self._truth.spatial_shape) == 2

    def close(self) -> None:
        """Close the files."""
        self._pred.close()
        self._truth.close()

    def step(self, k: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray] | None]:
        """Predicted and (where the file has it) true fields at model step k (1-based)."""
        pred = {n: self._pred[n][k - 1].astype(np.float64) for n in self.names}
        truth = None
        if k <= self.n_truth:
            window = self._truth.window(self.trajectory, self.last + k, 1, self.names)
            truth = {n: window[n][0].astype(np.float64) for n in self.names}
        return pred, truth

    def _panels(self, k: int) -> list[np.ndarray | None]:
        """Prediction, truth and prediction - truth of the first field at step k (2-D)."""
        pred, truth = self.step(k)
        name = self.names[0]

        def scalar(a: np.ndarray) -> np.ndarray:
            return a if a.ndim == 2 else np.linalg.norm(a.reshape(*a.shape[:2], -1), axis=-1)

        p = scalar(pred[name])
        if truth is None:
            return [p, None, None]
        t = scalar(truth[name])
        return [p, t, p - t]

    def _limits(self, ks: list[int]) -> tuple[float, float]:
        """Symmetric colour limits of the field (the truth's, else the prediction's) and error."""
        vmax, emax = 0.0, 0.0
        for k in ks:
            pred, truth, error = self._panels(k)
            vmax = max(vmax, float(np.abs(truth if truth is not None else pred).max()))
            if error is not None:
                emax = max(emax, float(np.abs(error).max()))
        return vmax or 1.0, emax or vmax or 1.0

    @staticmethod
    def _draw(ax, values: np.ndarray | None, vmax: float, cmap: str):
        ax.set_xticks([])
        ax.set_yticks([])
        if values is None:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
            return None
        # axis 0 is x: transpose so that x runs to the right and y upwards
        return ax.imshow(values.T, origin="lower", cmap=cmap, vmin=-vmax, vmax=vmax)

    def _titles(self) -> tuple[str, str, str]:
        name = self.names[0]
        return f"prediction {name}", f"ground truth {name}", "prediction - truth"

    def figure(self, steps: int, per_step: dict[str, list[float]], path: Path) -> None:
        """Rows: prediction, truth, error at up to 4 steps; then relative L2 against step."""
        plt = pyplot()
        last = self.n_truth if self.n_truth > 0 else steps
        ks = sorted({int(round(k)) for k in np.linspace(min(1, last), last, min(4, last + 1))})
        ks = [k for k in ks if k >= 1]
        vmax, emax = self._limits(ks)
        ncols = len(ks)
        fig = plt.figure(figsize=(3.2 * ncols + 1.2, 13))
        grid = fig.add_gridspec(
            4, ncols + 1, height_ratios=[3, 3, 3, 3], width_ratios=[1] * ncols + [0.06]
        )
        for c, k in enumerate(ks):
            for r, values in enumerate(self._panels(k)):
                ax = fig.add_subplot(grid[r, c])
                im = self._draw(ax, values, emax if r == 2 else vmax, _CMAPS[r])
                if r == 0:
                    ax.set_title(f"step {k} (t = {self.time[k - 1]:.4g})")
                if c == 0:
                    ax.set_ylabel(self._titles()[r])
                if c == ncols - 1 and im is not None:
                    fig.colorbar(im, cax=fig.add_subplot(grid[r, ncols]))
        curve(fig.add_subplot(grid[3, :ncols]), per_step, *_CURVE)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def animation(self, steps: int, max_frames: int, path: Path) -> None:
        """Prediction | truth | error, subsampled to at most ``max_frames`` frames (pillow)."""
        if steps < 1:
            return
        n_frames = max(1, min(steps, max_frames))
        ks = [int(k) for k in np.unique(np.linspace(1, steps, n_frames).round())]
        vmax, emax = self._limits(ks)
        zeros = np.zeros(self._truth.spatial_shape)
        panel_animation(
            path,
            ks,
            self._titles(),
            (11, 4),
            lambda ax, r: self._draw(ax, zeros, emax if r == 2 else vmax, _CMAPS[r]),
            self._panels,
            lambda k: f"step {k} of {steps}, t = {self.time[k - 1]:.4g}",
            lambda image, values: image.set_data(values.T),
        )
