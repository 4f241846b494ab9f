"""DFG benchmark 2D-3 (Schäfer & Turek 1996): flow past a cylinder with a time-varying inflow.

The unsteady case with high-accuracy reference values: the mean inflow rises and falls as
sin(π t / 8) over t in [0, 8] s (Re up to 100 at t = 4), vortex shedding starts on the way
down, and V. John (2004, Int. J. Numer. Meth. Fluids 44, 777-788) computed the drag and lift
maxima, their times and the final pressure difference to many digits. It checks what the
periodic 2D-2 case has no such reference for: the time-dependent lift, including the
time-derivative term of the volume-integral force, and the onset and phase of shedding.

Runs :class:`simsurrogate.sims.cylinder_flow.CylinderFlowSolver` (Taylor–Hood P2–P1, BDF2
incremental pressure correction) on the benchmark geometry (channel 2.2 m x 0.41 m, cylinder
centre (0.2, 0.2), radius 0.05, ν = 1e-3, mean inflow sin(π t / 8) m/s) from rest to t = 8 s on
a sequence of meshes, records c_D and c_L = 2 F / (1 m/s)² D every step, and compares
max c_D, max c_L, their times (each refined by a parabola through the largest sample and its
neighbours) and Δp(8) = p(0.15, 0.2) - p(0.25, 0.2) with John's values and the 1996 bounds.
Writes ``benchmarks/results/dfg_2d3.json``, ``dfg_2d3.md`` and ``dfg_2d3.png`` (the force
history on the finest mesh with the reference maxima).

    python benchmarks/dfg_2d3.py                  # four meshes, about 60 min on one core
    python benchmarks/dfg_2d3.py --meshes 0.004,0.04 --results out/dfg_2d3   # a few minutes
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

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from simsurrogate.sims.cylinder_flow import (  # noqa: E402
    ChannelGeometry,
    CylinderFlowSolver,
    make_mesh,
)

ROOT = Path(__file__).resolve().parents[1]
NU, T_END = 1e-3, 8.0
#: John (2004), eqs. (8)-(10)
REFERENCE = {
    "cd_max": 2.950921575,
    "t_cd_max": 3.93625,
    "cl_max": 0.47795,
    "t_cl_max": 5.693125,
    "delta_p_8": -0.1116,
}
#: Schäfer & Turek (1996), case 2D-3
BOUNDS = {"cd_max": (2.93, 2.97), "cl_max": (0.47, 0.49), "delta_p_8": (-0.115, -0.105)}
#: (h on the cylinder, largest h) in m; dt = 0.07 h_obstacle s keeps the Courant number of
#: the explicit convection below 0.2 at the peak inflow
MESHES = [(0.004, 0.04), (0.002, 0.028), (0.0014, 0.02), (0.001, 0.014)]


def inflow(t: float) -> float:
    """Mean inflow speed (m/s) of 2D-3 at time t (s)."""
    return math.sin(math.pi * t / 8.0)


def peak(t: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """(value, time) of the maximum of a sampled c(t), refined by a parabola through 3 samples."""
    i = int(np.clip(np.argmax(c), 1, c.size - 2))
    y0, y1, y2 = c[i - 1 : i + 2]
    curv = y0 - 2 * y1 + y2
    shift = 0.0 if curv == 0 else 0.5 * (y0 - y2) / curv
    return float(y1 - 0.25 * (y0 - y2) * shift), float(t[i] + shift * (t[i + 1] - t[i]))


def run(h_obstacle: float, h_max: float, growth: float, progress: bool) -> dict:
    """One mesh from rest to t = 8 s; the measured quantities and the force history."""
    geom = ChannelGeometry()
    start = time.perf_counter()
    points, cells = make_mesh(geom, h_max, h_obstacle, growth=growth)
    dt = 0.07 * h_obstacle
    n_steps = round(T_END / dt)
    dt = T_END / n_steps
    solver = CylinderFlowSolver(points, cells, geom, nu=NU, u_mean=1.0, dt=dt, inflow=inflow)
    record = np.empty((n_steps, 3))
    for k in tqdm(range(n_steps), disable=not progress, unit="step", desc=f"h={h_obstacle}"):
        solver.step()
        record[k] = (solver.time, *solver.force_coefficients())
    wall = time.perf_counter() - start
    t, c_d, c_l = record.T
    cd_max, t_cd = peak(t, c_d)
    cl_max, t_cl = peak(t, c_l)
    measured = {
        "cd_max": cd_max,
        "t_cd_max": t_cd,
        "cl_max": cl_max,
        "t_cl_max": t_cl,
        "delta_p_8": solver.obstacle_pressure(math.pi) - solver.obstacle_pressure(0.0),
    }
    every = max(1, round(0.01 / dt))
    return {
        "h_obstacle_m": h_obstacle,
        "h_max_m": h_max,
        "growth": growth,
        "vertices": int(points.shape[0]),
        "velocity_dofs": 2 * solver.n_u,
        "pressure_dofs": solver.n_p,
        "dt_s": dt,
        "measured": measured,
        "error": {
            k: abs(v - REFERENCE[k]) / (1.0 if k.startswith("t_") else abs(REFERENCE[k]))
            for k, v in measured.items()
        },
        "inside_bounds": {k: lo <= measured[k] <= hi for k, (lo, hi) in BOUNDS.items()},
        "wall_time_s": round(wall, 1),
        "series": {
            "time_s": t[::every].round(4).tolist(),
            "c_d": c_d[::every].round(6).tolist(),
            "c_l": c_l[::every].round(6).tolist(),
        },
    }


def markdown(result: dict) -> str:
    ref = result["reference"]
    lines = [
        "| vertices | h cylinder / max (m) | dt (s) | max c_D (t) | max c_L (t) | Δp(8) "
        "| error c_D / c_L / Δp | error t(c_D) / t(c_L) (s) | inside 1996 bounds | wall (min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        m, e = r["measured"], r["error"]
        lines.append(
            f"| {r['vertices']} | {r['h_obstacle_m']} / {r['h_max_m']} | {r['dt_s']:.3g} "
            f"| {m['cd_max']:.5f} ({m['t_cd_max']:.4f}) | {m['cl_max']:.5f} ({m['t_cl_max']:.4f}) "
            f"| {m['delta_p_8']:.4f} | {e['cd_max']:.1e} / {e['cl_max']:.1e} / "
            f"{e['delta_p_8']:.1e} | {e['t_cd_max']:.1e} / {e['t_cl_max']:.1e} "
            f"| {'yes' if all(r['inside_bounds'].values()) else 'no'} "
            f"| {r['wall_time_s'] / 60:.1f} |"
        )
    lines += [
        f"| reference | | | {ref['cd_max']} ({ref['t_cd_max']}) | {ref['cl_max']} "
        f"({ref['t_cl_max']}) | {ref['delta_p_8']} | | | | |",
        "",
        "Errors of the maxima and of Δp are relative, errors of the times absolute (s). "
        "Reference: V. John (2004), Int. J. Numer. Meth. Fluids 44, 777-788. 1996 bounds: "
        + ", ".join(f"{k} [{lo}, {hi}]" for k, (lo, hi) in result["bounds"].items())
        + ". Scheme: Taylor-Hood P2-P1, BDF2 incremental pressure correction, explicit "
        "skew-symmetric convection; forces from the reaction of the discrete momentum equation "
        "on the cylinder's velocity DOFs, every step; maxima and their times refined by a "
        "parabola through three samples; Δp from the P1 pressure on the circle.",
        "",
        f"`{result['command']}` on {result['machine']}.",
    ]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    """c_D and c_L over t on every mesh, with the reference maxima marked."""
    ref = result["reference"]
    fig, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for r in result["runs"]:
        s = r["series"]
        label = f"{r['vertices']} vertices"
        axes[0].plot(s["time_s"], s["c_d"], lw=1, label=label)
        axes[1].plot(s["time_s"], s["c_l"], lw=1, label=label)
    axes[0].plot(ref["t_cd_max"], ref["cd_max"], "kx", ms=9, label="John (2004) maximum")
    axes[1].plot(ref["t_cl_max"], ref["cl_max"], "kx", ms=9, label="John (2004) maximum")
    axes[0].set_ylabel("c_D")
    axes[1].set_ylabel("c_L")
    axes[1].set_xlabel("t (s)")
    axes[0].legend(fontsize=8)
    axes[0].set_title("DFG 2D-3: inflow sin(πt/8), Re up to 100")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--meshes",
        nargs="+",
        default=[f"{h},{hm}" for h, hm in MESHES],
        help="meshes as h_obstacle,h_max (m), coarse to fine",
    )
    parser.add_argument("--growth", type=float, default=0.1, help="size growth per m")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")
    args = parser.parse_args()
    runs = []
    for mesh in args.meshes:
        h_obstacle, h_max = (float(v) for v in mesh.split(","))
        runs.append(run(h_obstacle, h_max, args.growth, args.progress))
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "series"}), flush=True)
    result = {
        "benchmark": "DFG 2D-3 (Schäfer & Turek 1996), inflow sin(πt/8), Re up to 100",
        "command": " ".join(["python", "benchmarks/dfg_2d3.py", *sys.argv[1:]]),
        "reference": REFERENCE,
        "bounds": {k: list(v) for k, v in BOUNDS.items()},
        "runs": runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, one process",
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "dfg_2d3.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "dfg_2d3.md").write_text(markdown(result) + "\n")
    plot(result, args.results / "dfg_2d3.png")
    print(markdown(result))


if __name__ == "__main__":
    main()
