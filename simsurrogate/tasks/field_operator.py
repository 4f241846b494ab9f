"""Field operators: learn a map between fields on grids (FNO paper's Darcy, Burgers, NS)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from simsurrogate.checkpoint import KEY, make_metadata
from simsurrogate.models.base import SurrogateModel
from simsurrogate.tasks.losses import relative_h1, relative_l2, vrmse

#: loss name -> (logged metric name, function)
LOSSES = {"l2": ("rel_l2", relative_l2), "h1": ("rel_h1", relative_h1), "vrmse": ("vrmse", vrmse)}


class FieldOperatorTask(L.LightningModule):
    """Train an operator x (B, C_in, *spatial) -> y (B, C_out, *spatial) with relative losses.

    Args:
        model: the operator (e.g. :class:`~simsurrogate.models.operators.FNO`).
        lr, weight_decay: Adam settings (FNO paper: 1e-3, 1e-4).
        loss: "l2" (relative L2, the FNO paper's metric), "h1" (relative H1) or "vrmse"
            (The Well's variance-scaled RMSE).
        scheduler_step, scheduler_gamma: multiply the learning rate by ``gamma`` every
            ``step`` epochs (FNO paper: 100 and 0.5 over 500 epochs).

    Relative L2, relative H1 and VRMSE are all logged for training, validation and test.
    """

    def __init__(
        self,
        model: SurrogateModel,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        loss: str = "l2",
        scheduler_step: int = 100,
        scheduler_gamma: float = 0.5,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        self.model = model
        self.lr, self.weight_decay, self.loss = lr, weight_decay, loss
        self.scheduler_step, self.scheduler_gamma = scheduler_step, scheduler_gamma

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _step(self, stage: str, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        observe = getattr(self.model, "observe_targets", None)
        if stage == "train" and observe is not None:
            observe(y)  # models that normalise their outputs learn the targets' statistics
        pred = self.model(x)
        if pred.shape != y.shape:
            raise ValueError(
                f"model output {tuple(pred.shape)} does not match the target {tuple(y.shape)}: "
                "check out_channels against the recipe's target fields and horizon"
            )
        metrics = {key: (metric, fn(pred, y)) for key, (metric, fn) in LOSSES.items()}
        for key, (metric, value) in metrics.items():
            self.log(
                f"{stage}/{metric}",
                value,
                batch_size=len(x),
                prog_bar=key == self.loss,
                on_step=False,
                on_epoch=True,
                sync_dist=stage != "train",
            )
        return metrics[self.loss][1]

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step("train", batch)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step("val", batch)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step("test", batch)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.StepLR(opt, self.scheduler_step, self.scheduler_gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        extra: dict[str, Any] = {}
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "input_fields"):
            extra = {
                "input_fields": list(dm.input_fields),
                "target_fields": list(dm.target_fields),
                "window": dict(dm.window),
            }
        checkpoint[KEY] = make_metadata(self.model, type(self).__name__, extra)
