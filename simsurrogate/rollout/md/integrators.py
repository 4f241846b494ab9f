"""MD integrators as pairs of plain functions: ``init(state, compute, ...)`` and
``step(state, compute, timestep)``.

``compute(state, stress=None)`` is a force function (e.g. a
:class:`~simsurrogate.rollout.md.forcefield.ForceField`): it fills ``state.energy`` (G,),
``state.forces`` (N, 3) and, when ``stress`` is True, ``state.stress`` (G, 3, 3). Every
function works on G systems at once with per-system targets (temperature, pressure). Units are
ASE's: ``timestep`` and time constants in fs, ``temperature`` in K, ``pressure`` in eV/Å³,
friction in 1/fs; inside, time is converted to ASE's unit with ``ase.units.fs``.

Symbols used in the docstrings: r positions, p momenta, m masses, F forces, dt the timestep,
k_B T the thermal energy per system (``state.kT``), h the cell (rows are lattice vectors).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from ase import units
from torch import Tensor

from simsurrogate.rollout.md.state import (
    MDState,
    degrees_of_freedom,
    extend,
    kinetic_energy,
    per_system,
    pressure,
    volume,
)

__all__ = [
    "ForceFn",
    "LangevinState",
    "NPTState",
    "NoseHooverState",
    "langevin_init",
    "langevin_step",
    "nose_hoover_conserved",
    "nose_hoover_init",
    "nose_hoover_step",
    "npt_init",
    "npt_step",
    "nve_init",
    "nve_step",
]

ForceFn = Callable[..., MDState]

# Suzuki–Yoshida weights (4th order) for the Nosé–Hoover chain propagator
_W = 1.0 / (2.0 - 2.0 ** (1.0 / 3.0))
_SUZUKI_YOSHIDA = (_W, 1.0 - 2.0 * _W, _W)


def per_system_values(value: float | Sequence[float] | Tensor, state: MDState, name: str) -> Tensor:
    """``value`` (a number or one per system) as a (G,) float64 tensor on the state's device."""
    t = torch.as_tensor(value, dtype=state.positions.dtype, device=state.positions.device)
    if t.dim() == 0:
        return t.expand(state.n_systems).clone()
    if t.shape != (state.n_systems,):
        raise ValueError(
            f"{name} must be one number or one per system ({state.n_systems}), "
            f"got shape {tuple(t.shape)}"
        )
    return t.clone()


def _randn(like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=like.device)


# ------------------------------------------------------------------------------- NVE


def nve_init(state: MDState, compute: ForceFn) -> MDState:
    """Forces at the initial positions."""
    return compute(state)


def nve_step(state: MDState, compute: ForceFn, timestep: float) -> MDState:
    """Velocity Verlet:
    ``p += dt/2 F;  r += dt p/m;  F = F(r);  p += dt/2 F``."""
    dt = timestep * units.fs
    m = state.masses[:, None]
    state.momenta = state.momenta + 0.5 * dt * state.forces
    state.positions = state.positions + dt * state.momenta / m
    state = compute(state)
    state.momenta = state.momenta + 0.5 * dt * state.forces
    state.step += 1
    return state


# ------------------------------------------------------------------------------- Langevin


@dataclass(kw_only=True)
class LangevinState(MDState):
    """MD state with a Langevin bath: ``kT`` (G,) eV, ``friction`` (G,) 1/t_ASE and the
    random generator of the noise (on the state's device)."""

    kT: Tensor = per_system()
    friction: Tensor = per_system()
    generator: torch.Generator | None = None


def langevin_init(
    state: MDState,
    compute: ForceFn,
    temperature: float | Sequence[float] | Tensor,
    friction: float | Sequence[float] | Tensor = 0.01,
    generator: torch.Generator | None = None,
) -> LangevinState:
    """Langevin bath at ``temperature`` K with ``friction`` in 1/fs (per system or one for
    all); forces at the initial positions."""
    state = extend(
        state,
        LangevinState,
        kT=per_system_values(temperature, state, "temperature") * units.kB,
        friction=per_system_values(friction, state, "friction") / units.fs,
        generator=generator,
    )
    return compute(state)


def _langevin_o(state: LangevinState, dt: float) -> None:
    """O: exact Ornstein–Uhlenbeck update of the momenta over ``dt``:
    ``p = c1 p + sqrt((1 - c1^2) m kT) xi`` with ``c1 = exp(-friction dt)``, xi ~ N(0, 1)."""
    batch = state.system_idx
    c1 = torch.exp(-state.friction * dt)[batch, None]
    sigma = torch.sqrt((1 - c1**2) * state.masses[:, None] * state.kT[batch, None])
    state.momenta = c1 * state.momenta + sigma * _randn(state.momenta, state.generator)


