"""Node types of mesh trajectories, numbered as in DeepMind's MeshGraphNets datasets.

Files this project generates and files imported from DeepMind's ``meta.json`` + ``.tfrecord``
use the same codes, so a model trained on one runs on the other. ``node_type`` arrays in the
mesh schema hold these integers.
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np
import torch
from torch import Tensor


class NodeType(IntEnum):
    """Role of a mesh node (MeshGraphNets numbering; 9 one-hot slots)."""

    NORMAL = 0  #: interior fluid / free cloth node: the model predicts it
    OBSTACLE = 1  #: obstacle surface (no-slip), velocity held by the boundary condition
    AIRFOIL = 2
    HANDLE = 3  #: cloth node moved by a prescribed motion
    INFLOW = 4  #: inflow boundary, velocity held by the inflow profile
    OUTFLOW = 5  #: outflow boundary (do-nothing): the model predicts it
    WALL_BOUNDARY = 6  #: channel wall (no-slip), velocity held at zero
    SIZE = 9  #: width of the one-hot encoding, not a type


#: node types whose state the model predicts; every other type is held by the boundary condition
PREDICTED_TYPES: tuple[int, ...] = (int(NodeType.NORMAL), int(NodeType.OUTFLOW))


def predicted_nodes(node_type: Tensor) -> Tensor:
    """Nodes (N,) bool whose state the model predicts (type in :data:`PREDICTED_TYPES`)."""
    mask = torch.zeros_like(node_type, dtype=torch.bool)
    for t in PREDICTED_TYPES:
        mask |= node_type == t
    return mask


def hold_boundary(velocity: Tensor, held_values: Tensor, node_type: Tensor) -> Tensor:
    """The next velocity (N, dim) with the boundary condition applied: the model's
    ``velocity`` on predicted nodes, ``held_values`` (N, dim) on every other node (walls,
    obstacle, inflow). The one place that decides which nodes are held, shared by the rollout
    engine and pushforward training."""
    held = ~predicted_nodes(node_type)
    return torch.where(held.unsqueeze(-1), held_values.to(velocity.dtype), velocity)


def check_node_types(node_type: np.ndarray) -> None:
    """Raise ``ValueError`` naming the first code outside ``0 .. NodeType.SIZE - 1``."""
    node_type = np.asarray(node_type)
    bad = (node_type < 0) | (node_type >= int(NodeType.SIZE))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(
            f"unknown node type {int(node_type.flat[i])} at node {i}; "
            f"expected an integer in 0..{int(NodeType.SIZE) - 1} (MeshGraphNets NodeType)"
        )
