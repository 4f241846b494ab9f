"""FNO paper table (Li et al., ICLR 2021): train FNO on Darcy, Burgers and Navier–Stokes.

Generates each data set if missing, runs the real command-line path for each recipe
(``simsurrogate fit`` then ``simsurrogate test`` on the best-validation checkpoint), the
problems in parallel (one CPU thread each), and writes ``benchmarks/results/fno_table.json``
and ``fno_table.md`` with the measured test relative L2 next to the paper's (Darcy s = 85:
0.0108; Burgers s = 1024: 0.0160; Navier–Stokes nu = 1e-3, T = 50: FNO-2D 0.0128, FNO-3D
0.0086), the sample counts, resolutions and epochs actually used, and the wall time. Rows of
problems not run this time are kept from the results file, each with its own command.

The Navier–Stokes numbers are the paper's: 10 given snapshots (t = 1..10), the remaining 40
(t = 11..50) predicted, autoregressively (FNO-2D) or at once (FNO-3D), and the relative L2
over all 40 steps together. The paper's solver (256², dt = 1e-4) costs about 24 CPU-minutes
per trajectory; ``--ns-solver-resolution``, ``--ns-dt`` and ``--ns-scheme`` select a cheaper
one (``benchmarks/ns_solver_check.py`` measures how far it is from the paper's).

    python benchmarks/fno_table.py                              # paper settings (long; GPU)
    python benchmarks/fno_table.py --problems darcy burgers --epochs 100 --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from runner import launch_recipe

ROOT = Path(__file__).resolve().parents[1]
PAPER_EPOCHS = 500
#: the 40-step Navier–Stokes window from 10 given snapshots
NS_METRIC = "t = 11..50 from t = 1..10, rel. L2 over all 40 steps"


@dataclass(frozen=True)
class Problem:
    """One table entry: its recipe, the paper's number and the paper's sample counts."""

    title: str
    recipe: str
    paper_rel_l2: float
    paper_n_train: int
    paper_n_test: int
    metric: str


PROBLEMS = {
    "darcy": Problem(
        "Darcy flow, FNO", "darcy_fno.yaml", 0.0108, 1000, 100, "coefficient -> solution"
    ),
    "burgers": Problem(
        "Burgers (nu = 0.1), FNO", "burgers_fno.yaml", 0.0160, 1000, 100, "u(0) -> u(1)"
    ),
    "ns": Problem(
        "Navier–Stokes (nu = 1e-3, T = 50), FNO-2D",
        "ns_fno2d.yaml",
        0.0128,
        1000,
        200,
        f"40-step autoregressive rollout, {NS_METRIC}",
    ),
    "ns_fno3d": Problem(
        "Navier–Stokes (nu = 1e-3, T = 50), FNO-3D",
        "ns_fno3d.yaml",
        0.0086,
        1000,
        200,
        f"40 steps at once (space-time), {NS_METRIC}",
    ),
}


def generate(name: str, args: argparse.Namespace) -> tuple[Path, Path, str]:
    """Generate (or keep) the data of ``name``; return train file, test file and resolution.

    Each setting gets its own folder under ``args.data``, so data sets of other sizes or
    resolutions already there are neither reused nor overwritten.
    """
    n_train, n_test = args.n_train + args.n_val, args.n_test or PROBLEMS[name].paper_n_test
    tag = f"n{n_train}_{n_test}"
    if name == "darcy":
        from simsurrogate.sims.darcy import generate_darcy

        s, solver = args.darcy_resolution, args.darcy_solver_resolution
        out = args.data / f"darcy_s{s}_r{solver}_{tag}"
        paths = generate_darcy(
            out,
            n_train=n_train,
            n_test=n_test,
            resolution=solver,
            stored_resolutions=(s,),
            workers=args.workers,
        )
        return paths[f"train_{s}"], paths[f"test_{s}"], f"{s} x {s} (solved on {solver})"
    if name == "burgers":
        from simsurrogate.sims.burgers import BurgersConfig, generate_burgers

        s, solver = args.burgers_resolution, args.burgers_solver_resolution
        out = args.data / f"burgers_s{s}_r{solver}_{tag}"
        paths = generate_burgers(
            out,
            n_train=n_train,
            n_test=n_test,
            stored_resolution=s,
            config=BurgersConfig(resolution=solver),
        )
        return paths["train"], paths["test"], f"{s} (solved on {solver})"
    from simsurrogate.sims.navier_stokes import NavierStokesConfig, generate_navier_stokes

    paper = NavierStokesConfig(viscosity=1e-3, t_final=50.0)
    config = NavierStokesConfig(
        viscosity=paper.viscosity,
        t_final=paper.t_final,
        resolution=args.ns_solver_resolution,
        dt=args.ns_dt,
        scheme=args.ns_scheme,
    )
    solver = f"{config.resolution}, dt {config.dt:g}, {config.scheme}"
    out = args.data / (
        f"navier_stokes_nu{config.viscosity:g}_T{config.t_final:g}_r{config.resolution}"
        f"_dt{config.dt:g}_{config.scheme}_{tag}"
    )
    paths = generate_navier_stokes(
        out,
        n_train=n_train,
        n_test=n_test,
        config=config,
        chunk=args.ns_chunk,
        device=args.device,
    )
    m = config.stored_resolution
    if config != paper:
        solver += f"; paper {paper.resolution}, dt {paper.dt:g}, {paper.scheme}"
    return paths["train"], paths["test"], f"{m} x {m} (solved on {solver}), 51 snapshots"


def override(out: Path, train: Path, test: Path, args: argparse.Namespace) -> dict:
    """Second recipe layer: output paths, data files, device, epochs and LR schedule.

    The training file holds ``n_train + n_val`` trajectories, of which ``n_val`` are held out
    for checkpoint selection. The step LR schedule keeps the paper's shape (halved four
    times, every fifth of the run), so a shortened run still anneals.
    """
    return {
        "trainer": {
            "accelerator": "gpu" if args.device == "cuda" else "cpu",
            "max_epochs": args.epochs,
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
                        "monitor": "val/rel_l2",
                        "mode": "min",
                    },
                },
                {"class_path": "simsurrogate.tasks.callbacks.LearningCurves"},
                {"class_path": "simsurrogate.tasks.callbacks.MetricsJSON"},
            ],
        },
        "model": {"init_args": {"scheduler_step": scheduler_step(args.epochs)}},
        "data": {
            "init_args": {
                "train": str(train),
                "test": str(test),
                "val_fraction": args.n_val / (args.n_train + args.n_val),
                **({"batch_size": args.batch_size} if args.batch_size else {}),
            }
        },
    }


def scheduler_step(epochs: int) -> int:
    """Epochs between LR halvings: the paper's 100 of 500, scaled to ``epochs``."""
    return max(1, round(epochs * 100 / PAPER_EPOCHS))


