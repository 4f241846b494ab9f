"""Checkpoints of pretrained third-party potentials, the starting point of fine-tuning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from simsurrogate.checkpoint import KEY, load, make_metadata
from simsurrogate.models.potentials.base import Potential

__all__ = ["export_pretrained"]


def export_pretrained(model: Potential, path: str | Path, **provenance: Any) -> Path:
    """Write ``model`` (e.g. ``SevenNetPotential([29, 79])``) as a simsurrogate checkpoint,
    the file a fine-tuning recipe names in ``finetune.checkpoint``. Its provenance records the
    adapter's ``source`` (package, version and bundled model) and ``provenance`` (plain data).
    The written file is checked to rebuild; returns its path."""
    source = getattr(model, "source", None)
    extra = {"provenance": {**({"source": source} if source else {}), **provenance}}
    meta = make_metadata(model, "PotentialTask", extra)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, KEY: meta}, path)
    load(path)
    return path
