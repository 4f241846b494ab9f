"""The e3nn-specific side of the NequIP potential: equivariance of one interaction block
under rotations and inversion (e3nn's ``assert_equivariant``), parity of the whole model,
the irreps it builds, float64 exactness of the Wigner 3j coefficients, and bad arguments.
The shared physics checks (invariance, finite differences, stress, cutoff smoothness, batches)
run in ``tests/test_potentials.py``."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from e3nn import o3
from e3nn.util.test import assert_equivariant
from potential_checks import ELEMENTS, alloy_cell, assert_close, evaluate, small_molecule

from simsurrogate.models.base import build_model
from simsurrogate.models.potentials import NequIP
from simsurrogate.models.potentials.nequip import NequIPInteraction, hidden_irreps


def _small(lmax: int = 2, parity: bool = True, **kwargs) -> NequIP:
    torch.manual_seed(0)
    options = {"cutoff": 4.0, "channels": 4, "n_interactions": 3, **kwargs}
    return NequIP(ELEMENTS, lmax=lmax, parity=parity, **options)


@pytest.fixture
def float64_default() -> Iterator[None]:
    """e3nn's equivariance test generates inputs and rotations in the default dtype."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("parity", [True, False])
def test_interaction_block_is_equivariant(float64_default: None, parity: bool) -> None:
    """One block (built in float32 and cast, as models are) maps rotated and inverted inputs
    to rotated and inverted outputs, up to float64 round-off."""
    irreps_in = hidden_irreps(3, 3, parity)
    irreps_sh = o3.Irreps.spherical_harmonics(3, p=-1 if parity else 1)
    torch.set_default_dtype(torch.float32)
    torch.manual_seed(0)
    block = NequIPInteraction(irreps_in, irreps_sh, irreps_in, num_elements=2, n_rbf=5)
    torch.set_default_dtype(torch.float64)
    block = block.double()
    n_nodes, n_edges = 5, 14
    generator = torch.Generator().manual_seed(1)
    edge_index = torch.randint(0, n_nodes, (2, n_edges), generator=generator)
    one_hot = torch.eye(2)[torch.randint(0, 2, (n_nodes,), generator=generator)]
    radial = torch.rand(n_edges, 5, generator=generator)

    def block_of(x: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
        return block(x, one_hot, sh, radial, edge_index)

    x, sh = irreps_in.randn(n_nodes, -1), irreps_sh.randn(n_edges, -1)
    errors = assert_equivariant(
        block_of,
        args_in=[x, sh],
        irreps_in=[irreps_in, irreps_sh],
        irreps_out=[block.irreps_out],
        tolerance=1e-12 * float(block_of(x, sh).detach().abs().max()),
    )
    assert (False, False) in {(bool(k), bool(t)) for k, t in errors}  # rotations tested
    assert (True, False) in {(bool(k), bool(t)) for k, t in errors}  # and inversion


def test_parity_aware_model_is_inversion_invariant_and_so3_model_is_chiral() -> None:
    """Inversion ``x -> -x`` turns a rattled (chiral) molecule into its mirror image: an O(3)
    model gives the same energy and negated forces; an SO(3) model (``parity=False``) tells
    the enantiomers apart, while both are invariant under proper rotations."""
    atoms = small_molecule()
    mirror = atoms.copy()
    mirror.positions = -atoms.positions
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ o3.rand_matrix(dtype=torch.float64).numpy().T

    o3_model = _small(parity=True).double().eval()
    ref, out = evaluate(o3_model, [atoms]), evaluate(o3_model, [mirror])
    assert_close(out["energy"], ref["energy"], "O(3) model: energy of the mirror image", 1e-12)
    assert_close(out["forces"], -ref["forces"], "O(3) model: forces of the mirror image", 1e-11)

    so3_model = _small(parity=False).double().eval()
    ref, out = evaluate(so3_model, [atoms]), evaluate(so3_model, [mirror])
    turned = evaluate(so3_model, [rotated])
    assert_close(turned["energy"], ref["energy"], "SO(3) model: energy after rotation", 1e-12)
    assert abs(out["energy"][0] - ref["energy"][0]) > 1e-4 * abs(ref["energy"][0])


def test_irreps_of_the_model() -> None:
    """Edge harmonics up to lmax with true parity (pseudo-tensors for the SO(3) model);
    hidden features gain the irreps each tensor product can reach, up to both parities of
    every l <= lmax in an O(3) model; scalars only after the last block, one scalar per atom
    out of the readout."""
    model = _small(lmax=2, parity=True, n_interactions=4)
    assert model.irreps_sh == o3.Irreps("0e+1o+2e")
    assert hidden_irreps(4, 2, True) == o3.Irreps("4x0e+4x0o+4x1o+4x1e+4x2e+4x2o").sort()[0]
    first, second, third, last = model.interactions
    assert first.irreps_in == o3.Irreps("4x0e")
    # from scalars, a product with 0e+1o+2e reaches only the true-parity irreps; the next one
    # reaches pseudo-vectors (1o x 1o -> 1e) but no pseudo-scalar yet (needs 1o x 1e)
    assert first.irreps_out == o3.Irreps("4x0e+4x1o+4x2e")
    assert second.irreps_out == o3.Irreps("4x0e+4x1o+4x1e+4x2o+4x2e")
    assert third.irreps_out.sort()[0].simplify() == hidden_irreps(4, 2, True)
    assert last.irreps_out == o3.Irreps("4x0e")
    assert model.readout.irreps_out == o3.Irreps("1x0e")
    assert model.embedding.weight.shape == (len(ELEMENTS), 4)

    chiral = _small(lmax=2, parity=False)
    assert chiral.irreps_sh == o3.Irreps("0e+1e+2e")
    assert chiral.interactions[1].irreps_out == o3.Irreps("4x0e+4x1e+4x2e")


def test_float64_copy_is_exactly_equivariant() -> None:
    """A float32 model cast to float64 (or loading float32 weights) holds float64 Wigner 3j
    symbols, so at lmax = 3 its energy is rotation invariant to round-off (with the float32
    coefficients the error is ~1e-9)."""
    model32 = _small(lmax=3, channels=6)
    cast = copy.deepcopy(model32).double().eval()
    loaded = build_model(model32.spec()).double().eval()
    loaded.load_state_dict(model32.state_dict())
    w3j = dict(loaded.named_buffers())["interactions.1.tp._compiled_main_left_right._w3j_2_2_2"]
    assert torch.equal(w3j, o3.wigner_3j(2, 2, 2, dtype=torch.float64))
    atoms = small_molecule()
    rotation = o3.rand_matrix(dtype=torch.float64).numpy()
    turned = atoms.copy()
    turned.positions = atoms.positions @ rotation.T
    for model in (cast, loaded):
        ref, out = evaluate(model, [atoms]), evaluate(model, [turned])
        assert_close(out["energy"], ref["energy"], "float64 energy after rotation", 1e-13)
        assert_close(out["forces"], ref["forces"] @ rotation.T, "rotated forces", 1e-12)


def test_avg_num_neighbors_divides_the_neighbour_sum() -> None:
    """Every block divides its neighbour sum by ``avg_num_neighbors``: doubling it while
    doubling each block's post-aggregation linear map changes nothing."""
    model = _small(avg_num_neighbors=3.0).double().eval()
    other = build_model({**model.spec(), "args": {**model.config, "avg_num_neighbors": 6.0}})
    other = other.double().eval()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        for block in other.interactions:
            block.linear_2.weight.mul_(2.0)
    images = [alloy_cell(), small_molecule()]
    a, b = evaluate(model, images), evaluate(other, images)
    assert_close(b["energy"], a["energy"], "energy with rescaled neighbour sums", 1e-12)
    assert_close(b["forces"], a["forces"], "forces with rescaled neighbour sums", 1e-11)
    assert np.abs(a["forces"]).max() > 1e-3


def test_default_size_builds_and_runs() -> None:
    """The default model (lmax 1, 32 channels, 3 blocks, 5 Å) runs a periodic alloy cell with
    stress; its size is pinned so that changes to the defaults are deliberate."""
    model = NequIP([29, 79]).eval()
    out = evaluate(model, [alloy_cell()], stress=True)
    assert out["forces"].shape == (8, 3) and out["stress"].shape == (1, 3, 3)
    assert model.cutoff == 5.0 and len(model.interactions) == 3
    assert model.irreps_sh == o3.Irreps("0e+1o")
    assert sum(p.numel() for p in model.parameters()) == 67_176


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lmax": -1}, "lmax=-1"),
        ({"channels": 0}, "channels=0"),
        ({"n_interactions": 0}, "n_interactions=0"),
        ({"avg_num_neighbors": 0.0}, "avg_num_neighbors must be positive"),
    ],
)
def test_bad_sizes_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NequIP([29], **kwargs)


def test_deep_copy_keeps_state_keys_for_weight_ema() -> None:
    """Weight EMA deep-copies the model and loads states across; e3nn's generated kernels
    must come through the copy as the same graphs (pickling them re-traced the lmax >= 2
    tensor products with extra ``_tensor_constant`` entries, and loading failed)."""
    from torch.optim.swa_utils import AveragedModel

    torch.manual_seed(0)
    model = NequIP([29, 79], cutoff=4.0, lmax=2, channels=8, n_interactions=2)
    ema = AveragedModel(model, use_buffers=False)
    assert set(ema.module.state_dict()) == set(model.state_dict())
    model.load_state_dict(ema.module.state_dict())
    cell = [alloy_cell()]
    np.testing.assert_array_equal(
        evaluate(ema.module, cell)["forces"], evaluate(model, cell)["forces"]
    )
