"""Equivariance of EGNN (and its absence in the GNN baseline), asserted at float32 tolerance."""

from __future__ import annotations

import pytest
import torch

from simsurrogate.data.nbody import systems_to_graph
from simsurrogate.models import EGNN, GNN


def _systems(seed: int = 0, b: int = 3, n: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "pos": torch.randn(b, n, 3, generator=g) * 2,
        "vel": torch.randn(b, n, 3, generator=g) * 0.5,
        "charge": torch.randint(0, 2, (b, n), generator=g).float() * 2 - 1,
    }


def _orthogonal(seed: int, reflect: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if (torch.det(q) < 0) != reflect:
        q[:, 0] = -q[:, 0]
    return q.float()


def _run(model, systems) -> dict[str, torch.Tensor]:
    b, n = systems["charge"].shape
    with torch.no_grad():
        out = model(systems_to_graph(systems))
    return {k: v.reshape(b, n, 3) for k, v in out.items()}


def _perturbed_egnn(**kw) -> EGNN:
    """EGNN with its near-zero coordinate head scaled up, so the test sees real updates."""
    torch.manual_seed(0)
    model = EGNN(hidden=32, n_layers=3, **kw)
    with torch.no_grad():
        for layer in model.layers:
            layer.coord_mlp[-1].weight.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize("reflect", [False, True])
@pytest.mark.parametrize("predict_velocity", [False, True])
def test_egnn_is_e3_equivariant(reflect: bool, predict_velocity: bool) -> None:
    model = _perturbed_egnn(predict_velocity=predict_velocity)
    s = _systems()
    rot = _orthogonal(1, reflect)
    shift = torch.tensor([1.5, -2.0, 0.7])
    moved = {"pos": s["pos"] @ rot.T + shift, "vel": s["vel"] @ rot.T, "charge": s["charge"]}
    out, out_moved = _run(model, s), _run(model, moved)
    assert (out["pos"] - s["pos"]).abs().max() > 1e-2  # the model really moves particles
    torch.testing.assert_close(out_moved["pos"], out["pos"] @ rot.T + shift, atol=2e-5, rtol=1e-5)
    if predict_velocity:
        torch.testing.assert_close(out_moved["vel"], out["vel"] @ rot.T, atol=2e-5, rtol=1e-5)


def test_egnn_is_permutation_equivariant() -> None:
    model = _perturbed_egnn(predict_velocity=True)
    s = _systems()
    perm = torch.tensor([3, 0, 4, 1, 2])
    permuted = {k: v[:, perm] for k, v in s.items()}
    out, out_p = _run(model, s), _run(model, permuted)
    for key in ("pos", "vel"):
        torch.testing.assert_close(out_p[key], out[key][:, perm], atol=2e-5, rtol=1e-5)


def test_gnn_baseline_is_not_rotation_equivariant() -> None:
    torch.manual_seed(0)
    model = GNN(hidden=32, n_layers=2).eval()
    s = _systems()
    rot = _orthogonal(2, False)
    moved = {"pos": s["pos"] @ rot.T, "vel": s["vel"] @ rot.T, "charge": s["charge"]}
    gap = (_run(model, moved)["pos"] - _run(model, s)["pos"] @ rot.T).abs().max()
    assert gap > 1e-2


def test_model_records_constructor_arguments() -> None:
    model = EGNN(hidden=16, n_layers=2, predict_velocity=True)
    assert model.spec() == {
        "class": "EGNN",
        "args": {
            "hidden": 16,
            "n_layers": 2,
            "coords_agg": "mean",
            "recurrent": True,
            "tanh": False,
            "predict_velocity": True,
        },
    }


def test_bad_aggregation_is_rejected() -> None:
    with pytest.raises(ValueError, match="coords_agg"):
        EGNN(coords_agg="max")
