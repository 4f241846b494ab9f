"""DFG benchmark 2D-2 (Schäfer & Turek 1996): periodic flow past a cylinder at Re = 100.

Runs :class:`simsurrogate.sims.cylinder_flow.CylinderFlowSolver` (Taylor–Hood P2–P1, BDF2
incremental pressure correction) on the benchmark geometry (channel 2.2 m x 0.41 m, cylinder
centre (0.2, 0.2), radius 0.05, ν = 1e-3, mean inflow 1 m/s, so U_m = 1.5) from rest, and
measures over the last ``--window`` seconds (the developed periodic state): max c_D, max c_L
(sampled every time step) and the Strouhal number St = f D / u_mean, f from the upward zero
crossings of c_L. Writes ``benchmarks/results/dfg_2d2.json`` and ``dfg_2d2.md`` with the
measured values next to the published bounds (max c_D in [3.22, 3.24], max c_L in
[0.99, 1.01], St in [0.295, 0.305]), the mesh size, dt, wall time and the command.

    python benchmarks/dfg_2d2.py                                  # the reference run
    python benchmarks/dfg_2d2.py --h-obstacle 0.006 --dt 4e-4     # coarse, a few minutes

``--scheme coupled`` runs :class:`~simsurrogate.sims.cylinder_flow.CoupledCylinderFlowSolver`
instead (the same elements solved without splitting, exact do-nothing outflow; about 7x slower),
to show what the splitting and the outflow treatment change. Runs other than the reference one
go to ``--results`` directories of their own and are copied into ``dfg_2d2_runs/``;
``--summarize`` tabulates them all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from simsurrogate.sims.cylinder_flow import (
    ChannelGeometry,
    CoupledCylinderFlowSolver,
    CylinderFlowSolver,
    make_mesh,
    shedding_statistics,
)

ROOT = Path(__file__).resolve().parents[1]
BOUNDS = {"cd_max": (3.22, 3.24), "cl_max": (0.99, 1.01), "strouhal": (0.295, 0.305)}
NU, U_MEAN = 1e-3, 1.0
SCHEMES = {
    "split": (
        CylinderFlowSolver,
        "Taylor-Hood P2-P1, BDF2 incremental pressure correction (rotational), p = 0 held on "
        "the outflow, explicit skew-symmetric convection (2u^n - u^(n-1)), volume-integral "
        "(reaction) forces",
    ),
    "coupled": (
        CoupledCylinderFlowSolver,
        "Taylor-Hood P2-P1, BDF2, velocity and pressure solved together (no splitting; exact "
        "do-nothing outflow), explicit skew-symmetric convection (2u^n - u^(n-1)), "
        "volume-integral (reaction) forces",
    ),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--h-max", type=float, default=0.028, help="largest element size (m)")
    parser.add_argument(
        "--h-obstacle", type=float, default=0.002, help="element size on the cylinder (m)"
    )
    parser.add_argument(
        "--growth", type=float, default=0.1, help="size growth per m from the cylinder"
    )
    parser.add_argument("--dt", type=float, default=1.4e-4, help="time step (s)")
    parser.add_argument("--scheme", choices=list(SCHEMES), default="split", help="solver")
    parser.add_argument("--t-end", type=float, default=8.0, help="simulated time (s)")
    parser.add_argument("--window", type=float, default=2.0, help="measured final span (s)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    parser.add_argument(
        "--summarize",
        action="store_true",
        help="only tabulate dfg_2d2.json and dfg_2d2_runs/*.json (other meshes and time steps) "
        "under --results into dfg_2d2_refinement.md",
    )
    return parser.parse_args()


def summarize(results: Path) -> str:
    """Markdown table of every run's figures, finest mesh last, with its command."""
    runs = [
        json.loads(p.read_text())
        for p in [results / "dfg_2d2.json", *sorted((results / "dfg_2d2_runs").glob("*.json"))]
        if p.exists()
    ]
    runs.sort(key=lambda r: (r["mesh"]["vertices"], -r["dt_s"], r["t_end_s"]))
    lines = [
        "| scheme | vertices | h cylinder / max (m) | growth | dt (s) | measured t (s) "
        "| max c_D | max c_L | min c_L | St | command |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        m, mesh = r["measured"], r["mesh"]
        lines.append(
            f"| {r.get('scheme_name', 'split')} | {mesh['vertices']} | {mesh['h_obstacle_m']} / "
            f"{mesh['h_max_m']} | {mesh['growth']} | {r['dt_s']:g} | "
            f"{r['window_s'][0]:.0f}-{r['window_s'][1]:.0f} | {m['cd_max']:.4f} | "
            f"{m['cl_max']:.4f} | {r['details']['cl_min']:.4f} | {m['strouhal']:.4f} | "
            f"`{r['command']}` |"
        )
    low = {k: v[0] for k, v in BOUNDS.items()}
    high = {k: v[1] for k, v in BOUNDS.items()}
    lines += [
        "",
        f"Published bounds: max c_D [{low['cd_max']}, {high['cd_max']}], max c_L "
        f"[{low['cl_max']}, {high['cl_max']}], St [{low['strouhal']}, {high['strouhal']}].",
    ]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.summarize:
        table = summarize(args.results)
        (args.results / "dfg_2d2_refinement.md").write_text(table + "\n")
        print(table)
        return
    geom = ChannelGeometry()
    start = time.perf_counter()
    points, cells = make_mesh(geom, args.h_max, args.h_obstacle, growth=args.growth)
    solver_cls, scheme = SCHEMES[args.scheme]
    solver = solver_cls(points, cells, geom, nu=NU, u_mean=U_MEAN, dt=args.dt)
    setup_s = time.perf_counter() - start

    n_steps = round(args.t_end / args.dt)
    first = n_steps - round(args.window / args.dt)
    record = np.empty((n_steps - first, 3))
    start = time.perf_counter()
    for k in tqdm(range(-first, n_steps - first), disable=not args.progress, unit="step"):
        solver.step()
        if k >= 0:
            record[k] = (solver.time, *solver.force_coefficients())
    run_s = time.perf_counter() - start

    measured = shedding_statistics(*record.T, geom.diameter, U_MEAN)
    every = max(1, round(0.005 / args.dt))
    result = {
        "benchmark": "DFG 2D-2 (Schäfer & Turek 1996), Re = 100",
        "command": " ".join(["python", "benchmarks/dfg_2d2.py", *sys.argv[1:]]),
        "scheme_name": args.scheme,
        "scheme": scheme,
        "measured": {k: measured[k] for k in BOUNDS},
        "bounds": {k: list(v) for k, v in BOUNDS.items()},
        "inside_bounds": {k: v[0] <= measured[k] <= v[1] for k, v in BOUNDS.items()},
        "details": {k: v for k, v in measured.items() if k not in BOUNDS},
        "mesh": {
            "h_max_m": args.h_max,
            "h_obstacle_m": args.h_obstacle,
            "growth": args.growth,
            "vertices": int(points.shape[0]),
            "cells": int(cells.shape[0]),
            "velocity_dofs": 2 * solver.n_u,
            "pressure_dofs": solver.n_p,
        },
        "dt_s": args.dt,
        "t_end_s": args.t_end,
        "window_s": [float(record[0, 0]), float(record[-1, 0])],
        "steps": n_steps,
        "wall_time_s": {"mesh_and_setup": round(setup_s, 2), "time_stepping": round(run_s, 1)},
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, one process",
        "window_series": {
            "time_s": record[::every, 0].round(5).tolist(),
            "c_d": record[::every, 1].round(6).tolist(),
            "c_l": record[::every, 2].round(6).tolist(),
        },
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "dfg_2d2.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "dfg_2d2.md").write_text(markdown(result) + "\n")
    print(markdown(result))


def markdown(result: dict) -> str:
    names = {"cd_max": "max c_D", "cl_max": "max c_L", "strouhal": "Strouhal St"}
    lines = [
        "| quantity | measured | published bounds | inside |",
        "|---|---|---|---|",
    ]
    for key, name in names.items():
        low, high = result["bounds"][key]
        inside = "yes" if result["inside_bounds"][key] else "**no**"
        lines.append(f"| {name} | {result['measured'][key]:.4f} | [{low}, {high}] | {inside} |")
    mesh, wall, details = result["mesh"], result["wall_time_s"], result["details"]
    spread = details["cycle_spread"]
    lines += [
        "",
        f"Mesh: {mesh['vertices']} vertices, {mesh['cells']} triangles, "
        f"{mesh['velocity_dofs']} velocity + {mesh['pressure_dofs']} pressure DOFs "
        f"(h = {mesh['h_obstacle_m']} m on the cylinder, up to {mesh['h_max_m']} m). "
        f"dt = {result['dt_s']} s, {result['steps']} steps to t = {result['t_end_s']} s; "
        f"measured over t in [{result['window_s'][0]:.2f}, {result['window_s'][1]:.2f}] s "
        f"({details['cycles']} shedding cycles; cycle-to-cycle spread of max c_D "
        f"{spread['cd_max']:.1e}, of max c_L {spread['cl_max']:.1e}).",
        "",
        f"Scheme: {result['scheme']}.",
        "",
        f"`{result['command']}`; wall time {wall['time_stepping'] / 60:.1f} min time stepping "
        f"+ {wall['mesh_and_setup']:.1f} s mesh and set-up on {result['machine']}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
