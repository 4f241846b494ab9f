"""Run by test_ddp.py: a 2-process DDP fit on CPU (gloo); every rank saves its final weights.

Each rank seeds its initial weights differently, so identical weights at the end show that
DDP broadcast the starting point and averaged every gradient. With ``gnn`` the model also has
an online input normalizer, whose statistics must agree across ranks too.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import lightning as L
import torch

from simsurrogate.data.nbody import NBodyDataModule
from simsurrogate.models import EGNN, GNN
from simsurrogate.tasks import ParticleDynamicsTask


class SaveWeights(L.Callback):
    """Save this rank's model weights at the end of the fit."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        torch.save(pl_module.model.state_dict(), self.out / f"rank{trainer.global_rank}.pt")


def run(data: Path, out: Path, model: str) -> None:
    torch.manual_seed(100 + int(os.environ.get("LOCAL_RANK", "0")))
    if model == "gnn":
        net = GNN(hidden=16, n_layers=2, normalize_inputs=True)
    else:
        net = EGNN(hidden=16, n_layers=2)
    task = ParticleDynamicsTask(net, lr=1e-3)
    dm = NBodyDataModule(root=str(data), batch_size=8, max_train_samples=32)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[SaveWeights(out)],
    )
    trainer.fit(task, datamodule=dm)


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
