"""Certification of the intervals of a line walk.

What is certified
-----------------
The real-valued function defined by the graph's float64 parameters, each
read as the exact binary64 rational it stores, on the stored line
``x(z) = a + b z`` (``a``, ``b`` exact binary64 vectors). For every stored
interval, the walk recorded a pattern (one sign per piecewise-linear unit)
and, with cuts, the signs of the cut functions. With the pattern fixed the
network is affine in ``z``, so every unit and every cut function is
``alpha + beta z``. The pattern and signs are *valid* at ``z`` when
``sign * (alpha + beta z) >= 0`` for all of them. On the set where they are
valid, the pattern's affine map is the network and the signs give the region,
so that set carries the interval's label exactly. This module computes, for
every interval, an interval ``C`` of ``z`` on which validity is proven:

``exact``
    Scaled-integer (exact rational) propagation of ``(alpha, beta)`` under
    the pattern; ``C`` is the exact feasible interval, with rational ends.
    Affordable for small graphs.
``enclosure``
    The float64 propagation of the walk plus an a-priori radius for every
    ``alpha`` and ``beta`` (Higham's bound ``|fl(sum) - sum| <= gamma_n
    sum |terms|``, ``gamma_n = n u / (1 - n u)``, ``u = 2^-53``; see
    ``proofs/rounding_bound.md``). ``C`` is an inner approximation of the
    feasible interval with float ends. Near each end of an interval a sliver
    remains where the binding unit's sign cannot be proven.

The union of the ``C`` (plus slivers between two intervals that provably
carry the same label) is the *covered* part of the searched range. The rest
is *unresolved*. Its probability mass widens the selective p-value's
enclosure; it is never decided silently.

The pattern itself is read at an interior point of each interval with the
sign rule of :mod:`dalverify.line.rule`, and must have the digest the walk
recorded. The stored ends are checked against the roots of the units the
walk named as binding, and the tiling of the searched range is checked with
exact float comparisons. An optional LP (cvxpy with HiGHS) re-solves
``min z`` and ``max z`` of every interval as a cross-check; it is never the
evidence.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from dalverify.accel.direct_conv import conv_for, default_kernels
from dalverify.errors import InputError
from dalverify.graph.ir import Graph, Node
from dalverify.graph.reference import apply_linear, last_uses, pool_windows
from dalverify.line import rule
from dalverify.line.walk import CUT_NODE, Partition, Piece
from dalverify.numerics.intervals import IntervalUnion, endpoint_to_text
from dalverify.threads import single_blas_thread
from dalverify.tolerances import LP_END_RTOL

logger = logging.getLogger(__name__)

#: Convolution of the float passes: the default walk's, so that patterns read
#: here match the walk's to the last bit.
_CONV = conv_for(default_kernels())

#: Unit roundoff of binary64.
UNIT_ROUNDOFF = 2.0**-53

#: Smallest positive subnormal doubled: an absolute allowance per rounding
#: for results that underflow (Higham's bounds hold for normal numbers only).
_UNDERFLOW = 2.0**-1073

#: Methods of :func:`certify_partition`.
METHODS = ("auto", "exact", "enclosure")

#: ``method="auto"`` uses exact arithmetic when the number of scaled-integer
#: multiply-adds (multiply-adds of one pass times the network pieces) stays
#: below this budget, some tens of seconds of CPU time.
EXACT_BUDGET = 10**8

#: The LP cross-check runs by default only on partitions with at most this
#: many intervals (two HiGHS solves per interval take a few milliseconds each).
LP_DEFAULT_MAX_PIECES = 400

#: Number of tightest lower and upper constraints kept per interval in the
#: parametrized LP (the problem has a fixed size, padded with inactive rows).
LP_ROWS_PER_SIDE = 4

#: Largest number of units whose sign at the interior point is within
#: rounding of zero that are tried flipped to match a recorded digest.
_MAX_AMBIGUOUS = 6

_LINE_BIAS = np.array([True, False])
_NO_BIAS = np.array([False, False])
_RADIUS_BIAS = np.array([False, False, True, False])
_PIECEWISE = ("relu", "leaky_relu", "abs", "max_pool2d")
_INF = math.inf


def gamma(n: int) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)`` with ``u = 2^-53``, rounded up generously.

    Valid for ``n u < 1``; the returned float exceeds the real value because
    ``n u / (1 - n u) <= n u (1 + 2 n u)`` for ``n u <= 1/2``, and that
    product is rounded up by the factor ``1 + 2^-50``.
    """
    nu = n * UNIT_ROUNDOFF
    if not nu < 0.5:
        raise InputError(f"gamma_n needs n * 2^-53 < 1/2, got n = {n}")
    return nu * (1.0 + 2.0 * nu) * (1.0 + 2.0**-50)


def pattern_digest(bits: dict[int, np.ndarray]) -> str:
    """sha256 over ``node id (4 bytes, little endian) + packbits(bits)`` in node order.

    This is the digest the line walk records for a pattern.
    """
    hasher = hashlib.sha256()
    for node_id in sorted(bits):
        hasher.update(int(node_id).to_bytes(4, "little"))
        hasher.update(np.packbits(np.asarray(bits[node_id], dtype=bool)).tobytes())
    return hasher.hexdigest()


def signs_digest(signs: np.ndarray) -> str:
    """sha256 of ``packbits(signs)``: the digest the walk records for cut signs."""
    return hashlib.sha256(np.packbits(np.asarray(signs, dtype=bool)).tobytes()).hexdigest()


# ---------------------------------------------------------------------------
# Term counts and absolute-value nodes for the rounding-error radius.


def term_count(node: Node) -> int:
    """Largest number of rounded operations that make one output of a linear node.

    This is the ``n`` of ``gamma_n`` in the error bound of the node (a sum of
    ``n - 1`` products plus a constant term counts ``n``).
    """
    kind = node.kind
    if kind == "dense":
        return int(node.params["weight"].shape[1]) + 1
    if kind == "conv2d":
        weight = node.params["weight"]
        return int(weight.shape[1] * weight.shape[2] * weight.shape[3]) + 1
    if kind == "conv_transpose2d":
        weight = node.params["weight"]
        return int(weight.shape[0] * weight.shape[2] * weight.shape[3]) + 1
    if kind == "avg_pool2d":
        kh, kw = node.attrs["kernel_size"]
        return int(kh * kw) + 1
    if kind == "upsample_bilinear":
        return int(node.params["rows"].shape[1] * node.params["cols"].shape[1]) + 2
    if kind == "scale_shift":
        return 2
    if kind in ("add_const", "mul_const", "add", "sub", "leaky_relu", "max_pool2d"):
        return 1
    return 0


def _abs_node(node: Node) -> Node:
    """Return the node with every parameter replaced by its absolute value (``add`` for ``sub``)."""
    kind = "add" if node.kind == "sub" else node.kind
    params = {name: np.abs(value) for name, value in node.params.items()}
    return Node(node.id, kind, node.inputs, node.shape, dict(node.attrs), params, node.name)


def _inflate(value: np.ndarray, n: int, underflow: bool = False) -> np.ndarray:
    """Scale a float bound up so that it covers the rounding of its own evaluation.

    With ``underflow`` an absolute ``(n + 1) 2^-1073`` is added for products
    that may have fallen below the normal range (see :func:`_may_underflow`).
    """
    out = value * (1.0 + 3.0 * gamma(n + 2))
    return out + (n + 1) * _UNDERFLOW if underflow else out


#: Products of numbers whose smallest non-zero magnitudes multiply to at
#: least this stay in the normal range, where Higham's relative bounds hold.
_NORMAL_PRODUCT = 2.0**-1000


def _smallest_nonzero(*arrays: np.ndarray) -> float:
    smallest = _INF
    for array in arrays:
        magnitude = np.abs(np.asarray(array, dtype=np.float64))
        nonzero = magnitude[magnitude > 0]
        if nonzero.size:
            smallest = min(smallest, float(nonzero.min()))
    return smallest


def _may_underflow(inputs: Sequence[np.ndarray], params: Sequence[np.ndarray] = (), factor: float = 1.0) -> bool:
    """True unless every non-zero product of an input and a parameter (or
    ``factor``) is at least ``2^-1000`` in magnitude, so that no rounding of
    the node underflows and exact zeros stay exact."""
    smallest_input = _smallest_nonzero(*inputs)
    if math.isinf(smallest_input):
        return False
    smallest_param = _smallest_nonzero(*params) if params else 1.0
    if math.isinf(smallest_param):
        return False
    return smallest_input * smallest_param * factor < _NORMAL_PRODUCT


