"""E(n)-equivariant graph networks."""

from simsurrogate.models.equivariant.egnn import EGNN, EGNNLayer

__all__ = ["EGNN", "EGNNLayer"]
