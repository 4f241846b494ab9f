"""Plain torch models (no Lightning): usable from any pipeline."""

from simsurrogate.models.base import SurrogateModel, build_model
from simsurrogate.models.equivariant import EGNN
from simsurrogate.models.gnn import GNN
from simsurrogate.models.meshgraphnet import MeshGraphNet
from simsurrogate.models.operators import FNO, UNet
from simsurrogate.models.potentials import LennardJones, NequIP, PaiNN

__all__ = [
    "EGNN",
    "FNO",
    "GNN",
    "LennardJones",
    "MeshGraphNet",
    "NequIP",
    "PaiNN",
    "SurrogateModel",
    "UNet",
    "build_model",
]
