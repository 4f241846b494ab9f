"""Callbacks that leave files a person can read: learning curves and final metrics."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import lightning as L


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
