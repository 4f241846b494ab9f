"""LightningModules: what is learned and how it is scored."""

from simsurrogate.tasks.field_operator import FieldOperatorTask
from simsurrogate.tasks.finetune import FineTune
from simsurrogate.tasks.mesh_dynamics import MeshDynamicsTask
from simsurrogate.tasks.particle_dynamics import ParticleDynamicsTask
from simsurrogate.tasks.potential import PotentialTask

__all__ = [
    "FieldOperatorTask",
    "FineTune",
    "MeshDynamicsTask",
    "ParticleDynamicsTask",
    "PotentialTask",
]
