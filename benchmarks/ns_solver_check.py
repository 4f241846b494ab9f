"""Reduced Navier–Stokes solver settings against the FNO paper's, over a short horizon.

The paper's setting (256² grid, dt = 1e-4, forward Euler on the nonlinear term) costs about
24 CPU-minutes per trajectory of T = 50 on one thread. This script solves the same initial
vorticity fields (drawn on 256², spectrally truncated for coarser grids) with the paper's
setting and with cheaper ones (coarser grid, larger dt, Heun) for ``--t-final`` time units, and
writes the relative L2 difference at the stored 64² grid at every unit of time, with the
wall time per trajectory per time unit, to ``benchmarks/results/ns_solver_check.{json,md}``.

    OMP_NUM_THREADS=1 python benchmarks/ns_solver_check.py --samples 2 --t-final 4 \
        --reduced 64:1e-3:heun 64:2e-3:heun 128:1e-3:heun
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from simsurrogate.sims.grf import periodic_grf
from simsurrogate.sims.navier_stokes import NavierStokesConfig, forcing, solve_vorticity

ROOT = Path(__file__).resolve().parents[1]
STORED = 64


def truncate(w: torch.Tensor, n: int) -> torch.Tensor:
    """The Fourier modes |k_x|, |k_y| < n/2 of fields w (S, N, N), evaluated on an n x n grid."""
    big = w.shape[-1]
    w_h = torch.fft.rfft2(w, norm="forward")
    rows = torch.cat([w_h[:, : n // 2], w_h[:, big - n // 2 :]], dim=1)[..., : n // 2 + 1]
    rows[:, n // 2] = 0  # the Nyquist row and column are ambiguous for a real field
    rows[..., n // 2] = 0
    return torch.fft.irfft2(rows, s=(n, n), norm="forward")


def solve(
    w0: torch.Tensor, n: int, dt: float, scheme: str, t_final: float, nu: float
) -> tuple[torch.Tensor, float]:
    """Snapshots (S, t_final + 1, 64, 64) of w0 solved on n² with (dt, scheme); wall s/unit/traj."""
    start = time.perf_counter()
    sol = solve_vorticity(
        truncate(w0, n) if n != w0.shape[-1] else w0,
        forcing(n),
        nu,
        t_final,
        dt,
        1.0,
        scheme=scheme,
        stride=n // STORED,
    )
    return sol, (time.perf_counter() - start) / (t_final * len(w0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--t-final", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reduced",
        nargs="+",
        default=["64:1e-3:heun"],
        help="settings RESOLUTION:DT:SCHEME to compare with the paper's",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    paper = NavierStokesConfig()
    gen = torch.Generator().manual_seed(args.seed)
    w0 = periodic_grf(
        args.samples, (paper.resolution,) * 2, paper.alpha, paper.tau, paper.sigma, generator=gen
    )
    reference, ref_cost = solve(
        w0, paper.resolution, paper.dt, paper.scheme, args.t_final, paper.viscosity
    )
    ref_norm = reference.flatten(2).norm(dim=2)
    rows = []
    for setting in args.reduced:
        n, dt, scheme = setting.split(":")
        sol, cost = solve(w0, int(n), float(dt), scheme, args.t_final, paper.viscosity)
        rel = ((sol - reference).flatten(2).norm(dim=2) / ref_norm).mean(0)  # per time unit
        rows.append(
            {
                "resolution": int(n),
                "dt": float(dt),
                "scheme": scheme,
                "rel_l2_per_time": [round(float(v), 7) for v in rel],
                "s_per_time_unit_per_traj": round(cost, 3),
                "speedup": round(ref_cost / cost, 1),
            }
        )
    result = {
        "benchmark": "reduced Navier–Stokes solver settings against the paper's (nu = 1e-3)",
        "paper_setting": {
            "resolution": paper.resolution,
            "dt": paper.dt,
            "scheme": paper.scheme,
            "s_per_time_unit_per_traj": round(ref_cost, 3),
        },
        "samples": args.samples,
        "t_final": args.t_final,
        "compared_on": f"{STORED} x {STORED} (every 4th point of 256)",
        "reduced": rows,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} torch thread(s)",
        "command": " ".join(["python", "benchmarks/ns_solver_check.py", *sys.argv[1:]]),
    }
    times = list(range(1, round(args.t_final) + 1))
    lines = [
        "| solver grid | dt | scheme | rel. L2 to the paper's setting at t = "
        + ", ".join(map(str, times))
        + " | s per time unit per trajectory | speed-up |",
        "|---|---|---|---|---|---|",
        f"| {paper.resolution}² (paper) | {paper.dt:g} | {paper.scheme} | 0 | {ref_cost:.2f} | 1 |",
    ]
    for r in rows:
        errs = ", ".join(f"{v:.2e}" for v in r["rel_l2_per_time"][1:])
        lines.append(
            f"| {r['resolution']}² | {r['dt']:g} | {r['scheme']} | {errs} | "
            f"{r['s_per_time_unit_per_traj']:.3f} | {r['speedup']:g} |"
        )
    lines += [
        "",
        f"Mean over {args.samples} initial fields (drawn on 256², spectrally truncated for "
        f"coarser grids) of ||w - w_paper|| / ||w_paper|| on the stored {STORED}² grid; "
        f"nu = {paper.viscosity:g}, the paper's forcing.",
        "",
        f"`{result['command']}` on {result['machine']}.",
    ]
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "ns_solver_check.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.results / "ns_solver_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
