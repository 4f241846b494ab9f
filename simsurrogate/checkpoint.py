"""Checkpoints that rebuild their model alone, loaded without running arbitrary code.

Training writes, next to Lightning's usual content, a ``"simsurrogate"`` entry holding the
package version, the task name and the model's class name and constructor arguments (plain
numbers, strings, lists and dicts). Loading uses ``torch.load(..., weights_only=True)``: a
file whose unpickling would need arbitrary code is refused.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from simsurrogate.models.base import SurrogateModel, build_model

KEY = "simsurrogate"


class CheckpointError(ValueError):
    """A checkpoint is unreadable, unsafe, or lacks what is needed to rebuild its model."""


def make_metadata(model: SurrogateModel, task: str, extra: dict[str, Any] | None = None) -> dict:
    """Metadata stored under ``checkpoint["simsurrogate"]``; checks it is plain data."""
    from simsurrogate import __version__

    meta = {"version": __version__, "task": task, "model": model.spec(), **(extra or {})}
    try:
        json.dumps(meta)
    except TypeError as exc:
        raise CheckpointError(
            f"model {type(model).__name__} has constructor arguments that are not plain data "
            f"(numbers, strings, lists, dicts) and cannot be stored safely: {exc}"
        ) from None
    return meta


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``; clear errors for missing or unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} needs arbitrary code to load and is refused "
            f"(weights_only=True): {str(exc).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is not a readable torch checkpoint: {exc}"
        ) from None
    if not isinstance(ckpt, dict) or KEY not in ckpt:
        raise CheckpointError(
            f"checkpoint {path} has no {KEY!r} metadata; it was not written by simsurrogate's "
            "training stack, so its model cannot be rebuilt"
        )
    return ckpt


def load(path: str | Path, map_location: str | torch.device = "cpu") -> SurrogateModel:
    """Rebuild the trained model from a checkpoint alone, in eval mode.

    The model's normalizer statistics, if any, are buffers in its state dict and come back
    with the weights. A model whose parameters were saved in another floating dtype (e.g.
    trained or exported in float64) comes back in that dtype, not rounded to float32.
    """
    from simsurrogate import __version__

    ckpt = read_checkpoint(path, map_location)
    meta = ckpt[KEY]
    if meta.get("version") != __version__:
        warnings.warn(
            f"checkpoint {path} was written by simsurrogate {meta.get('version')}, "
            f"this is {__version__}",
            stacklevel=2,
        )
    try:
        model = build_model(meta["model"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path}: cannot rebuild its model: {exc}") from None
    state = {
        k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")
    }
    saved = {
        state[k].dtype
        for k, p in model.named_parameters()
        if k in state and p.is_floating_point() and state[k].is_floating_point()
    }
    if len(saved) == 1 and (dtype := saved.pop()) != next(model.parameters()).dtype:
        model = model.to(dtype)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {path}: weights do not fit {meta['model']['class']} "
            f"(missing {missing}, unexpected {unexpected})"
        )
    return model.eval()


def export(src: str | Path, dst: str | Path, **provenance: Any) -> Path:
    """Write a shippable copy of a training checkpoint: model weights (with normaliser
    statistics) and the ``"simsurrogate"`` metadata only, no optimizer or loop state, so the
    file is about a third of the size. ``provenance`` (plain data, e.g. the training command
    and data) is added to the metadata under ``"provenance"``, after the training ``step`` and
    ``epoch`` the checkpoint was saved at (when it records them)."""
    ckpt = read_checkpoint(src)
    meta = dict(ckpt[KEY])
    loop = {
        k: int(ckpt[key]) for k, key in (("step", "global_step"), ("epoch", "epoch")) if key in ckpt
    }
    if provenance or loop:
        meta["provenance"] = {**meta.get("provenance", {}), **loop, **provenance}
        try:
            json.dumps(meta)
        except TypeError as exc:
            raise CheckpointError(f"provenance must be plain data: {exc}") from None
    state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, KEY: meta}, dst)
    load(dst)  # the exported file must rebuild its model
    return dst


def save_model(model: SurrogateModel, path: str | Path, task: str, **provenance: Any) -> Path:
    """Write a model built outside training (e.g. a third-party pretrained potential such as
    ``SevenNetPotential([29, 79])``) as a checkpoint, the file a fine-tuning recipe names in
    ``finetune.checkpoint``. The model's ``source`` attribute (package, version, bundled model),
    when it has one, and ``provenance`` (plain data) go into the metadata; the written file is
    checked to rebuild. Returns its path."""
    source = getattr(model, "source", None)
    extra = {"provenance": {**({"source": source} if source else {}), **provenance}}
    meta = make_metadata(model, task, extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, KEY: meta}, path)
    load(path)
    return path
