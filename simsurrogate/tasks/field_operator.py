"""Field operators: learn a map between fields on grids (FNO paper's Darcy, Burgers, NS)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch import Tensor

from simsurrogate.checkpoint import KEY, make_metadata
from simsurrogate.models.base import SurrogateModel
from simsurrogate.models.normalization import Normalizer
from simsurrogate.models.operators.stepping import check_mode, unroll
from simsurrogate.tasks.losses import relative_h1, relative_l2, vrmse

#: loss name -> (logged metric name, function)
LOSSES = {"l2": ("rel_l2", relative_l2), "h1": ("rel_h1", relative_h1), "vrmse": ("vrmse", vrmse)}


@contextlib.contextmanager
def _statistics_frozen(model: torch.nn.Module) -> Iterator[None]:
    """Stop the model's input normalisers from accumulating (predicted inputs are not data)."""
    norms = [m for m in model.modules() if isinstance(m, Normalizer) and m.training]
    for m in norms:
        m.train(False)
    try:
        yield
    finally:
        for m in norms:
            m.train(True)


class FieldOperatorTask(L.LightningModule):
    """Train an operator x (B, C_in, *spatial) -> y (B, C_out, *spatial) with relative losses.

    Args:
        model: the operator (e.g. :class:`~simsurrogate.models.operators.FNO`).
        lr, weight_decay: Adam settings (FNO paper: 1e-3, 1e-4).
        loss: "l2" (relative L2, the FNO paper's metric), "h1" (relative H1) or "vrmse"
            (The Well's variance-scaled RMSE).
        scheduler_step, scheduler_gamma: multiply the learning rate by ``gamma`` every
            ``step`` epochs (FNO paper: 100 and 0.5 over 500 epochs).
        mode: how the model covers the target window (see
            :mod:`simsurrogate.models.operators.stepping`): "step", one call maps x to y;
            "autoregressive", x holds H = in_channels / out_channels snapshots of the state,
            each call predicts the next one, which is fed back, and the h = C_out(y) /
            out_channels target steps are unrolled with gradients through every step
            (FNO-2D on Navier–Stokes); "space_time", one call of a model over (*spatial, t)
            predicts all h steps from the history broadcast in time (FNO-3D). Both need the
            same input and target fields and windows with ``target_offset=1``.

    Relative L2, relative H1 and VRMSE are all logged for training, validation and test, on
    the whole target window: with h steps, ``rel_l2`` is ||pred - y|| / ||y|| over all h
    steps together (the FNO paper's Navier–Stokes number for h = 40). The training loss in
    the autoregressive and space-time modes is the mean over the h steps of the per-step
    loss (the FNO paper's FNO-2D training sums them).
    """

    def __init__(
        self,
        model: SurrogateModel,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        loss: str = "l2",
        scheduler_step: int = 100,
        scheduler_gamma: float = 0.5,
        mode: str = "step",
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {loss!r}")
        check_mode(mode)
        self.model = model
        self.lr, self.weight_decay, self.loss = lr, weight_decay, loss
        self.scheduler_step, self.scheduler_gamma = scheduler_step, scheduler_gamma
        self.mode = mode
        if mode != "step":
            c_in, c_out = model.config["in_channels"], model.config["out_channels"]
            if c_in % c_out:
                raise ValueError(
                    f"{mode} mode feeds predictions back as inputs: in_channels ({c_in}) must "
                    f"be a whole number of snapshots of out_channels ({c_out})"
                )
            self.history, self.state_channels = c_in // c_out, c_out

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None)
        if self.mode == "step" or not hasattr(dm, "input_fields"):
            return
        if list(dm.input_fields) != list(dm.target_fields) or dm.window["target_offset"] != 1:
            raise ValueError(
                f"{self.mode} mode feeds predictions back as inputs: the data need the same "
                f"input and target fields and target_offset 1, got {list(dm.input_fields)} -> "
                f"{list(dm.target_fields)} with target_offset {dm.window['target_offset']}"
            )

    def predict_window(self, x: Tensor, steps: int) -> Tensor:
        """The model's prediction of ``steps`` steps after ``x``, (B, steps * C, *spatial).

        In "step" mode the model's output as it is. In training, the model's input
        normalisers accumulate statistics from the given history only, not from predictions.
        """
        if self.mode == "step":
            return self.model(x)
        preds = []
        with contextlib.ExitStack() as frozen:
            for pred in unroll(self.model, x, steps, self.mode, self.history):
                preds.append(pred)
                if len(preds) == 1:  # the next model call sees predictions
                    frozen.enter_context(_statistics_frozen(self.model))
        return torch.cat(preds, dim=1)

    def _step(self, stage: str, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        c = self.state_channels if self.mode != "step" else y.shape[1]
        if y.shape[1] % c:
            raise ValueError(
                f"the target's {y.shape[1]} channels are not whole steps of the model's "
                f"{c} output channels"
            )
        steps = y.shape[1] // c
        observe = getattr(self.model, "observe_targets", None)
        if stage == "train" and observe is not None:
            # models that normalise their outputs learn the targets' statistics, step by step
            observe(y.unflatten(1, (steps, c)).flatten(0, 1))
        pred = self.predict_window(x, steps)
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
        if self.mode == "step":
            return metrics[self.loss][1]
        fn = LOSSES[self.loss][1]
        return torch.stack(
            [fn(p, t) for p, t in zip(pred.split(c, 1), y.split(c, 1), strict=True)]
        ).mean()

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
        extra: dict[str, Any] = {"mode": self.mode}
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "input_fields"):
            extra |= {
                "input_fields": list(dm.input_fields),
                "target_fields": list(dm.target_fields),
                "window": dict(dm.window),
            }
        checkpoint[KEY] = make_metadata(self.model, type(self).__name__, extra)
