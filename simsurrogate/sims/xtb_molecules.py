"""Reference data for molecular potentials: small organic molecules labelled by GFN2-xTB.

GFN2-xTB (Bannwarth, Ehlert & Grimme 2019) through ``tblite``'s ASE calculator gives
energies and forces of organic molecules in milliseconds, offline. Geometries start from ASE's
g2 collection (:mod:`ase.collections`); configurations are sampled by Langevin molecular
dynamics with xTB forces.

Frames come from MD runs. Run ``r`` of a split draws, from a random stream seeded by
(seed, split, r), a molecule (uniformly from ``molecules``) and a temperature (uniform in
``temperature_range``, K); it starts from the g2 geometry with Maxwell–Boltzmann velocities
(no net momentum or rotation), runs ``equilibration`` steps, then stores ``snapshots`` frames
``interval`` steps apart. Frame i of a split is snapshot ``i % snapshots`` of run
``i // snapshots``.

Labels (ASE units): ``energy`` (eV, total electronic energy of the neutral closed-shell
molecule) and ``forces`` (eV/Å). Molecules are not periodic: ``cell`` is zero and ``pbc``
False, and no stress is stored. Other per-frame fields: ``molecule`` (index into the
attribute ``molecules``), ``temperature`` (K), ``trajectory`` (the run) and ``time`` (fs since
the start of the run).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simsurrogate.sims._atomistic_common import (
    SPLITS,
    check_range,
    frame_rng,
    generate_splits,
    stack_frames,
    thermalize,
    versions,
)

#: small closed-shell H/C/N/O molecules of ASE's g2 collection sampled by default
DEFAULT_MOLECULES = (
    "H2O",
    "NH3",
    "CH4",
    "H2CO",
    "CH3OH",
    "H3CNH2",
    "HCOOH",
    "C2H4",
    "CH3CHO",
    "CH3CH2OH",
)
#: keyword for every closed-shell g2 molecule of two or more atoms made of H, C, N, O and F
ALL_HCNOF = "g2-hcnof"
METHOD = "GFN2-xTB"
_UNITS = {"temperature": "K"}
_PER_FRAME = ("molecule", "temperature")
_PER_ATOM = ("positions", "numbers", "forces")
_RUNS_PER_CHUNK = 5


def _closed_shell(atoms) -> bool:
    return not atoms.get_initial_magnetic_moments().any() and int(atoms.numbers.sum()) % 2 == 0


@functools.cache
def g2_hcnof() -> tuple[str, ...]:
    """Names of the closed-shell g2 molecules (two or more atoms) made of H, C, N, O, F."""
    from ase.collections import g2

    return tuple(
        name
        for name in g2.names
        if len(g2[name]) > 1
        and set(g2[name].get_chemical_symbols()) <= {"H", "C", "N", "O", "F"}
        and _closed_shell(g2[name])
    )


@dataclass(frozen=True)
class XTBMoleculesConfig:
    """What the MD runs are drawn from (K, fs, 1/fs, steps).

    ``molecules`` are g2 names (or ``("g2-hcnof",)`` for all closed-shell H/C/N/O/F ones);
    the default list is kept short because xTB runs on the CPU.
    """

    molecules: tuple[str, ...] = DEFAULT_MOLECULES
    temperature_range: tuple[float, float] = (300.0, 1000.0)
    timestep: float = 0.5
    friction: float = 0.01
    equilibration: int = 100
    interval: int = 20
    snapshots: int = 10
    accuracy: float = 1.0

    def __post_init__(self) -> None:
        from ase.collections import g2

        names = tuple(self.molecules)
        if names == (ALL_HCNOF,):
            names = g2_hcnof()
        unknown = [n for n in names if n not in g2.names]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(
                f"molecules must be distinct names from ASE's g2 collection (or {ALL_HCNOF!r}), "
                f"got {list(self.molecules)}" + (f"; unknown: {unknown}" if unknown else "")
            )
        for name in names:
            if len(g2[name]) < 2 or not _closed_shell(g2[name]):
                raise ValueError(
                    f"molecule {name!r} is a single atom or open-shell (radical or triplet); "
                    "only closed-shell molecules are sampled"
                )
        object.__setattr__(self, "molecules", names)
        object.__setattr__(
            self, "temperature_range", check_range("temperature_range", self.temperature_range)
        )
        if self.timestep <= 0 or self.friction <= 0 or self.accuracy <= 0:
            raise ValueError(
                f"timestep, friction and accuracy must be positive, got {self.timestep}, "
                f"{self.friction}, {self.accuracy}"
            )
        if self.equilibration < 0 or self.interval < 1 or self.snapshots < 1:
            raise ValueError(
                "need equilibration >= 0, interval >= 1 and snapshots >= 1 steps, got "
                f"{self.equilibration}, {self.interval}, {self.snapshots}"
            )

    def parameters(self) -> dict[str, Any]:
        """The configuration as plain values (for file attributes)."""
        return asdict(self)


def xtb_calculator(config: XTBMoleculesConfig):
    """A quiet tblite GFN2-xTB calculator for neutral closed-shell molecules."""
    from tblite.ase import TBLite

    return TBLite(method=METHOD, accuracy=config.accuracy, charge=0, multiplicity=1, verbosity=0)


def xtb_run(
    config: XTBMoleculesConfig, seed: int, split: str, run: int, n_snapshots: int
) -> list[dict[str, Any]]:
    """The first ``n_snapshots`` frames of MD run ``run`` of ``split`` (per-frame dicts)."""
    from ase import units
    from ase.collections import g2
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import ZeroRotation

    rng = frame_rng(seed, split, run)
    index = int(rng.integers(len(config.molecules)))
    name = config.molecules[index]
    temperature = float(rng.uniform(*config.temperature_range))
    atoms = g2[name].copy()
    atoms.calc = xtb_calculator(config)
    thermalize(atoms, temperature, rng)
    ZeroRotation(atoms)
    dyn = Langevin(
        atoms,
        timestep=config.timestep * units.fs,
        temperature_K=temperature,
        friction=config.friction / units.fs,
        fixcm=False,
        rng=rng,
    )
    frames = []
    step = 0
    try:
        dyn.run(config.equilibration)
        step = config.equilibration
        for _ in range(n_snapshots):
            dyn.run(config.interval)
            step += config.interval
            frames.append(
                {
                    "positions": atoms.positions.copy(),
                    "numbers": atoms.numbers.astype(np.int64),
                    "cell": np.zeros((3, 3)),
                    "pbc": np.zeros(3, bool),
                    "trajectory": run,
                    "time": step * config.timestep,
                    "molecule": index,
                    "temperature": temperature,
                    "energy": atoms.get_potential_energy(),
                    "forces": atoms.get_forces(),
                }
            )
    except Exception as exc:
        raise RuntimeError(
            f"xtb-molecules {split} run {run} ({name} at {temperature:.0f} K) failed near MD "
            f"step {step}: {exc}"
        ) from exc
    return frames


def xtb_chunk(
    config: XTBMoleculesConfig, seed: int, split: str, start: int, stop: int
) -> dict[str, np.ndarray]:
    """Fields (for write_frames) of frames start..stop-1 of ``split``; ``start`` is a multiple
    of ``config.snapshots``."""
    k = config.snapshots
    frames = []
    for run in range(start // k, -(-stop // k)):
        frames += xtb_run(config, seed, split, run, min(k, stop - run * k))
    return stack_frames(frames, _PER_ATOM)


def generate_xtb_molecules(
    out: str | Path,
    n_train: int = 1000,
    n_valid: int = 100,
    n_test: int = 100,
    seed: int = 0,
    config: XTBMoleculesConfig | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Write ``train.h5``, ``valid.h5`` and ``test.h5`` (particle schema) under ``out``.

    Counts are frames (``config.snapshots`` per MD run; the last run of a split may be cut
    short). ``workers`` processes (None: one per core) make chunks of five runs, each written
    at once so an interrupted run resumes. Returns the paths written.
    """
    config = config or XTBMoleculesConfig()
    attrs = {
        "generator": "simsurrogate.sims.xtb_molecules",
        "reference": f"{METHOD} (tblite, ASE calculator)",
        "seed": int(seed),
        "parameters": config.parameters(),
        "molecules": list(config.molecules),
        "versions": versions("ase", "tblite"),
    }
    return generate_splits(
        out,
        name="xtb-molecules",
        counts=dict(zip(SPLITS, (n_train, n_valid, n_test), strict=True)),
        chunk_frames=_RUNS_PER_CHUNK * config.snapshots,
        make_chunk=functools.partial(xtb_chunk, config, int(seed)),
        attrs=attrs,
        per_frame=_PER_FRAME,
        units=_UNITS,
        workers=workers,
        overwrite=overwrite,
        progress=progress,
    )
