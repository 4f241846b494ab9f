"""MeshGraphNet, its data module and task: wiring, invariances, normalisers, learning."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from conftest import rectangle_mesh

from simsurrogate import load
from simsurrogate.data.errors import DataError
from simsurrogate.data.mesh_dynamics import MeshDataModule, MeshSteps, mesh_graph
from simsurrogate.data.node_types import NodeType
from simsurrogate.graph import Graph
from simsurrogate.models import MeshGraphNet
from simsurrogate.tasks import MeshDynamicsTask


def _graph(seed: int = 0) -> Graph:
    pos, cells, node_type = rectangle_mesh()
    rng = np.random.default_rng(seed)
    return mesh_graph(pos, node_type, {"velocity": rng.normal(size=(len(pos), 2))}, cells=cells)


def _small(**kw) -> MeshGraphNet:
    return MeshGraphNet(latent=16, n_message_passing=3, **kw)


def test_paper_size_has_the_published_parameter_count() -> None:
    # 15 steps, latent 128, 2 hidden layers: the size of PhysicsNeMo's default MeshGraphNet
    model = MeshGraphNet()
    assert sum(p.numel() for p in model.parameters()) == 2_333_059


def test_concat_trick_computes_the_same_function() -> None:
    torch.manual_seed(0)
    a, b = _small(concat_trick=True), _small(concat_trick=False)
    b.load_state_dict(a.state_dict())
    g = _graph()
    torch.testing.assert_close(a(g), b(g), rtol=1e-5, atol=1e-5)


def test_activation_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    a, b = _small(), _small(checkpoint_activations=True)
    b.load_state_dict(a.state_dict())
    a.train(), b.train()
    g = _graph()
    for m in (a, b):
        m(g).pow(2).sum().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_outputs_are_translation_invariant_and_permutation_equivariant() -> None:
    torch.manual_seed(0)
    model = _small().eval()
    g = _graph()
    out = model(g)
    shifted = Graph(
        nodes={**g.nodes, "mesh_pos": g.nodes["mesh_pos"] + torch.tensor([3.0, -2.0])},
        edge_index=g.edge_index,
    )
    torch.testing.assert_close(model(shifted), out, rtol=1e-4, atol=1e-5)
    perm = torch.randperm(g.num_nodes)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(len(perm))
    permuted = Graph(nodes={k: v[perm] for k, v in g.nodes.items()}, edge_index=inv[g.edge_index])
    torch.testing.assert_close(model(permuted), out[perm], rtol=1e-4, atol=1e-5)


def test_batched_graphs_give_the_same_outputs_as_single_ones() -> None:
    torch.manual_seed(0)
    model = _small().eval()
    g1, g2 = _graph(1), _graph(2)
    both = model(Graph.batch([g1, g2]))
    torch.testing.assert_close(both, torch.cat([model(g1), model(g2)]), rtol=1e-5, atol=1e-5)


def test_loss_ignores_boundary_held_nodes(mesh_dynamics_files: dict[str, Path]) -> None:
    torch.manual_seed(0)
    task = MeshDynamicsTask(_small(), noise_std=0.0)
    task.log = lambda *a, **k: None  # no trainer attached
    g = MeshSteps(mesh_dynamics_files["train"], ["velocity", "pressure"])[3]
    base = task._step("val", g)
    wall = g.nodes["node_type"] == NodeType.WALL_BOUNDARY
    nodes = dict(g.nodes)
    nodes["next_velocity"] = torch.where(wall[:, None], 100.0, g.nodes["next_velocity"])
    moved = task._step("val", Graph(nodes=nodes, edge_index=g.edge_index))
    torch.testing.assert_close(moved, base)
    normal = g.nodes["node_type"] == NodeType.NORMAL
    nodes["next_velocity"] = torch.where(normal[:, None], 100.0, g.nodes["next_velocity"])
    assert task._step("val", Graph(nodes=nodes, edge_index=g.edge_index)) > base * 10


def test_training_noise_is_fresh_each_step_and_only_on_normal_nodes(
    mesh_dynamics_files: dict[str, Path],
) -> None:
    task = MeshDynamicsTask(_small(), noise_std=0.1)
    g = MeshSteps(mesh_dynamics_files["train"], ["velocity", "pressure"])[0]
    a, b = task._noisy(g), task._noisy(g)
    diff_a = a.nodes["velocity"] - g.nodes["velocity"]
    normal = g.nodes["node_type"] == NodeType.NORMAL
    assert diff_a[~normal].abs().max() == 0
    assert 0.05 < diff_a[normal].std() < 0.2
    assert not torch.equal(a.nodes["velocity"], b.nodes["velocity"])


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fit_learns_one_step_and_checkpoint_rebuilds_it(
    mesh_dynamics_files: dict[str, Path], tmp_path: Path, precision: str
) -> None:
    """Also in mixed precision (bf16 autocast, float32 weights), which the recipes offer as
    ``--trainer.precision bf16-mixed``; the rebuilt model predicts in float32."""
    L.seed_everything(0)
    model = MeshGraphNet(latent=32, n_message_passing=2)
    task = MeshDynamicsTask(model, lr=3e-3, lr_final=3e-4, lr_decay_steps=300, noise_std=0.0)
    dm = MeshDataModule(
        str(mesh_dynamics_files["train"]),
        str(mesh_dynamics_files["valid"]),
        str(mesh_dynamics_files["test"]),
        batch_size=4,
    )
    trainer = L.Trainer(
        max_steps=300,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        check_val_every_n_epoch=100,
        precision=precision,
    )
    trainer.fit(task, dm)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    metrics = trainer.validate(task, dm, verbose=False)[0]
    # the toy flow's one-step velocity change has RMS ~0.05; a model that learned nothing
    # (predicts no change) scores that, a trained one far less
    assert metrics["val/rmse_velocity"] < 0.01, metrics
    assert model.node_normalizer.count > 0 and model.output_normalizer.count > 0

    rebuilt = load(ckpt)
    g = dm.dataset("test")[5]
    pred, again = task.model.predict(g), rebuilt.predict(g)
    for name in ("velocity", "pressure"):
        torch.testing.assert_close(again[name], pred[name])


def test_recipe_naming_a_missing_field_is_refused(mesh_dynamics_files: dict[str, Path]) -> None:
    with pytest.raises(DataError, match=r"fields \['temperature'\]"):
        MeshSteps(mesh_dynamics_files["train"], ["velocity", "temperature"])


def test_model_needing_a_field_the_data_module_does_not_read_is_refused(
    mesh_dynamics_files: dict[str, Path], tmp_path: Path
) -> None:
    task = MeshDynamicsTask(_small(output_fields={"density": 1}))
    dm = MeshDataModule(str(mesh_dynamics_files["train"]), fields=["velocity", "pressure"])
    trainer = L.Trainer(max_steps=1, logger=False, default_root_dir=tmp_path)
    with pytest.raises(DataError, match="density"):
        trainer.fit(task, dm)


def test_unknown_output_weight_is_refused() -> None:
    with pytest.raises(ValueError, match="temperature"):
        MeshDynamicsTask(_small(), output_weights={"temperature": 2.0})
