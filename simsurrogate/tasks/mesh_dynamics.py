"""Mesh dynamics: learn one time step of a field on a mesh (MeshGraphNets ``cfd``)."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from torch import Tensor

from simsurrogate.checkpoint import KEY, make_metadata
from simsurrogate.data.errors import DataError
from simsurrogate.data.node_types import NodeType
from simsurrogate.graph import Graph
from simsurrogate.models.meshgraphnet import MeshGraphNet


class MeshDynamicsTask(L.LightningModule):
    """Train a :class:`MeshGraphNet` on (state t, fields t + 1) graphs.

    Batches come from :class:`~simsurrogate.data.mesh_dynamics.MeshDataModule`: nodes hold
    the fields at step t and ``next_<field>`` at step t + 1. Each training step adds fresh
    Gaussian noise (std ``noise_std``, physical units) to the velocity of normal nodes only;
    the target velocity change is taken from the noisy velocity, so the model learns to undo
    its own drift in rollout. The loss is the mean squared error of the normalised outputs
    over normal and outflow nodes; boundary-held nodes are not scored.

    Args:
        model: the simulator.
        lr: Adam learning rate at the start (MeshGraphNets: 1e-4).
        lr_final: learning rate reached by exponential decay after ``lr_decay_steps``
            optimizer steps (MeshGraphNets: 1e-6 after 5e6 steps), then held.
        lr_decay_steps: steps of the decay.
        noise_std: velocity noise (MeshGraphNets CylinderFlow: 0.02).
        output_weights: loss weight per output field (velocity change and each output
            field); missing names weigh 1.

    Logged: ``{train,val,test}/loss`` and one-step RMSE per field in physical units,
    ``val/rmse_velocity`` etc.
    """

    def __init__(
        self,
        model: MeshGraphNet,
        lr: float = 1e-4,
        lr_final: float = 1e-6,
        lr_decay_steps: int = 5_000_000,
        noise_std: float = 0.02,
        output_weights: dict[str, float] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.lr, self.lr_final, self.lr_decay_steps = lr, lr_final, lr_decay_steps
        self.noise_std = noise_std
        self.output_weights = dict(output_weights or {})
        unknown = set(self.output_weights) - set(model.fields)
        if unknown:
            raise ValueError(
                f"output_weights names {sorted(unknown)}, not fields of the model {model.fields}"
            )
        weights = [self.output_weights.get(model.velocity_field, 1.0)] * model.dim
        for name, size in model.output_fields.items():
            weights += [self.output_weights.get(name, 1.0)] * size
        self.register_buffer("_weights", torch.tensor(weights), persistent=False)

    def setup(self, stage: str) -> None:
        """Check the data module reads every field the model needs, before any training."""
        dm = getattr(self.trainer, "datamodule", None)
        fields = getattr(dm, "fields", None)
        if fields is not None:
            missing = [f for f in self.model.fields if f not in fields]
            if missing:
                raise DataError(
                    f"the model needs fields {missing} that the data module does not read "
                    f"(data.fields = {fields})"
                )

    def forward(self, graph: Graph) -> dict[str, Tensor]:
        """Next-state fields of a batch in physical units (no boundary condition applied)."""
        return self.model.predict(graph)

    def _noisy(self, graph: Graph) -> Graph:
        """Copy of ``graph`` whose normal-node velocities carry fresh noise."""
        name = self.model.velocity_field
        vel = graph.nodes[name]
        normal = (graph.nodes["node_type"] == int(NodeType.NORMAL)).unsqueeze(-1)
        noise = torch.randn_like(vel) * self.noise_std * normal
        nodes = {**graph.nodes, name: vel + noise}
        return Graph(nodes=nodes, edge_index=graph.edge_index, n_nodes=graph.n_nodes)

    def _step(self, stage: str, graph: Graph) -> Tensor:
        train = stage == "train"
        if train and self.noise_std > 0:
            graph = self._noisy(graph)
        nxt = {f: graph.nodes[f"next_{f}"] for f in self.model.fields}
        raw = self.model.raw_targets(graph, nxt)
        target = self.model.normalize_targets(raw, accumulate=train)
        out = self.model(graph)
        mask = self.model.loss_mask(graph.nodes["node_type"])
        err = ((out - target) ** 2 * self._weights)[mask]
        loss = err.sum(-1).mean()
        batch_size = graph.num_graphs
        self.log(
            f"{stage}/loss",
            loss,
            batch_size=batch_size,
            prog_bar=True,
            on_step=train,
            on_epoch=not train,
            sync_dist=not train,
        )
        if not train:
            pred = self.model.decode(graph, out)
            for name in self.model.fields:
                diff = (pred[name] - nxt[name].reshape(pred[name].shape))[mask]
                rmse = diff.pow(2).mean().sqrt()  # over nodes and components, as MGN
                self.log(
                    f"{stage}/rmse_{name}",
                    rmse,
                    batch_size=batch_size,
                    on_step=False,
                    on_epoch=True,
                    sync_dist=True,
                )
        return loss

    def training_step(self, graph: Graph, batch_idx: int) -> Tensor:
        return self._step("train", graph)

    def validation_step(self, graph: Graph, batch_idx: int) -> None:
        self._step("val", graph)

    def test_step(self, graph: Graph, batch_idx: int) -> None:
        self._step("test", graph)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.parameters(), lr=self.lr)
        rate = math.log(self.lr_final / self.lr) / max(self.lr_decay_steps, 1)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: math.exp(rate * min(step, self.lr_decay_steps))
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[KEY] = make_metadata(self.model, type(self).__name__)
