"""An FNO trained at one resolution runs at another and agrees where the grids share points."""

from __future__ import annotations

import math

import torch

from simsurrogate.models.operators import FNO


def _smooth(n: int, batch: int, seed: int) -> torch.Tensor:
    """(batch, 1, n, n) trigonometric polynomials (wavenumbers up to 3) at x = j/n."""
    g = torch.Generator().manual_seed(seed)
    x = torch.arange(n, dtype=torch.float64) / n
    x1, x2 = torch.meshgrid(x, x, indexing="ij")
    out = torch.zeros(batch, 1, n, n, dtype=torch.float64)
    for k1, k2 in ((1, 0), (0, 2), (2, 1), (1, -3)):
        amp = torch.randn(batch, 1, 1, 1, generator=g, dtype=torch.float64)
        phase = 2 * math.pi * torch.rand(batch, 1, 1, 1, generator=g, dtype=torch.float64)
        out = out + amp * torch.cos(2 * math.pi * (k1 * x1 + k2 * x2) + phase)
    return out.float()


def test_trained_at_24_runs_at_48_with_normalisers() -> None:
    """Normalisers learn per-channel statistics at 24 points; at 48 points the same smooth
    input gives the same output at the shared points (the spectral layers see the same
    Fourier coefficients, the pointwise layers the same values). The grid-coordinate channel
    is left out: its sawtooth is not band-limited, which costs O(1/n) (see test_operators)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = FNO(
        1,
        1,
        [4, 5],
        width=8,
        n_layers=3,
        lifting_channels=16,
        projection_channels=16,
        positional_embedding=False,
        normalize_inputs=True,
        normalize_outputs=True,
    )
    a = 7.5 + 3.0 * _smooth(24, 16, seed=1)  # physical units: far from zero mean, unit std
    u = 40.0 + 10.0 * _smooth(24, 16, seed=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(20):
        model.observe_targets(u)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(a), u).backward()
        opt.step()
    model.eval()
    for norm in (model.input_norm, model.output_norm):
        assert norm.count > 0 and norm.mean.shape == (1,)  # per channel, not per grid point
    coarse, fine = 7.5 + 3.0 * _smooth(24, 3, seed=5), 7.5 + 3.0 * _smooth(48, 3, seed=5)
    assert torch.allclose(coarse, fine[..., ::2, ::2], atol=1e-5)
    with torch.no_grad():
        out_coarse, out_fine = model(coarse), model(fine)
    assert out_fine.shape == (3, 1, 48, 48)
    variation = (out_coarse - out_coarse.mean()).norm()
    assert variation > 1e-2 * out_coarse.norm()  # the model does not output a constant
    assert (out_coarse - out_fine[..., ::2, ::2]).norm() < 1e-4 * variation
