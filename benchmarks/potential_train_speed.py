"""Training throughput of a potential (structures per second) against mace-torch's MACE.

Same batches (8 EMT structures from ``data/emt_metals/train.h5``, 41 atoms on average), same
loss (energy per atom MSE + 10 x force MSE, forces by autograd with a graph for the second
derivative), AdamW step, float32, one thread. Ours: the NequIP-class model in ``PotentialTask``'s
loss path; anchor: mace-torch's ``ScaleShiftMACE`` of matching size (cutoff, channels, l_max,
interactions; correlation order 3) in its own venv (mace-torch pins e3nn 0.4.4):
``python -m venv out/venvs/mace && out/venvs/mace/bin/pip install torch==2.13.0 &&
out/venvs/mace/bin/pip install -c constraints.txt mace-torch``. Neighbour lists are built once
per batch outside the timed region for both.

    python benchmarks/potential_train_speed.py

writes ``benchmarks/results/potential_train_speed.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
from mace_anchor import run_in_mace_venv

from simsurrogate.data.atoms import AtomsDataset
from simsurrogate.data.importers.ase_import import frames_to_atoms
from simsurrogate.data.particles import FrameReader
from simsurrogate.models.potentials import NequIP

RESULTS = Path(__file__).parent / "results"
ELEMENTS = [13, 28, 29, 46, 47, 78, 79]
SIZE = {"cutoff": 5.0, "lmax": 1, "channels": 32, "n_interactions": 2, "avg": 40.0}


def ours(path: Path, batches: list[list[int]], steps: int) -> dict:
    """Seconds per training step of our NequIP on the given batches (cycled)."""
    torch.manual_seed(0)
    model = NequIP(
        ELEMENTS,
        cutoff=SIZE["cutoff"],
        lmax=SIZE["lmax"],
        channels=SIZE["channels"],
        n_interactions=SIZE["n_interactions"],
        avg_num_neighbors=SIZE["avg"],
    ).train()
    ds = AtomsDataset(path, cutoff=SIZE["cutoff"])
    graphs = [ds.collate(b) for b in batches]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, amsgrad=True)

    def step(g) -> None:
        pred = model(g, forces=True)
        n = g._n_nodes().to(torch.float64)
        loss = torch.mean(((pred["energy"] - g.globals["energy"]) / n) ** 2) + 10 * torch.mean(
            (pred["forces"] - g.nodes["forces"]) ** 2
        )
        opt.zero_grad()
        loss.backward()
        opt.step()

    for g in graphs[:2]:
        step(g)
    start = time.perf_counter()
    for k in range(steps):
        step(graphs[k % len(graphs)])
    wall = time.perf_counter() - start
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "s_per_step": wall / steps,
    }


MACE_TRAIN = textwrap.dedent(
    """
    import json, time
    import numpy as np, torch
    from ase.io import read
    from mace import data, tools
    from mace.tools import torch_geometric

    cfg = json.loads(sys.argv[1])
    torch.set_num_threads(1)
    model = build_mace(cfg)
    table = tools.AtomicNumberTable(cfg["numbers"])
    frames = read(cfg["frames"], index=":")
    batches = []
    for idx in cfg["batches"]:
        items = [data.AtomicData.from_config(data.config_from_atoms(frames[i]), z_table=table,
                                             cutoff=cfg["cutoff"]) for i in idx]
        batch = next(iter(torch_geometric.dataloader.DataLoader(items, batch_size=len(items))))
        energy = torch.tensor([frames[i].info["ref_energy"] for i in idx], dtype=torch.float32)
        forces = torch.tensor(np.concatenate([frames[i].arrays["ref_forces"] for i in idx]),
                              dtype=torch.float32)
        batches.append((batch, energy, forces))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, amsgrad=True)

    def step(item):
        batch, energy, forces = item
        out = model(batch.to_dict(), training=True, compute_force=True)
        n = (batch.ptr[1:] - batch.ptr[:-1]).to(torch.float32)
        loss = torch.mean(((out["energy"] - energy) / n) ** 2) + 10 * torch.mean(
            (out["forces"] - forces) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for item in batches[:2]:
        step(item)
    start = time.perf_counter()
    for k in range(cfg["steps"]):
        step(batches[k % len(batches)])
    wall = time.perf_counter() - start
    print(json.dumps({"parameters": sum(p.numel() for p in model.parameters()),
                      "s_per_step": wall / cfg["steps"]}))
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Path("data/emt_metals/train.h5"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--n-batches", type=int, default=8)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--mace-python", type=Path, default=Path("out/venvs/mace/bin/python"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    reader = FrameReader(args.data)
    picks = rng.choice(len(reader), size=args.batch * args.n_batches, replace=False)
    batches = [picks[k : k + args.batch].tolist() for k in range(0, len(picks), args.batch)]
    atoms_per_batch = float(np.mean([reader.n_atoms[b].sum() for b in batches]))
    work = Path("out/bench_potential_train_speed")
    work.mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(len(reader)):
        atoms = frames_to_atoms(reader, i)
        # labels under other names, so MACE's config reader does not pick them up itself
        atoms.info["ref_energy"] = float(reader[i]["energy"])
        atoms.arrays["ref_forces"] = reader[i]["forces"]
        atoms.calc = None
        frames.append(atoms)
    reader.close()
    import ase.io

    ase.io.write(work / "frames.extxyz", frames)
    ours_result = ours(args.data, batches, args.steps)
    cfg = {
        "numbers": ELEMENTS,
        "cutoff": SIZE["cutoff"],
        "lmax": SIZE["lmax"],
        "n_interactions": SIZE["n_interactions"],
        "channels": SIZE["channels"],
        "avg_num_neighbors": SIZE["avg"],
        "frames": str(work / "frames.extxyz"),
        "batches": batches,
        "steps": args.steps,
    }
    mace = run_in_mace_venv(args.mace_python, work / "mace_train.py", MACE_TRAIN, cfg)
    result = {
        "command": " ".join(sys.argv),
        "batch": args.batch,
        "atoms_per_batch": atoms_per_batch,
        "steps": args.steps,
        "ours": {"model": "simsurrogate NequIP", **ours_result},
        "mace": {"model": "mace-torch ScaleShiftMACE", **mace},
    }
    for side in ("ours", "mace"):
        result[side]["structures_per_s"] = args.batch / result[side]["s_per_step"]
    result["speedup"] = result["ours"]["structures_per_s"] / result["mace"]["structures_per_s"]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "potential_train_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Potential training throughput (CPU, 1 thread)",
        "",
        f"`{result['command']}`: batches of {args.batch} EMT structures "
        f"({atoms_per_batch:.0f} atoms per batch on average), energy + force loss with the "
        f"second derivative, AdamW, float32, {args.steps} timed steps after 2 warm-up steps.",
        f"Both models: cutoff {SIZE['cutoff']} Å, l_max {SIZE['lmax']}, {SIZE['channels']} "
        f"channels, {SIZE['n_interactions']} interactions (MACE: correlation order 3).",
        "",
        "| model | parameters | s/step | structures/s |",
        "|---|---|---|---|",
    ]
    for side in ("ours", "mace"):
        r = result[side]
        lines.append(
            f"| {r['model']} | {r['parameters']:,} | {r['s_per_step']:.3f} "
            f"| {r['structures_per_s']:.1f} |"
        )
    lines += ["", f"Ratio: **{result['speedup']:.2f}x**."]
    (RESULTS / "potential_train_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
