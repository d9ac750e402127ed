"""Thread limits for the numpy matrix products on the exact path.

The float64 passes of the numpy evaluator, the certificate producer and the
verifier multiply small matrices (a few thousand entries per operand). BLAS
threads gain nothing at that size, and they cost a lot when the cores are
shared with other work. On a 2-core machine with one other busy process, one
float pass of a 64x64 U-Net took 0.22 s with one OpenBLAS thread and 1.6 s
with two. :func:`single_blas_thread` therefore runs a block with one BLAS
thread. It uses ``threadpoolctl`` and does nothing when that package is
missing.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


@contextlib.contextmanager
def single_blas_thread() -> Iterator[None]:
    """Run the enclosed block with BLAS limited to one thread, then restore the limit."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a declared dependency
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


__all__ = ["single_blas_thread"]
