"""DFG benchmark 2D-1 (Schäfer & Turek 1996): steady flow past a cylinder at Re = 20.

The steady case checks what the periodic 2D-2 case cannot separate: the spatial discretisation
and the force evaluation, against reference values known to many digits. Runs
:class:`simsurrogate.sims.cylinder_flow.CylinderFlowSolver` on the benchmark geometry (channel
2.2 m x 0.41 m, cylinder centre (0.2, 0.2), radius 0.05, ν = 1e-3, mean inflow 0.2 m/s, so
U_m = 0.3 and Re = 20) from rest until the force coefficients stop changing, on a sequence of
meshes, and compares c_D, c_L and the pressure difference Δp = p(0.15, 0.2) - p(0.25, 0.2)
with the reference values of John & Matthies (2001) (c_D 5.57953523384, c_L 0.010618948146,
Δp 0.11752016697) and the 1996 bounds. Writes ``benchmarks/results/dfg_2d1.json`` and
``dfg_2d1.md``.

    python benchmarks/dfg_2d1.py              # three meshes, about 5 min on one core
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from simsurrogate.sims.cylinder_flow import (
    ChannelGeometry,
    CylinderFlowSolver,
    cfl_substeps,
    make_mesh,
)

ROOT = Path(__file__).resolve().parents[1]
NU, U_MEAN = 1e-3, 0.2
REFERENCE = {"c_d": 5.57953523384, "c_l": 0.010618948146, "delta_p": 0.11752016697}
BOUNDS = {"c_d": (5.57, 5.59), "c_l": (0.0104, 0.0110), "delta_p": (0.1172, 0.1176)}
#: (h on the cylinder, largest h) in m
MESHES = [(0.008, 0.06), (0.004, 0.04), (0.002, 0.028)]


def steady_run(h_obstacle: float, h_max: float, t_max: float, tol: float) -> dict:
    """Run one mesh to steady state: forces change by less than ``tol`` over 0.5 s."""
    geom = ChannelGeometry()
    start = time.perf_counter()
    points, cells = make_mesh(geom, h_max, h_obstacle)
    dt = 0.01 / cfl_substeps(points, cells, geom, U_MEAN, 0.01)
    solver = CylinderFlowSolver(points, cells, geom, nu=NU, u_mean=U_MEAN, dt=dt, ramp_time=0.5)
    chunk = round(0.5 / dt)
    last = np.array(solver.force_coefficients())
    change = math.inf
    while solver.time < t_max and change > tol:
        solver.step(chunk)
        now = np.array(solver.force_coefficients())
        change, last = float(np.abs(now - last).max()), now
    wall = time.perf_counter() - start
    c_d, c_l = (float(c) for c in last)
    delta_p = solver.obstacle_pressure(math.pi) - solver.obstacle_pressure(0.0)
    measured = {"c_d": c_d, "c_l": c_l, "delta_p": delta_p}
    return {
        "h_obstacle_m": h_obstacle,
        "h_max_m": h_max,
        "vertices": int(points.shape[0]),
        "velocity_dofs": 2 * solver.n_u,
        "dt_s": dt,
        "t_end_s": round(solver.time, 4),
        "last_change": change,
        "measured": measured,
        "relative_error": {k: abs(v - REFERENCE[k]) / REFERENCE[k] for k, v in measured.items()},
        "inside_bounds": {k: BOUNDS[k][0] <= v <= BOUNDS[k][1] for k, v in measured.items()},
        "wall_time_s": round(wall, 1),
    }


def markdown(result: dict) -> str:
    ref = result["reference"]
    lines = [
        "| vertices | h cylinder / max (m) | dt (s) | c_D | c_L | Δp (m²/s²) "
        "| rel. error c_D / c_L / Δp | inside 1996 bounds | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in result["runs"]:
        m, e, ok = run["measured"], run["relative_error"], run["inside_bounds"]
        lines.append(
            f"| {run['vertices']} | {run['h_obstacle_m']} / {run['h_max_m']} | {run['dt_s']:.2g} "
            f"| {m['c_d']:.5f} | {m['c_l']:.6f} | {m['delta_p']:.5f} "
            f"| {e['c_d']:.1e} / {e['c_l']:.1e} / {e['delta_p']:.1e} "
            f"| {'yes' if all(ok.values()) else 'no'} | {run['wall_time_s']} |"
        )
    lines += [
        f"| reference | | | {ref['c_d']} | {ref['c_l']} | {ref['delta_p']} | | | |",
        "",
        "Reference: John & Matthies (2001), Int. J. Numer. Meth. Fluids 37. 1996 bounds: "
        + ", ".join(f"{k} [{lo}, {hi}]" for k, (lo, hi) in result["bounds"].items())
        + ". Steady state: the run stops when c_D and c_L change by less than "
        f"{result['tolerance']:g} over 0.5 s. Forces: reaction of the discrete momentum "
        "equation on the cylinder's velocity DOFs; Δp from the P1 pressure on the circle, "
        "linear between vertices.",
        "",
        f"`{result['command']}` on {result['machine']}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--t-max", type=float, default=20.0, help="longest simulated time (s)")
    parser.add_argument("--tol", type=float, default=1e-7, help="steady-state tolerance")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    runs = []
    for h_obstacle, h_max in MESHES:
        runs.append(steady_run(h_obstacle, h_max, args.t_max, args.tol))
        print(json.dumps(runs[-1]), flush=True)
    result = {
        "benchmark": "DFG 2D-1 (Schäfer & Turek 1996), Re = 20, steady",
        "command": " ".join(["python", "benchmarks/dfg_2d1.py", *sys.argv[1:]]),
        "reference": REFERENCE,
        "bounds": {k: list(v) for k, v in BOUNDS.items()},
        "tolerance": args.tol,
        "runs": runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, one process",
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "dfg_2d1.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "dfg_2d1.md").write_text(markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
