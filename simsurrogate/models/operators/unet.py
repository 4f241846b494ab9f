"""U-Net baseline (Ronneberger et al., 2015) for fields on regular 1-, 2- or 3-D grids.

Encoder: ``depth`` times [two Conv-GroupNorm-GELU blocks, then 2x max-pooling], doubling the
channels each level from ``base_channels``; a bottleneck; decoder: transposed-convolution
upsampling, concatenation with the encoder features of the same level (skip connection), two
blocks. Inputs whose spatial sizes are not multiples of 2**depth are padded at the end
(replicating edge values) and the output is cropped back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simsurrogate.models.base import SurrogateModel
from simsurrogate.models.operators.fno import check_input

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_UP = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_POOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}


def _block(dim: int, n_in: int, n_out: int, groups: int, padding_mode: str) -> nn.Sequential:
    """Two 3-wide Conv-GroupNorm-GELU layers, (B, n_in, *S) -> (B, n_out, *S)."""
    layers: list[nn.Module] = []
    for c_in in (n_in, n_out):
        layers += [
            _CONV[dim](c_in, n_out, kernel_size=3, padding=1, padding_mode=padding_mode),
            nn.GroupNorm(math.gcd(groups, n_out), n_out),
            nn.GELU(),
        ]
    return nn.Sequential(*layers)


class UNet(SurrogateModel):
    """Encoder-decoder with skip connections, (B, in_channels, *S) -> (B, out_channels, *S).

    ``norm_groups`` is the GroupNorm group count (reduced to a divisor of the channel count
    where needed); ``padding_mode`` is the convolutions' boundary handling ("zeros",
    "circular" for periodic fields, "reflect", "replicate").
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dim: int = 2,
        base_channels: int = 32,
        depth: int = 4,
        norm_groups: int = 8,
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        if dim not in _CONV:
            raise ValueError(f"dim must be 1, 2 or 3, got {dim}")
        if depth < 0:
            raise ValueError(f"depth must be non-negative, got {depth}")
        self.in_channels, self.dim, self.depth = in_channels, dim, depth
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.down = nn.ModuleList()
        n_in = in_channels
        for w in widths[:-1]:
            self.down.append(_block(dim, n_in, w, norm_groups, padding_mode))
            n_in = w
        self.pool = _POOL[dim](2)
        self.bottleneck = _block(dim, n_in, widths[-1], norm_groups, padding_mode)
        self.up = nn.ModuleList(
            _UP[dim](wide, narrow, kernel_size=2, stride=2)
            for wide, narrow in zip(widths[:0:-1], widths[-2::-1], strict=True)
        )
        self.dec = nn.ModuleList(
            _block(dim, 2 * w, w, norm_groups, padding_mode) for w in widths[-2::-1]
        )
        self.head = _CONV[dim](widths[0], out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """Map ``x`` (B, in_channels, *spatial) to (B, out_channels, *spatial)."""
        check_input(x, self.dim, self.in_channels, "UNet")
        sizes = x.shape[2:]
        k = 2**self.depth
        pads = [-n % k for n in sizes]
        if any(pads):
            x = F.pad(x, [q for p in reversed(pads) for q in (0, p)], mode="replicate")
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, block, skip in zip(self.up, self.dec, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        x = self.head(x)
        return x[(..., *(slice(0, n) for n in sizes))]
