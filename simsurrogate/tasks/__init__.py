"""LightningModules: what is learned and how it is scored."""

from simsurrogate.tasks.particle_dynamics import ParticleDynamicsTask

__all__ = ["ParticleDynamicsTask"]