def langevin_step(state: LangevinState, compute: ForceFn, timestep: float) -> LangevinState:
    """BAOAB Langevin (Leimkuhler & Matthews 2013):
    ``p += dt/2 F;  r += dt/2 p/m;  O(dt);  r += dt/2 p/m;  F = F(r);  p += dt/2 F``."""
    dt = timestep * units.fs
    m = state.masses[:, None]
    state.momenta = state.momenta + 0.5 * dt * state.forces
    state.positions = state.positions + 0.5 * dt * state.momenta / m
    _langevin_o(state, dt)
    state.positions = state.positions + 0.5 * dt * state.momenta / m
    state = compute(state)
    state.momenta = state.momenta + 0.5 * dt * state.forces
    state.step += 1
    return state


# ------------------------------------------------------------------------------- Nosé–Hoover


@dataclass(kw_only=True)
class NoseHooverState(MDState):
    """MD state with a Nosé–Hoover chain per system: ``kT`` (G,) eV, thermostat positions
    ``chain_positions`` xi (G, M), momenta ``chain_momenta`` p_xi (G, M) and masses
    ``chain_masses`` Q (G, M), and the degrees of freedom ``dof`` N_f (G,) it thermostats."""

    kT: Tensor = per_system()
    chain_positions: Tensor = per_system()
    chain_momenta: Tensor = per_system()
    chain_masses: Tensor = per_system()
    dof: Tensor = per_system()


def nose_hoover_init(
    state: MDState,
    compute: ForceFn,
    temperature: float | Sequence[float] | Tensor,
    tau: float = 100.0,
    chain_length: int = 3,
) -> NoseHooverState:
    """Nosé–Hoover chain of ``chain_length`` thermostats at ``temperature`` K with time
    constant ``tau`` fs: masses ``Q_1 = N_f kT tau^2``, ``Q_k = kT tau^2`` (Martyna, Klein &
    Tuckerman 1992), with N_f = 3 N; forces at the initial positions."""
    if chain_length < 1:
        raise ValueError(f"chain_length must be >= 1, got {chain_length}")
    if tau <= 0:
        raise ValueError(f"tau must be positive (fs), got {tau}")
    kt = per_system_values(temperature, state, "temperature") * units.kB
    dof = degrees_of_freedom(state)
    masses = (kt * (tau * units.fs) ** 2)[:, None].repeat(1, chain_length)
    masses[:, 0] *= dof
    zeros = torch.zeros_like(masses)
    state = extend(
        state,
        NoseHooverState,
        kT=kt,
        chain_positions=zeros,
        chain_momenta=zeros.clone(),
        chain_masses=masses,
        dof=dof,
    )
    return compute(state)


def _chain_half_step(state: NoseHooverState, dt: float) -> None:
    """exp(iL_NHC dt/2): the chain's half-step propagator (Martyna, Tuckerman, Tobias & Klein
    1996), Suzuki–Yoshida factorised, updating xi, p_xi and scaling the particle momenta.

    Forces on the chain: ``G_1 = 2 KE - N_f kT``, ``G_k = p_{k-1}^2 / Q_{k-1} - kT``."""
    q, kt, dof = state.chain_masses, state.kT, state.dof
    p = list(state.chain_momenta.unbind(1))
    xi = state.chain_positions.clone()
    m = len(p)
    ke2 = 2 * kinetic_energy(state)
    scale = torch.ones_like(kt)

    def force(k: int) -> Tensor:
        return ke2 - dof * kt if k == 0 else p[k - 1] ** 2 / q[:, k - 1] - kt

    for w in _SUZUKI_YOSHIDA:
        d = w * dt
        p[m - 1] = p[m - 1] + d / 4 * force(m - 1)
        for k in range(m - 2, -1, -1):
            a = torch.exp(-d / 8 * p[k + 1] / q[:, k + 1])
            p[k] = p[k] * a * a + d / 4 * force(k) * a
        s = torch.exp(-d / 2 * p[0] / q[:, 0])
        scale = scale * s
        ke2 = ke2 * s * s
        xi = xi + d / 2 * torch.stack(p, 1) / q
        for k in range(m - 1):
            a = torch.exp(-d / 8 * p[k + 1] / q[:, k + 1])
            p[k] = p[k] * a * a + d / 4 * force(k) * a
        p[m - 1] = p[m - 1] + d / 4 * force(m - 1)
    state.chain_momenta = torch.stack(p, 1)
    state.chain_positions = xi
    state.momenta = state.momenta * scale[state.system_idx, None]


def nose_hoover_step(state: NoseHooverState, compute: ForceFn, timestep: float) -> NoseHooverState:
    """Nosé–Hoover chain NVT (MTK):
    ``NHC(dt/2);  p += dt/2 F;  r += dt p/m;  F = F(r);  p += dt/2 F;  NHC(dt/2)``."""
    dt = timestep * units.fs
    m = state.masses[:, None]
    _chain_half_step(state, dt)
    state.momenta = state.momenta + 0.5 * dt * state.forces
    state.positions = state.positions + dt * state.momenta / m
    state = compute(state)
    state.momenta = state.momenta + 0.5 * dt * state.forces
    _chain_half_step(state, dt)
    state.step += 1
    return state


