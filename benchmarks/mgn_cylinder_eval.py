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

import numpy as np
import torch

from simsurrogate.data.mesh import MeshReader
from simsurrogate.data.node_types import NodeType
from simsurrogate.rollout.mesh import MeshRollout, MeshState
from simsurrogate.rollout.mesh_report import HORIZONS, rmse_at

ROOT = Path(__file__).resolve().parents[1]


def _mse_per_step(pred: np.ndarray, truth: np.ndarray) -> list[float]:
    """(T, N, C) prediction and truth, step 0 the shared initial state -> MSE of steps 1..T-1."""
    diff = pred[1:].astype(np.float64) - truth[1:].astype(np.float64)
    return [float(v) for v in np.mean(diff.reshape(len(diff), -1) ** 2, axis=1)]


def _horizons(mse: list[float]) -> dict[str, float | None]:
    return {**{str(h): rmse_at(mse, h) for h in HORIZONS}, "all": rmse_at(mse, None)}


def _wake(mesh_pos: np.ndarray, node_type: np.ndarray, velocity: np.ndarray) -> np.ndarray:
    """Cross-stream velocity (T, W) at the wake nodes: normal nodes 0.1-0.6 m downstream of
    the obstacle centre and within 0.1 m of its axis."""
    pos = np.asarray(mesh_pos)
    kind = np.asarray(node_type)
    centre = pos[kind == NodeType.OBSTACLE].mean(axis=0)
    dx, dy = (pos - centre).T
    wake = (kind == NodeType.NORMAL) & (dx > 0.1) & (dx < 0.6) & (np.abs(dy) < 0.1)
    return velocity[:, wake, 1]


def _shedding(pred_vy: np.ndarray, true_vy: np.ndarray) -> dict[str, float]:
    """Does the rollout shed like the truth? Over the second half of the rollout: the standard
    deviation in time of the wake's cross-stream velocity (m/s, mean over wake nodes; ~0 for a
    steady wake) and the dominant period (steps, from the FFT at the node where the truth
    oscillates most; inf for no oscillation), for the model and the truth."""
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="cylinder_mgn_eval", help="results file name")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    engine = MeshRollout.from_checkpoint(args.checkpoint)
    names = list(engine.model.fields)
    with MeshReader(args.data) as reader:
        n_traj = len(reader)
        steps = min(reader.n_steps(i) for i in range(n_traj)) - 1
        time_axis = reader.time(0)
        truth = [reader.window(i, 0, steps + 1, names) for i in range(n_traj)]
        reynolds = [
            float(np.ravel(reader.attrs_of(i).get("reynolds", [np.nan]))[0]) for i in range(n_traj)
        ]
    dt = float(time_axis[1] - time_axis[0])
    states = [MeshState.from_file(args.data, i, 0, names) for i in range(n_traj)]
    start = time.perf_counter()
    result = engine.run(states, steps, dt=dt, progress=True)
    wall = time.perf_counter() - start

    per_traj, baseline = [], []
    for i in range(n_traj):
        pred = result.fields[i]
        shape = {name: pred[name].shape for name in names}
        true = {name: truth[i][name].reshape(shape[name]) for name in names}
        per_traj.append(
            {
                "trajectory": i,
                "reynolds": reynolds[i],
                "nodes": int(shape[names[0]][1]),
                "rmse": {n: _horizons(_mse_per_step(pred[n], true[n])) for n in names},
            }
        )
        still = {n: np.broadcast_to(true[n][:1], true[n].shape) for n in names}
        baseline.append({n: _horizons(_mse_per_step(still[n], true[n])) for n in names})
        per_traj[-1]["persistence_rmse"] = baseline[-1]
        if "velocity" in names:
            state = states[i]
            vy = [_wake(state.mesh_pos, state.node_type, f["velocity"]) for f in (pred, true)]
            per_traj[-1]["wake"] = _shedding(*vy)

    def mean(rows: list[dict]) -> dict[str, dict[str, float]]:
        """Field -> horizon -> RMSE averaged over trajectories."""
        return {
            n: {h: float(np.mean([r[n][h] for r in rows])) for h in rows[0][n]} for n in rows[0]
        }

    model_mean = mean([t["rmse"] for t in per_traj])
    persistence_mean = mean(baseline)
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
            "model_ms_per_step_all_trajectories": 1e3 * result.model_s_per_step,
            "threads": args.threads,
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
        f"{n_traj} held-out trajectories of `{args.data}`, {steps} steps of {dt} s from the "
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
