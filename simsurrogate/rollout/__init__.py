"""Rollout engines that simulation pipelines call, independent of any DataLoader."""

from simsurrogate.rollout.errors import RolloutError
from simsurrogate.rollout.particles import ParticleRollout

__all__ = ["ParticleRollout", "RolloutError"]
