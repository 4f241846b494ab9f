"""Neural operators on regular grids: the Fourier Neural Operator (and TFNO) and a U-Net."""

from simsurrogate.models.operators.fno import FNO, SpectralConv
from simsurrogate.models.operators.unet import UNet

__all__ = ["FNO", "SpectralConv", "UNet"]