def collect(name: str, run_dir: Path, resolution: str, args: argparse.Namespace) -> dict:
    """The measured numbers of one finished run, next to the paper's."""
    test = json.loads((run_dir / "test_metrics.json").read_text())
    ckpt = torch.load(run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    best_val = next(
        float(state["best_model_score"])
        for key, state in ckpt["callbacks"].items()
        if key.startswith("ModelCheckpoint")
    )
    wall = (run_dir / "test_metrics.json").stat().st_mtime
    wall -= (run_dir / "override.yaml").stat().st_mtime
    problem = PROBLEMS[name]
    layer = yaml.safe_load((run_dir / "override.yaml").read_text())["data"]["init_args"]
    return {
        "title": problem.title,
        "recipe": f"recipes/operators/{problem.recipe}",
        "metric": problem.metric,
        "test_rel_l2": test["test/rel_l2"],
        "test_rel_h1": test.get("test/rel_h1"),
        "val_rel_l2": best_val,
        "paper_test_rel_l2": problem.paper_rel_l2,
        "resolution": resolution,
        "train_samples": args.n_train,
        "valid_samples": args.n_val,
        "test_samples": args.n_test or problem.paper_n_test,
        "paper_train_samples": problem.paper_n_train,
        "paper_test_samples": problem.paper_n_test,
        "best_epoch": int(ckpt["epoch"]),
        "epochs_trained": args.epochs,
        "scheduler_step": scheduler_step(args.epochs),
        "batch_size": layer.get("batch_size", "recipe"),
        "wall_time_s": round(wall, 1),
        "command": " ".join(["python", "benchmarks/fno_table.py", *sys.argv[1:]]),
        "machine": machine(args),
    }


def machine(args: argparse.Namespace) -> str:
    """Where the run happened, in words."""
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
        + (f", {torch.cuda.get_device_name()}" if args.device == "cuda" else "")
        + ", one CPU thread per problem"
    )


def previous_rows(path: Path) -> dict[str, dict]:
    """Rows of an earlier results file; a file from before rows recorded their own command,
    schedule and machine lends them its run's."""
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    shared = {k: old[k] for k in ("command", "machine", "scheduler_step") if k in old}
    return {name: {**shared, **row} for name, row in old.get("problems", {}).items()}


