"""Rollout time per step: a trained MeshGraphNet against the FEM solver that made its data.

Both advance the same test trajectory's mesh by the same saved step (dt = 0.01 s) in the same
process with the same thread count: the FEM solver (:mod:`simsurrogate.sims.cylinder_flow`,
with the CFL sub-steps the generator used) from the trajectory's parameters, the learned
simulator through :class:`~simsurrogate.rollout.mesh.MeshRollout` from the trajectory's first
stored state (no file output, so only stepping is timed), each in a fresh process, three
ways: float32 with the products through oneDNN (the default, :mod:`simsurrogate.models.linear`),
float32 with them left to MKL (``SIMSURROGATE_ONEDNN=0``, as ``torch.nn.Linear`` runs them),
and bf16-mixed (``MeshRollout(precision="bf16-mixed")``). Writes
``benchmarks/results/mgn_rollout_speed.json`` and ``.md``.

    python benchmarks/mgn_rollout_speed.py --checkpoint checkpoints/cylinder_mgn/model.ckpt \
        --data data/cylinder_flow/test.h5 --steps 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from simsurrogate.data.mesh import MeshReader
from simsurrogate.rollout.allocator import pad_heap
from simsurrogate.rollout.mesh import MeshRollout, MeshState
from simsurrogate.sims.cylinder_flow import (
    ChannelGeometry,
    CylinderFlowSolver,
    cfl_substeps,
    make_mesh,
)

ROOT = Path(__file__).resolve().parents[1]


def _time_model(args: argparse.Namespace, precision: str, onednn: str) -> dict:
    """Time the learned simulator in a fresh process (heap and oneDNN state of its own)."""
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--checkpoint",
        str(args.checkpoint),
        "--data",
        str(args.data),
        "--trajectory",
        str(args.trajectory),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--precision",
        precision,
    ]
    env = {**os.environ, "SIMSURROGATE_ONEDNN": onednn}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _worker(args: argparse.Namespace) -> None:
    """Roll the checkpoint out ``args.steps`` steps; print its timings as one JSON line."""
    engine = MeshRollout.from_checkpoint(args.checkpoint, args.device, args.precision)
    state = MeshState.from_file(args.data, args.trajectory, 0)
    engine.run(state, 2)  # warm-up; times in steps: only stepping is timed
    result = engine.run(state, args.steps)
    timing = {
        "s_per_step": result.wall_time_s / args.steps,
        "model_s_per_step": result.model_time_s / args.steps,
        "parameters": sum(p.numel() for p in engine.model.parameters()),
    }
    print(json.dumps(timing))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--trajectory", type=int, default=0)
    parser.add_argument("--steps", type=int, default=100, help="saved steps to advance")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.worker:
        _worker(args)
        return
    pad_heap()  # as the engine does in its processes

    with MeshReader(args.data) as reader:
        static = reader.static(args.trajectory)
        attrs = reader.attrs_of(args.trajectory)
        file_attrs = reader.attrs
        t = reader.time(args.trajectory)
    dt = float(t[1] - t[0])
    geom = ChannelGeometry(
        float(file_attrs["length"]),
        float(file_attrs["height"]),
        (float(attrs["center_x"]), float(attrs["center_y"])),
        float(attrs["radius"]),
    )
    # the file stores float32 positions; the solver needs the float64 mesh, which gmsh
    # rebuilds identically from the generator's sizes
    points, cells = make_mesh(geom, float(file_attrs["h_max"]), float(file_attrs["h_obstacle"]))
    if points.shape != static["mesh_pos"].shape or not np.allclose(
        points, static["mesh_pos"], atol=1e-6
    ):
        raise SystemExit("the rebuilt mesh differs from the file's; was it made by the generator?")
    substeps = cfl_substeps(points, cells, geom, float(attrs["u_mean"]), dt)
    start = time.perf_counter()
    solver = CylinderFlowSolver(
        points,
        cells,
        geom,
        nu=float(attrs["nu"]),
        u_mean=float(attrs["u_mean"]),
        dt=dt / substeps,
    )
    setup_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        solver.step(substeps)
        solver.vertex_velocity(), solver.vertex_pressure()
    fem_s = (time.perf_counter() - start) / args.steps

    variants = {  # name: (precision, SIMSURROGATE_ONEDNN)
        "float32": ("32", "1"),
        "float32, MKL products": ("32", "0"),
        "bf16-mixed": ("bf16-mixed", "1"),
    }
    mgn = {name: _time_model(args, *v) for name, v in variants.items()}
    mgn_s = mgn["float32"]["s_per_step"]
    n_params = mgn["float32"]["parameters"]
    for v in mgn.values():
        del v["parameters"]
    report = {
        "mesh": {"nodes": int(len(points)), "cells": int(len(cells))},
        "dt_s": dt,
        "steps": args.steps,
        "fem": {
            "s_per_saved_step": fem_s,
            "substeps_per_saved_step": substeps,
            "setup_s": setup_s,
            "p2_velocity_dofs": int(solver.n_u) * 2,
            "p1_pressure_dofs": int(solver.n_p),
        },
        "meshgraphnet": {
            **mgn,
            "parameters": n_params,
            "checkpoint": str(args.checkpoint),
        },
        "speedup": {name: fem_s / v["s_per_step"] for name, v in mgn.items()},
        "device": args.device,
        "threads": args.threads,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "command": "python " + " ".join(sys.argv),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mgn_rollout_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    md = [
        f"| simulator | s per saved step (dt = {dt:g} s) | notes |",
        "|---|---|---|",
        f"| FEM, Taylor–Hood P2–P1 (ground truth) | {fem_s:.4f} | {substeps} sub-steps per "
        f"saved step, {2 * solver.n_u} velocity + {solver.n_p} pressure DOFs |",
        *(
            f"| MeshGraphNet ({n_params:,} parameters), {name} | {v['s_per_step']:.4f} | one "
            "model call per step, boundary nodes held by the engine |"
            for name, v in mgn.items()
        ),
        "",
        f"Speed-up of the learned simulator: **{fem_s / mgn_s:.1f}x** in float32, "
        f"{fem_s / mgn['bf16-mixed']['s_per_step']:.1f}x in bf16-mixed, on the "
        f"{len(points)}-node mesh of test trajectory {args.trajectory}, {args.steps} steps, "
        f"{args.device}, {args.threads} threads; FEM in this process, each MeshGraphNet "
        "variant in a fresh one.",
        "",
        f"`{report['command']}` on {report['machine']}.",
    ]
    (args.out / "mgn_rollout_speed.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
