"""The heap pad that keeps rollout steps from page-faulting is set once, and can be refused."""

from __future__ import annotations

import sys

import pytest

from simsurrogate.rollout import allocator


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_pad_heap_applies_once_and_honours_the_opt_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setenv("SIMSURROGATE_MALLOC_PAD", "0")
    assert allocator.pad_heap() is False and allocator._applied is None
    monkeypatch.delenv("SIMSURROGATE_MALLOC_PAD")
    assert allocator.pad_heap(64) is True and allocator._applied == 64
    assert allocator.pad_heap(64) is True  # already in force: nothing to do
