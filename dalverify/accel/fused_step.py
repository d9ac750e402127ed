"""Compiled element-wise steps of the layer-major sweep (numba).

A piecewise node of the sweep (:mod:`dalverify.line.layer_major`) computes
the root ``-alpha / (beta + 0.0)`` of every unit on every segment and
whether it lies strictly inside the segment. On each new segment it then
decides every unit by the sign rule at the segment's start, records the
units whose root equals the segment's end (binding units) and writes the
output rows. With numpy that is about ten passes over ``(segments, units)``
arrays, with temporaries and the copies of the rows of every split segment.
The kernels here do the same work in two passes:

- :func:`scan_roots` lists the roots that lie strictly inside their segment;
- :func:`apply_pointwise` decides every unit of every new segment and writes
  its output rows, its pattern bits and its binding units.

A max-pool node is a tournament of comparisons, one stage per window entry;
:func:`scan_pool_stage` and :func:`apply_pool_stage` do the same two passes
for one stage, on the difference ``winner - candidate``, reading the window
entries from the rows computed before the first stage.

Each value is computed with the same IEEE operations as the numpy code
(negation, ``beta + 0.0``, one division, the same comparisons), and numba
runs without ``fastmath``, so the results are the numpy ones bit for bit.
Division by zero follows IEEE (``error_model="numpy"``): ``-a / 0.0`` is an
infinity or NaN, as numpy gives.

numba is imported on the first call only. :func:`available` returns whether it
can be.

When the package was built with a C compiler, :func:`scan_pairs` and
:func:`apply_pairs` run the ReLU-family passes as vectorized C
(``_pointwise.c``: AVX-512, AVX2 or scalar, the same operations one for
one), and the sweep prefers them.
"""

from __future__ import annotations

import numpy as np

from dalverify.accel.direct_conv import available
from dalverify.errors import InputError

try:
    from dalverify.accel import _pointwise
except ImportError:  # built without a C compiler
    _pointwise = None

#: Instruction-set codes of the compiled element-wise passes (as the convolution's).
_ISA_CODES = {"auto": 0, "scalar": 1, "avx2": 2, "avx512": 3}

#: Codes of the piecewise-linear kinds for :func:`apply_pointwise`.
KIND_CODES = {"relu": 0, "leaky_relu": 1, "abs": 2}

_KERNELS = None