# ---------------------------------------------------------------------------
# Float64 pass with radius.


@dataclass
class UnitGroup:
    """The units of one piecewise node (or the cut functions) on one interval.

    ``alpha``, ``beta`` are flat arrays: float64 midpoints in a float pass,
    ``object`` arrays of Python ints or Fractions in an exact pass (for a
    network node, integer numerators over one positive denominator that
    cancels in every sign and root). ``rad_alpha``, ``rad_beta`` bound the
    distance of the float midpoints from the exact values (None when exact).
    ``bits`` is the pattern: True means non-negative, and for a max-pool
    comparison that the current winner is kept.
    """

    key: int
    alpha: np.ndarray
    beta: np.ndarray
    bits: np.ndarray
    rad_alpha: np.ndarray | None = None
    rad_beta: np.ndarray | None = None


@dataclass
class FloatPass:
    """Result of :func:`float_pass`: the pattern, every unit's enclosure and the output."""

    bits: dict[int, np.ndarray]
    digest: str
    groups: list[UnitGroup]
    out: np.ndarray
    out_rad: np.ndarray


class _GraphCache:
    """Per-graph data reused by every pass: absolute-value nodes, term counts,
    integer parameters and last uses."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.last = last_uses(graph)
        self.abs_nodes = {node.id: _abs_node(node) for node in graph.nodes[1:] if node.kind not in _PIECEWISE}
        self.terms = {node.id: term_count(node) for node in graph.nodes}
        self.smallest_param = {node.id: (_smallest_nonzero(*node.params.values()) if node.params else 1.0)
                               for node in graph.nodes}
        self._int_params: dict[int, dict[str, tuple[np.ndarray, int]]] = {}

    def int_params(self, node: Node) -> dict[str, tuple[np.ndarray, int]]:
        if node.id not in self._int_params:
            self._int_params[node.id] = {name: to_scaled_int(value) for name, value in node.params.items()}
        return self._int_params[node.id]


_CACHES: dict[int, _GraphCache] = {}


def _cache(graph: Graph) -> _GraphCache:
    cached = _CACHES.get(id(graph))
    if cached is None or cached.graph is not graph:
        if len(_CACHES) > 8:
            _CACHES.clear()
        cached = _CACHES[id(graph)] = _GraphCache(graph)
    return cached


def _linear_radius(node: Node, cache: _GraphCache, inputs: list[np.ndarray], radii: list[np.ndarray]) -> np.ndarray:
    """Radius of a linear node's output: ``|W| rad_in + gamma_n (|W| |x| + |c|)``."""
    kind = node.kind
    if kind in ("concat", "reshape", "upsample_nearest"):
        return apply_linear(node, radii, bias_mask=_NO_BIAS)
    n = cache.terms[node.id]
    if kind in ("add", "sub"):
        propagated = radii[0] + radii[1]
        size = np.abs(inputs[0]) + np.abs(inputs[1])
        underflow = False
    else:
        # One call on the stack (rad_alpha, rad_beta, |alpha|, |beta|); the
        # constant term goes to |alpha| only.
        stacked = apply_linear(cache.abs_nodes[node.id], [np.concatenate([radii[0], np.abs(inputs[0])])],
                               bias_mask=_RADIUS_BIAS, conv=_CONV)
        propagated, size = stacked[:2], stacked[2:]
        factor = 1.0 / (n - 1) if kind == "avg_pool2d" else 1.0
        underflow = _smallest_nonzero(inputs[0]) * cache.smallest_param[node.id] * factor < _NORMAL_PRODUCT
    return _inflate(propagated + gamma(n) * size, n, underflow)


def _decide(alpha: np.ndarray, beta: np.ndarray, z: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        root = rule.roots(np, alpha, beta)
        return rule.active(np, alpha, beta, root, z)


def _choose(decided: np.ndarray, node_id: int, bits: dict[int, np.ndarray] | None,
            force: dict[int, dict[int, bool]] | None, offset: int = 0) -> np.ndarray:
    if bits is not None and node_id in bits:
        return np.asarray(bits[node_id], dtype=bool)[offset : offset + decided.size]
    if force and node_id in force:
        decided = decided.copy()
        for index, value in force[node_id].items():
            if offset <= index < offset + decided.size:
                decided[index - offset] = value
    return decided


def float_pass(
    graph: Graph,
    a: np.ndarray,
    b: np.ndarray,
    *,
    z: float | None = None,
    bits: dict[int, np.ndarray] | None = None,
    force: dict[int, dict[int, bool]] | None = None,
) -> FloatPass:
    """Propagate ``a + b z`` in float64 with a rigorous radius on every value.

    The pattern is taken from ``bits`` where given, else decided at ``z`` by
    the sign rule of :mod:`dalverify.line.rule` on the float midpoints, with
    the units listed in ``force`` (``{node_id: {unit: bit}}``) set by hand.
    The midpoints are computed exactly as the default line walk computes them
    (the layer-major sweep with the kernels of
    :func:`dalverify.accel.direct_conv.default_kernels`), so the decided
    pattern is that walk's pattern at ``z``. The radius bound holds for any
    order of summation, so it covers both kernel sets.
    """
    cache = _cache(graph)
    values = {0: np.stack([np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)])}
    radii = {0: np.zeros_like(values[0])}
    out_bits: dict[int, np.ndarray] = {}
    groups: list[UnitGroup] = []
    for node in graph.nodes[1:]:
        inputs = [values[i] for i in node.inputs]
        in_radii = [radii[i] for i in node.inputs]
        if node.kind in _PIECEWISE:
            value, radius, group = _piecewise_float(node, inputs[0], in_radii[0], z, bits, force)
            out_bits[node.id] = group.bits
            groups.append(group)
        else:
            value = apply_linear(node, inputs, bias_mask=_LINE_BIAS, conv=_CONV)
            radius = _linear_radius(node, cache, inputs, in_radii)
        values[node.id], radii[node.id] = value, radius
        for source in set(node.inputs):
            if cache.last[source] == node.id:
                del values[source], radii[source]
    return FloatPass(out_bits, pattern_digest(out_bits), groups, values[graph.output], radii[graph.output])


def _piecewise_float(node: Node, line: np.ndarray, radius: np.ndarray, z: float | None, bits, force):
    kind = node.kind
    if kind == "max_pool2d":
        kernel, stride = node.attrs["kernel_size"], node.attrs["stride"]
        windows = pool_windows(line, kernel, stride)
        rad_windows = pool_windows(radius, kernel, stride)
        winner, winner_rad = windows[..., 0], rad_windows[..., 0]
        out_size = int(np.prod(winner.shape[1:]))
        alphas, betas, rad_a, rad_b, stage_bits = [], [], [], [], []
        for stage in range(1, windows.shape[-1]):
            candidate, candidate_rad = windows[..., stage], rad_windows[..., stage]
            diff = winner - candidate
            diff_rad = _inflate(winner_rad + candidate_rad + gamma(2) * np.abs(diff), 2)
            offset = (stage - 1) * out_size
            decided = _decide(diff[0], diff[1], z).ravel() if z is not None else np.zeros(out_size, bool)
            keep = _choose(decided, node.id, bits, force, offset)
            keep_shaped = keep.reshape(winner.shape[1:])
            winner = np.where(keep_shaped, winner, candidate)
            winner_rad = np.where(keep_shaped, winner_rad, candidate_rad)
            alphas.append(diff[0].ravel())
            betas.append(diff[1].ravel())
            rad_a.append(diff_rad[0].ravel())
            rad_b.append(diff_rad[1].ravel())
            stage_bits.append(keep)
        group = UnitGroup(node.id, np.concatenate(alphas), np.concatenate(betas),
                          np.concatenate(stage_bits) if stage_bits else np.zeros(0, bool),
                          np.concatenate(rad_a), np.concatenate(rad_b))
        return winner, winner_rad, group

    alpha, beta = line[0].ravel(), line[1].ravel()
    decided = _decide(alpha, beta, z) if z is not None else np.zeros(alpha.size, bool)
    on = _choose(decided, node.id, bits, force)
    shaped = on.reshape(line.shape[1:])
    if kind == "relu":
        value = np.where(shaped, line, 0.0)
        out_rad = np.where(shaped, radius, 0.0)
    elif kind == "leaky_relu":
        slope = node.attrs["negative_slope"]
        value = np.where(shaped, line, slope * line)
        underflow = _may_underflow([line], [np.array([slope])])
        out_rad = np.where(shaped, radius, _inflate(abs(slope) * radius + gamma(1) * np.abs(slope * line), 1, underflow))
    else:  # abs
        value = np.where(shaped, line, -line)
        out_rad = radius
    group = UnitGroup(node.id, alpha, beta, on, radius[0].ravel(), radius[1].ravel())
    return value, out_rad, group


