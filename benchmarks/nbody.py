"""Charged N-body benchmark of the EGNN paper: train EGNN and the GNN baseline, report test MSE.

Runs the real command-line path for each recipe (``simsurrogate fit`` then ``simsurrogate
test`` on the best-validation checkpoint), both models in parallel (one CPU thread each),
and writes ``benchmarks/results/nbody.json`` and ``nbody.md`` with the measured test MSE next
to the paper's (Satorras et al., 2021, Table 2: EGNN 0.0071, GNN 0.0107), the epochs and
sample counts actually used, the wall time, and each model's learning curves
(``nbody_<model>_curves.png``).

    python benchmarks/nbody.py                       # paper setting, 10000 epochs (long)
    python benchmarks/nbody.py --epochs 1000         # what a 2-core machine allows in hours
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from pathlib import Path

import torch
from runner import launch_recipe

ROOT = Path(__file__).resolve().parents[1]
PAPER = {"egnn": 0.0071, "gnn": 0.0107}
PAPER_LINEAR = 0.0819  # Table 2, "Linear": x + v t with a learned t


def override(out: Path, epochs: int, lr_schedule: str) -> dict:
    """Second recipe layer: output paths under ``out`` and the epoch budget."""
    return {
        "trainer": {
            "max_epochs": epochs,
            "enable_progress_bar": False,
            "default_root_dir": str(out),
            "logger": [
                {
                    "class_path": "lightning.pytorch.loggers.CSVLogger",
                    "init_args": {"save_dir": str(out), "name": "logs", "version": ""},
                },
            ],
            "callbacks": [
                {
                    "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "init_args": {
                        "dirpath": str(out / "checkpoints"),
                        "filename": "best",
                        "monitor": "val/mse",
                        "mode": "min",
                    },
                },
                {"class_path": "simsurrogate.tasks.callbacks.LearningCurves"},
                {"class_path": "simsurrogate.tasks.callbacks.MetricsJSON"},
            ],
        },
        "model": {"init_args": {"lr_schedule": lr_schedule}},
    }


def linear_baseline(data: Path) -> float:
    """Test MSE of x + v t with t fitted by least squares on the training split.

    The paper's "Linear" row; matching it checks that the regenerated data has the paper's
    distribution.
    """
    from simsurrogate.data.nbody import load_pairs

    train = load_pairs(data / "train.h5", 30, 40, 3000)
    test = load_pairs(data / "test.h5", 30, 40)
    step, vel = train["target_pos"] - train["pos"], train["vel"]
    t = float((step * vel).sum() / (vel * vel).sum())
    return float(((test["pos"] + t * test["vel"] - test["target_pos"]) ** 2).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10000)
    parser.add_argument("--lr-schedule", choices=["constant", "cosine"], default="constant")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "nbody")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench_nbody")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--models", nargs="+", default=["egnn", "gnn"], choices=list(PAPER))
    args = parser.parse_args()

    from simsurrogate.sims.nbody import generate_nbody

    generate_nbody(args.data)  # keeps existing complete files
    procs = {
        m: launch_recipe(
            ROOT / "recipes" / "equivariant" / f"nbody_{m}.yaml",
            args.out / m,
            override(args.out / m, args.epochs, args.lr_schedule),
            ["--data.init_args.root", str(args.data)],
        )
        for m in args.models
    }
    rows = {}
    for name, proc in procs.items():
        code = 0 if proc is None else proc.wait()
        if code != 0:
            raise SystemExit(f"{name} failed (exit {code}); see {args.out / name / 'run.log'}")
        test = json.loads((args.out / name / "test_metrics.json").read_text())
        ckpt = torch.load(args.out / name / "checkpoints" / "best.ckpt", weights_only=True)
        run_dir = args.out / name
        wall = (run_dir / "test_metrics.json").stat().st_mtime
        wall -= (run_dir / "override.yaml").stat().st_mtime
        best_val = next(
            float(state["best_model_score"])
            for key, state in ckpt["callbacks"].items()
            if key.startswith("ModelCheckpoint")
        )
        rows[name] = {
            "test_mse": test["test/mse"],
            "val_mse": best_val,
            "wall_time_s": round(wall, 1),
            "paper_test_mse": PAPER[name],
            "best_epoch": int(ckpt["epoch"]),
            "epochs_trained": args.epochs,
        }
    result = {
        "benchmark": "charged N-body (EGNN paper, frames 30 -> 40)",
        "train_samples": 3000,
        "valid_samples": 2000,
        "test_samples": 2000,
        "epochs": args.epochs,
        "paper_epochs": 10000,
        "lr_schedule": args.lr_schedule,
        "linear_baseline_test_mse": round(linear_baseline(args.data), 5),
        "paper_linear_test_mse": PAPER_LINEAR,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        "one thread per model",
        "command": " ".join(["python", "benchmarks/nbody.py", *sys.argv[1:]]),
        "models": rows,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    for name in rows:
        curves = args.out / name / "logs" / "curves.png"
        if curves.exists():
            shutil.copyfile(curves, args.results / f"nbody_{name}_curves.png")
    (args.results / "nbody.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "| model | test MSE (measured) | test MSE (paper) | val MSE (measured) "
        "| epochs (best / run / paper) |",
        "|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name.upper()} | {row['test_mse']:.4f} | {row['paper_test_mse']:.4f} | "
            f"{row['val_mse']:.4f} | {row['best_epoch'] + 1} / {args.epochs} / 10000 |"
        )
    lines.append(
        f"| Linear (x + v t, data check) | {result['linear_baseline_test_mse']:.4f} | "
        f"{PAPER_LINEAR:.4f} | | fitted |"
    )
    hours = ", ".join(f"{n.upper()} {r['wall_time_s'] / 3600:.1f} h" for n, r in rows.items())
    lines.append("")
    lines.append(
        f"3000 train / 2000 valid / 2000 test systems; `{result['command']}`; "
        f"wall time {hours} on {result['machine']} (run side by side)."
    )
    (args.results / "nbody.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
