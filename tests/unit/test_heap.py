"""The heap-reuse block of the sweep: thresholds raised inside, nested blocks, pages reused."""

from __future__ import annotations

import resource

import numpy as np
import pytest

from dalverify.accel import heap

on_glibc = pytest.mark.skipif(heap._glibc() is None, reason="needs glibc")


def touch_twice(size: int) -> int:
    """Fill two fresh arrays of ``size`` bytes one after the other; return the page faults of the second."""
    first = np.empty(size // 8)
    first.fill(1.0)
    del first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    second = np.empty(size // 8)
    second.fill(2.0)
    del second
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@on_glibc
def test_freed_pages_are_reused_inside_the_block():
    size = 48 << 20
    pages = size // resource.getpagesize()
    with heap.reuse_freed_memory() as raised:
        assert raised
        inside = touch_twice(size)
    outside = touch_twice(size)
    # Outside, glibc maps every large array afresh, so each page faults
    # (huge pages may cut the count); inside, the freed block is reused.
    assert inside < pages // 50
    assert outside > inside


@on_glibc
def test_nested_blocks_restore_once():
    with heap.reuse_freed_memory():
        with heap.reuse_freed_memory() as inner:
            assert inner
            assert heap._depth == 2
        assert heap._depth == 1
    assert heap._depth == 0


def test_other_c_libraries_change_nothing(monkeypatch):
    monkeypatch.setattr(heap, "_libc", False)
    with heap.reuse_freed_memory() as raised:
        assert not raised
    assert heap._depth == 0