def nose_hoover_conserved(state: NoseHooverState) -> Tensor:
    """The chain's conserved energy (G,) eV: ``KE + E + sum_k p_xi_k^2 / 2 Q_k
    + N_f kT xi_1 + kT sum_{k>1} xi_k``; constant up to integration error."""
    chain_ke = 0.5 * (state.chain_momenta**2 / state.chain_masses).sum(1)
    xi = state.chain_positions
    bath = state.dof * state.kT * xi[:, 0] + state.kT * xi[:, 1:].sum(1)
    return kinetic_energy(state) + state.energy + chain_ke + bath


# ------------------------------------------------------------------------------- NPT


@dataclass(kw_only=True)
class NPTState(LangevinState):
    """Langevin state with an isotropic stochastic cell-rescaling barostat: target
    ``pressure`` (G,) eV/Å³, ``compressibility`` beta_T (G,) Å³/eV and time constant
    ``tau_p`` (G,) t_ASE."""

    pressure: Tensor = per_system()
    compressibility: Tensor = per_system()
    tau_p: Tensor = per_system()


def npt_init(
    state: MDState,
    compute: ForceFn,
    temperature: float | Sequence[float] | Tensor,
    pressure: float | Sequence[float] | Tensor = 0.0,
    friction: float | Sequence[float] | Tensor = 0.01,
    tau_p: float = 1000.0,
    compressibility: float | Sequence[float] | Tensor = 4.5e-5 / units.bar,
    generator: torch.Generator | None = None,
) -> NPTState:
    """Isothermal–isobaric state: Langevin bath (``temperature`` K, ``friction`` 1/fs) and
    stochastic cell rescaling towards ``pressure`` eV/Å³ with time constant ``tau_p`` fs and
    ``compressibility`` Å³/eV (default 4.5e-5 /bar, as GROMACS; only beta_T / tau_p sets the
    volume's relaxation rate). Every system needs a periodic cell with volume."""
    bad = (volume(state) < 1e-9) | ~state.pbc.all(1)
    if bool(bad.any()):
        g = int(torch.nonzero(bad)[0, 0])
        raise ValueError(
            f"NPT needs every system fully periodic with a cell of nonzero volume; system "
            f"{int(state.system_id[g])} has pbc {state.pbc[g].tolist()} and volume "
            f"{float(volume(state)[g]):.3g} Å³"
        )
    if tau_p <= 0:
        raise ValueError(f"tau_p must be positive (fs), got {tau_p}")
    state = extend(
        state,
        NPTState,
        kT=per_system_values(temperature, state, "temperature") * units.kB,
        friction=per_system_values(friction, state, "friction") / units.fs,
        generator=generator,
        pressure=per_system_values(pressure, state, "pressure"),
        compressibility=per_system_values(compressibility, state, "compressibility"),
        tau_p=per_system_values(tau_p * units.fs, state, "tau_p"),
    )
    return compute(state, stress=True)


def _cell_rescale(state: NPTState, dt: float) -> None:
    """C: isotropic stochastic cell rescaling (Bernetti & Bussi 2020) of eps = ln V:
    ``d eps = -(beta/tau_p) (P_0 - P - kT/V) dt + sqrt(2 kT beta dt / (V tau_p)) R``, then
    ``h *= lambda``, ``r *= lambda``, ``p /= lambda`` with ``lambda = exp(d eps / 3)``.
    P is the instantaneous pressure (kinetic + virial from the latest stress)."""
    v = volume(state)
    rate = state.compressibility / state.tau_p
    drift = -rate * (state.pressure - pressure(state) - state.kT / v) * dt
    noise = torch.sqrt(2 * state.kT * rate * dt / v) * _randn(v, state.generator)
    scale = torch.exp((drift + noise) / 3)
    batch = state.system_idx
    state.cell = state.cell * scale[:, None, None]
    state.positions = state.positions * scale[batch, None]
    state.momenta = state.momenta / scale[batch, None]


def npt_step(state: NPTState, compute: ForceFn, timestep: float) -> NPTState:
    """Langevin BAOAB with a cell-rescaling move C before the force call:
    ``p += dt/2 F;  r += dt/2 p/m;  O(dt);  r += dt/2 p/m;  C(dt);  F, sigma = F(r, h);
    p += dt/2 F``."""
    dt = timestep * units.fs
    m = state.masses[:, None]
    state.momenta = state.momenta + 0.5 * dt * state.forces
    state.positions = state.positions + 0.5 * dt * state.momenta / m
    _langevin_o(state, dt)
    state.positions = state.positions + 0.5 * dt * state.momenta / m
    _cell_rescale(state, dt)
    state = compute(state, stress=True)
    state.momenta = state.momenta + 0.5 * dt * state.forces
    state.step += 1
    return state


#: ensemble name -> (init, step)
INTEGRATORS: dict[str, tuple[Callable[..., MDState], Callable[..., MDState]]] = {
    "nve": (nve_init, nve_step),
    "langevin": (langevin_init, langevin_step),
    "nvt": (nose_hoover_init, nose_hoover_step),
    "npt": (npt_init, npt_step),
}
