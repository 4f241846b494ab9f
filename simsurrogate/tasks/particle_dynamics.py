"""Particle dynamics: predict particle positions (and velocities) a fixed horizon ahead."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from simsurrogate.checkpoint import KEY, make_metadata
from simsurrogate.graph import Graph
from simsurrogate.models.base import SurrogateModel


class ParticleDynamicsTask(L.LightningModule):
    """Train a model mapping a particle state to the state ``horizon`` steps later.

    Batches are :class:`~simsurrogate.graph.Graph` objects with node tensors ``pos``, ``vel``,
    ``charge`` and targets ``target_pos`` (and ``target_vel``). The loss is the mean squared
    error of positions over all particles and coordinates (the EGNN paper's metric), plus
    ``velocity_weight`` times that of velocities when the model predicts them.

    Args:
        model: the network, a :class:`~simsurrogate.models.base.SurrogateModel`.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        lr_schedule: "constant" (the paper) or "cosine" (anneal to 0 over ``max_epochs``).
        velocity_weight: weight of the velocity MSE for models with ``predict_velocity``.
    """

    def __init__(
        self,
        model: SurrogateModel,
        lr: float = 5e-4,
        weight_decay: float = 1e-12,
        lr_schedule: str = "constant",
        velocity_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_schedule = lr_schedule
        self.velocity_weight = velocity_weight

    def forward(self, graph: Graph) -> dict[str, Tensor]:
        """Model prediction for a batch."""
        return self.model(graph)

    def _losses(self, graph: Graph) -> dict[str, Tensor]:
        pred = self.model(graph)
        out = {"mse": torch.mean((pred["pos"] - graph.nodes["target_pos"]) ** 2)}
        loss = out["mse"]
        if "vel" in pred:
            out["vel_mse"] = torch.mean((pred["vel"] - graph.nodes["target_vel"]) ** 2)
            loss = loss + self.velocity_weight * out["vel_mse"]
        out["loss"] = loss
        return out

    def _log_all(self, stage: str, losses: dict[str, Tensor], graph: Graph) -> None:
        for name, value in losses.items():
            if stage != "train" and name == "loss":
                continue
            self.log(
                f"{stage}/{name}",
                value,
                batch_size=graph.num_graphs,
                prog_bar=name == "mse",
                on_step=False,
                on_epoch=True,
                sync_dist=stage != "train",
            )

    def training_step(self, graph: Graph, batch_idx: int) -> Tensor:
        losses = self._losses(graph)
        self._log_all("train", losses, graph)
        return losses["loss"]

    def validation_step(self, graph: Graph, batch_idx: int) -> None:
        self._log_all("val", self._losses(graph), graph)

    def test_step(self, graph: Graph, batch_idx: int) -> None:
        self._log_all("test", self._losses(graph), graph)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        if self.lr_schedule == "constant":
            return opt
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra = {}
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "frame_in") and hasattr(dm, "frame_out"):
            extra["frame_stride"] = int(dm.frame_out - dm.frame_in)
        checkpoint[KEY] = make_metadata(self.model, type(self).__name__, extra)
