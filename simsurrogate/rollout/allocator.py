"""Keep freed memory in the C heap, so that rollout and MD steps stop page-faulting.

A step of a mesh model or a potential allocates and frees tensors of a few MB dozens of times
(one per layer, edge set and message-passing step). By default glibc's malloc serves such
blocks with fresh ``mmap`` pages or hands the top of the heap back to the operating system
as soon as enough of it is free, so the next step faults the same memory in again, page by
page. On this project's machines that churn was half the time of a MeshGraphNet rollout step
(0.066 against 0.030 s per step on a 1,406-node mesh, one thread) and a third of a PaiNN MD
step (4 x 108 Cu atoms: 0.24 against 0.17 s).

:func:`pad_heap` sets two glibc options (``mallopt``): blocks up to 32 MiB come from the heap
(``M_MMAP_THRESHOLD``), and 256 MiB stay free at its top when it shrinks (``M_TOP_PAD``).
Either alone is not enough: the pad without the threshold made the MD step twice as slow,
since setting any option freezes glibc's adaptive threshold at 128 KiB. Resident memory is
about the same (measured within 10 %).

These are settings of the whole process, as ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TOP_PAD_``
in the environment would be: the engines apply them when built for the CPU (``MeshRollout``,
``MDEngine``), and the ``simsurrogate`` command at start. ``SIMSURROGATE_MALLOC_PAD=0`` in
the environment leaves malloc alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["pad_heap"]

_M_TOP_PAD, _M_MMAP_THRESHOLD = -2, -3  # mallopt parameter numbers in glibc's malloc.h
_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
_applied: int | None = None


def pad_heap(top_pad_mib: int = 256) -> bool:
    """Serve blocks up to 32 MiB from the heap and keep ``top_pad_mib`` MiB free at its top.

    Returns whether the settings are in force: False off Linux, with another C library, or
    when ``SIMSURROGATE_MALLOC_PAD=0``. Calling it again with the same size does nothing.
    """
    global _applied
    if _applied == top_pad_mib:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("SIMSURROGATE_MALLOC_PAD") == "0":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
        ok = ok and libc.mallopt(_M_TOP_PAD, int(top_pad_mib) << 20) == 1
    except (OSError, AttributeError):
        return False
    if ok:
        _applied = top_pad_mib
    return ok
