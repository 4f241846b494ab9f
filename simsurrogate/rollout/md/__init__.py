"""Molecular dynamics with simsurrogate potentials: an ASE calculator, a batched state,
integrators (NVE, Langevin, Nosé–Hoover chain, NPT) and a batched engine that advances many
systems in one model call per step."""

from simsurrogate.rollout.md.calculator import SimsurrogateCalculator
from simsurrogate.rollout.md.engine import ENSEMBLES, MDEngine, MDResult, SystemStatus
from simsurrogate.rollout.md.forcefield import ForceField, prepare_model
from simsurrogate.rollout.md.integrators import (
    LangevinState,
    NoseHooverState,
    NPTState,
    langevin_init,
    langevin_step,
    nose_hoover_conserved,
    nose_hoover_init,
    nose_hoover_step,
    npt_init,
    npt_step,
    nve_init,
    nve_step,
)
from simsurrogate.rollout.md.state import (
    MDState,
    kinetic_energy,
    maxwell_boltzmann,
    pressure,
    temperature,
    volume,
)

__all__ = [
    "ENSEMBLES",
    "ForceField",
    "LangevinState",
    "MDEngine",
    "MDResult",
    "MDState",
    "NPTState",
    "NoseHooverState",
    "SimsurrogateCalculator",
    "SystemStatus",
    "kinetic_energy",
    "langevin_init",
    "langevin_step",
    "maxwell_boltzmann",
    "nose_hoover_conserved",
    "nose_hoover_init",
    "nose_hoover_step",
    "npt_init",
    "npt_step",
    "nve_init",
    "nve_step",
    "prepare_model",
    "pressure",
    "temperature",
    "volume",
]