# ---------------------------------------------------------------------------
# Exact pass with scaled integers.


def to_scaled_int(array: np.ndarray) -> tuple[np.ndarray, int]:
    """Write a float64 array as ``numerators / 2**e`` with Python-int numerators.

    Returns ``(numerators, e)``, ``numerators`` an ``object`` array of the
    same shape, ``e >= 0`` the smallest exponent that makes every entry an
    integer.
    """
    flat = np.asarray(array, dtype=np.float64).ravel()
    ratios = [float(v).as_integer_ratio() for v in flat]
    exponent = max((q.bit_length() - 1 for _, q in ratios), default=0)
    nums = np.empty(flat.size, dtype=object)
    for i, (p, q) in enumerate(ratios):
        nums[i] = p << (exponent - (q.bit_length() - 1))
    return nums.reshape(np.shape(array)), exponent


def _object_zeros(shape: tuple[int, ...]) -> np.ndarray:
    return np.zeros(shape, dtype=object)


def _as_object_ints(array: np.ndarray) -> np.ndarray:
    out = np.empty(array.shape, dtype=object)
    out.ravel()[:] = [int(v) for v in np.asarray(array).ravel()]
    return out


def _pad(x: np.ndarray, ph: int, pw: int) -> np.ndarray:
    out = _object_zeros(x.shape[:2] + (x.shape[2] + 2 * ph, x.shape[3] + 2 * pw))
    out[:, :, ph : ph + x.shape[2], pw : pw + x.shape[3]] = x
    return out


