"""Plain torch models (no Lightning): usable from any pipeline."""

from simsurrogate.models.base import SurrogateModel, build_model
from simsurrogate.models.equivariant import EGNN
from simsurrogate.models.gnn import GNN

__all__ = ["EGNN", "GNN", "SurrogateModel", "build_model"]