def _compiled():
    """Compile both kernels on first use."""
    global _KERNELS
    if _KERNELS is None:
        import numba

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def scan(alpha, beta, starts, ends):  # pragma: no cover - compiled
            n, units = alpha.shape

            # Count per segment first: a branch-free loop that vectorizes.
            counts = np.zeros(n, dtype=np.int64)
            for s in range(n):
                lo = starts[s]
                hi = ends[s]
                count = 0
                for u in range(units):
                    root = -alpha[s, u] / (beta[s, u] + 0.0)
                    count += (root > lo) & (root < hi)
                counts[s] = count

            # Then list the roots of the segments that have any.
            total = counts.sum()
            segment = np.empty(total, dtype=np.int64)
            unit = np.empty(total, dtype=np.int64)
            value = np.empty(total, dtype=np.float64)
            k = 0
            for s in range(n):
                if counts[s] == 0:
                    continue
                lo = starts[s]
                hi = ends[s]
                for u in range(units):
                    root = -alpha[s, u] / (beta[s, u] + 0.0)
                    if root > lo and root < hi:
                        segment[k] = s
                        unit[k] = u
                        value[k] = root
                        k += 1
            return segment, unit, value

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def apply(alpha, beta, parent, starts, ends, kind, slope):  # pragma: no cover - compiled
            m = parent.size
            units = alpha.shape[1]
            out = np.empty((m, 2, units))
            bits = np.empty((m, units), dtype=np.bool_)
            bound = np.zeros(m, dtype=np.int64)

            # One branch-free loop per kind, so that each vectorizes.
            for k in range(m):
                p = parent[k]
                z = starts[k]
                end = ends[k]
                count = 0
                if kind == 0:
                    for u in range(units):
                        a = alpha[p, u]
                        b = beta[p, u]
                        root = -a / (b + 0.0)
                        on = (not (root > z)) != (b < 0)
                        bits[k, u] = on
                        count += root == end
                        out[k, 0, u] = a if on else 0.0
                        out[k, 1, u] = b if on else 0.0
                elif kind == 1:
                    for u in range(units):
                        a = alpha[p, u]
                        b = beta[p, u]
                        root = -a / (b + 0.0)
                        on = (not (root > z)) != (b < 0)
                        bits[k, u] = on
                        count += root == end
                        out[k, 0, u] = a if on else slope * a
                        out[k, 1, u] = b if on else slope * b
                else:
                    for u in range(units):
                        a = alpha[p, u]
                        b = beta[p, u]
                        root = -a / (b + 0.0)
                        on = (not (root > z)) != (b < 0)
                        bits[k, u] = on
                        count += root == end
                        out[k, 0, u] = a if on else -a
                        out[k, 1, u] = b if on else -b
                bound[k] = count

            # Binding units, in row-major order, for the few segments with any.
            total = bound.sum()
            bound_segment = np.empty(total, dtype=np.int64)
            bound_unit = np.empty(total, dtype=np.int64)
            j = 0
            for k in range(m):
                if bound[k] == 0:
                    continue
                p = parent[k]
                end = ends[k]
                for u in range(units):
                    if -alpha[p, u] / (beta[p, u] + 0.0) == end:
                        bound_segment[j] = k
                        bound_unit[j] = u
                        j += 1
            return out, bits, bound_segment, bound_unit

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def pool_scan(winner, windows, rows, stage, starts, ends):  # pragma: no cover - compiled
            n = winner.shape[0]
            units = winner.shape[2]
            counts = np.zeros(n, dtype=np.int64)
            for s in range(n):
                r = rows[s]
                lo = starts[s]
                hi = ends[s]
                count = 0
                for u in range(units):
                    da = winner[s, 0, u] - windows[r, 0, u, stage]
                    db = winner[s, 1, u] - windows[r, 1, u, stage]
                    root = -da / (db + 0.0)
                    count += (root > lo) & (root < hi)
                counts[s] = count
            total = counts.sum()
            segment = np.empty(total, dtype=np.int64)
            unit = np.empty(total, dtype=np.int64)
            value = np.empty(total, dtype=np.float64)
            k = 0
            for s in range(n):
                if counts[s] == 0:
                    continue
                r = rows[s]
                lo = starts[s]
                hi = ends[s]
                for u in range(units):
                    da = winner[s, 0, u] - windows[r, 0, u, stage]
                    db = winner[s, 1, u] - windows[r, 1, u, stage]
                    root = -da / (db + 0.0)
                    if root > lo and root < hi:
                        segment[k] = s
                        unit[k] = u
                        value[k] = root
                        k += 1
            return segment, unit, value

        @numba.njit(cache=True, nogil=True, error_model="numpy")
        def pool_apply(winner, windows, rows, parent, stage, starts, ends):  # pragma: no cover - compiled
            m = parent.size
            units = winner.shape[2]
            out = np.empty((m, 2, units))
            keep = np.empty((m, units), dtype=np.bool_)
            bound = np.zeros(m, dtype=np.int64)
            for k in range(m):
                p = parent[k]
                r = rows[p]
                z = starts[k]
                end = ends[k]
                count = 0
                for u in range(units):
                    wa = winner[p, 0, u]
                    wb = winner[p, 1, u]
                    ca = windows[r, 0, u, stage]
                    cb = windows[r, 1, u, stage]
                    da = wa - ca
                    db = wb - cb
                    root = -da / (db + 0.0)
                    on = (not (root > z)) != (db < 0)
                    keep[k, u] = on
                    count += root == end
                    out[k, 0, u] = wa if on else ca
                    out[k, 1, u] = wb if on else cb
                bound[k] = count
            total = bound.sum()
            bound_segment = np.empty(total, dtype=np.int64)
            bound_unit = np.empty(total, dtype=np.int64)
            j = 0
            for k in range(m):
                if bound[k] == 0:
                    continue
                p = parent[k]
                r = rows[p]
                end = ends[k]
                for u in range(units):
                    da = winner[p, 0, u] - windows[r, 0, u, stage]
                    db = winner[p, 1, u] - windows[r, 1, u, stage]
                    if -da / (db + 0.0) == end:
                        bound_segment[j] = k
                        bound_unit[j] = u
                        j += 1
            return out, keep, bound_segment, bound_unit

        @numba.njit(cache=True, nogil=True)
        def gather(out, value, index, offset):  # pragma: no cover - compiled
            m, blocks, _ = out.shape
            width = value.shape[2]
            for k in range(m):
                source = index[k]
                for j in range(blocks):
                    target = out[k, j]
                    row = value[source, j]
                    for t in range(width):
                        target[offset + t] = row[t]

        @numba.njit(cache=True, nogil=True)
        def col2im(taps, out, sh, sw, ph, pw, dh, dw, bias, bias_mode):  # pragma: no cover - compiled
            batch, channels, kh, kw, height, width = taps.shape
            out_h, out_w = out.shape[2], out.shape[3]
            for b in range(batch):
                for o in range(channels):
                    plane = out[b, o]
                    plane[:, :] = 0.0
                    # Taps in (i, j) order, each added once, as the reference's slice additions.
                    for i in range(kh):
                        for j in range(kw):
                            for y in range(height):
                                row = y * sh + i * dh - ph
                                if row < 0 or row >= out_h:
                                    continue
                                source = taps[b, o, i, j, y]
                                target = plane[row]
                                # Columns x * sw + j * dw - pw inside [0, out_w), without a branch per x.
                                first = max(0, (pw - j * dw + sw - 1) // sw)
                                last = min(width, (out_w - 1 + pw - j * dw) // sw + 1)
                                for x in range(first, last):
                                    target[x * sw + j * dw - pw] += source[x]
                    if bias_mode != 0:
                        shift = bias[o] if bias_mode == 1 or b % 2 == 0 else 0.0 * bias[o]
                        for row in range(out_h):
                            for col in range(out_w):
                                plane[row, col] = plane[row, col] + shift

        _KERNELS = (scan, apply, pool_scan, pool_apply, gather, col2im)
    return _KERNELS


def scan_roots(alpha: np.ndarray, beta: np.ndarray, starts: np.ndarray,
               ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """List the roots ``-alpha / (beta + 0.0)`` strictly inside their segment.

    ``alpha`` and ``beta`` are ``(n, units)``, ``starts`` and ``ends`` are
    ``(n,)``. Returns ``(segment, unit, root)`` in row-major order, the order
    of ``np.nonzero`` on the ``(n, units)`` mask.
    """
    return _compiled()[0](alpha, beta, starts, ends)


def apply_pointwise(alpha: np.ndarray, beta: np.ndarray, parent: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                    kind: str, slope: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decide and apply a ReLU, leaky ReLU or absolute value on every new segment.

    Segment ``k`` of ``[starts[k], ends[k])`` takes the rows of old segment
    ``parent[k]`` (``alpha`` and ``beta`` are ``(n, units)``). A unit is on
    when ``not (root > start) xor (beta < 0)``. Returns ``out`` (``(m, 2,
    units)``: the output ``alpha`` and ``beta`` rows), ``bits`` (``(m,
    units)`` bool, the pattern) and the binding units as ``(segment, unit)``
    arrays in row-major order: those whose root equals the segment's end.
    """
    return _compiled()[1](alpha, beta, parent, starts, ends, KIND_CODES[kind], float(slope))


def pointwise_compiled() -> bool:
    """Return whether the C passes of :func:`scan_pairs` and :func:`apply_pairs` were built with a vector path here.

    Their scalar path gives the same bits as the numba passes but no speed,
    so the sweep uses them only where AVX2 or AVX-512 runs.
    """
    return _pointwise is not None and any(name != "scalar" for name in _pointwise.instruction_sets())


def pointwise_instruction_sets() -> list[str]:
    """Return the paths of the C element-wise passes this processor runs, or [] without them."""
    return [] if _pointwise is None else list(_pointwise.instruction_sets())


def _pair_arguments(x: np.ndarray, isa: str, *bounds: np.ndarray) -> list[np.ndarray]:
    """Check ``x`` and ``isa`` for the C passes and return ``bounds`` as contiguous float64 arrays."""
    if isa not in _ISA_CODES:
        raise InputError(f"isa={isa!r} is unknown; use one of {sorted(_ISA_CODES)}")
    if x.dtype != np.float64 or x.ndim != 3 or x.shape[1] != 2 or not x.flags.c_contiguous:
        raise InputError(f"x must be a C-contiguous float64 array (n, 2, units), got {x.dtype} {x.shape}")
    return [np.ascontiguousarray(bound, dtype=np.float64) for bound in bounds]


def _roots_of_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Return ``-alpha / (beta + 0.0)`` on the given rows of ``x`` (``(n, 2, units)``), by numpy's IEEE operations."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return -x[rows, 0] / (x[rows, 1] + 0.0)


def scan_pairs(x: np.ndarray, starts: np.ndarray, ends: np.ndarray,
               isa: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compute :func:`scan_roots` on ``alpha = x[:, 0]``, ``beta = x[:, 1]`` by the C passes.

    ``x`` is a C-contiguous ``(n, 2, units)`` float64 array. A vectorized
    pass counts the roots inside each segment. numpy then lists them on the
    few segments that have any, with the same operations, so the result is
    :func:`scan_roots`'s bit for bit. Needs :func:`pointwise_compiled`.
    """
    starts, ends = _pair_arguments(x, isa, starts, ends)
    n, _, units = x.shape
    counts = np.empty(n, dtype=np.int64)
    _pointwise.count_inside(x, starts, ends, counts, n, units, _ISA_CODES[isa])
    split = np.flatnonzero(counts)
    if split.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0)
    root = _roots_of_rows(x, split)
    with np.errstate(invalid="ignore"):
        inside = (root > starts[split, None]) & (root < ends[split, None])
    row, unit = np.nonzero(inside)
    return split[row], unit, root[row, unit]


def apply_pairs(x: np.ndarray, parent: np.ndarray, starts: np.ndarray, ends: np.ndarray, kind: str,
                slope: float = 0.0, isa: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Compute :func:`apply_pointwise` on ``alpha = x[:, 0]``, ``beta = x[:, 1]`` by the C passes.

    Same results, bit for bit; the binding units of the few segments that
    have any are listed by numpy. ``x`` is a C-contiguous ``(n, 2, units)``
    float64 array. Needs :func:`pointwise_compiled`.
    """
    starts, ends = _pair_arguments(x, isa, starts, ends)
    if not np.isfinite(slope):
        # With a NaN slope the NaN payload of slope * a would depend on the operand order.
        raise InputError(f"slope={slope!r} must be finite")
    n, _, units = x.shape
    m = parent.size
    parent = np.ascontiguousarray(parent, dtype=np.int64)
    out = np.empty((m, 2, units))
    bits = np.empty((m, units), dtype=np.bool_)
    bound = np.empty(m, dtype=np.int64)
    _pointwise.apply(x, parent, starts, ends, out, bits, bound, n, m, units, KIND_CODES[kind], float(slope),
                     _ISA_CODES[isa])

    # Binding units, in row-major order, for the few segments with any.
    segments = np.flatnonzero(bound)
    if segments.size == 0:
        return out, bits, np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    root = _roots_of_rows(x, parent[segments])
    row, unit = np.nonzero(root == ends[segments, None])
    return out, bits, segments[row], unit


def scan_pool_stage(winner: np.ndarray, windows: np.ndarray, rows: np.ndarray, stage: int, starts: np.ndarray,
                    ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """List the roots of ``winner - candidate`` strictly inside their segment, for one max-pool stage.

    ``winner`` is ``(n, 2, units)``; ``windows`` is ``(rows, 2, units,
    window)`` and segment ``s`` reads its candidates from row ``rows[s]``,
    entry ``stage`` of each window. Returns ``(segment, unit, root)`` in
    row-major order, as :func:`scan_roots`.
    """
    return _compiled()[2](winner, windows, rows, stage, starts, ends)


def apply_pool_stage(winner: np.ndarray, windows: np.ndarray, rows: np.ndarray, parent: np.ndarray, stage: int,
                     starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decide one max-pool stage on every new segment and return the new winners.

    New segment ``k`` continues old segment ``parent[k]``. The winner stays
    where ``not (root > start) xor (beta_winner - beta_candidate < 0)``.
    Returns the new ``(m, 2, units)`` winner rows, the ``(m, units)`` keep
    bits and the binding units ``(segment, unit)`` in row-major order.
    """
    return _compiled()[3](winner, windows, rows, parent, stage, starts, ends)


def gather_into(out: np.ndarray, value: np.ndarray, index: np.ndarray, offset: int) -> None:
    """Copy ``value[index[k], j, :]`` into ``out[k, j, offset:offset + width]`` for every ``k`` and ``j``.

    ``out`` is ``(m, blocks, total)`` and ``value`` is ``(n, blocks,
    width)``, both C-contiguous. One pass, with no temporary array: the
    concatenation of the sweep uses it to read an input of an earlier
    generation straight into its output.
    """
    _compiled()[4](out, value, index, offset)


def conv_transpose2d_fused(x: np.ndarray, weight: np.ndarray, stride, padding, output_padding, dilation,
                           bias: np.ndarray | None = None, bias_rows: str = "all",
                           out: np.ndarray | None = None) -> np.ndarray:
    """Compute :func:`dalverify.graph.reference.conv_transpose2d`, plus an optional bias, bit for bit.

    The per-tap products are the reference's matrix product. The compiled
    loop then adds the taps into a zeroed output in the reference's
    ``(i, j)`` order, skipping the positions that the padding crops. It adds
    ``bias`` as :func:`dalverify.graph.reference.apply_linear` does: on every
    row, or with ``bias_rows="even"`` on even rows with ``+ 0.0 * bias`` on
    odd ones. That replaces the strided slice additions, a full-size
    temporary and the cropping copy. ``out``, when given, is a C-contiguous
    float64 array of the output shape that receives the result.
    """
    batch, channels, height, width = x.shape
    _, out_channels, kh, kw = weight.shape
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    taps = np.matmul(weight.reshape(channels, out_channels * kh * kw).T, x.reshape(batch, channels, height * width))
    taps = taps.reshape(batch, out_channels, kh, kw, height, width)
    out_h = (height - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    out_w = (width - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    if out is None:
        out = np.empty((batch, out_channels, out_h, out_w))
    elif out.shape != (batch, out_channels, out_h, out_w) or out.dtype != np.float64 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float64 array of shape {(batch, out_channels, out_h, out_w)}")
    mode = 0
    if bias is not None:
        mode = 1 if bias_rows == "all" else 2
    shift = np.zeros(out_channels) if bias is None else np.ascontiguousarray(bias, dtype=np.float64).reshape(-1)
    _compiled()[5](taps, out, sh, sw, ph, pw, dh, dw, shift, mode)
    return out


__all__ = ["KIND_CODES", "apply_pairs", "apply_pointwise", "apply_pool_stage", "available", "conv_transpose2d_fused",
           "gather_into", "pointwise_compiled", "pointwise_instruction_sets", "scan_pairs", "scan_pool_stage",
           "scan_roots"]
