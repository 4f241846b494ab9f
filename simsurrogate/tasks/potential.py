"""Training interatomic potentials on energies, forces and stresses.

Loss (per batch of G structures with N atoms):
``w_E mean_g((E_g - E_g^ref)/N_g)^2 + w_F mean((F - F^ref)^2) + w_S mean((sigma - sigma^ref)^2)``
(energy per atom; forces over all components; stress over structures that carry one). Before
the first step of a fresh run the model's per-element reference energies are fitted by least
squares on the training energies and its output ``scale`` is set to the RMS of the training
forces, so the network learns an O(1) correction. An exponential moving average (EMA) of the
weights is what validation, test and the saved checkpoint use.

Fine-tuning a pretrained potential is data in the recipe: a ``finetune:`` block
(:class:`~simsurrogate.tasks.finetune.FineTune`) in place of ``model``, checked in ``setup``
before training starts; see :mod:`simsurrogate.tasks.finetune`.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from simsurrogate.checkpoint import KEY, make_metadata
from simsurrogate.data.errors import DataError
from simsurrogate.graph import Graph
from simsurrogate.models.potentials.base import (
    Potential,
    element_symbol,
    fit_reference_energies,
)
from simsurrogate.tasks.finetune import (
    FineTune,
    add_lora,
    check_cutoff,
    file_sha256,
    freezes_embedding,
    load_pretrained,
    merge_lora_state,
    param_groups,
    provenance,
    refit_reference_energies,
    set_trainable,
    with_elements,
)

__all__ = ["PotentialTask"]


def _normal_tensors(graph: Graph) -> Graph:
    """Copies of a batch's tensors usable by autograd (batches made under
    ``torch.inference_mode``, Lightning's default for evaluation, cannot be differentiated)."""
    if not any(t.is_inference() for t in (graph.edge_index, *graph.nodes.values())):
        return graph
    return Graph(
        nodes={k: v.clone() for k, v in graph.nodes.items()},
        edge_index=graph.edge_index.clone(),
        edges={k: v.clone() for k, v in graph.edges.items()},
        globals={k: v.clone() for k, v in graph.globals.items()},
        n_nodes=None if graph.n_nodes is None else graph.n_nodes.clone(),
        n_edges=None if graph.n_edges is None else graph.n_edges.clone(),
    )


