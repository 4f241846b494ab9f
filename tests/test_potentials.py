"""Every potential through the same physics checks (``potential_checks``), plus broken
potentials that the checks must reject, so the checks are known to bite."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch
from potential_checks import (
    ALL_CHECKS,
    Factory,
    alloy_cell,
    check_forces_finite_differences,
    check_named_parts,
    check_smooth_cutoff,
    check_stress_finite_differences,
    check_stress_matches_ase,
    check_symmetries,
    evaluate,
)
from torch import Tensor, nn

from simsurrogate.graph import Graph
from simsurrogate.models.potentials import LennardJones, NequIP, PaiNN, Potential


def painn(elements: Sequence[int]) -> Potential:
    torch.manual_seed(0)
    return PaiNN(elements, cutoff=4.0, hidden=16, n_interactions=2, n_rbf=8)


def nequip(elements: Sequence[int]) -> Potential:
    torch.manual_seed(0)
    return NequIP(elements, cutoff=4.0, lmax=2, channels=8, n_interactions=3, n_rbf=8)


def lennard_jones(elements: Sequence[int]) -> Potential:
    return LennardJones(elements, sigma=1.2, epsilon=0.5, cutoff=4.0, smooth=True)


# name -> factory(elements) building a small float32 model with seeded random weights
MODELS: dict[str, Factory] = {"painn": painn, "nequip": nequip, "lj": lennard_jones}
# analytic references: no learned parts to expose for fine-tuning
ANALYTIC = {"lj"}


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.__name__.removeprefix("check_"))
@pytest.mark.parametrize("name", list(MODELS))
def test_physics(name: str, check: Callable[[Factory], None]) -> None:
    check(MODELS[name])


@pytest.mark.parametrize("name", [n for n in MODELS if n not in ANALYTIC])
def test_learned_parts_for_fine_tuning(name: str) -> None:
    check_named_parts(MODELS[name])


def test_painn_default_size_runs() -> None:
    """The paper-sized default (F = 128, 3 blocks, 20 radial functions) builds and runs."""
    model = PaiNN([29, 79]).eval()
    out = evaluate(model, [alloy_cell()], stress=True)
    assert out["forces"].shape == (8, 3) and out["stress"].shape == (1, 3, 3)
    assert len(model.interactions) == 3 and model.embedding.weight.shape == (2, 128)
    assert model.radial.freq.shape == (20,) and model.cutoff == 5.0


def test_painn_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="n_interactions=0"):
        PaiNN([29], n_interactions=0)


# ------------------------------------------------------ broken potentials the checks reject


class _BrokenLJ(LennardJones):
    """Smooth Lennard-Jones plus a per-atom term ``extra`` that subclasses break on purpose."""

    def extra(self, vectors: Tensor, graph: Graph) -> Tensor:
        raise NotImplementedError

    def atomic_energies(self, species: Tensor, vectors: Tensor, graph: Graph) -> Tensor:
        return super().atomic_energies(species, vectors, graph) + self.extra(vectors, graph)


class _AnisotropicLJ(_BrokenLJ):
    """Depends on the x components of pair vectors: not rotation invariant."""

    def extra(self, vectors: Tensor, graph: Graph) -> Tensor:
        term = 0.05 * vectors[:, 0] ** 2 * self.envelope(vectors.norm(dim=-1))
        out = vectors.new_zeros(graph.num_nodes)
        return out.index_add(0, graph.edge_index[1], term)


class _DetachedLJ(_BrokenLJ):
    """Part of the energy computed from detached vectors: forces miss its gradient."""

    def extra(self, vectors: Tensor, graph: Graph) -> Tensor:
        r = vectors.detach().norm(dim=-1)
        out = vectors.new_zeros(graph.num_nodes)
        return out.index_add(0, graph.edge_index[1], 0.2 * self.envelope(r))


class _StaleCellLJ(_BrokenLJ):
    """Reads the volume from the input cell instead of the strained one: wrong stress."""

    def extra(self, vectors: Tensor, graph: Graph) -> Tensor:
        volume = torch.linalg.det(graph.globals["cell"]).abs().to(vectors.dtype)
        return 0.01 * volume[graph.node_batch]


def _broken(cls: type[LennardJones], **kwargs) -> Factory:
    def factory(elements: Sequence[int]) -> Potential:
        options = {"sigma": 1.2, "epsilon": 0.5, "cutoff": 4.0, "smooth": True, **kwargs}
        return cls(elements, **options)

    return factory


class _StepCutoff(nn.Module):
    """A hard cutoff (1 inside, 0 outside) in place of the smooth envelope."""

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = cutoff

    def forward(self, r: Tensor) -> Tensor:
        return (r < self.cutoff).to(r.dtype)


def _painn_with_step_cutoff(elements: Sequence[int]) -> Potential:
    model = painn(elements)
    model.envelope = _StepCutoff(model.cutoff)
    return model


@pytest.mark.parametrize(
    ("factory", "check", "message"),
    [
        (_broken(_AnisotropicLJ), check_symmetries, "rotation"),
        (_broken(_DetachedLJ), check_forces_finite_differences, "finite differences"),
        (_broken(_StaleCellLJ), check_stress_finite_differences, "strain finite differences"),
        (_broken(_StaleCellLJ), check_stress_matches_ase, "calculate_numerical_stress"),
        (_broken(LennardJones, smooth=False), check_smooth_cutoff, "dimer: energy is not smooth"),
        (_painn_with_step_cutoff, check_smooth_cutoff, "dimer: energy is not smooth"),
    ],
    ids=[
        "anisotropic",
        "detached",
        "stale-cell-fd",
        "stale-cell-ase",
        "unsmoothed-lj",
        "painn-step-cutoff",
    ],
)
def test_checks_reject_broken_potentials(
    factory: Factory, check: Callable[[Factory], None], message: str
) -> None:
    with pytest.raises(AssertionError, match=message):
        check(factory)
