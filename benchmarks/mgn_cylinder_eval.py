"""Held-out rollout accuracy of a MeshGraphNet on cylinder flow, as MeshGraphNets reports it.

Rolls the checkpoint out from the first stored state of every trajectory of a test file (all
trajectories batched, boundary nodes held by the engine) for as many steps as the file has,
and writes, per trajectory and averaged over trajectories, the RMSE of each field at 1, 50
and all steps (``sqrt`` of the squared error averaged over nodes, components and steps
1..h, :func:`simsurrogate.rollout.mesh_report.rmse_at`). Next to it, the same figures for
persistence (the initial state kept for ever), the baseline a learned step has to beat.
Also measures whether the rollout sheds vortices like the truth: the oscillation of the
cross-stream velocity in the wake (its std in time and dominant period) over the second half.
Writes ``benchmarks/results/<name>.json`` and ``.md``.

    python benchmarks/mgn_cylinder_eval.py --checkpoint checkpoints/cylinder_mgn/model.ckpt \
        --data data/cylinder_flow/test.h5
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from simsurrogate.rollout.mesh import MeshRollout
from simsurrogate.rollout.mesh_report import score_mesh_rollouts

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="cylinder_mgn_eval", help="results file name")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--precision", choices=MeshRollout.PRECISIONS, default="32", help="the engine's"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    engine = MeshRollout.from_checkpoint(args.checkpoint, precision=args.precision)
    names = list(engine.model.fields)
    start = time.perf_counter()
    scores = score_mesh_rollouts(engine, args.data, progress=True)
    wall = time.perf_counter() - start
    per_traj, steps, dt = scores["per_trajectory"], scores["steps"], scores["dt"]
    n_traj = len(per_traj)
    model_mean, persistence_mean = scores["mean"], scores["persistence_mean"]
    report = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "trajectories": n_traj,
        "steps": steps,
        "dt_s": dt,
        "rmse_mean_over_trajectories": model_mean,
        "persistence_rmse_mean_over_trajectories": persistence_mean,
        "per_trajectory": per_traj,
        "rmse_definition": "per trajectory sqrt(mean over steps 1..h, nodes and components of "
        "the squared error), then the mean over trajectories",
        "rollout": {
            "wall_time_s": round(wall, 2),
            "model_ms_per_step_all_trajectories": 1e3 * scores["model_s_per_step"],
            "threads": args.threads,
            "precision": args.precision,
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        },
        "command": "python " + " ".join(["benchmarks/mgn_cylinder_eval.py", *sys.argv[1:]]),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "| field | model RMSE 1 step | 50 steps | all | persistence 1 step | 50 steps | all |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in names:
        m, p = model_mean[n], persistence_mean[n]
        lines.append(
            f"| {n} | {m['1']:.2e} | {m['50']:.2e} | {m['all']:.2e} | "
            f"{p['1']:.2e} | {p['50']:.2e} | {p['all']:.2e} |"
        )
    lines += [
        "",
        "| trajectory | Re | nodes | " + " | ".join(f"{n} RMSE 1 / 50 / all" for n in names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for t in per_traj:
        cells = [" / ".join(f"{t['rmse'][n][h]:.2e}" for h in ("1", "50", "all")) for n in names]
        lines.append(
            f"| {t['trajectory']} | {t['reynolds']:.0f} | {t['nodes']} | "
            + " | ".join(cells)
            + " |"
        )
    if all("wake" in t for t in per_traj):
        lines += [
            "",
            "| trajectory | Re | wake v_y std, model / truth (m/s) "
            "| period, model / truth (steps) |",
            "|---|---|---|---|",
        ]
        for t in per_traj:
            w = t["wake"]
            lines.append(
                f"| {t['trajectory']} | {t['reynolds']:.0f} | {w['model_vy_std']:.4f} / "
                f"{w['truth_vy_std']:.4f} | {w['model_period_steps']:.1f} / "
                f"{w['truth_period_steps']:.1f} |"
            )
        lines.append(
            "Wake: cross-stream velocity at the normal nodes 0.1-0.6 m downstream of the "
            "obstacle centre within 0.1 m of its axis, over the second half of the rollout; "
            "std in time averaged over those nodes (about 0 for a steady wake), dominant period "
            "from the FFT at the node where the truth oscillates most."
        )
    lines += [
        "",
        f"{n_traj} held-out trajectories of `{args.data}`, {steps} steps of {dt:.4g} s from the "
        "first stored state; boundary nodes held by the engine. RMSE: "
        + report["rmse_definition"]
        + ". Velocity in m/s, pressure in m²/s².",
        "",
        f"`{report['command']}`; rollout of all trajectories together {wall:.1f} s "
        f"({args.threads} threads, {report['rollout']['machine']}).",
    ]
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
