"""Batched state of many atomic systems advanced together by the MD integrators.

G systems of different sizes are stored back to back, as in a batched graph: per-atom tensors
have N = sum(n_atoms) rows and ``system_idx`` (N,) names each atom's system; per-system
tensors have G rows. Units are ASE's throughout: positions and cell in Å, masses in amu,
momenta in amu Å / t_ASE (``ase.Atoms.get_momenta``; ``t_ASE = 1/ase.units.fs`` fs ≈ 10.18 fs,
so that ``p^2 / 2m`` is in eV), energies in eV, forces in eV/Å, stress in eV/Å³ (ASE's sign).

Which tensors are per atom and which per system is declared on each dataclass field
(``metadata={"per": "atom" | "system"}``), so :meth:`MDState.select` can drop stopped systems
from any integrator's state without knowing its extra fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import ase
import numpy as np
import torch
from ase import units
from torch import Tensor

__all__ = [
    "MDState",
    "check_structures",
    "kinetic_energy",
    "maxwell_boltzmann",
    "pressure",
    "temperature",
    "volume",
]

S = TypeVar("S", bound="MDState")


def per_atom(default: Any = dataclasses.MISSING) -> Any:
    """Field of (N, ...) rows, one per atom."""
    return field(default=default, metadata={"per": "atom"})


def per_system(default: Any = dataclasses.MISSING) -> Any:
    """Field of (G, ...) rows, one per system."""
    return field(default=default, metadata={"per": "system"})


@dataclass(kw_only=True)
class MDState:
    """Positions, momenta and model outputs of G systems (N atoms in all).

    Per atom: ``positions`` (N, 3) Å, ``momenta`` (N, 3) amu Å/t_ASE, ``masses`` (N,) amu,
    ``numbers`` (N,), ``system_idx`` (N,) system of each atom, ``forces`` (N, 3) eV/Å.
    Per system: ``cell`` (G, 3, 3) Å (lattice vectors as rows; zeros for a free molecule),
    ``pbc`` (G, 3) bool, ``n_atoms`` (G,), ``energy`` (G,) eV (potential energy),
    ``stress`` (G, 3, 3) eV/Å³ (when the force function computed it), ``system_id`` (G,) the
    index of each system in the batch it started in (stays fixed when others are dropped).
    ``step`` counts integration steps.
    """

    positions: Tensor = per_atom()
    momenta: Tensor = per_atom()
    masses: Tensor = per_atom()
    numbers: Tensor = per_atom()
    cell: Tensor = per_system()
    pbc: Tensor = per_system()
    n_atoms: Tensor = per_system()
    system_idx: Tensor | None = per_atom(None)
    system_id: Tensor | None = per_system(None)
    energy: Tensor | None = per_system(None)
    forces: Tensor | None = per_atom(None)
    stress: Tensor | None = per_system(None)
    step: int = 0

    def __post_init__(self) -> None:
        g = self.n_atoms.shape[0]
        if self.system_idx is None:
            self.system_idx = torch.repeat_interleave(
                torch.arange(g, device=self.n_atoms.device), self.n_atoms
            )
        if self.system_id is None:
            self.system_id = torch.arange(g, device=self.n_atoms.device)

    @property
    def n_systems(self) -> int:
        """Number of systems G."""
        return int(self.n_atoms.shape[0])

    @property
    def velocities(self) -> Tensor:
        """Velocities (N, 3) in Å/t_ASE."""
        return self.momenta / self.masses[:, None]

    @classmethod
    def from_atoms(
        cls,
        images: Sequence[ase.Atoms],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float64,
    ) -> MDState:
        """Batch ASE structures (momenta and masses as stored in each ``Atoms``)."""
        images = list(images)
        if not images:
            raise ValueError("no structures given")
        for g, atoms in enumerate(images):
            if atoms.constraints:
                names = ", ".join(type(c).__name__ for c in atoms.constraints)
                raise ValueError(
                    f"system {g} has ASE constraints ({names}), which the batched integrators "
                    "do not apply; remove them (atoms.set_constraint()) to run it"
                )

        def cat(values: list[np.ndarray]) -> Tensor:
            return torch.as_tensor(np.concatenate(values), dtype=dtype, device=device)

        return cls(
            positions=cat([a.positions for a in images]).reshape(-1, 3),
            momenta=cat([a.get_momenta() for a in images]).reshape(-1, 3),
            masses=cat([a.get_masses() for a in images]),
            numbers=torch.as_tensor(
                np.concatenate([a.numbers for a in images]), dtype=torch.long, device=device
            ),
            cell=torch.as_tensor(
                np.stack([a.cell.array for a in images]), dtype=dtype, device=device
            ),
            pbc=torch.as_tensor(np.stack([a.pbc for a in images]), device=device),
            n_atoms=torch.tensor([len(a) for a in images], dtype=torch.long, device=device),
        )

    def to_atoms(self) -> list[ase.Atoms]:
        """One ``ase.Atoms`` per system with positions, momenta, masses, cell and pbc."""
        images = []
        bounds = np.cumsum([0, *self.n_atoms.tolist()])
        for g in range(self.n_systems):
            lo, hi = int(bounds[g]), int(bounds[g + 1])
            atoms = ase.Atoms(
                numbers=self.numbers[lo:hi].cpu().numpy(),
                positions=self.positions[lo:hi].detach().cpu().numpy(),
                cell=self.cell[g].detach().cpu().numpy(),
                pbc=self.pbc[g].cpu().numpy(),
                masses=self.masses[lo:hi].detach().cpu().numpy(),
            )
            atoms.set_momenta(self.momenta[lo:hi].detach().cpu().numpy())
            images.append(atoms)
        return images

    def select(self: S, keep: Tensor) -> S:
        """The same state restricted to the systems where ``keep`` (G,) bool is True."""
        keep = keep.to(device=self.n_atoms.device, dtype=torch.bool)
        atom_keep = keep[self.system_idx]
        values: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            per = f.metadata.get("per")
            if isinstance(value, Tensor) and per == "atom":
                value = value[atom_keep]
            elif isinstance(value, Tensor) and per == "system":
                value = value[keep]
            values[f.name] = value
        values["system_idx"] = None  # renumbered from the kept n_atoms
        return type(self)(**values)

    def clone(self: S) -> S:
        """A copy whose tensors share no memory with this state."""
        return dataclasses.replace(
            self,
            **{
                f.name: getattr(self, f.name).clone()
                for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), Tensor)
            },
        )


def extend(state: MDState, cls: type[S], **extra: Any) -> S:
    """Turn ``state`` into an integrator's state class ``cls`` carrying ``extra`` fields
    (tensors shared, not copied)."""
    base = {f.name: getattr(state, f.name) for f in dataclasses.fields(MDState)}
    return cls(**base, **extra)


def volume(state: MDState) -> Tensor:
    """Cell volume (G,) in Å³ (zero for a free molecule)."""
    return torch.linalg.det(state.cell).abs()


def kinetic_energy(state: MDState) -> Tensor:
    """Kinetic energy ``sum_i p_i^2 / 2 m_i`` per system (G,) in eV."""
    per_atom_ke = 0.5 * (state.momenta**2).sum(-1) / state.masses
    out = torch.zeros(state.n_systems, dtype=per_atom_ke.dtype, device=per_atom_ke.device)
    return out.index_add(0, state.system_idx, per_atom_ke)


def degrees_of_freedom(state: MDState) -> Tensor:
    """Degrees of freedom 3 N per system (G,), the count ``ase.Atoms.get_temperature`` uses."""
    return 3 * state.n_atoms.to(state.positions.dtype)


def temperature(state: MDState) -> Tensor:
    """Instantaneous temperature ``2 KE / (3 N k_B)`` per system (G,) in K (as ASE)."""
    return 2 * kinetic_energy(state) / (degrees_of_freedom(state) * units.kB)


def pressure(state: MDState) -> Tensor:
    """Instantaneous pressure ``2 KE / (3 V) - tr(sigma) / 3`` per system (G,) in eV/Å³:
    the kinetic (ideal-gas) part plus the virial part from the model's stress ``sigma``.
    Needs ``state.stress``."""
    if state.stress is None:
        raise ValueError("pressure needs the stress; the force function did not compute it")
    trace = state.stress.diagonal(dim1=1, dim2=2).sum(-1)
    return 2 * kinetic_energy(state) / (3 * volume(state)) - trace / 3


def maxwell_boltzmann(
    state: S, temperature_k: Tensor | float, generator: torch.Generator | None = None
) -> S:
    """Draw momenta from the Maxwell–Boltzmann distribution at ``temperature_k`` (K, scalar or
    (G,)) and remove each system's centre-of-mass momentum (as ASE's ``Stationary``)."""
    kt = torch.as_tensor(temperature_k, dtype=state.masses.dtype, device=state.masses.device)
    kt = kt.expand(state.n_systems) * units.kB
    noise = torch.randn(
        state.positions.shape, generator=generator, dtype=state.masses.dtype, device="cpu"
    ).to(state.masses.device)
    momenta = noise * torch.sqrt(state.masses * kt[state.system_idx])[:, None]
    total = torch.zeros_like(state.cell[:, 0]).index_add(0, state.system_idx, momenta)
    mass = torch.zeros_like(kt).index_add(0, state.system_idx, state.masses)
    state.momenta = momenta - state.masses[:, None] * (total / mass[:, None])[state.system_idx]
    return state


def check_structures(state: MDState, min_distance: float, need_volume: bool = False) -> None:
    """Reject input the engine cannot run, naming the system: non-finite values, a periodic
    cell without volume (or any cell without volume when ``need_volume``), non-positive masses
    and atoms closer than ``min_distance`` Å (overlapping atoms)."""
    from simsurrogate.graph.atoms import atoms_graph

    bounds = np.cumsum([0, *state.n_atoms.tolist()])
    vol = volume(state)
    for g in range(state.n_systems):
        lo, hi = int(bounds[g]), int(bounds[g + 1])
        label = f"system {int(state.system_id[g])}"
        if hi == lo:
            raise ValueError(f"{label} has no atoms")
        for key in ("positions", "momenta"):
            if not bool(torch.isfinite(getattr(state, key)[lo:hi]).all()):
                raise ValueError(f"{label}: {key} are not all finite")
        if not bool((state.masses[lo:hi] > 0).all()):
            raise ValueError(f"{label}: masses must be positive")
        periodic = bool(state.pbc[g].any())
        if (periodic or need_volume) and float(vol[g]) < 1e-9:
            what = "periodic " if periodic else ""
            need = " (NPT changes the volume, so every system needs a cell)" if need_volume else ""
            raise ValueError(
                f"{label}: {what}cell has zero volume (cell {state.cell[g].tolist()}){need}"
            )
    if min_distance > 0:
        graph = atoms_graph(
            state.positions, state.numbers, state.cell, state.pbc, state.n_atoms, min_distance
        )
        if graph.num_edges:
            j, i = graph.edge_index[:, 0].tolist()
            g = int(state.system_idx[i])
            d = float(
                (
                    state.positions[j]
                    - state.positions[i]
                    + graph.edges["shifts"][0] @ state.cell[g]
                ).norm()
            )
            raise ValueError(
                f"system {int(state.system_id[g])}: atoms {i - int(bounds[g])} and "
                f"{j - int(bounds[g])} are {d:.3f} Å apart, closer than min_distance "
                f"{min_distance} Å (overlapping atoms)"
            )
