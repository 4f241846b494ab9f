"""Adapters running third-party foundation potentials inside :class:`Potential`.

Each adapter imports its package only when a model is built, so the classes are always
registered (checkpoints name them) and a missing optional extra (``simsurrogate[sevenn]``,
``simsurrogate[chgnet]``) is a clear error at build time. :func:`simsurrogate.checkpoint.save_model`
writes a pretrained model as the checkpoint a fine-tuning recipe starts from.
"""

from simsurrogate.models.potentials.external.chgnet import CHGNetPotential
from simsurrogate.models.potentials.external.sevennet import SevenNetPotential

__all__ = ["CHGNetPotential", "SevenNetPotential"]
