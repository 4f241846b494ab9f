"""The oneDNN linear layer computes torch.nn.functional.linear and its gradients."""

from __future__ import annotations

import pytest
import torch

from simsurrogate.models import linear as lin

needs_onednn = pytest.mark.skipif(not lin.onednn_enabled(), reason="no oneDNN in this torch")


def _grads(fn, x, w, b):
    """Output and gradients of x, w, b of sum(fn(x, w, b) * probe) for a fixed probe."""
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    b = None if b is None else b.detach().requires_grad_()
    y = fn(x, w, b)
    probe = torch.linspace(-1, 1, y.numel()).reshape(y.shape)
    (y * probe).sum().backward()
    return y.detach(), x.grad, w.grad, None if b is None else b.grad


@needs_onednn
@pytest.mark.parametrize("shape", [(300, 24), (4, 50, 24)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_functional_linear(shape: tuple[int, ...], bias: bool) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape)
    w = torch.randn(3 * 16, 24)[:16]  # rows of a larger matrix
    b = torch.randn(16) if bias else None
    ours = _grads(lin.linear, x, w, b)
    ref = _grads(torch.nn.functional.linear, x, w, b)
    for a, r in zip(ours, ref, strict=True):
        if r is None:
            assert a is None
        else:
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_strided_weight_and_partial_gradients() -> None:
    """A column slice as the weight (the concat trick's split) and an input without grad."""
    torch.manual_seed(1)
    big = torch.randn(32, 96, requires_grad=True)
    x = torch.randn(200, 32)
    y = lin.linear(x, big[:, 32:64])
    y.square().sum().backward()
    ref_w = big.detach().clone().requires_grad_()
    torch.nn.functional.linear(x, ref_w[:, 32:64]).square().sum().backward()
    torch.testing.assert_close(big.grad, ref_w.grad, rtol=1e-5, atol=1e-4)
    assert big.grad[:, :32].abs().max() == 0


def test_falls_back_outside_float32_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """float64 and autocast go through torch's own linear (gradcheck needs float64)."""
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lin.linear, (x, w, b))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lin.linear(x.float(), w.float(), b.float()).dtype == torch.bfloat16
    monkeypatch.setenv("SIMSURROGATE_ONEDNN", "0")
    assert not lin.onednn_enabled()
    y = lin.linear(x.float(), w.float())
    assert y.grad_fn is not None and "OneDnn" not in type(y.grad_fn).__name__


@needs_onednn
def test_linear_module_keeps_the_state_dict_of_nn_linear() -> None:
    torch.manual_seed(2)
    plain = torch.nn.Linear(8, 5)
    ours = lin.Linear(8, 5)
    ours.load_state_dict(plain.state_dict())
    x = torch.randn(7, 8)
    torch.testing.assert_close(ours(x), plain(x), rtol=1e-6, atol=1e-6)
    assert "OneDnn" in type(ours(x).grad_fn).__name__
