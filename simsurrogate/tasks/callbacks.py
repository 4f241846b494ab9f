"""Training callbacks: files a person can read (learning curves, final metrics) and rollout
validation, which scores checkpoints by what users run them for."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np


def _log_dir(trainer: L.Trainer) -> Path:
    return Path(trainer.log_dir or trainer.default_root_dir)


class LearningCurves(L.Callback):
    """At the end of a fit, plot every ``*loss``/``*mse`` metric of the CSV log to ``curves.png``.

    Reads ``metrics.csv`` written by Lightning's :class:`~lightning.pytorch.loggers.CSVLogger`
    (one of the recipe's loggers) and plots the values against the optimizer step on a log
    scale (epoch-level values of epoch-based runs, step-level ones of step-based runs).
    """

    def __init__(self, filename: str = "curves.png") -> None:
        self.filename = filename

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        csv_path = next(
            (
                Path(lg.log_dir) / "metrics.csv"
                for lg in trainer.loggers
                if isinstance(lg, L.pytorch.loggers.CSVLogger)
            ),
            None,
        )
        if csv_path is None or not csv_path.exists():
            return
        series: dict[str, list[tuple[int, float]]] = {}
        with open(csv_path) as fh:
            for row in csv.DictReader(fh):
                for key, value in row.items():
                    if not value or key in ("epoch", "step") or not key.endswith(("loss", "mse")):
                        continue
                    if key.endswith("_step"):
                        continue
                    series.setdefault(key, []).append((int(float(row["step"])), float(value)))
        if not series:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for key, points in sorted(series.items()):
            points = [(e, v) for e, v in points if math.isfinite(v) and v > 0]
            if points:
                ax.plot(*zip(*points, strict=True), label=key)
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("metric")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        out = csv_path.parent / self.filename
        fig.savefig(out, dpi=120)
        plt.close(fig)


class MetricsJSON(L.Callback):
    """Write the metrics of ``validate``/``test`` runs to ``<log_dir>/<stage>_metrics.json``."""

    def _dump(self, trainer: L.Trainer, stage: str) -> None:
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(stage)}
        path = _log_dir(trainer) / f"{stage}_metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(metrics, indent=2) + "\n")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._dump(trainer, "test")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate":
            self._dump(trainer, "val")


class MeshRolloutValidation(L.Callback):
    """At each validation of a fit, roll the model out and log how far the rollout strays.

    The one-step validation loss does not track rollout quality (a model can fit one step
    well and still drift, or damp the vortex street, over hundreds of steps), so this rolls
    the live model out from the first stored state of ``trajectories`` of ``data`` for
    ``steps`` steps, exactly as the rollout engine does, and logs (for a
    ``ModelCheckpoint(monitor=...)`` to choose by):

    - ``val/rollout_rmse_<field>`` and ``val/rollout_rmse_<field>_<h>``: RMSE over all steps
      and over the first h = 1, 50 steps (MeshGraphNets' definition), mean over trajectories;
    - for flows past an obstacle, ``val/rollout_wake_amplitude_ratio`` (the model's wake
      oscillation over the truth's, 1 is right, 0 a wake gone steady) and
      ``val/rollout_wake_error`` (:func:`~simsurrogate.rollout.mesh_report.wake_error`:
      ``|ln amplitude ratio| + |ln period ratio|``, each term capped at 10; 0 is right),
      over the second half of the rollout (:func:`~simsurrogate.rollout.mesh_report.shedding`),
      mean over the trajectories whose true wake oscillates.

    Args:
        data: mesh-schema file with the truth (e.g. the validation file).
        trajectories: indices of its trajectories to roll out (default: all).
        steps: model steps (default: all the file has).
        min_wake_std: wake oscillations below this (m/s) count as steady: a true one is
            left out of the wake metrics, a predicted one has an infinite period.
    """

    def __init__(
        self,
        data: str,
        trajectories: Sequence[int] | None = None,
        steps: int | None = None,
        min_wake_std: float = 1e-3,
    ) -> None:
        self.data = data
        self.trajectories = None if trajectories is None else list(trajectories)
        self.steps = steps
        self.min_wake_std = min_wake_std

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        from simsurrogate.rollout.mesh_report import score_mesh_rollouts, wake_error

        model = pl_module.model
        was_training = model.training
        try:
            scores = score_mesh_rollouts(model, self.data, self.trajectories, self.steps)
        finally:
            model.train(was_training)
        for field, by_horizon in scores["mean"].items():
            for horizon, value in by_horizon.items():
                if value is None:  # a horizon longer than the rollout
                    continue
                suffix = "" if horizon == "all" else f"_{horizon}"
                pl_module.log(f"val/rollout_rmse_{field}{suffix}", value, batch_size=1)
        wakes = [
            r["wake"]
            for r in scores["per_trajectory"]
            if "wake" in r and r["wake"]["truth_vy_std"] >= self.min_wake_std
        ]
        if wakes:
            ratio = [w["model_vy_std"] / w["truth_vy_std"] for w in wakes]
            error = [wake_error(w, self.min_wake_std) for w in wakes]
            pl_module.log("val/rollout_wake_amplitude_ratio", float(np.mean(ratio)), batch_size=1)
            pl_module.log("val/rollout_wake_error", float(np.mean(error)), batch_size=1)
