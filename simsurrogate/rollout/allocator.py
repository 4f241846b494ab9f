"""Keep freed memory at the top of the C heap, so rollout steps stop page-faulting.

A step of a mesh model allocates and frees tensors of a few MB dozens of times (one per
layer, edge set and message-passing step). By default glibc's malloc hands the top of the
heap back to the operating system whenever enough of it is free, and takes fresh pages again
on the next allocation; each fresh page costs a page fault. On this project's machines that
churn was half the time of a MeshGraphNet rollout step (0.054 s against 0.028 s per step on a
1,406-node mesh, one thread, `benchmarks/mgn_rollout_speed.py`). glibc's ``M_TOP_PAD`` keeps
that much extra at the top instead: the same memory is reused step after step, and the
process's resident size does not grow (measured: 545 against 550 MB).

This is a setting of the whole process, as ``MALLOC_TOP_PAD_`` in the environment would be:
the rollout engines apply it when they are built for the CPU, and the ``simsurrogate``
command at start. ``SIMSURROGATE_MALLOC_PAD=0`` in the environment leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["pad_heap"]

_M_TOP_PAD = -2  # mallopt parameter number in glibc's malloc.h
_applied: int | None = None


def pad_heap(top_pad_mib: int = 256) -> bool:
    """Ask glibc's malloc to keep ``top_pad_mib`` MiB free at the top of the heap.

    Returns whether the setting is in force: False off Linux, with another C library, or
    when ``SIMSURROGATE_MALLOC_PAD=0``. Calling it again with the same size does nothing.
    """
    global _applied
    if _applied == top_pad_mib:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("SIMSURROGATE_MALLOC_PAD") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_TOP_PAD, int(top_pad_mib) << 20) == 1
    except (OSError, AttributeError):
        return False
    if ok:
        _applied = top_pad_mib
    return ok
