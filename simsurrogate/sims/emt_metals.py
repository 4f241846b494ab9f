"""Reference data for metal potentials: fcc metals and their alloys labelled by ASE's EMT.

Effective-medium theory (Jacobsen, Stoltze & Nørskov 1996, as implemented in
:class:`ase.calculators.emt.EMT`) gives energies, forces and stresses of Cu, Ag, Au, Ni, Pd,
Pt, Al and their alloys cheaply and offline. Every frame draws its own structure from a
random stream seeded by (seed, split, frame index) (:func:`emt_structure`):

* ``bulk`` (kind 0): a cubic fcc supercell, randomly strained (symmetric strain, each
  component uniform in ±``strain``) and rattled (Gaussian displacements of ``rattle`` Å);
* ``vacancy`` (1): the same with one or two atoms removed;
* ``surface`` (2): a (111) or (100) slab of 3-6 layers with ``vacuum`` Å on each side,
  periodic in-plane only, strained in-plane and rattled;
* ``md`` (3): a strained bulk cell after ``md_steps`` steps of Langevin dynamics at a
  temperature drawn uniformly from ``temperature_range`` (K), started from Maxwell–Boltzmann
  velocities at that temperature.

The composition is one element, or with probability ``alloy_probability`` a random
substitutional alloy of 2 to ``max_components`` elements with Dirichlet-distributed fractions
(every component at least one atom). Lattices start at EMT's own equilibrium lattice constant
(Vegard's law for alloys), so the strains are centred on zero stress.

Labels (ASE units): ``energy`` (eV), ``forces`` (eV/Å) and ``stress`` (eV/Å³, 3x3, ASE sign
convention). Stress is defined only for fully periodic cells; surface frames store zeros there
and ``has_stress = False``. Other per-frame fields: ``kind`` (names in the attribute
``kinds``), ``temperature`` (K; 0 for the static kinds), ``composition`` (frame, elements):
atoms of each element, columns in the order of the attribute ``elements``.
"""

from __future__ import annotations

import functools
import itertools
import math
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

#: fcc metals EMT is parameterised for
ELEMENTS = ("Cu", "Ag", "Au", "Ni", "Pd", "Pt", "Al")
#: kind name -> value of the per-frame ``kind`` field
KINDS = {"bulk": 0, "vacancy": 1, "surface": 2, "md": 3}
SURFACE_LAYERS = (3, 6)  # slab thickness range (layers)
_UNITS = {"temperature": "K"}
_PER_FRAME = ("kind", "temperature", "has_stress", "composition")
_PER_ATOM = ("positions", "numbers", "forces")
_CHUNK = 50  # frames per part file


@dataclass(frozen=True)
class EMTMetalsConfig:
    """What the frames are drawn from (Å, K, fs, 1/fs).

    ``elements`` and ``temperature_range`` also serve to hold data out: a set made with
    ``elements=("Cu", "Au")`` or ``temperature_range=(300, 800)`` draws nothing else.
    """

    elements: tuple[str, ...] = ELEMENTS
    kinds: tuple[str, ...] = tuple(KINDS)
    size_range: tuple[int, int] = (8, 64)
    temperature_range: tuple[float, float] = (300.0, 1500.0)
    max_components: int = 3
    alloy_probability: float = 0.5
    strain: float = 0.03
    rattle: float = 0.05
    vacuum: float = 6.0
    md_steps: int = 100
    md_timestep: float = 2.0
    md_friction: float = 0.02

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        set_("elements", tuple(self.elements))
        set_("kinds", tuple(self.kinds))
        bad = [e for e in self.elements if e not in ELEMENTS]
        if bad or not self.elements or len(set(self.elements)) != len(self.elements):
            raise ValueError(
                f"elements must be distinct names from {list(ELEMENTS)}, got "
                f"{list(self.elements)}" + (f" (unknown: {bad})" if bad else "")
            )
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds or len(set(self.kinds)) != len(self.kinds):
            raise ValueError(f"kinds must be distinct names from {list(KINDS)}, got {self.kinds}")
        lo, hi = (int(v) for v in self.size_range)
        if not 1 <= lo <= hi:
            raise ValueError(f"size_range must satisfy 1 <= low <= high, got {self.size_range}")
        set_("size_range", (lo, hi))
        set_("temperature_range", check_range("temperature_range", self.temperature_range))
        if self.max_components < 1:
            raise ValueError(f"max_components must be >= 1, got {self.max_components}")
        if not 0 <= self.alloy_probability <= 1:
            raise ValueError(f"alloy_probability must be in [0, 1], got {self.alloy_probability}")
        if not 0 <= self.strain < 0.2:
            raise ValueError(f"strain must be in [0, 0.2), got {self.strain}")
        if not (0 <= self.rattle < 0.5 and self.vacuum > 0):
            raise ValueError(
                f"need 0 <= rattle < 0.5 Å and vacuum > 0 Å, got {self.rattle}, {self.vacuum}"
            )
        if self.md_steps < 1 or self.md_timestep <= 0 or self.md_friction <= 0:
            raise ValueError("md_steps, md_timestep and md_friction must be positive")
        need = {
            "bulk": (_bulk_shapes(lo, hi), "a cubic fcc supercell (4 n1 n2 n3 atoms)"),
            "md": (_bulk_shapes(lo, hi), "a cubic fcc supercell (4 n1 n2 n3 atoms)"),
            "vacancy": (
                _vacancy_shapes((lo, hi), 1) + _vacancy_shapes((lo, hi), 2),
                "a supercell with one or two vacancies",
            ),
            "surface": (
                _slab_shapes(lo, hi),
                "a slab of at least 2x2 atoms and 3 layers (12 atoms)",
            ),
        }
        for kind in self.kinds:
            shapes, what = need[kind]
            if not shapes:
                raise ValueError(
                    f"kind {kind!r} needs {what}, which size_range {self.size_range} excludes"
                )

    def parameters(self) -> dict[str, Any]:
        """The configuration as plain values (for file attributes)."""
        return asdict(self)


