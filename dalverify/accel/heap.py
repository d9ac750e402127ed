"""Keep freed memory in the process heap while a sweep runs (glibc only).

A layer-major sweep allocates and frees one array of tens of megabytes per
node of the graph, a few hundred times per sweep. glibc serves blocks above
its mmap threshold (128 KiB at first) with fresh ``mmap`` calls and unmaps
them on ``free``, so every node's output is zero-filled by the kernel and
faulted in page by page again. On the 2-core x86_64 machine of
``benchmarks/RESULTS.md`` (32 x 32 U-Net, 1 sd, another job on the second
core), 3.4 of 13 CPU seconds were system time. Raising the thresholds cut
that to 1.4 s and the walk from 3.3 to 2.7 s.

:func:`reuse_freed_memory` raises the mmap and trim thresholds with
``mallopt`` for the duration of a ``with`` block, so freed blocks stay in
the heap and are reused. At the end it restores glibc's initial values
(128 KiB) and returns the unused heap to the system. The thresholds are
process-wide, so other threads allocate under them during the block. On
other C libraries the block changes nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

#: ``mallopt`` parameters (glibc's ``malloc.h``).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

#: glibc's initial value of both thresholds, restored after a block.
GLIBC_INITIAL_THRESHOLD = 128 * 1024

#: Blocks up to this size come from the heap during a block. It exceeds the
#: largest per-node array of a 64 x 64 sweep under the default memory budget
#: (about 70 MB). A glibc that rejects it gets 32 MiB instead.
REUSE_THRESHOLD = 1 << 30
FALLBACK_THRESHOLD = 32 << 20

_lock = threading.Lock()
_depth = 0
_libc = None


def _glibc():
    """Return the loaded glibc, or None on another C library."""
    global _libc
    if _libc is None:
        if not sys.platform.startswith("linux"):
            _libc = False
        else:
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                libc.gnu_get_libc_version.restype = ctypes.c_char_p
                libc.gnu_get_libc_version()
                _libc = libc
            except (OSError, AttributeError):
                _libc = False
    return _libc or None


@contextmanager
def reuse_freed_memory() -> Iterator[bool]:
    """Keep freed blocks in the heap inside the block, and yield whether the thresholds were raised.

    Nested blocks are allowed, and only the outermost one changes and
    restores the thresholds.
    """
    global _depth
    libc = _glibc()
    if libc is None:
        yield False
        return
    with _lock:
        _depth += 1
        if _depth == 1:
            if not libc.mallopt(M_MMAP_THRESHOLD, REUSE_THRESHOLD):
                libc.mallopt(M_MMAP_THRESHOLD, FALLBACK_THRESHOLD)
            libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    try:
        yield True
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                libc.mallopt(M_MMAP_THRESHOLD, GLIBC_INITIAL_THRESHOLD)
                libc.mallopt(M_TRIM_THRESHOLD, GLIBC_INITIAL_THRESHOLD)
                libc.malloc_trim(0)


__all__ = ["FALLBACK_THRESHOLD", "GLIBC_INITIAL_THRESHOLD", "REUSE_THRESHOLD", "reuse_freed_memory"]
