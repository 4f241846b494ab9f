"""MD throughput (atom-steps per second) of the batched engine against the anchors.

1. **Against ASE's own MD loop, same model.** 100 small fcc metal systems (rattled, 32 or 48
   atoms, alloys of the EMT elements) advanced by NVE velocity Verlet: our ``MDEngine`` in
   one batch (one model call per step for all systems, neighbour lists with a skin) against
   ASE's ``VelocityVerlet`` with our ``SimsurrogateCalculator`` looping over the systems, which
   is how a user drives a potential through ASE. Same potential, threads, dtype, time step.
2. **Against mace-torch's MACE on one larger system.** A MACE of comparable size (same
   cutoff, channels and l_max as our NequIP-class model) run through mace's ``MACECalculator``
   with ASE's ``VelocityVerlet`` in its own venv (mace-torch pins e3nn 0.4.4), against our
   NequIP model in ``MDEngine`` on the same structure. Both are untrained-size-matched
   networks: speed does not depend on the weights' values. MACE venv: ``out/venvs/mace``
   (``python -m venv out/venvs/mace && out/venvs/mace/bin/pip install torch==2.13.0 &&
   out/venvs/mace/bin/pip install -c constraints.txt mace-torch``).

    python benchmarks/md_throughput.py --checkpoint checkpoints/emt_painn/model.ckpt
    python benchmarks/md_throughput.py --checkpoint checkpoints/emt_painn/model.ckpt --device cuda

(on a GPU machine the MACE venv needs a CUDA build of torch 2.13.0 for its part to run there.)

writes ``benchmarks/results/md_throughput.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution as thermalize
from ase.md.verlet import VelocityVerlet
from mace_anchor import run_in_mace_venv

from simsurrogate import checkpoint
from simsurrogate.models.potentials import NequIP
from simsurrogate.rollout.md import MDEngine, SimsurrogateCalculator

RESULTS = Path(__file__).parent / "results"
METALS = ("Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Al")
EMT_NUMBERS = [13, 28, 29, 46, 47, 78, 79]


def small_systems(n: int, seed: int = 0) -> list[Atoms]:
    """``n`` rattled fcc alloy cells of 32 or 48 atoms with velocities at 300 K."""
    rng = np.random.default_rng(seed)
    systems = []
    for k in range(n):
        atoms = bulk("Cu", "fcc", a=3.8, cubic=True).repeat((2, 2, 2 if k % 2 == 0 else 3))
        atoms.set_chemical_symbols(rng.choice(METALS, size=len(atoms)))
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        thermalize(atoms, temperature_K=300, rng=rng)
        systems.append(atoms)
    return systems


def run_engine(
    model: torch.nn.Module,
    systems: list[Atoms],
    steps: int,
    dt: float,
    max_atoms_per_call: int | None = None,
    device: str = "cpu",
) -> dict:
    """NVE in one batch; returns throughput and the neighbour-list rebuild count."""
    engine = MDEngine(
        model, ensemble="nve", timestep=dt, max_atoms_per_call=max_atoms_per_call, device=device
    )
    engine.run(systems, steps=2)  # warm-up (allocations, first neighbour search)
    result = engine.run(systems, steps=steps)
    return {
        "atom_steps_per_s": result.atom_steps_per_second,
        "wall_s": result.wall_time,
        "neighbour_list_builds": result.n_builds,
    }


def run_ase(
    model: torch.nn.Module, systems: list[Atoms], steps: int, dt: float, device: str = "cpu"
) -> dict:
    """ASE VelocityVerlet, one system after the other, our calculator."""
    calc = SimsurrogateCalculator(model, device=device)
    warm = systems[0].copy()
    warm.calc = calc
    VelocityVerlet(warm, timestep=dt * units.fs).run(2)
    start = time.perf_counter()
    atom_steps = 0
    for atoms in systems:
        atoms = atoms.copy()
        atoms.calc = calc
        VelocityVerlet(atoms, timestep=dt * units.fs).run(steps)
        atom_steps += len(atoms) * steps
    wall = time.perf_counter() - start
    return {"atom_steps_per_s": atom_steps / wall, "wall_s": wall}


MACE_MD = textwrap.dedent(
    """
    import json, time
    import torch
    from ase import units
    from ase.io import read
    from ase.md.verlet import VelocityVerlet
    from mace.calculators import MACECalculator

    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(cfg["threads"])
    model = build_mace(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    torch.save(model, cfg["model_path"])
    calc = MACECalculator(
        model_paths=cfg["model_path"], device=cfg["device"], default_dtype="float32"
    )
    atoms = read(cfg["structure"])
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=cfg["dt"] * units.fs)
    dyn.run(2)
    start = time.perf_counter()
    dyn.run(cfg["steps"])
    wall = time.perf_counter() - start
    print(json.dumps({"atom_steps_per_s": len(atoms) * cfg["steps"] / wall, "wall_s": wall,
                      "parameters": n_params}))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True, help="EMT-trained potential")
    parser.add_argument("--systems", type=int, default=100)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument(
        "--max-atoms-per-call", type=int, default=512, help="chunk size of the second engine run"
    )
    parser.add_argument("--dt", type=float, default=2.0, help="fs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="torch device of every model (cpu, cuda)")
    parser.add_argument("--large-repeat", type=int, default=6, help="fcc cubic cell repeat")
    parser.add_argument("--large-steps", type=int, default=50)
    parser.add_argument("--mace-python", type=Path, default=Path("out/venvs/mace/bin/python"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = checkpoint.load(args.checkpoint)
    systems = small_systems(args.systems)
    n_atoms = sum(len(a) for a in systems)
    print(f"part 1: {len(systems)} systems, {n_atoms} atoms, {args.steps} NVE steps")
    ours = run_engine(model, systems, args.steps, args.dt, device=args.device)
    chunked = run_engine(
        model, systems, args.steps, args.dt, args.max_atoms_per_call, device=args.device
    )
    ase_loop = run_ase(model, systems, args.steps, args.dt, args.device)
    part1 = {
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "systems": len(systems),
        "atoms": n_atoms,
        "steps": args.steps,
        "engine": ours,
        "engine_chunked": {"max_atoms_per_call": args.max_atoms_per_call, **chunked},
        "ase_velocity_verlet": ase_loop,
        "speedup": ours["atom_steps_per_s"] / ase_loop["atom_steps_per_s"],
        "speedup_chunked": chunked["atom_steps_per_s"] / ase_loop["atom_steps_per_s"],
    }
    print(json.dumps(part1, indent=2))

    # part 2: one larger system, NequIP-class model against MACE of matching size
    large = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(args.large_repeat)
    large.rattle(0.05, seed=1)
    thermalize(large, temperature_K=300, rng=np.random.default_rng(1))
    work = Path("out/bench_md_throughput")
    work.mkdir(parents=True, exist_ok=True)
    structure = work / "large.extxyz"
    large.write(structure)
    size = {"cutoff": 5.0, "lmax": 1, "channels": 32, "n_interactions": 2, "avg": 42.0}
    torch.manual_seed(0)
    ours_model = NequIP(
        EMT_NUMBERS,
        cutoff=size["cutoff"],
        lmax=size["lmax"],
        channels=size["channels"],
        n_interactions=size["n_interactions"],
        avg_num_neighbors=size["avg"],
    ).eval()
    ours_large = run_engine(ours_model, [large], args.large_steps, args.dt, device=args.device)
    part2: dict = {
        "atoms": len(large),
        "steps": args.large_steps,
        "ours": {
            "model": "NequIP",
            "parameters": sum(p.numel() for p in ours_model.parameters()),
            **ours_large,
        },
    }
    if args.mace_python.exists():
        cfg = {
            "threads": args.threads,
            "device": args.device,
            "numbers": EMT_NUMBERS,
            "cutoff": size["cutoff"],
            "lmax": size["lmax"],
            "n_interactions": size["n_interactions"],
            "channels": size["channels"],
            "avg_num_neighbors": size["avg"],
            "structure": str(structure),
            "model_path": str(work / "mace.model"),
            "dt": args.dt,
            "steps": args.large_steps,
        }
        mace = run_in_mace_venv(args.mace_python, work / "mace_md.py", MACE_MD, cfg)
        mace_version = subprocess.run(
            [str(args.mace_python), "-c", "import mace; print(mace.__version__)"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        part2["mace"] = {"model": f"mace-torch {mace_version} ScaleShiftMACE", **mace}
        part2["speedup"] = ours_large["atom_steps_per_s"] / mace["atom_steps_per_s"]
    print(json.dumps(part2, indent=2))

    result = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "device": args.device,
            "torch": torch.__version__,
        },
        "command": " ".join(sys.argv),
        "many_small_systems": part1,
        "one_large_system": part2,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "md_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    p1, p2 = part1, part2
    lines = [
        f"# MD throughput (atom-steps per second, {args.device})",
        "",
        f"`{result['command']}` ({args.threads} thread(s), torch {torch.__version__})",
        "",
        f"**{p1['systems']} small systems** ({p1['atoms']} atoms, {p1['model']} "
        f"{p1['parameters']:,} parameters, NVE {p1['steps']} steps of {args.dt} fs):",
        "",
        "| runner | atom-steps/s | wall (s) |",
        "|---|---|---|",
        f"| simsurrogate MDEngine (one batch) | {p1['engine']['atom_steps_per_s']:.0f} "
        f"| {p1['engine']['wall_s']:.1f} |",
        f"| simsurrogate MDEngine, model calls of <= {args.max_atoms_per_call} atoms "
        f"| {p1['engine_chunked']['atom_steps_per_s']:.0f} "
        f"| {p1['engine_chunked']['wall_s']:.1f} |",
        f"| ASE VelocityVerlet + SimsurrogateCalculator, system by system "
        f"| {p1['ase_velocity_verlet']['atom_steps_per_s']:.0f} "
        f"| {p1['ase_velocity_verlet']['wall_s']:.1f} |",
        "",
        f"Speed-up over the ASE loop: **{p1['speedup']:.2f}x** with one model call per step, "
        f"**{p1['speedup_chunked']:.2f}x** with calls of <= {args.max_atoms_per_call} atoms "
        f"(target 5x). Neighbour lists were rebuilt {p1['engine']['neighbour_list_builds']} "
        f"times in {p1['steps']} steps.",
        "",
        f"**One system of {p2['atoms']} atoms** (fcc Cu, NVE {p2['steps']} steps of {args.dt} fs):",
        "",
        "| runner | parameters | atom-steps/s | wall (s) |",
        "|---|---|---|---|",
        f"| simsurrogate NequIP in MDEngine | {p2['ours']['parameters']:,} "
        f"| {p2['ours']['atom_steps_per_s']:.0f} | {p2['ours']['wall_s']:.1f} |",
    ]
    if "mace" in p2:
        lines += [
            f"| {p2['mace']['model']} + ASE VelocityVerlet | {p2['mace']['parameters']:,} "
            f"| {p2['mace']['atom_steps_per_s']:.0f} | {p2['mace']['wall_s']:.1f} |",
            "",
            f"Speed-up: **{p2['speedup']:.2f}x** (target 2x). Both: cutoff {size['cutoff']} Å, "
            f"l_max {size['lmax']}, {size['channels']} channels, {size['n_interactions']} "
            "interactions, float32; MACE with correlation order 3 (its default).",
        ]
    (RESULTS / "md_throughput.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