@functools.cache
def _bulk_shapes(lo: int, hi: int) -> tuple[tuple[int, int, int], ...]:
    """Repetitions (n1 <= n2 <= n3) of the 4-atom cubic fcc cell with lo <= 4 n1 n2 n3 <= hi."""
    top = max(hi // 4, 1)
    return tuple(
        r
        for r in itertools.combinations_with_replacement(range(1, top + 1), 3)
        if lo <= 4 * math.prod(r) <= hi
    )


def _vacancy_shapes(
    size_range: tuple[int, int], n_vacancies: int
) -> tuple[tuple[int, int, int], ...]:
    """Supercells that hold ``size_range`` atoms after ``n_vacancies`` are removed."""
    return _bulk_shapes(size_range[0] + n_vacancies, size_range[1] + n_vacancies)


@functools.cache
def _slab_shapes(lo: int, hi: int) -> tuple[tuple[int, int, int], ...]:
    """Slab sizes (a <= b, layers), a >= 2, with lo <= a b layers <= hi atoms."""
    return tuple(
        (a, b, layers)
        for layers in range(SURFACE_LAYERS[0], SURFACE_LAYERS[1] + 1)
        for a in range(2, hi + 1)
        for b in range(a, hi + 1)
        if lo <= a * b * layers <= hi
    )


@functools.cache
def emt_lattice_constant(symbol: str) -> float:
    """EMT's equilibrium fcc lattice constant of an element (Å): zero pressure, by bisection."""
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.data import atomic_numbers, reference_states

    def pressure(a: float) -> float:
        atoms = bulk(symbol, "fcc", a=a)
        atoms.calc = EMT()
        return -float(atoms.get_stress()[:3].mean())

    a_lo = a_hi = reference_states[atomic_numbers[symbol]]["a"]
    a_lo, a_hi = 0.9 * a_lo, 1.1 * a_hi  # compressed (p > 0) ... expanded (p < 0)
    for _ in range(50):
        mid = 0.5 * (a_lo + a_hi)
        a_lo, a_hi = (mid, a_hi) if pressure(mid) > 0 else (a_lo, mid)
    return 0.5 * (a_lo + a_hi)


def _composition(config: EMTMetalsConfig, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """Elements of the frame and their fractions (sum 1)."""
    n_max = min(config.max_components, len(config.elements))
    n = 1
    if n_max > 1 and rng.random() < config.alloy_probability:
        n = int(rng.integers(2, n_max + 1))
    symbols = [str(s) for s in rng.choice(config.elements, size=n, replace=False)]
    return symbols, rng.dirichlet(np.ones(n))


def _species(symbols: list[str], fractions: np.ndarray, n: int, rng: np.random.Generator):
    """n chemical symbols in random order with counts closest to ``fractions``, each >= 1."""
    k = len(symbols)
    counts = np.ones(k, dtype=np.int64)
    share = fractions * (n - k)  # the remaining n - k atoms, by largest remainder
    counts += np.floor(share).astype(np.int64)
    rest = n - int(counts.sum())
    counts[np.argsort(-(share - np.floor(share)), kind="stable")[:rest]] += 1
    return [str(s) for s in rng.permutation(np.repeat(symbols, counts))]


def _strain(atoms, rng: np.random.Generator, amount: float, in_plane: bool = False) -> None:
    """Deform the cell by (1 + ε), ε symmetric with components uniform in ±amount."""
    eps = rng.uniform(-amount, amount, (3, 3))
    eps = 0.5 * (eps + eps.T)
    if in_plane:
        eps[2, :] = eps[:, 2] = 0.0
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)


def emt_structure(config: EMTMetalsConfig, seed: int, split: str, index: int):
    """Frame ``index`` of ``split``: (ase.Atoms with an EMT calculator, kind, temperature K).

    For the ``md`` kind the returned atoms are the end of the MD run.
    """
    from ase import units
    from ase.build import bulk, fcc100, fcc111
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin

    rng = frame_rng(seed, split, index)
    kind = config.kinds[int(rng.integers(len(config.kinds)))]
    symbols, fractions = _composition(config, rng)
    a0 = float(sum(f * emt_lattice_constant(s) for s, f in zip(symbols, fractions, strict=True)))
    if kind == "surface":
        slabs = _slab_shapes(*config.size_range)
        a, b, layers = slabs[int(rng.integers(len(slabs)))]
        build = fcc111 if rng.random() < 0.5 else fcc100
        atoms = build(symbols[0], size=(a, b, layers), a=a0, vacuum=config.vacuum)
    else:
        n_vac = 0
        if kind == "vacancy":  # one or two, as many as fit the size range (checked: one does)
            fits = [k for k in (1, 2) if _vacancy_shapes(config.size_range, k)]
            n_vac = fits[int(rng.integers(len(fits)))]
        shapes = _vacancy_shapes(config.size_range, n_vac)
        reps = rng.permutation(shapes[int(rng.integers(len(shapes)))])
        atoms = bulk(symbols[0], "fcc", a=a0, cubic=True).repeat([int(r) for r in reps])
        if n_vac:
            del atoms[[int(i) for i in rng.choice(len(atoms), n_vac, replace=False)]]
    atoms.set_chemical_symbols(_species(symbols, fractions, len(atoms), rng))
    _strain(atoms, rng, config.strain, in_plane=kind == "surface")
    atoms.calc = EMT()
    temperature = 0.0
    if kind == "md":
        temperature = float(rng.uniform(*config.temperature_range))
        thermalize(atoms, temperature, rng)
        dyn = Langevin(
            atoms,
            timestep=config.md_timestep * units.fs,
            temperature_K=temperature,
            friction=config.md_friction / units.fs,
            fixcm=False,
            rng=rng,
        )
        dyn.run(config.md_steps)
        atoms.wrap()
    else:
        atoms.positions += rng.normal(0.0, config.rattle, atoms.positions.shape)
    return atoms, kind, temperature


def emt_labels(atoms) -> dict[str, np.ndarray]:
    """energy (eV), forces (N, 3) eV/Å, stress (3, 3) eV/Å³ (zeros unless fully periodic) and
    has_stress of atoms carrying an EMT calculator."""
    from ase.stress import voigt_6_to_full_3x3_stress

    periodic = bool(atoms.pbc.all())
    stress = voigt_6_to_full_3x3_stress(atoms.get_stress()) if periodic else np.zeros((3, 3))
    return {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "stress": stress,
        "has_stress": periodic,
    }


def emt_chunk(
    config: EMTMetalsConfig, seed: int, split: str, start: int, stop: int
) -> dict[str, np.ndarray]:
    """Fields (for write_frames) of frames start..stop-1 of ``split``."""
    frames = []
    for index in range(start, stop):
        try:
            atoms, kind, temperature = emt_structure(config, seed, split, index)
            labels = emt_labels(atoms)
        except Exception as exc:
            raise RuntimeError(f"emt-metals {split} frame {index}: {exc}") from exc
        symbols = atoms.get_chemical_symbols()
        frames.append(
            {
                "positions": atoms.positions,
                "numbers": atoms.numbers.astype(np.int64),
                "cell": atoms.cell.array,
                "pbc": atoms.pbc,
                "trajectory": index,
                "kind": KINDS[kind],
                "temperature": temperature,
                "composition": [symbols.count(s) for s in config.elements],
                **labels,
            }
        )
    return stack_frames(frames, _PER_ATOM)


def generate_emt_metals(
    out: str | Path,
    n_train: int = 2000,
    n_valid: int = 200,
    n_test: int = 200,
    seed: int = 0,
    config: EMTMetalsConfig | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Write ``train.h5``, ``valid.h5`` and ``test.h5`` (particle schema) under ``out``.

    Counts are frames; ``workers`` processes (None: one per core) make chunks of 50 frames,
    each written at once so an interrupted run resumes (see
    :func:`~simsurrogate.sims._atomistic_common.generate_splits`). Returns the paths written.
    """
    config = config or EMTMetalsConfig()
    attrs = {
        "generator": "simsurrogate.sims.emt_metals",
        "reference": "ASE EMT (ase.calculators.emt.EMT)",
        "seed": int(seed),
        "parameters": config.parameters(),
        "elements": list(config.elements),
        "kinds": KINDS,
        "versions": versions("ase"),
        "has_stress_note": "stress is zero and has_stress = 0 for frames not fully periodic",
    }
    return generate_splits(
        out,
        name="emt-metals",
        counts=dict(zip(SPLITS, (n_train, n_valid, n_test), strict=True)),
        chunk_frames=_CHUNK,
        make_chunk=functools.partial(emt_chunk, config, int(seed)),
        attrs=attrs,
        per_frame=_PER_FRAME,
        units=_UNITS,
        workers=workers,
        overwrite=overwrite,
        progress=progress,
    )
