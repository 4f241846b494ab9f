"""LightningModules: what is learned and how it is scored."""

from simsurrogate.tasks.field_operator import FieldOperatorTask
from simsurrogate.tasks.particle_dynamics import ParticleDynamicsTask

__all__ = ["FieldOperatorTask", "ParticleDynamicsTask"]
