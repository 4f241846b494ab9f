"""Batched molecular dynamics: many systems of different sizes advanced together.

:class:`MDEngine` runs any :class:`~simsurrogate.models.potentials.Potential` (learned or
analytic) with one model call per step for all systems, Verlet neighbour lists with a skin
(:class:`~simsurrogate.rollout.md.forcefield.ForceField`) and one of the integrators of
:mod:`simsurrogate.rollout.md.integrators` (NVE, Langevin, Nosé–Hoover chain, NPT).
Trajectories stream to the atomistic HDF5 layout (:mod:`simsurrogate.data.particles`; one
``trajectory`` index per system) and, on request, to extxyz; nothing accumulates per step, so
memory stays flat however long the run.

A system whose energy, positions or momenta go non-finite, or whose atoms come closer than
``min_distance``, is stopped: a :class:`RuntimeWarning` names it and the step, the reason is
recorded in :attr:`MDResult.status`, it is dropped from the batch, and the others go on.

Example::

    engine = MDEngine("potential.ckpt", ensemble="nvt", timestep=1.0, temperature=300.0)
    result = engine.run(list_of_atoms, steps=10_000, out="md.h5", write_every=100)
"""

from __future__ import annotations

import contextlib
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import ase
import ase.io
import numpy as np
import torch
from ase import units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress
from tqdm.auto import tqdm

from simsurrogate.data.particles import FrameWriter
from simsurrogate.graph import Graph
from simsurrogate.models.potentials import Potential
from simsurrogate.rollout.allocator import pad_heap
from simsurrogate.rollout.md.forcefield import ForceField, prepare_model
from simsurrogate.rollout.md.integrators import INTEGRATORS, per_system_values
from simsurrogate.rollout.md.state import (
    MDState,
    check_structures,
    kinetic_energy,
    maxwell_boltzmann,
    pressure,
    temperature,
)

__all__ = ["ENSEMBLES", "MDEngine", "MDResult", "SystemStatus"]

ENSEMBLES = tuple(INTEGRATORS)
#: per-frame fields the engine writes besides the standard ones
LOG_FIELDS = ("step", "kinetic_energy", "temperature", "pressure")
LOG_UNITS = {"kinetic_energy": "eV", "temperature": "K", "pressure": "eV/Angstrom^3", "step": "1"}


@dataclass
class SystemStatus:
    """How a system's run ended: ``state`` is "finished", "stopped" (then ``reason`` says
    why) or "interrupted" (Ctrl-C; the frames written so far are kept); ``step`` is the last
    step integrated."""

    system: int
    n_atoms: int
    state: str
    step: int
    reason: str = ""


@dataclass
class MDResult:
    """Outcome of :meth:`MDEngine.run`: the final ``state`` of the systems still running,
    one :class:`SystemStatus` per input system, neighbour-list statistics, the wall time (s)
    of the integration loop, throughput in atom-steps per second and the files written."""

    state: MDState
    status: list[SystemStatus]
    steps: int
    n_builds: int
    n_system_builds: int
    wall_time: float
    atom_steps_per_second: float
    frames_written: int = 0
    path: Path | None = None
    extxyz: Path | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def stopped(self) -> list[SystemStatus]:
        """Statuses of the systems that were stopped."""
        return [s for s in self.status if s.state == "stopped"]


