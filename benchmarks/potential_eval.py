"""Held-out accuracy of a trained potential, overall and per subset of the test file.

Subsets are the file's per-frame labels: ``kind`` (EMT metals: bulk, vacancy, surface, md) or
``molecule`` (xTB molecules). Metrics: energy MAE per atom (meV/atom), force MAE and RMSE
(meV/Å), stress MAE (meV/Å³, periodic frames only), with frame and atom counts.

    python benchmarks/potential_eval.py --checkpoint checkpoints/emt_painn/model.ckpt \
        --data data/emt_metals/test.h5 --name emt_painn

writes ``benchmarks/results/<name>_eval.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from simsurrogate import checkpoint
from simsurrogate.data.atoms import AtomsDataset
from simsurrogate.data.particles import FrameReader

RESULTS = Path(__file__).parent / "results"


def predict(model: torch.nn.Module, ds: AtomsDataset, batch: int = 16) -> dict[str, np.ndarray]:
    """Energies (F,), forces (A, 3) and stresses (F, 3, 3) (zeros where undefined) of all frames."""
    energy, forces, stress = [], [], []
    for start in range(0, len(ds), batch):
        idx = list(range(start, min(start + batch, len(ds))))
        g = ds.collate(idx)
        want = bool(g.globals.get("has_stress", torch.zeros(1, dtype=torch.bool)).all())
        out = model(g, forces=True, stress=want)
        energy.append(out["energy"].numpy())
        forces.append(out["forces"].numpy())
        if want:
            stress.append(out["stress"].numpy())
        else:  # frames without a cell: evaluate those with one separately
            s = np.zeros((len(idx), 3, 3))
            cells = [k for k, i in enumerate(idx) if ds.has_stress[i]]
            if cells:
                s[cells] = model(ds.collate([idx[k] for k in cells]), stress=True)["stress"]
            stress.append(s)
    return {
        "energy": np.concatenate(energy),
        "forces": np.concatenate(forces),
        "stress": np.concatenate(stress),
    }


def metrics(ds: AtomsDataset, pred: dict[str, np.ndarray], frames: np.ndarray) -> dict:
    """Errors over ``frames`` (indices into the file)."""
    rows = np.concatenate([np.arange(ds.offsets[k], ds.offsets[k + 1]) for k in frames])
    n = ds.n_atoms[frames]
    out = {"frames": len(frames), "atoms": int(n.sum())}
    out["energy_mae_mev_per_atom"] = 1e3 * float(
        np.mean(np.abs(pred["energy"][frames] - ds.energy[frames]) / n)
    )
    df = pred["forces"][rows] - ds.forces[rows]
    out["force_mae_mev_per_a"] = 1e3 * float(np.mean(np.abs(df)))
    out["force_rmse_mev_per_a"] = 1e3 * float(np.sqrt(np.mean(df**2)))
    with_stress = frames[ds.has_stress[frames]]
    if len(with_stress):
        ds_ = pred["stress"][with_stress] - ds.stress[with_stress]
        out["stress_mae_mev_per_a3"] = 1e3 * float(np.mean(np.abs(ds_)))
    return out


def subsets(path: Path) -> dict[str, np.ndarray]:
    """Frame indices of each labelled subset of the file."""
    reader = FrameReader(path)
    try:
        if "kind" in reader.fields:
            labels = reader.frames(np.arange(len(reader)), ["kind"])["kind"]
            names = {v: k for k, v in reader.attrs["kinds"].items()}
        elif "molecule" in reader.fields:
            labels = reader.frames(np.arange(len(reader)), ["molecule"])["molecule"]
            names = dict(enumerate(reader.attrs["molecules"]))
        else:
            return {}
    finally:
        reader.close()
    return {names[int(v)]: np.nonzero(labels == v)[0] for v in np.unique(labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="held-out particle file")
    parser.add_argument("--name", required=True, help="results file stem")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = checkpoint.load(args.checkpoint)
    ds = AtomsDataset(args.data, cutoff=model.cutoff)
    pred = predict(model, ds)
    table = {"all": metrics(ds, pred, np.arange(len(ds)))}
    for name, frames in subsets(args.data).items():
        table[name] = metrics(ds, pred, frames)
    meta = checkpoint.read_checkpoint(args.checkpoint)[checkpoint.KEY]
    result = {
        "checkpoint": str(args.checkpoint),
        "data": str(args.data),
        "model": meta["model"],
        "provenance": meta.get("provenance", {}),
        "metrics": table,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}_eval.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# {args.name}: held-out accuracy",
        "",
        f"`python benchmarks/potential_eval.py --checkpoint {args.checkpoint} --data {args.data}"
        f" --name {args.name}`",
        "",
        "| subset | frames | atoms | energy MAE (meV/atom) | force MAE (meV/Å) "
        "| force RMSE (meV/Å) | stress MAE (meV/Å³) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in table.items():
        stress = m.get("stress_mae_mev_per_a3")
        lines.append(
            f"| {name} | {m['frames']} | {m['atoms']} | {m['energy_mae_mev_per_atom']:.2f} "
            f"| {m['force_mae_mev_per_a']:.1f} | {m['force_rmse_mev_per_a']:.1f} "
            f"| {'' if stress is None else f'{stress:.3f}'} |"
        )
    (RESULTS / f"{args.name}_eval.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
