"""Fine-tuning a pretrained potential, described as data in the recipe.

A recipe gives :class:`~simsurrogate.tasks.PotentialTask` a ``finetune:`` block
(:class:`FineTune`) instead of a ``model``: the starting checkpoint and what to do with it.
Everything is checked before the first step, and the training loop itself has no
fine-tuning branches: the task only asks this module, at its usual hooks, to

* rebuild the model from the checkpoint (:func:`load_pretrained`; a checkpoint of another
  model family is an error naming its class),
* add elements with fresh embedding rows (:func:`with_elements`, ``new_elements: add``),
* wrap linear layers in low-rank adapters (:class:`LoRALinear`, ``trainable: lora``) and
  freeze what must not train (:func:`set_trainable`),
* refit the per-element reference energies to the residual of the pretrained model on the new
  data (:func:`refit_reference_energies`, ``reference_energies: refit``),
* build optimizer groups with their own learning rates (:func:`param_groups`),
* merge the adapters into plain weights when a checkpoint is written (:func:`merge_lora_state`),
  so the shipped model is an ordinary model of its class, and record where it came from
  (:func:`provenance`).

Replay of pretraining data is a property of the data (``AtomsDataModule(replay=...)``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from simsurrogate.checkpoint import KEY, CheckpointError, load, read_checkpoint
from simsurrogate.models.base import SurrogateModel, build_model
from simsurrogate.models.potentials.base import Potential, fit_reference_energies

__all__ = [
    "FineTune",
    "LoRALinear",
    "add_lora",
    "check_cutoff",
    "file_sha256",
    "freezes_embedding",
    "load_pretrained",
    "merge_lora_state",
    "param_groups",
    "provenance",
    "refit_reference_energies",
    "set_trainable",
    "with_elements",
]

TRAINABLE = ("all", "no_interactions", "readout", "lora")
PARTS = ("embedding", "interactions", "readout")
LR_GROUPS = (*PARTS, "adapters", "other")


@dataclass
class FineTune:
    """What a fine-tuning recipe does with its starting checkpoint.

    Args:
        checkpoint: the pretrained potential's checkpoint (rebuilt with ``checkpoint.load``).
        trainable: "all"; "no_interactions" (freeze the ``interactions``); "readout" (train
            the readout only); "lora" (low-rank adapters on the ``nn.Linear`` layers of the
            interactions and the readout; the pretrained weights stay frozen. PaiNN's layers
            are ``nn.Linear``; NequIP's are e3nn maps between irreps, not adapted: an error).
        lr: learning rates per parameter group, keys among "embedding", "interactions",
            "readout", "adapters", "other" (groups not named use the task's ``lr``).
        reference_energies: "refit" (least squares of the pretrained model's energy residual
            on the new training data, added to its reference energies before training) or
            "keep".
        new_elements: "error" (elements of the data missing from the checkpoint are an error)
            or "add" (extend the embedding with fresh rows; their reference energies come from
            the refit).
        lora_rank, lora_alpha: rank r of the adapters and their scale alpha (the update is
            ``alpha / r * B A``).
    """

    checkpoint: str
    trainable: str = "all"
    lr: dict[str, float] = field(default_factory=dict)
    reference_energies: str = "refit"
    new_elements: str = "error"
    lora_rank: int = 4
    lora_alpha: float = 8.0

    def __post_init__(self) -> None:
        for name, allowed in (
            ("trainable", TRAINABLE),
            ("reference_energies", ("refit", "keep")),
            ("new_elements", ("error", "add")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"finetune.{name} must be one of {allowed}, got {getattr(self, name)!r}"
                )
        unknown = sorted(set(self.lr) - set(LR_GROUPS))
        if unknown:
            raise ValueError(f"finetune.lr: unknown groups {unknown}; groups are {LR_GROUPS}")
        bad = {k: v for k, v in self.lr.items() if not v > 0}
        if bad:
            raise ValueError(f"finetune.lr: learning rates must be positive, got {bad}")
        if "adapters" in self.lr and self.trainable != "lora":
            raise ValueError("finetune.lr names 'adapters' but trainable is not 'lora'")
        if self.new_elements == "add" and self.reference_energies != "refit":
            raise ValueError(
                "finetune.new_elements: add needs reference_energies: refit (the new elements' "
                "reference energies come from the fit)"
            )
        if self.lora_rank < 1 or not self.lora_alpha > 0:
            raise ValueError(
                f"finetune.lora_rank must be >= 1 and lora_alpha > 0, got {self.lora_rank}, "
                f"{self.lora_alpha}"
            )


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_pretrained(path: str | Path) -> tuple[Potential, dict[str, Any]]:
    """The potential of a checkpoint (in train mode) and the checkpoint's metadata; a
    checkpoint of another model family is an error naming its class."""
    meta = read_checkpoint(path)[KEY]
    name = meta.get("model", {}).get("class")
    cls = SurrogateModel.registry.get(name)
    if cls is None or not issubclass(cls, Potential):
        raise CheckpointError(
            f"fine-tuning needs an interatomic potential, but checkpoint {path} holds a "
            f"{name} (another model family)"
        )
    return load(path).train(), meta


def with_elements(model: Potential, new: list[int]) -> Potential:
    """The same model with extra elements: a rebuilt instance whose constructor ``elements``
    are the old ones followed by ``new`` (so its checkpoints rebuild), carrying every weight
    over; tensors indexed by element (embedding rows, reference energies) keep the old rows
    and get fresh ones (reference energies 0) for the new elements. A model with other
    element-dependent tensors (NequIP's species-weighted self-connection) is an error."""
    if not new:
        return model
    spec = model.spec()
    spec["args"] = {**spec["args"], "elements": [*model.elements, *new]}
    bigger = build_model(spec)
    old = model.state_dict()
    state = bigger.state_dict()
    n = model.num_elements
    for key, value in state.items():
        src = old[key]
        if src.shape == value.shape:
            state[key] = src
        elif src.shape[1:] == value.shape[1:] and src.shape[0] == n:
            state[key] = torch.cat([src, value[n:].to(src.dtype)])
        else:
            raise ValueError(
                f"finetune.new_elements: add cannot extend {spec['class']}: its {key} (shape "
                f"{tuple(src.shape)} -> {tuple(value.shape)}) depends on the number of elements "
                "without one row per element (supported: models whose per-element tensors are "
                "rows, e.g. PaiNN)"
            )
    bigger.load_state_dict(state)
    return bigger.to(next(model.parameters()).device).train(model.training)


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update (Hu et al., 2021):
    ``y = W x + b + s B A x`` with A (r, in), B (out, r) and s = alpha / r.

    B starts at zero, so the adapted layer starts as exactly the pretrained one; A starts
    small and random so that B's gradient is not zero. ``x`` (..., in) -> (..., out).
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base.requires_grad_(False)
        w = base.weight
        self.lora_A = nn.Parameter(torch.randn(rank, w.shape[1], dtype=w.dtype) / w.shape[1])
        self.lora_B = nn.Parameter(torch.zeros(w.shape[0], rank, dtype=w.dtype))
        self.register_buffer("lora_scaling", torch.tensor(alpha / rank, dtype=w.dtype))
        self.to(w.device)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + (x @ self.lora_A.T) @ self.lora_B.T * self.lora_scaling


def add_lora(model: Potential, rank: int, alpha: float) -> list[str]:
    """Replace every ``nn.Linear`` inside ``model.interactions`` and ``model.readout`` by a
    :class:`LoRALinear` around it; returns the adapted layers' names. Models whose parts have
    no ``nn.Linear`` (e3nn's ``o3.Linear`` maps of NequIP mix irreps and are not adapted
    here) are an error."""
    names = []
    for part in ("interactions", "readout"):
        root = _part(model, part, "lora")
        for name, module in list(root.named_modules()):
            for child_name, child in list(module.named_children()):
                if type(child) is nn.Linear:
                    setattr(module, child_name, LoRALinear(child, rank, alpha))
                    names.append(".".join(filter(None, (part, name, child_name))))
    if not names:
        raise ValueError(
            f"trainable: lora adapts nn.Linear layers, but {type(model).__name__}'s "
            "interactions and readout have none; use all, no_interactions or readout"
        )
    return names


def merge_lora_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict with every adapter folded into its base layer (``W + s B A``, summed in
    float64) under the plain ``nn.Linear`` keys, i.e. the state dict of the same model
    without adapters."""
    out = dict(state)
    for key in [k for k in state if k.endswith(".lora_A")]:
        p = key.removesuffix(".lora_A")
        a, b, s = out.pop(key), out.pop(f"{p}.lora_B"), out.pop(f"{p}.lora_scaling")
        w = out.pop(f"{p}.base.weight")
        out[f"{p}.weight"] = (w.double() + s.double() * (b.double() @ a.double())).to(w.dtype)
        if f"{p}.base.bias" in out:
            out[f"{p}.bias"] = out.pop(f"{p}.base.bias")
    return out


def _part(model: nn.Module, part: str, mode: str) -> nn.Module:
    module = getattr(model, part, None)
    if not isinstance(module, nn.Module):
        raise ValueError(
            f"trainable: {mode} needs the model's {part!r}, and {type(model).__name__} has none"
        )
    return module


def freezes_embedding(mode: str) -> bool:
    """Whether ``trainable: mode`` freezes the embedding."""
    return mode in ("readout", "lora")


def set_trainable(model: Potential, mode: str, n_old_elements: int | None = None) -> None:
    """Freeze what ``mode`` does not train (parameters a model itself keeps fixed stay so).

    With ``n_old_elements`` (elements were added) and a mode that freezes the embedding, the
    new embedding rows still train: the gradient of the first ``n_old_elements`` rows is
    zeroed, so with no weight decay on that group (see :func:`param_groups`) they stay
    bit-identical.
    """
    if mode == "no_interactions":
        _part(model, "interactions", mode).requires_grad_(False)
    elif mode == "readout":
        readout = _part(model, "readout", mode)
        model.requires_grad_(False)
        readout.requires_grad_(True)
    elif mode == "lora":
        model.requires_grad_(False)
        for name, p in model.named_parameters():
            if name.rsplit(".", 1)[-1] in ("lora_A", "lora_B"):
                p.requires_grad_(True)
    if n_old_elements is not None and freezes_embedding(mode):
        weight = _part(model, "embedding", mode).weight
        mask = torch.ones_like(weight)
        mask[:n_old_elements] = 0.0
        weight.requires_grad_(True)
        weight.register_hook(lambda grad: grad * mask.to(grad.device))


def param_groups(
    model: nn.Module, lr: float, lrs: dict[str, float], weight_decay: float, frozen_rows: bool
) -> list[dict[str, Any]]:
    """Optimizer groups of the trainable parameters, named "embedding", "interactions",
    "readout", "adapters" (LoRA factors) and "other", with ``lrs[name]`` or ``lr``; the
    embedding has no weight decay when some of its rows are frozen (``frozen_rows``). A rate
    for a group with nothing to train is an error (the recipe would not do what it says)."""
    groups: dict[str, list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        head = name.split(".", 1)[0]
        if name.rsplit(".", 1)[-1] in ("lora_A", "lora_B"):
            key = "adapters"
        else:
            key = head if head in PARTS else "other"
        groups.setdefault(key, []).append(p)
    idle = sorted(set(lrs) - set(groups))
    if idle:
        raise ValueError(
            f"finetune.lr sets rates for {idle}, which have no trainable parameters here "
            f"(trainable groups: {sorted(groups)})"
        )
    return [
        {
            "params": params,
            "lr": lrs.get(key, lr),
            "weight_decay": 0.0 if key == "embedding" and frozen_rows else weight_decay,
            "name": key,
        }
        for key, params in groups.items()
    ]


@torch.no_grad()
def refit_reference_energies(
    model: Potential, ds: Any, frames: np.ndarray, batch_size: int = 32
) -> np.ndarray:
    """Shift the model's reference energies so that the mean energy error per element
    composition on ``frames`` of ``ds`` vanishes: least squares of the residual
    ``E_label - E_model`` against the element counts, added to ``E_ref``. Returns the shift
    (n_elements,) eV. This is what keeps the first fine-tuning steps from chasing an energy
    offset between the pretraining reference and the new one."""
    training = model.training
    model.eval()
    device = model.reference_energies.device
    pred = []
    for start in range(0, len(frames), batch_size):
        graph = ds.collate(list(frames[start : start + batch_size])).to(device)
        pred.append(model(graph, forces=False)["energy"].cpu().numpy())
    model.train(training)
    rows = np.concatenate([np.arange(ds.offsets[k], ds.offsets[k + 1]) for k in frames])
    residual = ds.energy[frames] - np.concatenate(pred)
    shift = fit_reference_energies(ds.numbers[rows], ds.n_atoms[frames], residual, model.elements)
    model.set_reference_energies(model.reference_energies.cpu().numpy() + shift)
    return shift


def provenance(
    settings: FineTune, meta: dict[str, Any], sha256: str, added: list[int]
) -> dict[str, Any]:
    """Where a fine-tuned model came from: the starting checkpoint's path, SHA-256
    (``sha256``), model class and own provenance (from its metadata ``meta``), the fine-tuning
    settings and the elements added."""
    return {
        "finetuned_from": {
            "checkpoint": str(settings.checkpoint),
            "sha256": sha256,
            "model": meta.get("model", {}).get("class"),
            "provenance": meta.get("provenance", {}),
        },
        "finetune": asdict(settings),
        "elements_added": list(added),
    }


def check_cutoff(data_cutoff: float | None, model_cutoff: float, path: str) -> None:
    """The data module's cutoff, when the recipe sets one, must be the checkpoint's."""
    if data_cutoff is not None and not math.isclose(data_cutoff, model_cutoff):
        raise ValueError(
            f"the data module's cutoff {data_cutoff} Å differs from the cutoff "
            f"{model_cutoff} Å of the pretrained checkpoint {path}; a potential is only "
            "defined for the cutoff it was trained with (remove data.cutoff or set it to "
            f"{model_cutoff})"
        )
