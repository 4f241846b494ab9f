"""Third-party foundation potentials behind the shared head, run on our graphs.

SevenNet-0 (``sevenn``) gives what SevenNet's own ASE calculator gives, passes the shared
physics checks, runs in the MD engine, and fine-tunes through a recipe's ``finetune`` block
(fine-tuning modes, reference-energy refit, checkpoint round trip). CHGNet (``chgnet``), with
its undirected bonds and angles derived from our graph, gives what CHGNet's calculator gives,
passes the physics checks (also at its 3 Å bond-graph cutoff) and fine-tunes with low-rank
adapters. Each part is skipped without its optional extra."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.verlet import VelocityVerlet
from ase.stress import voigt_6_to_full_3x3_stress
from potential_checks import (
    ELEMENTS,
    _assert_continuous,
    alloy_cell,
    assert_close,
    check_batch_consistency,
    check_float32,
    check_force_training,
    check_named_parts,
    check_rebuild_from_spec,
    check_smooth_cutoff,
    check_stress_matches_ase,
    check_supercell,
    check_symmetries,
    check_unknown_element,
    copper_cell,
    evaluate,
    graph_of,
    quiet_trainer,
    small_molecule,
)
from torch.optim.swa_utils import AveragedModel

from simsurrogate import checkpoint
from simsurrogate.data.atoms import AtomsDataModule
from simsurrogate.data.importers.ase_import import atoms_to_fields
from simsurrogate.data.particles import write_frames
from simsurrogate.models.potentials import Potential, UnknownElementError
from simsurrogate.models.potentials.external import (
    CHGNetPotential,
    SevenNetPotential,
)
from simsurrogate.models.potentials.external.chgnet import undirected_bonds
from simsurrogate.rollout.md import MDEngine
from simsurrogate.tasks.finetune import add_lora, merge_lora_state, set_trainable, with_elements
from simsurrogate.tasks.potential import PotentialTask

needs_sevenn = pytest.mark.skipif(find_spec("sevenn") is None, reason="needs simsurrogate[sevenn]")
needs_chgnet = pytest.mark.skipif(find_spec("chgnet") is None, reason="needs simsurrogate[chgnet]")


def sevennet_factory(elements: Sequence[int]) -> Potential:
    """SevenNet-0 (float32) over ``elements``; after the first, a build copies the network
    the process already generated (~0.1 s)."""
    return SevenNetPotential(elements)


@pytest.fixture(scope="module")
def reference_calculator() -> Any:
    """SevenNet's own ASE calculator for SevenNet-0, built by sevenn from its checkpoint."""
    from sevenn.calculator import SevenNetCalculator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no tensor product accelerator"
        return SevenNetCalculator("7net-0", device="cpu")


def _gold_cell(seed: int = 0) -> Atoms:
    """fcc Au, 2x2x1 cubic supercell (16 atoms) with one vacancy, rattled by 0.05 Å."""
    atoms = bulk("Au", "fcc", a=4.08, cubic=True).repeat((2, 2, 1))
    del atoms[5]
    atoms.rattle(0.05, seed=seed)
    return atoms


@needs_sevenn
def test_sevennet_matches_its_own_calculator(reference_calculator):
    """Energies, forces and stresses of fcc Cu, a sheared CuAu alloy, Au with a vacancy (in one
    batch) and acetamide equal SevenNet's ASE calculator to float32 precision."""
    model = sevennet_factory(ELEMENTS).eval()
    periodic = [copper_cell(), alloy_cell(), _gold_cell()]
    molecule = small_molecule()
    ours = evaluate(model, periodic, stress=True)
    ours_molecule = evaluate(model, [molecule])
    start = 0
    for g, atoms in enumerate([*periodic, molecule]):
        what = atoms.get_chemical_formula()
        atoms = atoms.copy()
        atoms.calc = reference_calculator
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        if g < len(periodic):
            e, f = ours["energy"][g], ours["forces"][start : start + len(atoms)]
            stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
            assert_close(ours["stress"][g], stress, f"{what}: stress", 1e-5)
            start += len(atoms)
        else:
            e, f = ours_molecule["energy"][0], ours_molecule["forces"]
        assert abs(e - energy) <= 1e-6 * abs(energy), f"{what}: energy {e} vs {energy}"
        assert_close(f, forces, f"{what}: forces", 1e-5)


