"""Interatomic potentials: per-atom energies with a shared energy/forces/stress head."""

from simsurrogate.models.potentials.base import (
    BesselBasis,
    PolynomialEnvelope,
    Potential,
    UnknownElementError,
    fit_reference_energies,
)
from simsurrogate.models.potentials.external import CHGNetPotential, SevenNetPotential
from simsurrogate.models.potentials.nequip import NequIP
from simsurrogate.models.potentials.painn import PaiNN
from simsurrogate.models.potentials.pair import LennardJones

__all__ = [
    "CHGNetPotential",
    "LennardJones",
    "NequIP",
    "PaiNN",
    "BesselBasis",
    "PolynomialEnvelope",
    "Potential",
    "SevenNetPotential",
    "UnknownElementError",
    "fit_reference_energies",
]
