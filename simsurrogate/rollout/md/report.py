"""``simsurrogate md``: run the batched MD engine on the structures of a file and report.

Every frame of the structure file (anything ``ase.io.read`` reads) becomes one system, and all
run together. The output directory receives ``trajectory.h5`` (particle schema, one
``trajectory`` index per system), optionally ``trajectory.extxyz``, ``md.json`` (parameters,
per-system status and averages, neighbour-list rebuilds, throughput) and ``md.png`` (energy
and temperature against time).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from ase import units

from simsurrogate.data.errors import DataError
from simsurrogate.rollout.md.engine import MDEngine, MDResult

__all__ = ["run_md"]


def read_structures(path: str | Path, index: str = ":") -> list:
    """All frames of ``path`` selected by ``index``, as ``ase.Atoms``; a DataError names the
    file when ASE cannot read it."""
    import ase
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", path=path)
    try:
        images = ase.io.read(path, index=index)
    except Exception as exc:  # ASE raises many types for unreadable input
        raise DataError(f"ASE could not read it: {type(exc).__name__}: {exc}", path=path) from None
    images = [images] if isinstance(images, ase.Atoms) else list(images)
    if not images:
        raise DataError(f"no frames selected by index {index!r}", path=path)
    return images


def run_md(
    checkpoint: str | Path,
    structure: str | Path,
    out: str | Path,
    ensemble: str = "nvt",
    temperature: float = 300.0,
    pressure_bar: float = 1.01325,
    timestep: float = 1.0,
    steps: int = 1000,
    write_every: int = 10,
    friction: float = 0.01,
    tau_t: float | None = None,
    tau_p: float = 1000.0,
    skin: float = 1.0,
    min_distance: float = 0.5,
    seed: int = 0,
    index: str = ":",
    device: str = "cpu",
    extxyz: bool = False,
    compile: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run MD on every frame of ``structure`` with the potential in ``checkpoint``.

    Units: ``temperature`` K (also the initial Maxwell–Boltzmann temperature of frames without
    momenta, for NVE too), ``pressure_bar`` bar, ``timestep``/``tau_t``/``tau_p`` fs,
    ``friction`` 1/fs, ``skin``/``min_distance`` Å. Returns the summary written to
    ``md.json``.
    """
    out = Path(out)
    images = read_structures(structure, index)
    trajectory = out / "trajectory.h5"
    if trajectory.exists() and not overwrite:
        raise DataError("file exists; pass --overwrite to replace it", path=trajectory)
    out.mkdir(parents=True, exist_ok=True)
    engine = MDEngine(
        checkpoint,
        ensemble=ensemble,
        timestep=timestep,
        temperature=temperature,
        pressure=pressure_bar * units.bar,
        friction=friction,
        tau_t=tau_t,
        tau_p=tau_p,
        skin=skin,
        min_distance=min_distance,
        device=device,
        compile=compile,
        seed=seed,
    )
    result = engine.run(
        images,
        steps,
        out=trajectory,
        write_every=write_every,
        extxyz=out / "trajectory.extxyz" if extxyz else None,
        initial_temperature=temperature,
        overwrite=overwrite,
        progress=progress,
    )
    summary = _summary(result, images, checkpoint, structure)
    if ensemble == "npt":
        summary["pressure_bar"] = pressure_bar
    (out / "md.json").write_text(json.dumps(summary, indent=2) + "\n")
    _plot(trajectory, out / "md.png")
    return summary


def _per_frame(path: Path) -> dict[str, np.ndarray]:
    """The logged per-frame series of a trajectory file (small next to the per-atom data)."""
    names = ("trajectory", "time", "energy", "kinetic_energy", "temperature", "pressure")
    with h5py.File(path, "r") as f:
        frames = {name: f[name][:] for name in names if name in f}
        frames["n_atoms"] = f["n_atoms"][:]
    return frames


def _summary(result: MDResult, images: list, checkpoint: str | Path, structure: str | Path):
    frames = _per_frame(result.path)
    systems = []
    for status in result.status:
        mine = frames["trajectory"] == status.system
        entry: dict[str, Any] = {
            "system": status.system,
            "formula": images[status.system].get_chemical_formula(),
            "n_atoms": status.n_atoms,
            "status": status.state,
            "last_step": status.step,
        }
        if status.reason:
            entry["reason"] = status.reason
        if mine.any():
            total = frames["energy"][mine] + frames["kinetic_energy"][mine]
            entry["mean_temperature_K"] = float(frames["temperature"][mine].mean())
            entry["final_temperature_K"] = float(frames["temperature"][mine][-1])
            if result.attrs["ensemble"] == "nve":
                entry["total_energy_change_eV_per_atom"] = float(
                    (total[-1] - total[0]) / status.n_atoms
                )
            if "pressure" in frames:
                entry["mean_pressure_bar"] = float(frames["pressure"][mine].mean() / units.bar)
        systems.append(entry)
    return {
        "checkpoint": str(checkpoint),
        "structure": str(structure),
        **result.attrs,
        "steps": result.steps,
        "n_systems": len(result.status),
        "n_stopped": len(result.stopped),
        "neighbour_list_builds": result.n_builds,
        "system_list_builds": result.n_system_builds,
        "wall_time_s": result.wall_time,
        "atom_steps_per_second": result.atom_steps_per_second,
        "frames_written": result.frames_written,
        "trajectory": str(result.path),
        "extxyz": None if result.extxyz is None else str(result.extxyz),
        "systems": systems,
    }


def _plot(trajectory: Path, path: Path, max_lines: int = 20) -> None:
    """Total energy per atom and temperature against time, one line per system (the first
    ``max_lines`` systems)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = _per_frame(trajectory)
    fig, (ax_e, ax_t) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for system in np.unique(frames["trajectory"])[:max_lines]:
        mine = frames["trajectory"] == system
        t = frames["time"][mine] / 1000.0
        total = (frames["energy"][mine] + frames["kinetic_energy"][mine]) / frames["n_atoms"][mine]
        ax_e.plot(t, total, lw=1, label=f"system {system}")
        ax_t.plot(t, frames["temperature"][mine], lw=1)
    ax_e.set_ylabel("total energy (eV/atom)")
    ax_t.set_ylabel("temperature (K)")
    ax_t.set_xlabel("time (ps)")
    if len(np.unique(frames["trajectory"])) <= 10:
        ax_e.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
