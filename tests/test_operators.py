"""Neural operators: shapes, Fourier-space behaviour, resolution transfer, errors, TFNO, U-Net."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

from simsurrogate.models.base import build_model
from simsurrogate.models.operators import FNO, SpectralConv, UNet


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These models are tiny: extra threads only cost synchronisation on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _band_limited(n: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """(batch, 1, n) sums of Fourier modes 1..4 with random phases, sampled at x = j/n."""
    g = torch.Generator().manual_seed(seed)
    x = torch.arange(n, dtype=torch.float64) / n
    amp = torch.randn(batch, 4, 1, generator=g, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(batch, 4, 1, generator=g, dtype=torch.float64)
    k = torch.arange(1, 5, dtype=torch.float64)[:, None]
    return (amp * torch.sin(2 * math.pi * k * x + phase)).sum(1, keepdim=True).float()


@pytest.mark.parametrize(
    ("modes", "spatial"), [([6], (20,)), ([4, 3], (12, 9)), ([2, 3, 2], (6, 8, 5))]
)
def test_fno_shapes(modes: list[int], spatial: tuple[int, ...]) -> None:
    model = FNO(3, 2, modes, width=8, n_layers=2, lifting_channels=16, projection_channels=16)
    assert model(torch.randn(2, 3, *spatial)).shape == (2, 2, *spatial)


@pytest.mark.parametrize(("dim", "spatial"), [(1, (37,)), (2, (20, 13)), (3, (9, 8, 11))])
def test_unet_shapes_any_size(dim: int, spatial: tuple[int, ...]) -> None:
    model = UNet(3, 2, dim=dim, base_channels=4, depth=3)
    out = model(torch.randn(2, 3, *spatial))
    assert out.shape == (2, 2, *spatial)
    assert torch.isfinite(out).all()


def test_resolution_transfer() -> None:
    """Band-limited input at 64 and 128 points: same output at the shared points.

    The grid-coordinate channel x = j/n is a sawtooth on a periodic grid, whose DFT differs
    between resolutions by O(1/n), so the exact comparison runs without it; the embedding's
    samples themselves are checked to coincide at shared points.
    """
    torch.manual_seed(0)
    model = FNO(1, 2, [8], width=16, n_layers=3, positional_embedding=False)
    coarse, fine = _band_limited(64), _band_limited(128)
    assert torch.allclose(coarse, fine[..., ::2])
    with torch.no_grad():
        a, b = model(coarse), model(fine)[..., ::2]
    assert (a - b).norm() / a.norm() < 1e-5
    assert torch.equal(FNO._grid(coarse), FNO._grid(fine)[..., ::2])


@pytest.mark.parametrize(("factorization", "rank"), [(None, 1.0), ("tucker", 0.5), ("cp", 0.5)])
def test_spectral_conv_is_diagonal_in_fourier_space(factorization: str | None, rank: float) -> None:
    torch.manual_seed(0)
    conv = SpectralConv(2, 3, [4, 5], factorization, rank)
    n1, n2 = 16, 18
    x1 = torch.arange(n1)[:, None] / n1
    x2 = torch.arange(n2)[None, :] / n2
    for k1, k2, kept in [(3, -2, True), (-1, 4, True), (2, 0, True), (5, 1, False), (1, 5, False)]:
        field = torch.cos(2 * math.pi * (k1 * x1 + k2 * x2))
        x = torch.stack([field, 0.5 * field])[None]
        with torch.no_grad():
            y = conv(x)
        assert y.shape == (1, 3, n1, n2)
        spectrum = torch.fft.fftn(y, dim=(-2, -1)).abs()
        own = spectrum[..., k1 % n1, k2 % n2] + spectrum[..., -k1 % n1, -k2 % n2]
        if kept:  # all energy at +-(k1, k2)
            assert own.sum() > 1e-3
            assert torch.allclose(spectrum.sum((-2, -1)), own, atol=1e-4 * own.max())
        else:
            assert y.abs().max() < 1e-6


def test_translation_equivariance() -> None:
    torch.manual_seed(0)
    model = FNO(2, 1, [5, 4], width=8, n_layers=3, positional_embedding=False)
    x = torch.randn(2, 2, 24, 20)
    shift = (7, -3)
    with torch.no_grad():
        shifted_out = model(torch.roll(x, shift, dims=(-2, -1)))
        out_shifted = torch.roll(model(x), shift, dims=(-2, -1))
    assert torch.allclose(shifted_out, out_shifted, atol=1e-5)


def test_padding_for_non_periodic_sizes() -> None:
    model = FNO(1, 1, [8, 6], width=8, n_layers=2, padding=[3, 5])
    out = model(torch.randn(2, 1, 13, 7))  # 7 points hold only 4 last-dim modes without padding
    assert out.shape == (2, 1, 13, 7)
    assert torch.isfinite(out).all()


def test_too_few_grid_points_is_named() -> None:
    model = FNO(1, 1, [8, 6], width=8, n_layers=1)
    with pytest.raises(ValueError, match=r"spatial dim 0 has 15 .*modes=8"):
        model(torch.randn(1, 1, 15, 16))
    with pytest.raises(ValueError, match=r"spatial dim 1 has 9 .*modes=6"):
        model(torch.randn(1, 1, 16, 9))


def test_wrong_channel_count_is_named() -> None:
    for model in (FNO(3, 1, [4], width=8, n_layers=1), UNet(3, 1, dim=1, base_channels=4)):
        with pytest.raises(ValueError, match=r"2 channels .*in_channels=3"):
            model(torch.randn(1, 2, 16))


@pytest.mark.parametrize("factorization", ["tucker", "cp"])
def test_tfno_fewer_parameters_finite(factorization: str) -> None:
    kwargs = dict(width=16, n_layers=2, lifting_channels=16, projection_channels=16)
    dense = FNO(1, 1, [8, 8], **kwargs)
    tfno = FNO(1, 1, [8, 8], factorization=factorization, rank=0.1, **kwargs)
    spectral = [_n_params(m.spectral) for m in (dense, tfno)]
    assert spectral[1] <= 0.1 * spectral[0]
    assert _n_params(tfno) < _n_params(dense)
    out = tfno(torch.randn(2, 1, 20, 20))
    assert out.shape == (2, 1, 20, 20)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in tfno.spectral.parameters())


def test_overfit_derivative() -> None:
    """A tiny FNO learns u -> du/dx on a fixed batch of sines (loss drops 10x in 200 steps)."""
    torch.manual_seed(0)
    n = 64
    x = torch.arange(n) / n
    k = torch.randint(1, 4, (16, 1, 1)).float()
    phase = 2 * math.pi * torch.rand(16, 1, 1)
    u = torch.sin(2 * math.pi * k * x + phase)
    dudx = k * torch.cos(2 * math.pi * k * x + phase)  # d/dx in units of 2*pi
    model = FNO(1, 1, [8], width=16, n_layers=2, lifting_channels=32, projection_channels=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(200):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(u), dudx)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


@pytest.mark.parametrize(
    "model",
    [
        FNO(2, 1, [4, 3], width=8, n_layers=2, padding=[2, 1], factorization="tucker", rank=0.3),
        FNO(1, 1, [5], width=8, n_layers=1, factorization="cp", positional_embedding=False),
        UNet(2, 3, dim=3, base_channels=4, depth=2, padding_mode="circular"),
    ],
)
def test_spec_round_trip(model: torch.nn.Module) -> None:
    rebuilt = build_model(model.spec())
    assert type(rebuilt) is type(model)
    assert rebuilt.spec() == model.spec()
    rebuilt.load_state_dict(model.state_dict())
    d = model.dim if isinstance(model, UNet) else len(model.modes)
    x = torch.randn(1, model.in_channels, *[8] * d)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
