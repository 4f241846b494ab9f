"""Neural operators: shapes, Fourier-space behaviour, resolution transfer, errors, TFNO, U-Net."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
import torch

from simsurrogate.models.base import build_model
from simsurrogate.models.operators import FNO, SpectralConv, UNet
from simsurrogate.models.operators.fno import _pointwise


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


def _reference_spectral(x: torch.Tensor, weight: torch.Tensor, modes: list[int]) -> torch.Tensor:
    """The spectral convolution written out mode by mode, in float64.

    X_k: Fourier-series coefficients of x (``fftn``, norm="forward"), frequencies 0..m-1 and
    -m..-1 on the non-last dims and 0..m-1 on the last; Y_k = X_k W_k (channel mixing); output
    Re sum_k c_k Y_k exp(2 pi i k.x), with c_k = 1 where the last-dim frequency is 0 or n/2
    and 2 elsewhere (the last dim's negative frequencies are the conjugate half).
    """
    d = len(modes)
    sizes = x.shape[2:]
    coeffs = torch.fft.fftn(x.to(torch.complex128), dim=tuple(range(2, 2 + d)), norm="forward")
    coords = torch.meshgrid(
        *(torch.arange(n, dtype=torch.float64) / n for n in sizes), indexing="ij"
    )
    y = x.new_zeros((x.shape[0], weight.shape[1], *sizes), dtype=torch.float64)
    for index in itertools.product(*(range(k) for k in weight.shape[2:])):
        freq = [i if i < m else i - 2 * m for i, m in zip(index[:-1], modes[:-1], strict=True)]
        freq.append(index[-1])
        at = tuple(f % n for f, n in zip(freq, sizes, strict=True))
        mixed = coeffs[(slice(None), slice(None), *at)] @ weight[(slice(None), slice(None), *index)]
        phase = torch.exp(2j * math.pi * sum(f * c for f, c in zip(freq, coords, strict=True)))
        c = 1.0 if freq[-1] == 0 or 2 * freq[-1] == sizes[-1] else 2.0
        y = y + c * (mixed[(..., *[None] * d)] * phase).real
    return y


@pytest.mark.parametrize(
    ("modes", "spatial"),
    [
        ([5], (16,)),
        ([9], (16,)),  # last-dim Nyquist kept
        ([3, 4], (8, 7)),  # 2m = n on the first dim
        ([4, 5], (16, 18)),
        ([5, 6], (23, 13)),
        ([2, 3, 2], (6, 8, 5)),
        ([3, 2, 3], (7, 9, 4)),
    ],
)
@pytest.mark.parametrize("transform", ["dft", "fft"])
def test_spectral_conv_matches_reference(
    modes: list[int], spatial: tuple[int, ...], transform: str
) -> None:
    """Both ways of computing the truncated transforms give the mode-by-mode definition,
    forward and backward (input and weight gradients)."""
    torch.manual_seed(0)
    conv = SpectralConv(3, 2, modes)
    conv.transform = transform
    x = torch.randn(2, 3, *spatial, requires_grad=True)
    grad_out = torch.randn(2, 2, *spatial)
    y = conv(x)
    y.backward(grad_out)
    x_ref = x.detach().double().requires_grad_()
    w_ref = conv.weight.detach().double().requires_grad_()
    y_ref = _reference_spectral(x_ref, torch.view_as_complex(w_ref), modes)
    y_ref.backward(grad_out.double())
    for got, want in ((y, y_ref), (x.grad, x_ref.grad), (conv.weight.grad, w_ref.grad)):
        assert (got.double() - want).abs().max() <= 1e-5 * want.abs().max()


def test_spectral_transform_choice_and_autocast() -> None:
    torch.manual_seed(0)
    conv = SpectralConv(4, 4, [6, 7])
    x = torch.randn(2, 4, 40, 40)
    with torch.no_grad():
        conv.transform = "fft"
        fft = conv(x)
        conv.transform = "dft"
        dft = conv(x)
        # under autocast the spectral arithmetic stays float32, as torch.fft does
        with torch.autocast("cpu", dtype=torch.bfloat16):
            cast = conv(x)
    assert (fft - dft).abs().max() <= 1e-5 * fft.abs().max()
    assert cast.dtype == torch.float32 and torch.equal(cast, dft)
    conv.transform = "bogus"
    with pytest.raises(ValueError, match="transform must be one of"):
        conv(x)


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_pointwise_layers_match_convolution(dim: int) -> None:
    """The 1x1 layers (batched matrix products) equal torch's convolution, also on a strided
    input, with the same parameters and state-dict keys."""
    torch.manual_seed(0)
    mlp = _pointwise(dim, [3, 8, 2])
    conv = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[dim]
    plain = torch.nn.Sequential(conv(3, 8, 1), torch.nn.GELU(), conv(8, 2, 1))
    plain.load_state_dict(mlp.state_dict())
    assert [(k, v.shape) for k, v in plain.state_dict().items()] == [
        (k, v.shape) for k, v in mlp.state_dict().items()
    ]
    x = torch.randn(2, 3, *[7] * dim)[(..., slice(1, None))]  # a non-contiguous view
    grad = torch.randn(2, 2, *x.shape[2:])
    outs, grads = [], []
    for net in (mlp, plain):
        net.zero_grad()
        out = net(x)
        out.backward(grad)
        outs.append(out)
        grads.append([p.grad for p in net.parameters()])
    assert torch.allclose(outs[0], outs[1], atol=1e-6)
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