# the shared physics suite, less what other tests here cover or what the adapter does not
# touch: stress and batching (against SevenNet's own calculator above), forces against finite
# differences (on a subset of coordinates below; all of them take 12 s) and the smoothness of
# SevenNet's XPLOR switch at the cutoff (19 s)
@needs_sevenn
@pytest.mark.parametrize(
    "check",
    [
        check_symmetries,
        check_float32,
        check_force_training,
        check_unknown_element,
        check_named_parts,
    ],
    ids=lambda c: c.__name__.removeprefix("check_"),
)
def test_sevennet_physics(check):
    check(sevennet_factory)


@needs_sevenn
def test_sevennet_forces_are_energy_gradients():
    """Forces of the float64 copy equal central finite differences of its energy (an Au atom
    of the periodic alloy and a C atom of the free molecule, all coordinates)."""
    model = sevennet_factory(ELEMENTS).double().eval()
    step = 2e-5
    for atoms, picked in ((alloy_cell(), (3,)), (small_molecule(), (1,))):
        ref = evaluate(model, [atoms])
        images = []
        for k in picked:
            for c in range(3):
                for sign in (1.0, -1.0):
                    image = atoms.copy()
                    image.positions[k, c] += sign * step
                    images.append(image)
        energy = evaluate(model, images, forces=False)["energy"].reshape(len(picked), 3, 2)
        numeric = -(energy[..., 0] - energy[..., 1]) / (2 * step)
        what = f"{atoms.get_chemical_formula()}: forces vs finite differences"
        assert_close(ref["forces"][list(picked)], numeric, what, 1e-6)


@needs_sevenn
def test_sevennet_copies_keep_their_weights_and_exact_coefficients():
    """A deep copy (what the training task's weight EMA makes) has the model's state-dict keys,
    so EMA weights load into the model, and its float64 version computes bit for bit what the
    original's does (no float32-rounded Wigner 3j coefficients left behind)."""
    model = sevennet_factory((29, 79))
    ema = AveragedModel(model, use_buffers=False)
    assert list(ema.module.state_dict()) == list(model.state_dict())
    model.load_state_dict(ema.module.state_dict())
    copied = copy.deepcopy(model).double().eval()
    images = [alloy_cell()]
    a, b = evaluate(model.double().eval(), images), evaluate(copied, images)
    assert np.array_equal(a["energy"], b["energy"]) and np.array_equal(a["forces"], b["forces"])


@needs_sevenn
def test_sevennet_bad_input():
    """Elements SevenNet-0 never saw and unknown model names are errors naming them."""
    with pytest.raises(UnknownElementError, match=r"Po \(Z=84\).*knows 89 elements"):
        SevenNetPotential([29, 84])
    with pytest.raises(ValueError, match="7net-nonexistent"):
        SevenNetPotential([29], model_name="7net-nonexistent")