class MDEngine:
    """Advance batches of atomic systems with a potential.

    Args:
        model: a :class:`Potential` or a checkpoint path.
        ensemble: "nve" (velocity Verlet), "langevin" (BAOAB), "nvt" (Nosé–Hoover chain,
            MTK) or "npt" (Langevin + isotropic stochastic cell rescaling).
        timestep: fs.
        temperature: target K, one value or one per system (not used by "nve").
        pressure: target eV/Å³ for "npt", one value or one per system.
        friction: Langevin friction, 1/fs ("langevin", "npt").
        tau_t: Nosé–Hoover time constant in fs (default 100 timesteps).
        tau_p: barostat time constant in fs; ``compressibility`` in Å³/eV (see
            :func:`~simsurrogate.rollout.md.integrators.npt_init`).
        chain_length: Nosé–Hoover chain length.
        skin: neighbour-list skin in Å (lists are kept until an atom moved skin/2).
        min_distance: a system whose atoms come closer than this (Å) is stopped; input
            structures with closer atoms are rejected.
        device, dtype: where and in which float type the model runs (dtype None: the model's
            own); integration is always float64.
        compile: ``torch.compile`` the model's per-atom network (``atomic_energies``, dynamic
            shapes; forces still by one eager autograd pass). Measured on one CPU thread with
            4 Cu systems of 32 atoms: PaiNN (32 channels, 2 blocks) 33 -> 16 ms/step,
            NequIP-class (defaults) 129 -> 97 ms/step, Lennard-Jones no gain, after ~6-7 s of
            compilation at the first step. Off by default, since short runs do not earn
            the compilation back.
        seed: seed of the initial velocities and the thermostat/barostat noise.
        max_atoms_per_call: split each step's model evaluation into runs of whole systems
            of at most this many atoms (None: one call for all; see
            :class:`~simsurrogate.rollout.md.forcefield.ForceField`).
    """

    def __init__(
        self,
        model: Potential | str | Path,
        ensemble: str = "nve",
        timestep: float = 1.0,
        temperature: float | Sequence[float] = 300.0,
        pressure: float | Sequence[float] = 0.0,
        friction: float = 0.01,
        tau_t: float | None = None,
        tau_p: float = 1000.0,
        compressibility: float = 4.5e-5 / units.bar,
        chain_length: int = 3,
        skin: float = 1.0,
        min_distance: float = 0.5,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        compile: bool = False,
        seed: int = 0,
        max_atoms_per_call: int | None = None,
    ) -> None:
        if ensemble not in INTEGRATORS:
            raise ValueError(f"unknown ensemble {ensemble!r}; choose one of {ENSEMBLES}")
        if timestep <= 0:
            raise ValueError(f"timestep must be positive (fs), got {timestep}")
        self.device = torch.device(device)
        if self.device.type == "cpu":
            pad_heap()  # steps reuse their memory instead of page-faulting (see allocator.py)
        self.model = prepare_model(model, self.device, dtype)
        self.ensemble = ensemble
        self.timestep = float(timestep)
        self.temperature = temperature
        self.pressure = pressure
        self.friction = friction
        self.tau_t = 100.0 * timestep if tau_t is None else float(tau_t)
        self.tau_p = float(tau_p)
        self.compressibility = compressibility
        self.chain_length = chain_length
        self.min_distance = float(min_distance)
        self.seed = int(seed)
        self.forcefield = ForceField(
            self.model, skin=skin, compile=compile, max_atoms_per_call=max_atoms_per_call
        )

    # ------------------------------------------------------------------ setup
    def _state(self, systems: Sequence[ase.Atoms] | MDState) -> MDState:
        if isinstance(systems, MDState):
            state = systems.clone()
            for f in ("positions", "momenta", "masses", "cell"):
                setattr(state, f, getattr(state, f).to(self.device, torch.float64))
            for f in ("numbers", "pbc", "n_atoms", "system_idx", "system_id"):
                setattr(state, f, getattr(state, f).to(self.device))
            return state
        if isinstance(systems, ase.Atoms):
            systems = [systems]
        return MDState.from_atoms(systems, device=self.device)

    def _init(self, state: MDState) -> MDState:
        init, _ = INTEGRATORS[self.ensemble]
        ff = self.forcefield
        noise = torch.Generator(device=self.device).manual_seed(self.seed)
        if self.ensemble == "nve":
            return init(state, ff)
        if self.ensemble == "langevin":
            return init(state, ff, self.temperature, self.friction, generator=noise)
        if self.ensemble == "nvt":
            return init(state, ff, self.temperature, self.tau_t, self.chain_length)
        return init(
            state,
            ff,
            self.temperature,
            self.pressure,
            self.friction,
            self.tau_p,
            self.compressibility,
            generator=noise,
        )

    def metadata(self) -> dict[str, Any]:
        """Run parameters (those the ensemble uses), stored as attributes of the trajectory
        file."""
        values = {
            "ensemble": self.ensemble,
            "timestep_fs": self.timestep,
            "temperature_K": self.temperature if self.ensemble != "nve" else None,
            "pressure_eV_per_A3": self.pressure if self.ensemble == "npt" else None,
            "friction_per_fs": self.friction if self.ensemble in ("langevin", "npt") else None,
            "tau_t_fs": self.tau_t if self.ensemble == "nvt" else None,
            "tau_p_fs": self.tau_p if self.ensemble == "npt" else None,
            "chain_length": self.chain_length if self.ensemble == "nvt" else None,
            "skin_A": self.forcefield.skin,
            "min_distance_A": self.min_distance,
            "seed": self.seed,
            "model": type(self.model).__name__,
            "model_cutoff_A": self.model.cutoff,
        }
        return {key: value for key, value in values.items() if value is not None}

    # ------------------------------------------------------------------ run
    @torch.no_grad()
    def run(
        self,
        systems: Sequence[ase.Atoms] | ase.Atoms | MDState,
        steps: int,
        out: str | Path | None = None,
        write_every: int = 10,
        extxyz: str | Path | None = None,
        initial_temperature: float | Sequence[float] | None = None,
        overwrite: bool = False,
        progress: bool = False,
    ) -> MDResult:
        """Advance ``systems`` by ``steps`` steps.

        Args:
            systems: ASE structures (momenta and masses as stored in them) or an
                :class:`MDState`; they are not modified.
            steps: number of integration steps.
            out: particle file (HDF5) receiving the initial state and every
                ``write_every``-th step: positions, velocities (Å/fs), forces, masses, cell,
                pbc, energy (potential, eV), kinetic_energy, temperature (K), time (fs), step,
                and pressure (eV/Å³) and stress when every system is periodic.
            extxyz: optional extxyz file receiving the same frames.
            initial_temperature: systems whose momenta are all zero get Maxwell–Boltzmann
                momenta at this temperature (K; default: the thermostat's, none for "nve").
            progress: show a progress bar.
        """
        if steps < 0 or write_every < 1:
            raise ValueError(f"need steps >= 0 and write_every >= 1, got {steps}, {write_every}")
        state = self._state(systems)
        # unknown elements: an error naming the system of the input (not of a model call)
        no_edges = torch.empty(2, 0, dtype=torch.long, device=self.device)
        self.model.species(
            state.numbers, Graph(nodes={}, edge_index=no_edges, n_nodes=state.n_atoms)
        )
        check_structures(state, self.min_distance, need_volume=self.ensemble == "npt")
        if initial_temperature is None and self.ensemble != "nve":
            initial_temperature = self.temperature
        if initial_temperature is not None:
            self._thermalise(state, initial_temperature)
        periodic = bool(state.pbc.all()) and bool((torch.linalg.det(state.cell).abs() > 0).all())
        ff = self.forcefield
        ff.reset()
        ff.stress = periodic
        n_atoms = state.n_atoms.tolist()
        status = [SystemStatus(g, n, "finished", steps) for g, n in enumerate(n_atoms)]
        state = self._init(state)
        keep = self._check(state, status)  # e.g. a model giving NaN on a valid structure
        if keep is not None:
            state = state.select(keep)
            ff.drop(keep)
        _, step_fn = INTEGRATORS[self.ensemble]
        attrs = self.metadata()
        frames = 0
        atom_steps = 0
        with contextlib.ExitStack() as stack:
            writer = None
            if out is not None:
                logged = [k for k in LOG_FIELDS if periodic or k != "pressure"]
                writer = stack.enter_context(
                    FrameWriter(
                        out,
                        attrs=attrs,
                        units={k: LOG_UNITS[k] for k in logged},
                        overwrite=overwrite,
                        per_frame=logged,
                    )
                )
            xyz = stack.enter_context(open(extxyz, "w")) if extxyz is not None else None
            frames += self._write(state, writer, xyz, periodic)
            bar = stack.enter_context(tqdm(total=steps, disable=not progress, unit="step"))
            start = time.perf_counter()
            try:
                for step in range(1, steps + 1):
                    if state.n_systems == 0:
                        break
                    write = step % write_every == 0
                    ff.stress = periodic and write
                    state = step_fn(state, ff, self.timestep)
                    atom_steps += int(state.positions.shape[0])
                    keep = self._check(state, status)
                    if keep is not None:
                        state = state.select(keep)
                        ff.drop(keep)
                    if write and state.n_systems:
                        frames += self._write(state, writer, xyz, periodic)
                        t = temperature(state)
                        bar.set_postfix(systems=state.n_systems, T=f"{float(t.mean()):.1f} K")
                    bar.update(1)
            except KeyboardInterrupt:  # keep the frames written so far
                for system in state.system_id.tolist():
                    status[system].state = "interrupted"
                    status[system].step = state.step
                warnings.warn(f"MD interrupted at step {state.step}", RuntimeWarning, stacklevel=2)
            wall = time.perf_counter() - start
        return MDResult(
            state=state,
            status=status,
            steps=steps,
            n_builds=ff.n_builds,
            n_system_builds=ff.n_system_builds,
            wall_time=wall,
            atom_steps_per_second=atom_steps / wall if wall > 0 else 0.0,
            frames_written=frames,
            path=None if out is None else Path(out),
            extxyz=None if extxyz is None else Path(extxyz),
            attrs=attrs,
        )

    def _thermalise(self, state: MDState, temperature_k: float | Sequence[float]) -> None:
        """Maxwell–Boltzmann momenta for the systems whose momenta are all zero."""
        target = per_system_values(temperature_k, state, "initial_temperature")
        moving = _any_per_system(state.momenta.ne(0).any(1), state)
        if bool(moving.all()):
            return
        generator = torch.Generator().manual_seed(self.seed)
        drawn = maxwell_boltzmann(state.clone(), target, generator).momenta
        still = moving[state.system_idx, None]
        state.momenta = torch.where(still, state.momenta, drawn)

    def _check(self, state: MDState, status: list[SystemStatus]) -> torch.Tensor | None:
        """Find systems gone bad at this step; record and warn. Returns the (G,) mask of
        systems to keep, or None when all are fine."""
        finite = torch.isfinite(state.positions).all(1) & torch.isfinite(state.momenta).all(1)
        nonfinite = _any_per_system(~finite, state)
        energy_bad = ~torch.isfinite(state.energy)
        closest = self.forcefield.min_pair_distance
        close = closest < self.min_distance
        bad = nonfinite | energy_bad | close
        if not bool(bad.any()):
            return None
        for g in torch.nonzero(bad).flatten().tolist():
            if bool(energy_bad[g]):
                reason = f"potential energy is {float(state.energy[g])}"
            elif bool(nonfinite[g]):
                reason = "positions or momenta are not finite"
            else:
                reason = (
                    f"atoms came {float(closest[g]):.3f} Å apart, closer than min_distance "
                    f"{self.min_distance} Å"
                )
            system = int(state.system_id[g])
            status[system].state = "stopped"
            status[system].step = state.step
            status[system].reason = reason
            warnings.warn(
                f"MD: system {system} stopped at step {state.step}: {reason}; the other "
                "systems go on",
                RuntimeWarning,
                stacklevel=3,
            )
        return ~bad

    def _write(
        self, state: MDState, writer: FrameWriter | None, xyz: IO[str] | None, periodic: bool
    ) -> int:
        """Append the current state of every running system as one frame each."""
        if (writer is None and xyz is None) or state.n_systems == 0:
            return 0
        g = state.n_systems

        def np_(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy()

        fields: dict[str, np.ndarray] = {
            "n_atoms": np_(state.n_atoms),
            "positions": np_(state.positions),
            "numbers": np_(state.numbers),
            "masses": np_(state.masses),
            "velocities": np_(state.velocities * units.fs),
            "forces": np_(state.forces),
            "cell": np_(state.cell),
            "pbc": np_(state.pbc),
            "trajectory": np_(state.system_id),
            "time": np.full(g, state.step * self.timestep),
            "step": np.full(g, state.step, dtype=np.int64),
            "energy": np_(state.energy),
            "kinetic_energy": np_(kinetic_energy(state)),
            "temperature": np_(temperature(state)),
        }
        if periodic:
            fields["stress"] = np_(state.stress)
            fields["pressure"] = np_(pressure(state))
        if writer is not None:
            writer.append(**fields)
        if xyz is not None:
            ase.io.write(xyz, _frames_as_atoms(state, fields), format="extxyz")
        return g


def _any_per_system(flags: torch.Tensor, state: MDState) -> torch.Tensor:
    """(G,) bool: whether any atom of each system has its flag (N,) set."""
    counts = torch.zeros(state.n_systems, dtype=torch.long, device=flags.device)
    return counts.index_add(0, state.system_idx, flags.long()) > 0


def _frames_as_atoms(state: MDState, fields: dict[str, np.ndarray]) -> list[ase.Atoms]:
    """The frames of one write as ``ase.Atoms`` with energy/forces(/stress) and log values."""
    images = state.to_atoms()
    bounds = np.cumsum([0, *fields["n_atoms"].tolist()])
    for g, atoms in enumerate(images):
        results: dict[str, Any] = {
            "energy": float(fields["energy"][g]),
            "forces": fields["forces"][bounds[g] : bounds[g + 1]],
        }
        if "stress" in fields:
            results["stress"] = full_3x3_to_voigt_6_stress(fields["stress"][g])
        atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info.update(
            system=int(fields["trajectory"][g]),
            time=float(fields["time"][g]),
            **{k: fields[k][g].item() for k in LOG_FIELDS if k in fields},
        )
    return images