def _conv2d_int(x: np.ndarray, weight: np.ndarray, stride, padding, dilation, groups: int) -> np.ndarray:
    out_channels, group_channels, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    padded = _pad(x, ph, pw)
    out_h = (x.shape[2] + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (x.shape[3] + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    windows = sliding_window_view(padded, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw][:, :, :out_h, :out_w]
    per_group = out_channels // groups
    parts = []
    for g in range(groups):
        xg = windows[:, g * group_channels : (g + 1) * group_channels]
        wg = weight[g * per_group : (g + 1) * per_group]
        parts.append(np.tensordot(xg, wg, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2))
    return np.concatenate(parts, axis=1)


def _conv_transpose2d_int(x: np.ndarray, weight: np.ndarray, stride, padding, output_padding, dilation) -> np.ndarray:
    batch, _, height, width = x.shape
    _, out_channels, kh, kw = weight.shape
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    full_h = (height - 1) * sh + dh * (kh - 1) + 1 + oph
    full_w = (width - 1) * sw + dw * (kw - 1) + 1 + opw
    full = _object_zeros((batch, out_channels, full_h, full_w))
    for i in range(kh):
        for j in range(kw):
            contribution = np.tensordot(x, weight[:, :, i, j], axes=([1], [0])).transpose(0, 3, 1, 2)
            rows = slice(i * dh, i * dh + (height - 1) * sh + 1, sh)
            cols = slice(j * dw, j * dw + (width - 1) * sw + 1, sw)
            full[:, :, rows, cols] += contribution
    out_h = (height - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    out_w = (width - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    return full[:, :, ph : ph + out_h, pw : pw + out_w]


def _rescale(nums: np.ndarray, den: int, target: int) -> np.ndarray:
    factor = target // den
    return nums if factor == 1 else nums * factor


def _add_constant(nums: np.ndarray, den: int, const: tuple[np.ndarray, int], shape) -> tuple[np.ndarray, int]:
    """Add ``const`` (scaled ints) to the alpha row of ``nums / den``."""
    c_nums, c_exp = const
    target = math.lcm(den, 1 << c_exp)
    out = _rescale(nums, den, target).copy()
    out[0] = out[0] + np.broadcast_to(c_nums.reshape(shape), out[0].shape) * (target >> c_exp)
    return out, target


def _exact_linear(node: Node, cache: _GraphCache, inputs: list[tuple[np.ndarray, int]]) -> tuple[np.ndarray, int]:
    """Exact output ``(numerators, denominator)`` of a linear node on a stacked line."""
    kind, attrs = node.kind, node.attrs
    params = cache.int_params(node) if node.params else {}
    x, den = inputs[0] if inputs else (None, 1)
    if kind == "dense":
        w, e = params["weight"]
        out, den = np.tensordot(x, w, axes=([1], [1])), den << e
        if "bias" in params:
            out, den = _add_constant(out, den, params["bias"], (-1,))
        return out, den

    if kind in ("conv2d", "conv_transpose2d"):
        w, e = params["weight"]
        if kind == "conv2d":
            out = _conv2d_int(x, w, attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"])
        else:
            out = _conv_transpose2d_int(x, w, attrs["stride"], attrs["padding"], attrs["output_padding"], attrs["dilation"])
        den = den << e
        if "bias" in params:
            out, den = _add_constant(out, den, params["bias"], (-1, 1, 1))
        return out, den

    if kind == "avg_pool2d":
        (kh, kw), stride, (ph, pw) = attrs["kernel_size"], attrs["stride"], attrs["padding"]
        sums = pool_windows(_pad(x, ph, pw), (kh, kw), stride).sum(axis=-1)
        if attrs["count_include_pad"] or (ph == 0 and pw == 0):
            return sums, den * kh * kw
        ones = np.pad(np.ones((1, 1) + x.shape[2:]), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        counts = pool_windows(ones, (kh, kw), stride).sum(axis=-1).astype(np.int64)
        common = math.lcm(*sorted(set(int(c) for c in counts.ravel())))
        return sums * _as_object_ints(common // counts), den * common

    if kind == "upsample_nearest":
        sh, sw = attrs["scale"]
        return np.repeat(np.repeat(x, sh, axis=2), sw, axis=3), den
    if kind == "upsample_bilinear":
        (rows, e_rows), (cols, e_cols) = params["rows"], params["cols"]
        out = np.tensordot(np.tensordot(x, rows, axes=([2], [1])), cols, axes=([2], [1]))
        return out, den << (e_rows + e_cols)
    if kind == "scale_shift":
        scale, e = params["scale"]
        shape = (1, -1) + (1,) * (x.ndim - 2)
        out, den = x * scale.reshape(shape), den << e
        return _add_constant(out, den, params["shift"], shape[1:])
    if kind == "add_const":
        return _add_constant(x, den, params["const"], params["const"][0].shape)

    if kind == "mul_const":
        const, e = params["const"]
        return x * const, den << e
    if kind in ("add", "sub", "concat"):
        target = math.lcm(*[d for _, d in inputs])
        scaled = [_rescale(v, d, target) for v, d in inputs]
        if kind == "add":
            return scaled[0] + scaled[1], target
        if kind == "sub":
            return scaled[0] - scaled[1], target
        return np.concatenate(scaled, axis=attrs["axis"] + 1), target
    if kind == "reshape":
        return x.reshape((2,) + tuple(node.shape)), den
    raise InputError(f"node {node.id} has kind {kind!r}, which has no exact linear form")


@dataclass
class ExactPass:
    """Result of :func:`exact_pass`: exact unit values and the exact output ``out / den``."""

    groups: list[UnitGroup]
    out: np.ndarray
    den: int

    def output_fractions(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the output's ``(alpha, beta)`` as ``object`` arrays of Fractions."""
        make = np.frompyfunc(lambda n: Fraction(n, self.den), 1, 1)
        return make(self.out[0]).astype(object), make(self.out[1]).astype(object)


def exact_pass(graph: Graph, a: np.ndarray, b: np.ndarray, bits: dict[int, np.ndarray]) -> ExactPass:
    """Propagate ``a + b z`` exactly (scaled Python integers) under the pattern ``bits``.

    ``a``, ``b`` are float64 arrays of the input shape, read as exact binary64
    rationals. Every unit's ``alpha``, ``beta`` is returned as integer
    numerators over one positive denominator per node (signs and roots do not
    depend on it).
    """
    cache = _cache(graph)
    line_nums, exponent = to_scaled_int(np.stack([np.asarray(a, np.float64), np.asarray(b, np.float64)]))
    values: dict[int, tuple[np.ndarray, int]] = {0: (line_nums, 1 << exponent)}
    groups: list[UnitGroup] = []
    for node in graph.nodes[1:]:
        inputs = [values[i] for i in node.inputs]
        if node.kind in _PIECEWISE:
            values[node.id], group = _piecewise_exact(node, cache, inputs[0], bits[node.id])
            groups.append(group)
        else:
            values[node.id] = _exact_linear(node, cache, inputs)
        for source in set(node.inputs):
            if cache.last[source] == node.id:
                del values[source]
    out, den = values[graph.output]
    return ExactPass(groups, out, den)


def _piecewise_exact(node: Node, cache: _GraphCache, value: tuple[np.ndarray, int], bits: np.ndarray):
    nums, den = value
    bits = np.asarray(bits, dtype=bool)
    if node.kind == "max_pool2d":
        windows = pool_windows(nums, node.attrs["kernel_size"], node.attrs["stride"])
        winner = windows[..., 0]
        out_size = int(np.prod(winner.shape[1:]))
        alphas, betas = [], []
        for stage in range(1, windows.shape[-1]):
            candidate = windows[..., stage]
            diff = winner - candidate
            keep = bits[(stage - 1) * out_size : stage * out_size].reshape(winner.shape[1:])
            winner = np.where(keep, winner, candidate)
            alphas.append(diff[0].ravel())
            betas.append(diff[1].ravel())
        empty = np.zeros(0, dtype=object)
        group = UnitGroup(node.id, np.concatenate(alphas) if alphas else empty,
                          np.concatenate(betas) if betas else empty, bits)
        return (winner, den), group
    shaped = bits.reshape(nums.shape[1:])
    group = UnitGroup(node.id, nums[0].ravel(), nums[1].ravel(), bits)
    if node.kind == "relu":
        return (np.where(shaped, nums, 0), den), group
    if node.kind == "leaky_relu":
        slope, e = to_scaled_int(np.array([node.attrs["negative_slope"]]))
        return (np.where(shaped, nums * (1 << e), nums * int(slope[0])), den << e), group
    return (np.where(shaped, nums, -nums), den), group


# ---------------------------------------------------------------------------
# Cut functions of the selection event.


class ResidualCuts:
    """Cut functions ``r_i - lam`` and ``r_i + lam`` of the filtered residual on the eligible pixels.

    These are the DAL-Test walk's cut functions, in the same order. Cut ``j``
    is ``r_{e_j} - lam`` and cut ``m + j`` is ``r_{e_j} + lam`` for eligible
    pixel ``e_j``, where ``r = F(mean_c(x(z) - D(x(z))))``.

    Parameters
    ----------
    a_image, b_image
        The line's first ``n`` entries as ``(C, H, W)`` images.
    threshold
        ``lam > 0``.
    kernel_size
        Odd ``K`` of the mean filter.
    filter_profile
        ``"inside"`` or ``"si4onnx"`` (see :mod:`dalverify.selection.region`).
    eligible
        Boolean ``(H, W)`` mask, or None for every pixel.
    observed
        The observed boolean ``(H, W)`` region; an interval's label is True
        when its region equals it.
    strict
        Region uses ``|r| > lam``.
    """

    def __init__(self, a_image: np.ndarray, b_image: np.ndarray, threshold: float, kernel_size: int,
                 filter_profile: str, eligible: np.ndarray | None, observed: np.ndarray, strict: bool = False) -> None:
        from dalverify.selection.event import LambdaCuts

        self.a_image = np.asarray(a_image, dtype=np.float64)
        self.b_image = np.asarray(b_image, dtype=np.float64)
        self.lambda_cuts = LambdaCuts(threshold, self.a_image.shape[1:], eligible, strict=strict)
        self.lam = self.lambda_cuts.lam
        self.kernel_size = int(kernel_size)
        self.filter_profile = filter_profile
        self.observed = np.asarray(observed, dtype=bool)
        channels = self.a_image.shape[0]
        self._terms = channels + self.kernel_size**2 + 3

    def _residual(self, a_img, b_img, out_alpha, out_beta):
        from dalverify.selection.event import residual_line

        return residual_line(a_img, b_img, out_alpha, out_beta, self.kernel_size, self.filter_profile)

    def functions(self, out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float cut functions ``(alpha, beta)`` for the output line ``out`` (2, C, H, W)."""
        r_alpha, r_beta = self._residual(self.a_image, self.b_image, out[0], out[1])
        return self.lambda_cuts.cuts(r_alpha, r_beta)

    def radius(self, out: np.ndarray, out_rad: np.ndarray, cut_alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Radii of the float cut functions given the output's radius.

        ``r = F(mean_c(a - out))`` is a weighted mean with non-negative weights
        of ``C + K^2`` rounded operations at most, so its error is at most
        ``F(mean_c(rad_out)) + gamma_{C+K^2+3} F(mean_c(|a| + |out|))``, and
        ``r -+ lam`` adds one rounding.
        """
        from dalverify.selection.region import average_filter

        n = self._terms
        eligible = self.lambda_cuts.eligible_index

        def through_filter(values: np.ndarray) -> np.ndarray:
            return average_filter(values.sum(axis=0) / values.shape[0], self.kernel_size,
                                  profile=self.filter_profile).ravel()

        # Divisions by channel and neighbour counts (at most C K^2) are the
        # only operations that can underflow.
        count = float(self.a_image.shape[0] * self.kernel_size**2)
        under_alpha = _may_underflow([self.a_image, out[0]], factor=1.0 / count)
        under_beta = _may_underflow([self.b_image, out[1]], factor=1.0 / count)
        size_alpha = through_filter(np.abs(self.a_image) + np.abs(out[0]))
        size_beta = through_filter(np.abs(self.b_image) + np.abs(out[1]))
        rad_alpha = _inflate(through_filter(out_rad[0]) + gamma(n) * size_alpha, n, under_alpha)
        rad_beta = _inflate(through_filter(out_rad[1]) + gamma(n) * size_beta, n, under_beta)
        rad_alpha = np.concatenate([rad_alpha[eligible], rad_alpha[eligible]])
        rad_beta = np.concatenate([rad_beta[eligible], rad_beta[eligible]])
        rad_alpha = _inflate(rad_alpha + gamma(1) * (np.abs(cut_alpha) + self.lam), 1)
        return rad_alpha, rad_beta

    def exact(self, out_alpha: np.ndarray, out_beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact cut functions (``object`` arrays of Fractions) for exact output Fractions."""
        r_alpha, r_beta = self._residual(self.a_image, self.b_image, out_alpha, out_beta)
        eligible = self.lambda_cuts.eligible_index
        lam = Fraction(self.lam)
        alpha = np.concatenate([r_alpha[eligible] - lam, r_alpha[eligible] + lam])
        beta = np.concatenate([r_beta[eligible], r_beta[eligible]])
        return alpha.astype(object), beta.astype(object)

    def exact_scaled(self, out: np.ndarray, den: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact cut functions as integer numerators over one common denominator.

        ``out / den`` is the exact output line (2, C, H, W) of an
        :class:`ExactPass`. The residual ``F(mean_c(line - out))`` and the
        cuts ``r -+ lam`` are formed in Python integers. The returned
        ``(alpha, beta)`` share a positive denominator, which is not returned
        because it cancels in every sign and root.
        """
        if not hasattr(self, "_line_ints"):
            self._line_ints = to_scaled_int(np.stack([self.a_image, self.b_image]))
        line_nums, exponent = self._line_ints
        channels, height, width = self.a_image.shape
        common = math.lcm(den, 1 << exponent)
        diff = _rescale(line_nums, 1 << exponent, common) - _rescale(out, den, common)
        means = diff.sum(axis=1)  # over channels: denominator common * C
        half = self.kernel_size // 2
        padded = _object_zeros((2, height + 2 * half, width + 2 * half))
        padded[:, half : half + height, half : half + width] = means
        offsets = range(self.kernel_size)
        sums = sum(padded[:, i : i + height, j : j + width] for i in offsets for j in offsets)
        if self.filter_profile == "si4onnx":
            counts = np.full((height, width), self.kernel_size**2, dtype=np.int64)
        else:
            rows = np.minimum(np.arange(height) + half, height - 1) - np.maximum(np.arange(height) - half, 0) + 1
            cols = np.minimum(np.arange(width) + half, width - 1) - np.maximum(np.arange(width) - half, 0) + 1
            counts = np.outer(rows, cols).astype(np.int64)
        multiple = math.lcm(*sorted(set(int(c) for c in counts.ravel())))
        residual = (sums * _as_object_ints(multiple // counts)).reshape(2, -1)
        denominator = common * channels * multiple
        lam_num, lam_exp = to_scaled_int(np.array([self.lam]))
        final = math.lcm(denominator, 1 << lam_exp)
        residual = _rescale(residual, denominator, final)
        lam_scaled = int(lam_num[0]) * (final >> lam_exp)
        eligible = self.lambda_cuts.eligible_index
        r_alpha, r_beta = residual[0][eligible], residual[1][eligible]
        return np.concatenate([r_alpha - lam_scaled, r_alpha + lam_scaled]), np.concatenate([r_beta, r_beta])

    def label(self, signs: np.ndarray) -> bool:
        """True when the region given by the cut signs equals the observed region."""
        return bool(np.array_equal(self.lambda_cuts.region_from_signs(np.asarray(signs, dtype=bool)), self.observed))


# ---------------------------------------------------------------------------
# Proven intervals of validity.


def float_zones(alpha, beta, rad_alpha, rad_beta, sign) -> tuple[np.ndarray, np.ndarray]:
    """Per unit, an interval ``[lo, hi]`` on which ``sign * (alpha* + beta* z) >= 0`` is proven.

    ``alpha*``, ``beta*`` are the exact values, known to lie within
    ``rad_alpha``, ``rad_beta`` of the float midpoints. With margins ``m``
    that cover the rounding of this evaluation, the function
    ``A + B(z) z`` (``A = s alpha - rad_a - m_a``; ``B = s beta - rad_b - m_b``
    for ``z >= 0`` and ``s beta + rad_b + m_b`` for ``z <= 0``) is a concave
    lower bound of ``s (alpha* + beta* z)``; the returned interval is where
    it is ``>= 0``, with every end moved one ulp inward. An empty zone is
    returned as ``lo = inf, hi = -inf``.
    """
    s = np.asarray(sign, dtype=np.float64)
    margin_a = 8 * UNIT_ROUNDOFF * (np.abs(alpha) + rad_alpha)
    margin_b = 8 * UNIT_ROUNDOFF * (np.abs(beta) + rad_beta)
    big_a = s * alpha - rad_alpha - margin_a
    slope_pos = s * beta - rad_beta - margin_b
    slope_neg = s * beta + rad_beta + margin_b
    lo = np.full(alpha.shape, _INF)
    hi = np.full(alpha.shape, -_INF)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        at_zero = big_a >= 0
        # Zones that contain 0.
        hi = np.where(at_zero, np.where(slope_pos >= 0, _INF, np.nextafter(-big_a / slope_pos, -_INF)), hi)
        lo = np.where(at_zero, np.where(slope_neg <= 0, -_INF, np.nextafter(-big_a / slope_neg, _INF)), lo)
        # Zones on the positive side only.
        right = ~at_zero & (slope_pos > 0)
        lo = np.where(right, np.nextafter(-big_a / slope_pos, _INF), lo)
        hi = np.where(right, _INF, hi)
        # Zones on the negative side only.
        left = ~at_zero & ~right & (slope_neg < 0)
        lo = np.where(left, -_INF, lo)
        hi = np.where(left, np.nextafter(-big_a / slope_neg, -_INF), hi)
    lo = np.where(np.isnan(lo), _INF, lo)
    hi = np.where(np.isnan(hi), -_INF, hi)
    return lo, hi


def root_enclosure(alpha: float, beta: float, rad_alpha: float, rad_beta: float) -> tuple[float, float]:
    """Return an interval that contains the root of ``alpha* + beta* z`` (or ``(-inf, inf)``).

    Outside it, the sign of the unit is proven by :func:`float_zones`, so
    the root lies inside.
    """
    values = [np.array([float(v)]) for v in (alpha, beta, rad_alpha, rad_beta)]
    up = 1.0 if beta > 0 else -1.0
    lo_side = float_zones(*values, np.array([-up]))[1][0]
    hi_side = float_zones(*values, np.array([up]))[0][0]
    lo = lo_side if math.isfinite(lo_side) else -_INF
    hi = hi_side if math.isfinite(hi_side) else _INF
    return (lo, hi) if lo <= hi else (-_INF, _INF)


def _ratio_float(p: Any, q: Any) -> float:
    try:
        return -p / q if isinstance(p, int) and isinstance(q, int) else float(-Fraction(p) / Fraction(q))
    except OverflowError:
        return _INF if (p > 0) != (q > 0) else -_INF


_RATIO = np.frompyfunc(_ratio_float, 2, 1)


class _Bounds:
    """Lower and upper ends of the proven validity interval of one unit group,
    with units left out on request (the units named at an interval's ends)."""

    def __init__(self, group: UnitGroup, exact: bool) -> None:
        self.exact = exact
        self.group = group
        sign = np.where(group.bits, 1, -1)
        if exact:
            positive = (group.beta > 0).astype(bool)
            negative = (group.beta < 0).astype(bool)
            lower = np.where(group.bits, positive, negative)
            upper = np.where(group.bits, negative, positive)
            flat = ~(positive | negative)
            wrong = flat & np.where(group.bits, (group.alpha < 0).astype(bool), (group.alpha > 0).astype(bool))
            roots = np.full(group.alpha.size, np.nan)
            moving = lower | upper
            if moving.any():
                roots[moving] = _RATIO(group.alpha[moving], group.beta[moving]).astype(np.float64)
            self.lo = np.where(lower, roots, -_INF)
            self.hi = np.where(upper, roots, _INF)
            self.lo[wrong] = _INF
            self.hi[wrong] = -_INF
            self.lower, self.upper = lower, upper
        else:
            self.lo, self.hi = float_zones(group.alpha, group.beta, group.rad_alpha, group.rad_beta, sign)

    def _exact_end(self, mask: np.ndarray, use_lower: bool):
        # Correct rounding is monotone, so the exact extreme is among the
        # units whose float root equals the float extreme.
        if use_lower:
            values, side, extreme = self.lo, self.lower, self.lo[mask].max()
        else:
            values, side, extreme = self.hi, self.upper, self.hi[mask].min()
        candidates = mask & side & (values == extreme)
        roots = [-Fraction(self.group.alpha[i]) / Fraction(self.group.beta[i]) for i in np.flatnonzero(candidates)]
        return max(roots) if use_lower else min(roots)

    def bounds(self, exclude: Sequence[int] = ()) -> tuple[Any, Any]:
        """``(lo, hi)`` over the group without the units ``exclude`` (Fractions or floats)."""
        if self.lo.size == 0:
            return -_INF, _INF
        mask = np.ones(self.lo.size, dtype=bool)
        if len(exclude):
            mask[np.asarray(exclude, dtype=np.int64)] = False
        if not mask.any():
            return -_INF, _INF
        lo = float(self.lo[mask].max())
        hi = float(self.hi[mask].min())
        if self.exact:
            if math.isfinite(lo):
                lo = self._exact_end(mask, True)
            if math.isfinite(hi):
                hi = self._exact_end(mask, False)
        return lo, hi


def _intersect_bounds(bounds: list[_Bounds], exclude: dict[int, list[int]] | None = None) -> tuple[Any, Any]:
    lo, hi = -_INF, _INF
    for item in bounds:
        group_lo, group_hi = item.bounds((exclude or {}).get(item.group.key, ()))
        lo = max(lo, group_lo)
        hi = min(hi, group_hi)
    return lo, hi


# ---------------------------------------------------------------------------
# LP cross-check.


@dataclass
class LPSummary:
    """Outcome of the LP cross-check over all intervals."""

    solves: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    worst_disagreement: float = 0.0
    worst_violation: float = 0.0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    solver: str = "HIGHS"

    def to_json(self) -> dict[str, Any]:
        return {
            "solver": self.solver,
            "solves": self.solves,
            "statuses": dict(self.statuses),
            "worst_relative_disagreement": self.worst_disagreement,
            "worst_constraint_violation": self.worst_violation,
            "tolerance": LP_END_RTOL,
            "failures": list(self.failures[:20]),
            "seconds": self.seconds,
        }


@contextlib.contextmanager
def quiet_stdout():
    """Send file descriptor 1 to the null device for the duration of the block.

    HiGHS prints a banner from C++ to the process's standard output when
    cvxpy creates a solver object; this keeps it out of the CLI's output.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(null)


class LPCrossCheck:
    """``min z`` and ``max z`` of one interval's constraints, solved by HiGHS through cvxpy.

    The problem is built once with cvxpy Parameters (``rows`` constraints
    ``A_i + B_i z >= 0`` per side, padded with ``1 + 0 z >= 0``) and re-used
    for every interval: each interval keeps its ``rows`` tightest lower and
    ``rows`` tightest upper constraints, each row divided by
    ``max(|alpha|, |beta|)``.
    """

    def __init__(self, rows: int = LP_ROWS_PER_SIDE) -> None:
        import cvxpy as cp

        self.cp = cp
        self.rows = int(rows)
        self.z = cp.Variable()
        self.A = cp.Parameter(2 * self.rows)
        self.B = cp.Parameter(2 * self.rows)
        constraints = [self.A + cp.multiply(self.B, self.z) >= 0]
        self.minimum = cp.Problem(cp.Minimize(self.z), constraints)
        self.maximum = cp.Problem(cp.Maximize(self.z), constraints)
        self.summary = LPSummary()

    def check(self, index: int, alpha: np.ndarray, beta: np.ndarray, sign: np.ndarray, lo: Any, hi: Any) -> None:
        """Solve both sides for one interval and compare with the proven ends ``lo``, ``hi``."""
        started = time.perf_counter()
        s_beta = sign * beta
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            roots = -alpha / beta
        lower = np.flatnonzero(s_beta > 0)
        upper = np.flatnonzero(s_beta < 0)
        lower = lower[np.argsort(-roots[lower])][: self.rows]
        upper = upper[np.argsort(roots[upper])][: self.rows]
        A = np.ones(2 * self.rows)
        B = np.zeros(2 * self.rows)
        for slot, index_set in ((0, lower), (self.rows, upper)):
            chosen = index_set
            scale = np.maximum(np.abs(alpha[chosen]), np.abs(beta[chosen]))
            A[slot : slot + chosen.size] = sign[chosen] * alpha[chosen] / scale
            B[slot : slot + chosen.size] = sign[chosen] * beta[chosen] / scale
        self.A.value, self.B.value = A, B

        for problem, end, present, name in ((self.minimum, lo, lower.size, "lo"), (self.maximum, hi, upper.size, "hi")):
            if not present or not _finite(end):
                continue
            try:
                with quiet_stdout():
                    problem.solve(solver=self.cp.HIGHS)
                status = str(problem.status)
            except self.cp.error.SolverError as error:
                status = f"solver_error: {error}"
            self.summary.solves += 1
            self.summary.statuses[status] = self.summary.statuses.get(status, 0) + 1
            if status != "optimal":
                self.summary.failures.append(f"interval {index} {name}: status {status!r}")
                continue
            value = float(self.z.value)
            end_float = float(end)
            scale_z = max(1.0, abs(end_float))
            disagreement = abs(value - end_float) / scale_z
            violation = _violation(alpha, beta, sign, value)
            self.summary.worst_disagreement = max(self.summary.worst_disagreement, disagreement)
            self.summary.worst_violation = max(self.summary.worst_violation, violation)
            if disagreement > LP_END_RTOL:
                self.summary.failures.append(
                    f"interval {index} {name}: LP optimum {value!r} differs from the proven end {end_float!r} "
                    f"by {disagreement:.3e} relative (tolerance {LP_END_RTOL})")
        self.summary.seconds += time.perf_counter() - started


def _violation(alpha: np.ndarray, beta: np.ndarray, sign: np.ndarray, z: float) -> float:
    """Largest relative violation ``max(0, -s (alpha + beta z)) / max(|alpha|, |beta z|)``."""
    value = sign * (alpha + beta * z)
    scale = np.maximum(np.maximum(np.abs(alpha), np.abs(beta * z)), 1e-300)
    return float(max(0.0, np.max(-value / scale, initial=0.0)))


def _finite(value: Any) -> bool:
    return not (isinstance(value, float) and math.isinf(value))


# ---------------------------------------------------------------------------
# Partition certification.


@dataclass
class PieceCheck:
    """Certification of one stored interval.

    Attributes
    ----------
    index : int
        Position in the partition.
    point : float
        Interior point at which the pattern was read.
    proven : (lo, hi) or None
        Interval of ``z`` on which the pattern and cut signs are proven valid
        (exact Fractions or floats, ``+-inf`` as floats); None when empty.
    end_roots : list of str or None
        Exact roots of the units named at ``hi`` (``p/q`` or hex text), given
        when one of them does not round to the stored ``hi``.
    end_enclosure : (float, float) or None
        Interval that contains the exact root of every unit named at ``hi``.
    label : bool or None
        The label that the cut signs give (None without cuts).
    issues : list of str
        Failed checks (a mismatching digest, label or end).
    """

    index: int
    point: float
    proven: tuple[Any, Any] | None
    end_roots: list[str] | None = None
    end_enclosure: tuple[float, float] | None = None
    label: bool | None = None
    issues: list[str] = field(default_factory=list)
    proven_without_lo: tuple[Any, Any] | None = None
    proven_without_hi: tuple[Any, Any] | None = None


@dataclass
class PartitionCertificate:
    """Result of :func:`certify_partition`.

    ``covered`` is the part of the searched range whose label is proven,
    ``in_z`` the part proven to carry label True (the certified truncation
    set within the range), ``unresolved`` the rest of the range. ``issues``
    lists failed checks; an empty list means every check passed.
    """

    method: str
    range: tuple[float, float]
    pieces: list[PieceCheck]
    covered: IntervalUnion
    in_z: IntervalUnion
    unresolved: IntervalUnion
    issues: list[str]
    tiling: list[str]
    unexplained_flips: int
    resolved_slivers: int
    lp: LPSummary | None
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.issues

    @property
    def unresolved_width(self) -> float:
        """Total width of the unresolved part (float)."""
        return float(sum(hi - lo for lo, hi in self.unresolved)) if self.unresolved else 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-compatible summary."""
        widths = [float(hi - lo) for lo, hi in self.unresolved]
        return {
            "method": self.method,
            "pieces": len(self.pieces),
            "issues": list(self.issues[:50]),
            "issue_count": len(self.issues),
            "tiling": list(self.tiling),
            "unresolved": self.unresolved.to_json(),
            "unresolved_count": len(widths),
            "unresolved_width": float(sum(widths)),
            "widest_sliver": max(widths, default=0.0),
            "resolved_slivers": self.resolved_slivers,
            "unexplained_flips": self.unexplained_flips,
            "lp": None if self.lp is None else self.lp.to_json(),
            "seconds": self.seconds,
        }


def check_tiling(partition: Partition, t_obs: float | None = None) -> list[str]:
    """Check that the pieces tile the searched range exactly.

    Returns a list of failures (empty when the tiling is right): the first
    piece starts at the range's low end, each piece ends where the next
    begins (exact float comparison), no piece has zero width, the last
    piece ends at the range's high end, and (with ``t_obs``) ``t_obs`` lies
    in a piece labelled True.
    """
    problems: list[str] = []
    pieces = partition.pieces
    if not pieces:
        return ["the partition has no pieces"]
    if pieces[0].lo != partition.lo:
        problems.append(f"the first piece starts at {pieces[0].lo!r}, not at the range end {partition.lo!r}")
    if pieces[-1].hi != partition.hi:
        problems.append(f"the last piece ends at {pieces[-1].hi!r}, not at the range end {partition.hi!r}")
    for index, piece in enumerate(pieces):
        if not piece.lo < piece.hi:
            problems.append(f"piece {index} [{piece.lo!r}, {piece.hi!r}] has zero or negative width")
        if index + 1 < len(pieces) and piece.hi != pieces[index + 1].lo:
            kind = "gap" if piece.hi < pieces[index + 1].lo else "overlap"
            problems.append(f"{kind} between piece {index} (hi {piece.hi!r}) and piece {index + 1} "
                            f"(lo {pieces[index + 1].lo!r})")
    if t_obs is not None and not any(p.label and p.lo <= t_obs <= p.hi for p in pieces):
        problems.append(f"t_obs={t_obs!r} lies in no piece labelled True")
    return problems


def interior_point(lo: float, hi: float) -> float:
    """Return a point of ``[lo, hi)`` away from its ends where possible (``lo < hi``)."""
    if math.isinf(lo) and math.isinf(hi):
        return 0.0
    if math.isinf(lo):
        return hi - max(1.0, abs(hi))
    if math.isinf(hi):
        return lo + max(1.0, abs(lo))
    mid = lo + (hi - lo) / 2 if math.isfinite(hi - lo) else lo / 2 + hi / 2
    return mid if lo <= mid < hi else lo


def _ambiguous(groups: list[UnitGroup], z: float) -> list[tuple[int, int]]:
    """Units whose sign at ``z`` is within (twice) their radius of zero."""
    found = []
    for group in groups:
        if group.alpha.size == 0:
            continue
        value = group.alpha + group.beta * z
        rounding = 16 * UNIT_ROUNDOFF * (np.abs(group.alpha) + np.abs(group.beta * z))
        slack = 2 * (group.rad_alpha + group.rad_beta * abs(z)) + rounding
        found.extend((group.key, int(i)) for i in np.flatnonzero(np.abs(value) <= slack))
    return found


def _match_pattern(graph, a, b, z: float, first: FloatPass, wanted: str) -> FloatPass | None:
    """Find the pattern with digest ``wanted`` among flips of the ambiguous units at ``z``."""
    candidates = _ambiguous(first.groups, z)
    if not candidates or len(candidates) > _MAX_AMBIGUOUS:
        return None
    for count in range(1, len(candidates) + 1):
        for subset in itertools.combinations(candidates, count):
            force: dict[int, dict[int, bool]] = {}
            for key, index in subset:
                force.setdefault(key, {})[index] = not bool(first.bits[key][index])
            trial = float_pass(graph, a, b, z=z, force=force)
            if trial.digest == wanted:
                return trial
    return None


def _cut_signs(cut_alpha: np.ndarray, cut_beta: np.ndarray, z: float) -> np.ndarray:
    return _decide(cut_alpha, cut_beta, z)


def _match_signs(alpha, beta, rad_alpha, rad_beta, z: float, signs: np.ndarray, wanted: str) -> np.ndarray | None:
    group = UnitGroup(CUT_NODE, alpha, beta, signs, rad_alpha, rad_beta)
    candidates = [index for _, index in _ambiguous([group], z)]
    if not candidates or len(candidates) > _MAX_AMBIGUOUS:
        return None
    for count in range(1, len(candidates) + 1):
        for subset in itertools.combinations(candidates, count):
            trial = signs.copy()
            trial[list(subset)] = ~trial[list(subset)]
            if signs_digest(trial) == wanted:
                return trial
    return None


def _text(value: Any) -> str:
    if not isinstance(value, float):
        return endpoint_to_text(value)
    if math.isfinite(value):
        return value.hex()
    return "inf" if value > 0 else "-inf"


def choose_method(graph: Graph, network_pieces: int, method: str = "auto") -> str:
    """``"exact"`` or ``"enclosure"``: the method ``"auto"`` picks by the cost estimate."""
    if method not in METHODS:
        raise InputError(f"method={method!r} is unknown; use one of {METHODS}")
    if method != "auto":
        return method
    return "exact" if exact_cost(graph) * max(1, network_pieces) <= EXACT_BUDGET else "enclosure"


def exact_cost(graph: Graph) -> int:
    """Multiply-adds of one exact pass (both rows of the line)."""
    total = 0
    for node in graph.nodes[1:]:
        total += 2 * node.size * max(1, term_count(node))
    return total


def certify_partition(
    graph: Graph,
    a: np.ndarray,
    b: np.ndarray,
    partition: Partition,
    *,
    cuts: ResidualCuts | None = None,
    method: str = "auto",
    lp: bool | None = None,
    t_obs: float | None = None,
    progress: bool | None = None,
) -> PartitionCertificate:
    """Certify every interval of ``partition`` (a walk of ``graph`` along ``a + b z``).

    Parameters
    ----------
    graph
        The piecewise-linear map that was walked.
    a, b
        The line, each of the graph's input shape (float64, read exactly).
    partition
        The walk's partition; with ``cuts`` its pieces carry cut-sign digests
        and labels.
    cuts
        The cut functions the walk used (None for a walk without cuts).
    method
        ``"exact"``, ``"enclosure"`` or ``"auto"`` (exact when
        :func:`exact_cost` times the network pieces is below
        :data:`EXACT_BUDGET`).
    lp
        Run the LP cross-check; None runs it when the partition has at most
        :data:`LP_DEFAULT_MAX_PIECES` intervals.
    t_obs
        Observed statistic; the tiling check then requires it in Z.
    progress
        tqdm bar on stderr (default: when stderr is a terminal and there are
        more than 200 intervals).

    Returns
    -------
    PartitionCertificate
    """
    started = time.perf_counter()
    method = choose_method(graph, partition.network_pieces, method)
    pieces = partition.pieces
    run_lp = (len(pieces) <= LP_DEFAULT_MAX_PIECES) if lp is None else bool(lp)
    checker = LPCrossCheck() if run_lp else None
    a = np.asarray(a, dtype=np.float64).reshape(graph.input_shape)
    b = np.asarray(b, dtype=np.float64).reshape(graph.input_shape)
    issues: list[str] = []
    tiling = check_tiling(partition, t_obs if cuts is not None else None)
    issues.extend(f"tiling: {problem}" for problem in tiling)

    show = (sys.stderr.isatty() and len(pieces) > 200) if progress is None else progress
    iterator: Any = range(len(pieces))
    if show:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, desc="certify", unit="interval", file=sys.stderr, leave=False)

    checks: list[PieceCheck] = []
    previous: tuple[dict[int, np.ndarray], np.ndarray | None] | None = None
    flips_by_boundary: list[set[tuple[int, int]] | None] = []
    unexplained = 0
    reuse: dict[str, Any] = {}
    with single_blas_thread():
        for k in iterator:
            piece = pieces[k]
            named_lo = pieces[k - 1].end_units if k > 0 else ()
            check, state = _check_piece(graph, a, b, piece, k, named_lo, cuts, method, checker, reuse)
            checks.append(check)
            issues.extend(f"interval {k}: {issue}" for issue in check.issues)
            if previous is not None and state is not None:
                flips = _flips(previous, state)
                named = set(tuple(u) for u in pieces[k - 1].end_units)
                if not flips <= named:
                    unexplained += len(flips - named)
                flips_by_boundary.append(flips)
            elif k > 0:
                flips_by_boundary.append(None)
            previous = state

    covered, in_z, unresolved, resolved = _coverage(partition, checks, flips_by_boundary, issues)
    certificate = PartitionCertificate(
        method=method, range=(partition.lo, partition.hi), pieces=checks, covered=covered, in_z=in_z,
        unresolved=unresolved, issues=issues, tiling=tiling, unexplained_flips=unexplained,
        resolved_slivers=resolved, lp=None if checker is None else checker.summary,
        seconds=time.perf_counter() - started)
    if checker is not None:
        issues.extend(f"lp: {failure}" for failure in checker.summary.failures)
    logger.info("certified %d intervals (%s) in %.2f s: %d issues, unresolved width %.3g",
                len(pieces), method, certificate.seconds, len(issues), certificate.unresolved_width)
    return certificate


def _flips(before: tuple, after: tuple) -> set[tuple[int, int]]:
    bits_before, signs_before = before
    bits_after, signs_after = after
    changed: set[tuple[int, int]] = set()
    for node_id, bits in bits_before.items():
        other = bits_after.get(node_id)
        if other is not None and other.shape == bits.shape:
            changed.update((node_id, int(i)) for i in np.flatnonzero(bits != other))
    if signs_before is not None and signs_after is not None:
        changed.update((CUT_NODE, int(i)) for i in np.flatnonzero(signs_before != signs_after))
    return changed


def _check_piece(graph, a, b, piece: Piece, k: int, named_lo, cuts, method: str, checker, reuse: dict):
    """Certify one interval; return its PieceCheck and its (bits, signs) for the flip check.

    ``reuse`` keeps the last pattern's passes: with the bits fixed, a pass
    does not depend on ``z``, so the intervals of one network piece share it.
    Reading the pattern again at each interval's interior point is then
    skipped; validity is still proven on every interval.
    """
    z = interior_point(piece.lo, piece.hi)
    check = PieceCheck(k, z, None)

    # 1. The pattern at the interior point must have the recorded digest.
    if reuse.get("digest") == piece.pattern:
        fpass = reuse["float"]
    else:
        first = float_pass(graph, a, b, z=z)
        fpass = first if first.digest == piece.pattern else _match_pattern(graph, a, b, z, first, piece.pattern)
        if fpass is None:
            check.issues.append(f"the pattern read at z={z!r} has digest {first.digest[:16]}..., not the recorded "
                                f"{piece.pattern[:16]}...")
            return check, None
        reuse.clear()
        reuse.update(digest=piece.pattern, float=fpass)

    # 2. Cut signs and label.
    groups = list(fpass.groups)
    signs = None
    if cuts is not None:
        cut_alpha, cut_beta = cuts.functions(fpass.out)
        rad_alpha, rad_beta = cuts.radius(fpass.out, fpass.out_rad, cut_alpha)
        signs = _cut_signs(cut_alpha, cut_beta, z)
        if signs_digest(signs) != piece.signs:
            matched = _match_signs(cut_alpha, cut_beta, rad_alpha, rad_beta, z, signs, piece.signs)
            if matched is None:
                check.issues.append(f"the cut signs read at z={z!r} do not have the recorded digest")
                return check, None
            signs = matched
        check.label = cuts.label(signs)
        if bool(check.label) != bool(piece.label):
            check.issues.append(f"the cut signs give label {check.label}, the interval records {piece.label}")
        groups.append(UnitGroup(CUT_NODE, cut_alpha, cut_beta, signs, rad_alpha, rad_beta))

    # 3. Values for the proofs: exact, or the float enclosure.
    if method == "exact":
        if "exact" not in reuse:
            reuse["exact"] = exact_pass(graph, a, b, fpass.bits)
        epass = reuse["exact"]
        proof_groups = list(epass.groups)
        if cuts is not None:
            exact_alpha, exact_beta = cuts.exact_scaled(epass.out, epass.den)
            proof_groups.append(UnitGroup(CUT_NODE, exact_alpha, exact_beta, signs))
    else:
        proof_groups = groups
    bounds = [_Bounds(group, method == "exact") for group in proof_groups]

    # 4. Proven interval, also without the units named at either end.
    lo, hi = _intersect_bounds(bounds)
    check.proven = (lo, hi) if lo <= hi else None
    for attr, named in (("proven_without_lo", named_lo), ("proven_without_hi", piece.end_units)):
        exclude: dict[int, list[int]] = {}
        for key, index in named:
            exclude.setdefault(int(key), []).append(int(index))
        lo_x, hi_x = _intersect_bounds(bounds, exclude)
        setattr(check, attr, (lo_x, hi_x) if lo_x <= hi_x else None)

    # 5. The stored end against the roots of the named units.
    _check_end(check, piece, groups, proof_groups if method == "exact" else None)

    # 6. LP cross-check on the float constraints.
    if checker is not None and check.proven is not None:
        alpha = np.concatenate([g.alpha for g in groups])
        beta = np.concatenate([g.beta for g in groups])
        sign = np.concatenate([np.where(g.bits, 1.0, -1.0) for g in groups])
        checker.check(k, alpha, beta, sign, check.proven[0], check.proven[1])
    return check, (fpass.bits, signs)


def _check_end(check: PieceCheck, piece: Piece, float_groups: list[UnitGroup], exact_groups: list[UnitGroup] | None) -> None:
    """Compare the stored ``hi`` with the roots of the units the walk named there."""
    if not piece.end_units:
        return
    by_key = {group.key: group for group in float_groups}
    exact_by_key = {group.key: group for group in exact_groups} if exact_groups is not None else {}
    enclosure_lo, enclosure_hi = -_INF, _INF
    roots: list[Any] = []
    for key, index in piece.end_units:
        group = by_key.get(int(key))
        if group is None or not 0 <= index < group.alpha.size:
            check.issues.append(f"named unit ({key}, {index}) does not exist")
            continue
        alpha, beta = float(group.alpha[index]), float(group.beta[index])
        if beta == 0:
            check.issues.append(f"named unit ({key}, {index}) has slope 0 and cannot bind")
            continue
        ra, rb = float(group.rad_alpha[index]), float(group.rad_beta[index])
        # The walk's float root comes from a computation within the same
        # bound of the exact values: allow twice the radius.
        wide_lo, wide_hi = root_enclosure(alpha, beta, 2 * ra, 2 * rb)
        if not wide_lo <= piece.hi <= wide_hi:
            check.issues.append(f"hi={piece.hi!r} lies outside [{wide_lo!r}, {wide_hi!r}], the enclosure of the root "
                                f"of named unit ({key}, {index})")
        lo_root, hi_root = root_enclosure(alpha, beta, ra, rb)
        enclosure_lo, enclosure_hi = max(enclosure_lo, lo_root), min(enclosure_hi, hi_root)
        if exact_groups is not None:
            exact = exact_by_key[int(key)]
            if exact.beta[index] == 0:
                check.issues.append(f"named unit ({key}, {index}) has exact slope 0 and cannot bind")
                continue
            roots.append(-Fraction(exact.alpha[index]) / Fraction(exact.beta[index]))
    if enclosure_lo <= enclosure_hi:
        check.end_enclosure = (enclosure_lo, enclosure_hi)
    if roots and any(_round(root) != piece.hi for root in roots):
        check.end_roots = [endpoint_to_text(root) for root in roots]


def _round(value: Fraction) -> float:
    try:
        return float(value)
    except OverflowError:
        return _INF if value > 0 else -_INF


def _clip(pair: tuple[Any, Any] | None, lo: float, hi: float) -> tuple[Any, Any] | None:
    if pair is None:
        return None
    start, end = max(pair[0], lo), min(pair[1], hi)
    return (start, end) if start < end else None


def _coverage(partition: Partition, checks: list[PieceCheck], flips: list, issues: list[str]):
    """Covered, certified-in-Z and unresolved parts of the searched range."""
    lo, hi = partition.lo, partition.hi
    covered_pairs, z_pairs = [], []
    labels = [piece.label if check.label is None else check.label for piece, check in zip(partition.pieces, checks)]
    for check, label in zip(checks, labels):
        part = _clip(check.proven, lo, hi)
        if part is None:
            continue
        covered_pairs.append(part)
        if label:
            z_pairs.append(part)

    # Slivers between two intervals with the same label, when a single named
    # unit flips there and every other unit is proven on the sliver under
    # both patterns, carry that label (see proofs/rounding_bound.md, section 5).
    resolved = 0
    for k in range(len(checks) - 1):
        left, right = checks[k], checks[k + 1]
        if left.proven is None or right.proven is None:
            continue
        gap = (left.proven[1], right.proven[0])
        if not gap[0] < gap[1]:
            if labels[k] != labels[k + 1] and gap[0] > gap[1]:
                overlap = _clip((right.proven[0], left.proven[1]), lo, hi)
                if overlap is not None:
                    issues.append(f"intervals {k} and {k + 1} are both proven on an overlap but carry different labels")
            continue
        named = set(tuple(u) for u in partition.pieces[k].end_units)
        if labels[k] != labels[k + 1] or len(named) != 1 or flips[k] is None or flips[k] != named:
            continue
        outer = [left.proven_without_hi, right.proven_without_lo]
        if all(p is not None and p[0] <= gap[0] and gap[1] <= p[1] for p in outer):
            part = _clip(gap, lo, hi)
            if part is not None:
                covered_pairs.append(part)
                if labels[k]:
                    z_pairs.append(part)
                resolved += 1
    covered = IntervalUnion(covered_pairs)
    in_z = IntervalUnion(z_pairs)
    unresolved = covered.complement(lo, hi)
    return covered, in_z, unresolved, resolved


__all__ = [
    "EXACT_BUDGET",
    "LPCrossCheck",
    "LPSummary",
    "METHODS",
    "PartitionCertificate",
    "PieceCheck",
    "ResidualCuts",
    "certify_partition",
    "check_tiling",
    "choose_method",
    "exact_cost",
    "exact_pass",
    "float_pass",
    "float_zones",
    "gamma",
    "interior_point",
    "pattern_digest",
    "root_enclosure",
    "signs_digest",
    "term_count",
    "to_scaled_int",
]
