"""NVE energy drift of trained potentials in the MD engine (meV/atom/ps).

For each (checkpoint, structure) pair: thermalise to the start temperature, run velocity
Verlet NVE in ``MDEngine``, write the trajectory, and fit a line to the total energy
(potential + kinetic) per atom against time. The slope is the drift; the standard deviation
of the residual is the fluctuation. A metal (EMT-trained model on a 108-atom fcc Cu-Au alloy at
600 K) and a molecule (xTB-trained model on ethanol at 500 K) by default.

    python benchmarks/md_nve_drift.py \
        --case metal checkpoints/emt_painn/model.ckpt \
        --case molecule checkpoints/xtb_painn/model.ckpt

writes ``benchmarks/results/md_nve_drift.json`` and ``.md`` and a plot of the energies.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase import Atoms  # noqa: E402
from ase.build import bulk, molecule  # noqa: E402

from simsurrogate import checkpoint  # noqa: E402
from simsurrogate.data.particles import FrameReader  # noqa: E402
from simsurrogate.rollout.md import MDEngine  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def structure(case: str) -> tuple[Atoms, float, float]:
    """Structure, start temperature (K) and time step (fs) of a case."""
    if case == "metal":
        atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat(3)
        rng = np.random.default_rng(0)
        atoms.numbers[rng.permutation(len(atoms))[: len(atoms) // 2]] = 79  # Cu-Au 50/50
        return atoms, 600.0, 2.0
    if case == "molecule":
        return molecule("CH3CH2OH"), 500.0, 0.5
    raise ValueError(f"unknown case {case!r}; choose metal or molecule")


def drift(path: Path) -> dict:
    """Slope (meV/atom/ps) and residual std (meV/atom) of the total energy per atom."""
    reader = FrameReader(path)
    try:
        data = reader.frames(np.arange(len(reader)), ["time", "energy", "kinetic_energy"])
        n = int(reader.n_atoms[0])
    finally:
        reader.close()
    t_ps = data["time"] / 1000.0
    total = (data["energy"] + data["kinetic_energy"]) / n * 1000.0  # meV/atom
    slope, intercept = np.polyfit(t_ps, total, 1)
    residual = total - (slope * t_ps + intercept)
    return {
        "t_ps": t_ps.tolist(),
        "total_mev_per_atom": (total - total[0]).tolist(),
        "potential_mev_per_atom": ((data["energy"] - data["energy"][0]) / n * 1e3).tolist(),
        "drift_mev_per_atom_per_ps": float(slope),
        "fluctuation_mev_per_atom": float(residual.std()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--case", nargs=2, action="append", metavar=("CASE", "CHECKPOINT"), required=True
    )
    parser.add_argument("--ps", type=float, default=10.0, help="simulated time per case (ps)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path("out/bench_md_nve_drift")
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for case, ckpt in args.case:
        atoms, temp, dt = structure(case)
        model = checkpoint.load(ckpt)
        steps = int(round(args.ps * 1000 / dt))
        engine = MDEngine(model, ensemble="nve", timestep=dt, seed=0)
        traj = work / f"{case}.h5"
        result = engine.run(
            [atoms],
            steps=steps,
            out=traj,
            write_every=max(1, steps // 500),
            initial_temperature=temp,
            overwrite=True,
            progress=True,
        )
        if result.stopped:
            raise RuntimeError(f"{case}: the run was stopped: {result.stopped[0].reason}")
        row = {
            "case": case,
            "checkpoint": ckpt,
            "model": type(model).__name__,
            "formula": atoms.get_chemical_formula(),
            "atoms": len(atoms),
            "start_temperature_K": temp,
            "timestep_fs": dt,
            "steps": steps,
            "neighbour_list_builds": result.n_builds,
            "wall_s": result.wall_time,
            **drift(traj),
        }
        results.append(row)
        print(
            f"{case}: {row['formula']} {row['model']} drift "
            f"{row['drift_mev_per_atom_per_ps']:.4f} meV/atom/ps, fluctuation "
            f"{row['fluctuation_mev_per_atom']:.3f} meV/atom"
        )
    RESULTS.mkdir(exist_ok=True)
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.5), squeeze=False)
    for ax, row in zip(axes[0], results, strict=True):
        ax.plot(row["t_ps"], row["potential_mev_per_atom"], lw=0.7, label="potential")
        ax.plot(row["t_ps"], row["total_mev_per_atom"], lw=1.5, label="total")
        ax.set_title(
            f"{row['case']}: {row['formula']} ({row['model']}), dt {row['timestep_fs']} fs"
        )
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("energy - E(0) (meV/atom)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "md_nve_drift.png", dpi=120)
    summary = [{k: v for k, v in r.items() if not isinstance(v, list)} for r in results]
    (RESULTS / "md_nve_drift.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        "# NVE energy drift in MDEngine (velocity Verlet)",
        "",
        "`python benchmarks/md_nve_drift.py "
        + " ".join(f"--case {c} {k}" for c, k in args.case)
        + f" --ps {args.ps}`",
        "",
        "| case | structure | model | dt (fs) | steps | drift (meV/atom/ps) "
        "| fluctuation (meV/atom) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        lines.append(
            f"| {r['case']} | {r['formula']} ({r['atoms']} atoms, {r['start_temperature_K']:.0f} K)"
            f" | {r['model']} | {r['timestep_fs']} | {r['steps']} "
            f"| {r['drift_mev_per_atom_per_ps']:.4f} | {r['fluctuation_mev_per_atom']:.3f} |"
        )
    lines += ["", "![energies](md_nve_drift.png)"]
    (RESULTS / "md_nve_drift.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
