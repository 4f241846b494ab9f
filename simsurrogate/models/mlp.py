"""Small multilayer perceptrons used as the edge, node and readout functions of GNNs."""

from __future__ import annotations

from torch import nn


def mlp(
    sizes: list[int],
    act: type[nn.Module] = nn.SiLU,
    final_act: bool = False,
    layer_norm: bool = False,
) -> nn.Sequential:
    """Linear layers of the given ``sizes`` (in, hidden..., out) with ``act`` between them."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2 or final_act:
            layers.append(act())
    if layer_norm:
        layers.append(nn.LayerNorm(sizes[-1]))
    return nn.Sequential(*layers)
