"""Rollout engines that simulation pipelines call, independent of any DataLoader."""

from simsurrogate.rollout.errors import RolloutError
from simsurrogate.rollout.grid import GridRollout, GridRolloutResult
from simsurrogate.rollout.mesh import (
    BoundaryFn,
    MeshRollout,
    MeshRolloutResult,
    MeshState,
    is_mesh_model,
    xdmf_paths,
)
from simsurrogate.rollout.particles import ParticleRollout
from simsurrogate.rollout.xdmf import XdmfSeries, XdmfWriter

__all__ = [
    "BoundaryFn",
    "GridRollout",
    "GridRolloutResult",
    "MeshRollout",
    "MeshRolloutResult",
    "MeshState",
    "ParticleRollout",
    "RolloutError",
    "XdmfSeries",
    "XdmfWriter",
    "is_mesh_model",
    "xdmf_paths",
]