class PotentialTask(L.LightningModule):
    """Fit a :class:`~simsurrogate.models.potentials.Potential` to labelled structures.

    Args:
        model: the potential (``None`` when ``finetune`` names a checkpoint to start from).
        energy_weight, force_weight, stress_weight: loss weights (0 switches a term off; a
            positive weight on a label the training file lacks is an error before training).
        lr, weight_decay: AdamW (amsgrad) settings.
        lr_schedule: "constant", "cosine" (to 1 % over ``max_epochs``) or "plateau" (halve
            when the validation loss stalls for ``patience`` epochs).
        patience: epochs without improvement before "plateau" lowers the rate.
        ema_decay: decay of the weight EMA per step (``None``: no EMA).
        reference_energies: "fit" (least squares on the training set before training) or
            "keep" (use the model's); default "fit". With ``finetune``, set
            ``finetune.reference_energies`` instead.
        scale: "force_rms" (set the output scale from the training forces) or "keep"; default
            "force_rms", and "keep" with ``finetune`` (the pretrained network's scale).
        finetune: start from a pretrained checkpoint and fine-tune it as this block says
            (:class:`~simsurrogate.tasks.finetune.FineTune`; a dict of its fields also works).
    """

    def __init__(
        self,
        model: Potential | None = None,
        energy_weight: float = 1.0,
        force_weight: float = 10.0,
        stress_weight: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "plateau",
        patience: int = 10,
        ema_decay: float | None = 0.99,
        reference_energies: str | None = None,
        scale: str | None = None,
        finetune: FineTune | None = None,
    ) -> None:
        super().__init__()
        self.finetune = FineTune(**finetune) if isinstance(finetune, dict) else finetune
        self._pretrained: dict[str, Any] = {}  # metadata and sha256 of the starting checkpoint
        self._added: list[int] = []  # elements added to the pretrained model
        self._prepared = False  # fine-tuning surgery done (in setup)
        if self.finetune is not None:
            if model is not None:
                raise ValueError(
                    "give either model or finetune.checkpoint, not both: a fine-tuned model is "
                    "rebuilt from its starting checkpoint"
                )
            if reference_energies is not None:
                raise ValueError(
                    "with finetune, set finetune.reference_energies (refit | keep) instead of "
                    "reference_energies"
                )
            if scale not in (None, "keep"):
                raise ValueError(
                    f"with finetune the pretrained network's output scale is kept; scale: "
                    f"{scale} would rescale what it learned"
                )
            model, meta = load_pretrained(self.finetune.checkpoint)
            self._pretrained = {"meta": meta, "sha256": file_sha256(self.finetune.checkpoint)}
            reference_energies, scale = "keep", "keep"
        reference_energies = reference_energies or "fit"
        scale = scale or "force_rms"
        if not isinstance(model, Potential):
            raise TypeError(
                "PotentialTask needs a Potential (model) or a checkpoint to fine-tune "
                f"(finetune.checkpoint), got {type(model).__name__}"
            )
        for name, value, allowed in (
            ("lr_schedule", lr_schedule, ("constant", "cosine", "plateau")),
            ("reference_energies", reference_energies, ("fit", "keep")),
            ("scale", scale, ("force_rms", "keep")),
        ):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if min(energy_weight, force_weight, stress_weight) < 0:
            raise ValueError("loss weights must be >= 0")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay}")
        self.model = model
        self.weights = {"energy": energy_weight, "forces": force_weight, "stress": stress_weight}
        self.lr, self.weight_decay = lr, weight_decay
        self.lr_schedule, self.patience = lr_schedule, patience
        self.ema_decay = ema_decay
        self.reference_energies = reference_energies
        self.scale_mode = scale
        self._ema: AveragedModel | None = None
        self._ema_state: dict[str, Tensor] | None = None  # EMA weights restored on resume
        self._ema_count = 1  # EMA updates so far, restored on resume
        self._raw: dict[str, Tensor] | None = None  # training weights while EMA ones are in
        self.metrics = torch.nn.ModuleDict(
            {
                stage: MetricCollection(
                    {
                        "energy_mae_per_atom": MeanAbsoluteError(),
                        "force_mae": MeanAbsoluteError(),
                        "force_rmse": MeanSquaredError(squared=False),
                        "stress_mae": MeanAbsoluteError(),
                    },
                    prefix=f"{stage}/",
                )
                for stage in ("val", "test")
            }
        )

    # ------------------------------------------------------------------ data checks / init
    def _datamodule(self) -> Any:
        return getattr(self.trainer, "datamodule", None) if self._trainer is not None else None

    def setup(self, stage: str) -> None:
        dm = self._datamodule()
        if dm is not None and not hasattr(dm, "dataset"):
            dm = None
        if self.finetune is not None and not self._prepared:
            if dm is not None:
                check_cutoff(dm.cutoff, self.model.cutoff, self.finetune.checkpoint)
            self._prepare_finetune(dm)
        if dm is None:
            return
        if dm.cutoff is not None and dm.cutoff < self.model.cutoff:
            raise ValueError(
                f"the data module's cutoff {dm.cutoff} Å is shorter than the model's "
                f"{self.model.cutoff} Å: neighbours would be missing"
            )
        dm.set_cutoff(self.model.cutoff)
        splits = {"fit": ("train", "valid"), "validate": ("valid",), "test": ("test",)}
        for split in splits.get(stage, ()):
            ds = dm.dataset(split)
            for label, weight in self.weights.items():
                if weight > 0 and label not in ds.labels:
                    raise DataError(
                        f"the recipe weights {label} by {weight} but the {split} file has no "
                        f"{label!r} (set {label.removesuffix('s')}_weight: 0 or add the labels)",
                        path=ds.path,
                        field=label,
                    )
            self._check_elements(ds)
        if stage == "fit" and getattr(dm, "paths", {}).get("replay") is not None:
            self._check_elements(dm.dataset("replay"), "replay file")

    def _check_elements(self, ds: Any, what: str = "") -> None:
        """Elements of ``ds`` the model lacks are an error naming them, the first frame
        holding one, and the file."""
        unknown = sorted(set(np.unique(ds.numbers).tolist()) - set(self.model.elements))
        if not unknown:
            return
        first = np.argmax(np.isin(ds.numbers, unknown))
        frame = int(np.searchsorted(ds.offsets, first, "right")) - 1
        names = ", ".join(element_symbol(z) for z in unknown)
        known = ", ".join(element_symbol(z) for z in self.model.elements)
        hint = ""
        if self.finetune is not None:
            hint = f"; they are missing from the checkpoint {self.finetune.checkpoint}"
            if not what:
                hint += " (finetune.new_elements: add extends the model with them)"
        raise DataError(
            f"{what + ': ' if what else ''}elements {names} (first in frame {frame}) are not "
            f"among the model's elements ({known}){hint}",
            path=ds.path,
            field="numbers",
        )

    def _prepare_finetune(self, dm: Any) -> None:
        """Model surgery a fine-tuning recipe asks for, done once before training (and before
        a resumed or tested checkpoint's weights are loaded, so they fit): add the data's new
        elements, wrap adapters, freeze what does not train."""
        ft = self.finetune
        n_old = self.model.num_elements
        if dm is not None and ft.new_elements == "add":
            found: set[int] = set()
            for split in ("train", "valid"):
                found |= set(np.unique(dm.dataset(split).numbers).tolist())
            self._added = sorted(found - set(self.model.elements))
            self.model = with_elements(self.model, self._added)
        if ft.trainable == "lora":
            add_lora(self.model, ft.lora_rank, ft.lora_alpha)
        set_trainable(self.model, ft.trainable, n_old if self._added else None)
        self._prepared = True

    def on_fit_start(self) -> None:
        dm = self._datamodule()
        fresh = self.trainer.ckpt_path is None
        if fresh and dm is not None and hasattr(dm, "train_frames"):
            self._init_from_data(dm.dataset("train"), dm.train_frames())
        if self.ema_decay is not None:
            self._ema = AveragedModel(
                self.model,
                multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay),
                use_buffers=False,
            )
            if self._ema_state is not None:
                self._ema.module.load_state_dict(self._ema_state)
                self._ema.n_averaged.fill_(self._ema_count)
                self._ema_state = None

    @torch.no_grad()
    def _init_from_data(self, ds: Any, frames: np.ndarray) -> None:
        """Reference energies and output scale from the training frames."""
        rows = np.concatenate([np.arange(ds.offsets[k], ds.offsets[k + 1]) for k in frames])
        ft = self.finetune
        if ft is not None and ft.reference_energies == "refit" and ds.energy is not None:
            refit_reference_energies(self.model, ds, frames)
        if self.reference_energies == "fit" and ds.energy is not None:
            ref = fit_reference_energies(
                ds.numbers[rows], ds.n_atoms[frames], ds.energy[frames], self.model.elements
            )
            self.model.set_reference_energies(ref)
        if self.scale_mode == "force_rms" and ds.forces is not None:
            rms = float(np.sqrt(np.mean(ds.forces[rows] ** 2)))
            if rms > 0:
                self.model.scale.fill_(rms)

    # ------------------------------------------------------------------ loss and metrics
    def forward(self, graph: Graph) -> dict[str, Tensor]:
        return self.model(graph, forces=True, stress=self.weights["stress"] > 0)

    def _needs_stress(self, graph: Graph) -> bool:
        return "stress" in graph.globals and bool(graph.globals["has_stress"].any())

    def _losses(self, graph: Graph, pred: dict[str, Tensor]) -> dict[str, Tensor]:
        n = graph._n_nodes().to(torch.float64)
        out: dict[str, Tensor] = {}
        loss = pred["energy"].new_zeros(())
        if "energy" in graph.globals:
            out["energy"] = torch.mean(((pred["energy"] - graph.globals["energy"]) / n) ** 2)
            loss = loss + self.weights["energy"] * out["energy"]
        if "forces" in graph.nodes:
            out["forces"] = torch.mean((pred["forces"] - graph.nodes["forces"]) ** 2)
            loss = loss + self.weights["forces"] * out["forces"]
        if "stress" in pred and self._needs_stress(graph):
            mask = graph.globals["has_stress"]
            diff = pred["stress"][mask] - graph.globals["stress"][mask]
            out["stress"] = torch.mean(diff**2)
            loss = loss + self.weights["stress"] * out["stress"]
        out["loss"] = loss
        return out

    def training_step(self, graph: Graph, batch_idx: int) -> Tensor:
        losses = self._losses(graph, self(graph))
        for name, value in losses.items():
            self.log(
                f"train/{name}", value.float(), batch_size=graph.num_graphs, prog_bar=name == "loss"
            )
        return losses["loss"].float()

    def _evaluate(self, stage: str, graph: Graph) -> None:
        with torch.inference_mode(False), torch.enable_grad():
            graph = _normal_tensors(graph)
            stress = self._needs_stress(graph)
            pred = self.model(graph, forces=True, stress=stress)
        losses = self._losses(graph, pred)
        self.log(
            f"{stage}/loss", losses["loss"].float(), batch_size=graph.num_graphs, sync_dist=True
        )
        metrics = self.metrics[stage]
        if "energy" in graph.globals:
            n = graph._n_nodes().to(torch.float64)
            metrics["energy_mae_per_atom"].update(
                (pred["energy"] / n).float(), (graph.globals["energy"] / n).float()
            )
        if "forces" in graph.nodes:
            metrics["force_mae"].update(pred["forces"], graph.nodes["forces"])
            metrics["force_rmse"].update(pred["forces"], graph.nodes["forces"])
        if stress:
            mask = graph.globals["has_stress"]
            metrics["stress_mae"].update(pred["stress"][mask], graph.globals["stress"][mask])

    def _log_metrics(self, stage: str) -> None:
        for name, metric in self.metrics[stage].items():
            if metric.update_count:
                self.log(f"{stage}/{name.removeprefix(f'{stage}/')}", metric.compute())
            metric.reset()

    def validation_step(self, graph: Graph, batch_idx: int) -> None:
        self._evaluate("val", graph)

    def test_step(self, graph: Graph, batch_idx: int) -> None:
        self._evaluate("test", graph)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")
        self._swap_out_ema()

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    # ------------------------------------------------------------------ EMA
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._ema is not None:
            self._ema.update_parameters(self.model)

    def _swap_in_ema(self) -> None:
        if self._ema is not None and self._raw is None:
            self._raw = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            self.model.load_state_dict(self._ema.module.state_dict())

    def _swap_out_ema(self) -> None:
        if self._raw is not None:
            self.model.load_state_dict(self._raw)
            self._raw = None

    def on_validation_epoch_start(self) -> None:
        self._swap_in_ema()

    def on_fit_end(self) -> None:
        """Leave the EMA weights in the model: they are the trained potential."""
        self._swap_out_ema()
        if self._ema is not None:
            self.model.load_state_dict(self._ema.module.state_dict())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the EMA weights as the model's (what ``checkpoint.load`` rebuilds) and the
        raw training weights beside them, so a resumed run continues both."""
        ft = self.finetune
        extra = None
        if ft is not None:
            meta, sha = self._pretrained["meta"], self._pretrained["sha256"]
            extra = {"provenance": provenance(ft, meta, sha, self._added)}
        checkpoint[KEY] = make_metadata(self.model, type(self).__name__, extra)
        state = checkpoint["state_dict"]
        if self._ema is not None:
            raw = self._raw if self._raw is not None else self.model.state_dict()
            checkpoint["raw_model_state"] = {k: v.detach().clone() for k, v in raw.items()}
            for k, v in self._ema.module.state_dict().items():
                state[f"model.{k}"] = v.detach().clone()
        if ft is not None and ft.trainable == "lora":
            # ship an ordinary model (adapters merged); keep the adapters to resume from
            adapted = {k: v for k, v in state.items() if k.startswith("model.")}
            checkpoint["adapter_state"] = adapted
            for k in adapted:
                del state[k]
            state.update(merge_lora_state(adapted))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        adapted = checkpoint.pop("adapter_state", None)
        if adapted is not None:
            state = checkpoint["state_dict"]
            for k in [k for k in state if k.startswith("model.")]:
                del state[k]
            state.update(adapted)
        state = checkpoint["state_dict"]
        if self._ema is None:  # rebuilt in on_fit_start from the model.* (EMA) weights
            for k in [k for k in state if k.startswith("_ema.")]:
                value = state.pop(k)
                if k == "_ema.n_averaged":
                    self._ema_count = int(value)
        raw = checkpoint.pop("raw_model_state", None)
        if raw is not None:
            self._ema_state = {
                k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")
            }
            state.update({f"model.{k}": v for k, v in raw.items()})

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> Any:
        ft = self.finetune
        params: Any = self.model.parameters()
        if ft is not None:
            frozen_rows = bool(self._added) and freezes_embedding(ft.trainable)
            params = param_groups(self.model, self.lr, ft.lr, self.weight_decay, frozen_rows)
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, amsgrad=True)
        if self.lr_schedule == "constant":
            return opt
        if self.lr_schedule == "cosine":  # each group from its own rate down to 1 % of it
            epochs = max(int(self.trainer.max_epochs or 1), 1)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda e: 0.01 + 0.495 * (1.0 + math.cos(math.pi * e / epochs))
            )
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt,
            factor=0.5,
            patience=self.patience,
            min_lr=[1e-3 * group["lr"] for group in opt.param_groups],
        )
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "monitor": "val/loss", "interval": "epoch"},
        }