def table(rows: dict[str, dict]) -> list[str]:
    """The Markdown table and notes of the measured ``rows`` (problems in table order)."""
    lines = [
        "| problem | resolution | test rel. L2 (measured) | test rel. L2 (paper) "
        "| val rel. L2 | train / val / test samples (paper) | epochs (best / run / paper) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, problem in PROBLEMS.items():
        row = rows.get(name)
        if row is None:
            lines.append(f"| {problem.title} | | not run | {problem.paper_rel_l2:.4f} | | | |")
            continue
        lines.append(
            f"| {row['title']} | {row['resolution']} | {row['test_rel_l2']:.4f} | "
            f"{row['paper_test_rel_l2']:.4f} | {row['val_rel_l2']:.4f} | "
            f"{row['train_samples']} / {row['valid_samples']} / {row['test_samples']} "
            f"({row['paper_train_samples']} / - / {row['paper_test_samples']}) | "
            f"{row['best_epoch'] + 1} / {row['epochs_trained']} / {PAPER_EPOCHS} |"
        )
    lines += [
        "",
        "Relative L2 is the mean over test samples of ||pred - true|| / ||true||; for "
        f"Navier–Stokes over the 40 predicted steps together ({NS_METRIC}, as the paper). "
        "Validation samples are extra training-set draws used only to pick the checkpoint.",
    ]
    if any(name.startswith("ns") for name in rows):
        lines += [
            "",
            "Navier–Stokes data: solved with the reduced solver named in the resolution column "
            "instead of the paper's (about 24 CPU-minutes per trajectory); "
            "`benchmarks/results/ns_solver_check.md` compares the two from the same initial "
            "fields over t = 0..5.",
        ]
    lines.append("")
    for name, row in rows.items():
        batch = row.get("batch_size", "recipe")
        lines.append(
            f"- {name}: `{row['command']}`; LR halved every {row['scheduler_step']} epochs"
            + (f", batch {batch}" if batch != "recipe" else "")
            + f"; wall time {row['wall_time_s'] / 60:.1f} min on {row['machine']}."
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--epochs", type=int, default=PAPER_EPOCHS)
    parser.add_argument("--n-train", type=int, default=1000, help="training samples")
    parser.add_argument(
        "--n-val", type=int, default=100, help="extra training-set samples for validation"
    )
    parser.add_argument(
        "--n-test", type=int, default=None, help="test samples (default: the paper's per problem)"
    )
    parser.add_argument("--darcy-resolution", type=int, default=85, help="Darcy grid s")
    parser.add_argument("--darcy-solver-resolution", type=int, default=421)
    parser.add_argument("--burgers-resolution", type=int, default=1024, help="Burgers grid s")
    parser.add_argument("--burgers-solver-resolution", type=int, default=8192)
    parser.add_argument("--workers", type=int, default=1, help="Darcy solver processes")
    parser.add_argument("--ns-solver-resolution", type=int, default=256, help="NS solver grid")
    parser.add_argument("--ns-dt", type=float, default=1e-4, help="NS solver time step")
    parser.add_argument("--ns-scheme", choices=["euler", "heun"], default="euler")
    parser.add_argument("--ns-chunk", type=int, default=20, help="NS trajectories solved together")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="training batch (default: each recipe's)"
    )
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "fno_table")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench_fno_table")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    data = {name: generate(name, args) for name in args.problems}
    procs = {
        name: launch_recipe(
            ROOT / "recipes" / "operators" / PROBLEMS[name].recipe,
            args.out / name,
            override(args.out / name, train, test, args),
        )
        for name, (train, test, _) in data.items()
    }
    results = args.results / "fno_table.json"
    rows = previous_rows(results)
    for name, proc in procs.items():
        code = 0 if proc is None else proc.wait()
        if code != 0:
            raise SystemExit(f"{name} failed (exit {code}); see {args.out / name / 'run.log'}")
        rows[name] = collect(name, args.out / name, data[name][2], args)
    rows = {name: rows[name] for name in PROBLEMS if name in rows}
    result = {
        "benchmark": "FNO paper table (Li et al., ICLR 2021), relative L2 on the test set",
        "paper_epochs": PAPER_EPOCHS,
        "problems": rows,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    for name in procs:
        curves = args.out / name / "logs" / "curves.png"
        if curves.exists():
            shutil.copyfile(curves, args.results / f"fno_table_{name}_curves.png")
    lines = table(rows)
    results.write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "fno_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
