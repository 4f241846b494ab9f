"""Mesh dynamics: learn one time step of a field on a mesh (MeshGraphNets ``cfd``)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from simsurrogate.checkpoint import KEY, CheckpointError, load, make_metadata, read_checkpoint
from simsurrogate.data.errors import DataError
from simsurrogate.data.node_types import NodeType, hold_boundary
from simsurrogate.graph import Graph
from simsurrogate.models.meshgraphnet import MeshGraphNet
from simsurrogate.tasks.finetune import file_sha256


class MeshDynamicsTask(L.LightningModule):
    """Train a :class:`MeshGraphNet` on (state t, fields t + 1) graphs.

    Batches come from :class:`~simsurrogate.data.mesh_dynamics.MeshDataModule`: nodes hold
    the fields at step t and ``next_<field>`` at step t + 1. Each training step adds fresh
    Gaussian noise (std ``noise_std``, physical units) to the velocity of normal nodes only;
    the target velocity change is taken from the noisy velocity, so the model learns to undo
    its own drift in rollout. The loss is the mean squared error of the normalised outputs
    over normal and outflow nodes; boundary-held nodes are not scored.

    Pushforward training (``unroll_steps`` K > 0; Brandstetter, Worrall & Welling, "Message
    passing neural PDE solvers", ICLR 2022): each training step draws k uniformly from
    0..K, as the paper's training loop does (one k per batch), rolls the model k steps
    forward from the true state at t without gradient, in its prediction path
    (``model.predict``, eval mode, so the online normalisers gather nothing) and with the
    boundary nodes held at the true values of each step exactly as the rollout engine holds
    them (:func:`~simsurrogate.data.node_types.hold_boundary`), then takes the usual noisy
    one-step loss from the state it reached against the truth at t + k + 1. The model so
    learns to correct the errors of its own rollouts, not only the Gaussian noise. The
    online normalisers gather statistics from the k = 0 batches only, so the model's own
    states never shift them. The paper also grows K by one per epoch up to its maximum (a
    curriculum); here K is fixed, meant for fine-tuning a model already trained one-step.
    The data module must carry the windows (``MeshDataModule(unroll_steps >= K)``);
    validation and test stay one-step.

    Args:
        model: the simulator.
        lr: Adam learning rate at the start (MeshGraphNets: 1e-4).
        lr_final: learning rate reached by exponential decay after ``lr_decay_steps``
            optimizer steps (MeshGraphNets: 1e-6 after 5e6 steps), then held.
        lr_decay_steps: steps of the decay.
        noise_std: velocity noise (MeshGraphNets CylinderFlow: 0.02).
        output_weights: loss weight per output field (velocity change and each output
            field); missing names weigh 1.
        unroll_steps: K, the most model steps unrolled without gradient before the scored
            step (0: plain one-step training, as before).
        init_checkpoint: start from this checkpoint's weights and normaliser statistics
            (:func:`simsurrogate.checkpoint.load`), with a fresh optimizer, learning-rate
            schedule and step counter: fine-tuning. Its model must have the constructor
            arguments of ``model`` (an error names the ones that differ). Checkpoints
            written by this task record it under ``provenance.initialised_from``.

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
        unroll_steps: int = 0,
        init_checkpoint: str | None = None,
    ) -> None:
        super().__init__()
        if unroll_steps < 0:
            raise ValueError(f"unroll_steps must be >= 0, got {unroll_steps}")
        self.model = model
        self.unroll_steps = int(unroll_steps)
        self._initialised_from: dict[str, Any] | None = None
        if init_checkpoint is not None:
            self._init_from(init_checkpoint)
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

    def _init_from(self, path: str | Path) -> None:
        """Copy weights and normaliser statistics of checkpoint ``path`` into ``self.model``."""
        meta = read_checkpoint(path)[KEY]
        theirs = json.loads(json.dumps(meta.get("model", {})))
        mine = json.loads(json.dumps(self.model.spec()))
        if theirs != mine:
            if theirs.get("class") != mine["class"]:
                what = f"holds a {theirs.get('class')}, the recipe's model is a {mine['class']}"
            else:
                a, b = theirs.get("args", {}), mine["args"]
                diff = {
                    k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
                }
                what = f"differs from the recipe's model in (checkpoint, recipe): {diff}"
            raise CheckpointError(f"init_checkpoint {path} {what}")
        pretrained = load(path)
        self.model.load_state_dict(pretrained.state_dict())
        self._initialised_from = {
            "checkpoint": str(path),
            "sha256": file_sha256(path),
            "step": meta.get("provenance", {}).get("step"),
        }

    def setup(self, stage: str) -> None:
        """Check the data module reads every field the model needs and carries the windows
        the pushforward unroll needs, before any training."""
        dm = getattr(self.trainer, "datamodule", None)
        fields = getattr(dm, "fields", None)
        if fields is not None:
            missing = [f for f in self.model.fields if f not in fields]
            if missing:
                raise DataError(
                    f"the model needs fields {missing} that the data module does not read "
                    f"(data.fields = {fields})"
                )
        windows = getattr(dm, "unroll_steps", None)
        if stage == "fit" and self.unroll_steps > 0 and windows is not None:
            if windows < self.unroll_steps:
                raise DataError(self._window_error(windows))

    def _window_error(self, windows: int) -> str:
        return (
            f"the task unrolls up to {self.unroll_steps} steps (model.unroll_steps) but the "
            f"data module's training samples carry windows for {windows} "
            f"(data.unroll_steps = {windows}); set data.unroll_steps >= {self.unroll_steps}"
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

    def _pushforward(self, graph: Graph, k: int) -> Graph:
        """The graph of the model's own state k steps after the batch's true state.

        The model runs k times without gradient in its prediction path; after each step the
        boundary nodes are held at that step's true velocity (``future_<velocity>``). The
        returned graph holds the reached velocity (and the last predicted output fields) and
        as ``next_<field>`` the truth at step t + k + 1 (``future_<field>[:, k]``)."""
        names = self.model.fields
        vel = self.model.velocity_field
        future = graph.nodes.get(f"future_{vel}")
        windows = 0 if future is None else future.shape[1] - 1
        if windows < k:
            raise DataError(self._window_error(windows))
        if k == 0:
            return graph
        node_type = graph.nodes["node_type"]
        nodes = dict(graph.nodes)
        with torch.no_grad():
            for j in range(k):
                pred = self.model.predict(dataclasses.replace(graph, nodes=nodes))
                nodes[vel] = hold_boundary(pred[vel], future[:, j], node_type)
                for name in self.model.output_fields:
                    nodes[name] = pred[name].reshape(nodes[name].shape)
        for name in names:
            nodes[f"next_{name}"] = graph.nodes[f"future_{name}"][:, k]
        return dataclasses.replace(graph, nodes=nodes)

    def _step(self, stage: str, graph: Graph, accumulate: bool = True) -> Tensor:
        """Loss of one batch; in training the normalisers gather statistics if
        ``accumulate``."""
        train = stage == "train"
        if train and self.noise_std > 0:
            graph = self._noisy(graph)
        nxt = {f: graph.nodes[f"next_{f}"] for f in self.model.fields}
        raw = self.model.raw_targets(graph, nxt)
        target = self.model.normalize_targets(raw, accumulate=train and accumulate)
        out = self.model(graph, accumulate=train and accumulate)
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
        k = 0
        if self.unroll_steps > 0:
            k = int(torch.randint(0, self.unroll_steps + 1, ()))
            graph = self._pushforward(graph, k)
        # the normalisers describe the data: a state the model rolled out does not feed them
        return self._step("train", graph, accumulate=k == 0)

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
        extra = None
        if self._initialised_from is not None:
            extra = {"provenance": {"initialised_from": self._initialised_from}}
        checkpoint[KEY] = make_metadata(self.model, type(self).__name__, extra)