@needs_sevenn
def test_sevennet_in_md_engine_follows_ase_with_sevennets_calculator(reference_calculator):
    """NVE in the MD engine with the adapter follows ASE's velocity Verlet driven by SevenNet's
    own calculator, and conserves energy."""
    atoms = copper_cell(seed=4)
    kt = 600 * units.kB  # Maxwell-Boltzmann momenta at 600 K
    noise = np.random.default_rng(0).normal(size=(len(atoms), 3))
    atoms.set_momenta(noise * np.sqrt(atoms.get_masses() * kt)[:, None])
    steps, dt = 10, 2.0
    engine = MDEngine(sevennet_factory([29]), "nve", timestep=dt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = engine.run([atoms], steps)
    reference = atoms.copy()
    reference.calc = reference_calculator
    VelocityVerlet(reference, timestep=dt * units.fs).run(steps)
    diff = result.state.positions.numpy() - reference.positions
    frac = diff @ np.linalg.inv(atoms.cell.array)
    diff = (frac - np.round(frac)) @ atoms.cell.array
    assert np.abs(diff).max() < 1e-5, np.abs(diff).max()
    state = result.state
    kinetic = float((0.5 * (state.momenta**2).sum(-1) / state.masses).sum())
    total = float(state.energy[0]) + kinetic
    start = atoms.copy()
    start.calc = reference_calculator
    initial = start.get_potential_energy() + start.get_kinetic_energy()
    assert abs(total - initial) < 2e-3 * len(atoms), (total, initial)


@needs_sevenn
def test_sevennet_fine_tuning_modes_and_new_elements():
    """The fine-tuning modes select SevenNet's parts: freezing the interactions leaves the
    embedding, edge basis and readout training; readout-only trains the two readout matrices
    and nothing SevenNet keeps fixed; low-rank adapters wrap the readout's nn.Linear maps and
    merge back into a plain state dict; adding an element SevenNet knows gives its pretrained
    rows, i.e. the model built with that element in the first place."""
    model = sevennet_factory([29])
    set_trainable(model, "no_interactions")
    training = {n.split(".", 1)[0] for n, p in model.named_parameters() if p.requires_grad}
    assert training == {"embedding", "edge_embedding", "readout"}
    model = sevennet_factory([29])
    set_trainable(model, "readout")
    training = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert training == ["readout.hidden.weight", "readout.out.weight"]

    model = sevennet_factory([29, 79])
    names = add_lora(model, rank=2, alpha=4.0)
    assert names == ["readout.hidden", "readout.out"]
    with torch.no_grad():
        model.readout.out.lora_B.fill_(0.01)
    merged = sevennet_factory([29, 79])
    merged.load_state_dict(merge_lora_state(model.state_dict()))
    images = [alloy_cell()]
    a, b = evaluate(model.eval(), images), evaluate(merged.eval(), images)
    assert_close(a["forces"], b["forces"], "LoRA merged into the readout", 1e-5)

    grown = with_elements(sevennet_factory([29]), [79]).eval()
    direct = sevennet_factory((29, 79)).eval()
    a, b = evaluate(grown, images), evaluate(direct, images)
    assert np.array_equal(a["energy"], b["energy"]) and np.array_equal(a["forces"], b["forces"])


def _emt_frames(n: int, seed: int) -> list[Atoms]:
    """Rattled, strained 4-atom fcc Cu and Au cells labelled by ASE's EMT."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        symbol, a = (("Cu", 3.61), ("Au", 4.08))[k % 2]
        atoms = bulk(symbol, "fcc", a=a, cubic=True)
        if k % 3 == 2:
            atoms.numbers[0] = 79 if symbol == "Cu" else 29
        atoms.set_cell(atoms.cell.array * rng.uniform(0.98, 1.02), scale_atoms=True)
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
        atoms.calc = EMT()
        atoms.get_stress()
        frames.append(atoms)
    return frames


def _trainer(root: Path, epochs: int) -> L.Trainer:
    return quiet_trainer(root, max_epochs=epochs, enable_checkpointing=False)


@needs_sevenn
def test_sevennet_fine_tunes_on_emt_data_through_a_recipe(tmp_path):
    """A ``finetune`` block starting from the exported SevenNet-0 checkpoint: the refit moves
    the reference energies from zero to EMT's offset, training lowers the validation force
    error, and the saved checkpoint rebuilds the fine-tuned model with its provenance."""
    start = checkpoint.save_model(
        SevenNetPotential([29, 79]), tmp_path / "sevennet0.ckpt", "PotentialTask"
    )
    paths = {}
    for split, (n, seed) in {"train": (4, 0), "valid": (4, 1)}.items():
        paths[split] = write_frames(
            tmp_path / f"{split}.h5", **atoms_to_fields(_emt_frames(n, seed))
        )
    dm = AtomsDataModule(str(paths["train"]), str(paths["valid"]), batch_size=4)
    task = PotentialTask(
        force_weight=10.0,
        lr=2e-3,
        lr_schedule="constant",
        ema_decay=None,
        finetune={"checkpoint": str(start), "trainable": "all", "reference_energies": "refit"},
    )
    valid = _emt_frames(4, 1)
    pretrained = evaluate(SevenNetPotential([29, 79]).eval(), valid)
    n_atoms = np.array([len(a) for a in valid])
    labels = np.concatenate([a.get_forces() for a in valid])
    energies = np.array([a.get_potential_energy() for a in valid])
    before = {
        "val/energy_mae_per_atom": np.abs((pretrained["energy"] - energies) / n_atoms).mean(),
        "val/force_mae": np.abs(pretrained["forces"] - labels).mean(),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = _trainer(tmp_path, 3)
        trainer.fit(task, dm)
        after = _trainer(tmp_path, 1).validate(task, dm, verbose=False)[0]
    refs = task.model.reference_energies
    assert bool((refs > 2.0).all()), f"refit reference energies {refs.tolist()} (EMT ~ +3-4 eV)"
    # measured: energy MAE 3.6 -> 0.08 eV/atom, force MAE 0.25 -> 0.065 eV/Å
    assert after["val/energy_mae_per_atom"] < 0.05 * before["val/energy_mae_per_atom"]
    assert after["val/force_mae"] < 0.5 * before["val/force_mae"], (before, after)
    saved = tmp_path / "finetuned.ckpt"
    trainer.save_checkpoint(saved)
    loaded = checkpoint.load(saved)
    assert isinstance(loaded, SevenNetPotential)
    meta = checkpoint.read_checkpoint(saved)[checkpoint.KEY]
    assert "sevenn" in str(meta), "the fine-tuned checkpoint records where it came from"
    images = _emt_frames(2, 5)
    graph = graph_of(images, loaded.cutoff, torch.float32)
    a, b = loaded(graph)["forces"], task.model.eval()(graph)["forces"]
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------ CHGNet


def chgnet_factory(elements: Sequence[int]) -> Potential:
    """CHGNet 0.3.0 (float32) over ``elements``."""
    return CHGNetPotential(elements)


@needs_chgnet
def test_chgnet_matches_its_own_calculator():
    """Energies, forces and stresses of fcc Cu, the sheared CuAu alloy, Au with a vacancy and
    acetamide in a 12 Å box, evaluated in one batch on our graph (angles and undirected bonds
    derived from it), equal CHGNet's ASE calculator (its own graph converter) to float32
    precision."""
    from chgnet.model.dynamics import CHGNetCalculator

    boxed = small_molecule()
    boxed.set_cell([12.0, 12.0, 12.0])
    boxed.center()
    boxed.pbc = True
    images = [copper_cell(), alloy_cell(), _gold_cell(), boxed]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calculator = CHGNetCalculator(use_device="cpu")
    model = chgnet_factory(ELEMENTS).eval()
    for dtype in (torch.float32, torch.float64):
        ours = evaluate(model.to(dtype), images, stress=True)
        start = 0
        for g, atoms in enumerate(images):
            what = f"{atoms.get_chemical_formula()} ({dtype})"
            atoms = atoms.copy()
            atoms.calc = calculator
            energy = atoms.get_potential_energy()
            e, f = ours["energy"][g], ours["forces"][start : start + len(atoms)]
            assert abs(e - energy) <= 1e-6 * abs(energy), f"{what}: energy {e} vs {energy}"
            assert_close(f, atoms.get_forces(), f"{what}: forces", 1e-4)
            stress = voigt_6_to_full_3x3_stress(atoms.get_stress())
            assert_close(ours["stress"][g], stress, f"{what}: stress", 1e-5, 1e-7)
            start += len(atoms)


@needs_chgnet
@pytest.mark.parametrize(
    "check",
    [
        check_symmetries,
        check_stress_matches_ase,
        check_smooth_cutoff,
        check_supercell,
        check_batch_consistency,
        check_unknown_element,
        check_float32,
        check_force_training,
        check_rebuild_from_spec,
        check_named_parts,
    ],
    ids=lambda c: c.__name__.removeprefix("check_"),
)
def test_chgnet_physics(check):
    check(chgnet_factory)


@needs_chgnet
def test_chgnet_forces_and_continuity_at_the_bond_graph_cutoff():
    """Forces equal finite differences of the energy; as one bond of a trimer crosses CHGNet's
    3 Å bond-graph cutoff (its angles appear and vanish) energy and forces stay continuous."""
    model = chgnet_factory(ELEMENTS).double().eval()
    step = 2e-5
    atoms = alloy_cell()
    ref = evaluate(model, [atoms])
    images = []
    for k in (0, 5):
        for c in range(3):
            for sign in (1.0, -1.0):
                image = atoms.copy()
                image.positions[k, c] += sign * step
                images.append(image)
    energy = evaluate(model, images, forces=False)["energy"].reshape(2, 3, 2)
    numeric = -(energy[..., 0] - energy[..., 1]) / (2 * step)
    assert_close(ref["forces"][[0, 5]], numeric, "alloy: forces vs finite differences", 1e-6)

    rc = model.bond_cutoff
    r = np.arange(rc - 0.5, rc + 0.25, 2e-3)
    trimers = [Atoms("CuAuCu", positions=[[0, 0, 0], [x, 0, 0], [-1.2, 1.8, 0]]) for x in r]
    out = evaluate(model, trimers)
    forces = out["forces"].reshape(len(r), 3, 3)
    _assert_continuous(r, out["energy"], rc, "trimer energy at the bond-graph cutoff", order=2)
    _assert_continuous(r, forces, rc, "trimer forces at the bond-graph cutoff", order=1)


@needs_chgnet
def test_chgnet_lora_fine_tuning_lowers_the_force_error():
    """Low-rank adapters on CHGNet's linear layers start as the pretrained model, a few steps
    on EMT forces lower the force error, and the merged weights form a plain CHGNetPotential
    computing the same."""
    model = chgnet_factory([29, 79])
    frames = _emt_frames(4, 2)
    graph = graph_of(frames, model.cutoff, torch.float32)
    target = torch.tensor(np.concatenate([a.get_forces() for a in frames]), dtype=torch.float32)
    before = model.eval()(graph)["forces"]
    names = add_lora(model, rank=4, alpha=8.0)
    assert {n.split(".", 1)[0] for n in names} == {"interactions", "readout"}
    assert torch.equal(model.eval()(graph)["forces"], before), "adapters must start at zero"
    set_trainable(model, "lora")
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(6):
        optimizer.zero_grad()
        loss = ((model(graph)["forces"] - target) ** 2).mean()
        loss.backward()
        optimizer.step()
    after = model.eval()(graph)["forces"]
    error = [float((f - target).abs().mean()) for f in (before, after)]
    assert error[1] < 0.8 * error[0], f"force MAE {error[0]:.4f} -> {error[1]:.4f} eV/Å"
    merged = chgnet_factory([29, 79])
    merged.load_state_dict(merge_lora_state(model.state_dict()))
    assert_close(merged.eval()(graph)["forces"].numpy(), after.numpy(), "merged LoRA", 1e-5)


def test_chgnet_needs_a_full_neighbour_list():
    """Edges lacking their reverse are refused with an error saying why."""
    graph = graph_of([copper_cell()], 6.0, torch.float64)
    with pytest.raises(ValueError, match="full neighbour list"):
        undirected_bonds(graph.edge_index[:, 1:], graph.edges["shifts"][1:], graph.num_nodes)


@pytest.mark.parametrize(
    "factory",
    [
        pytest.param(sevennet_factory, marks=needs_sevenn, id="sevennet"),
        pytest.param(chgnet_factory, marks=needs_chgnet, id="chgnet"),
    ],
)
def test_pairs_beyond_the_cutoff_are_ignored(factory):
    """A graph built with a larger radius (as MD neighbour lists with a skin are) gives the
    same energies and forces: the adapters drop pairs beyond the model's cutoff, which their
    radial functions would not."""
    model = factory(ELEMENTS).double().eval()
    images = [alloy_cell(), copper_cell()]
    exact = model(graph_of(images, model.cutoff))
    wide = model(graph_of(images, model.cutoff + 1.0))
    assert_close(wide["energy"].numpy(), exact["energy"].numpy(), "energy, wider graph", 1e-12)
    assert_close(wide["forces"].numpy(), exact["forces"].numpy(), "forces, wider graph", 1e-12)
