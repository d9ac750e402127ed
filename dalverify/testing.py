"""Hypothesis strategies and exact oracles for testing line walks and selective p-values.

This module is public so that other implementations (and dalverify's own
tests) can be checked against the same hard cases and the same exact
references. It needs the ``hypothesis`` package (the ``test`` extra).

Strategies
----------
:func:`dense_networks`, :func:`conv_networks` and :func:`pl_graphs` draw
small piecewise-linear :class:`~dalverify.graph.ir.Graph` objects together
with a line ``a + b z`` through them and the set of hard cases planted in
them (:class:`PlantedGraph`):

- ``"tie"``: two units with the same root on the line (a duplicated unit
  scaled by 2), so two units change sign at one breakpoint;
- ``"zero_slope"``: a unit whose pre-activation does not change along the line;
- ``"narrow"``: a unit whose root lies ``2**-40`` (about 9.1e-13) from
  another unit's, which makes a piece narrower than 1e-12;
- ``"zero_root"``: a unit whose pre-activation is exactly 0 at ``z = 0``.

Parameters are small dyadic rationals (weights multiples of 1/4, biases and
line entries multiples of 1/8), so float64 arithmetic on the dense networks
is exact and a correct walk finds the correctly rounded exact breakpoints.
:func:`lines` draws further lines for a given input shape, and
:func:`truncation_cases` draws truncation sets with an observed statistic in
every tail regime (:data:`REGIMES`).

Oracles
-------
:func:`exact_partition` partitions a segment of the line into the pieces of
constant activation pattern in exact rational arithmetic, layer by layer
(all breakpoints of one piecewise layer at once), which shares no algorithm
with a piece-by-piece walk. :func:`describe_graph` gives the exact
description it works on (:class:`ExactNetwork`), written independently of
``dalverify.graph.reference``. :func:`exact_selective_pvalue` computes
selective p-values by mpmath quadrature of the normal density, with the
Gaussian factor of far tails kept as an exact rational exponent, and shares
no code with ``dalverify.methods.pvalues``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence, Union

import numpy as np
from hypothesis import strategies as st
from mpmath import mp, mpf

from dalverify.errors import InputError, NumericalError
from dalverify.graph.builder import GraphBuilder
from dalverify.graph.ir import Graph

__all__ = [
    "MAGNITUDES",
    "NARROW_GAP",
    "PLANTS",
    "REGIMES",
    "ExactNetwork",
    "ExactPartition",
    "PlantedGraph",
    "TruncationCase",
    "conv_networks",
    "dense_networks",
    "describe_graph",
    "exact_partition",
    "exact_selective_pvalue",
    "lines",
    "pl_graphs",
    "truncation_cases",
]

#: Distance between the roots of a planted "narrow" unit and its source unit.
NARROW_GAP = 2.0**-40

#: Hard cases that the graph strategies plant.
PLANTS = ("tie", "zero_slope", "narrow", "zero_root")

#: Bands of ``|t_obs| / sd`` drawn by :func:`truncation_cases`.
MAGNITUDES = {"central": (0.1, 5.0), "tail": (5.0, 40.0), "far": (40.0, 1e4), "extreme": (1e4, 1e200)}

#: Regimes of :func:`truncation_cases`: the four magnitude bands, plus
#: thousands of intervals, intervals narrower than 1e-12 relative to their
#: ends, and ends that are rationals not representable in float64.
REGIMES = ("central", "tail", "far", "extreme", "many", "narrow", "rational")

#: Largest dense expansion (entries) :func:`describe_graph` builds for one node.
MAX_EXPANSION = 1_000_000

Endpoint = Union[Fraction, float]
_PIECEWISE = ("relu", "leaky_relu", "abs")


# ---------------------------------------------------------------------------
# Exact description of a graph.


@dataclass(frozen=True)
class ExactNetwork:
    """A piecewise-linear network in exact rational arithmetic, on flat vectors.

    Value 0 is the input (flattened in C order); operation ``k`` produces
    value ``k + 1``. Operations (every number a :class:`~fractions.Fraction`):

    - ``("linear", src, rows, bias)``: ``out[i] = sum(rows[i][j] * v[j]) + bias[i]``
      with ``rows[i]`` a dict ``{j: coefficient}``;
    - ``("relu", src)``, ``("leaky_relu", src, slope)``, ``("abs", src)``;
    - ``("add", s1, s2)``, ``("sub", s1, s2)``;
    - ``("concat", sources, axis)``: concatenation of the values reshaped to
      their ``shapes`` along ``axis`` (without the batch axis);
    - ``("add_const", src, consts)``, ``("mul_const", src, consts)``: elementwise;
    - ``("reshape", src)``: the same flat vector under a new shape.
    """

    input_shape: tuple[int, ...]
    shapes: tuple[tuple[int, ...], ...]
    ops: tuple[tuple, ...]
    output: int

    def evaluate(self, x: Sequence[Any]) -> list[list[Fraction]]:
        """Evaluate every value of the network at the flat input ``x`` (converted exactly)."""
        values = [[_exact(v) for v in x]]
        if len(values[0]) != int(np.prod(self.input_shape, dtype=np.int64)):
            raise InputError(f"input has {len(values[0])} entries; the network expects shape {self.input_shape}")
        for op in self.ops:
            values.append(_apply(op, values, self.shapes))
        return values

    def output_at(self, x: Sequence[Any]) -> list[Fraction]:
        """Evaluate the output value at the flat input ``x``."""
        return self.evaluate(x)[self.output]

    def piecewise_ops(self) -> list[int]:
        """Indices (into ``ops``) of the piecewise-linear operations, in order."""
        return [k for k, op in enumerate(self.ops) if op[0] in _PIECEWISE]


def _exact(value: Any) -> Fraction:
    if isinstance(value, Fraction):
        return value
    if isinstance(value, (int, np.integer)):
        return Fraction(int(value))
    number = float(value)
    if not math.isfinite(number):
        raise InputError(f"value {value!r} is not finite")
    return Fraction(number)


def _apply(op: tuple, values: list[list[Fraction]], shapes: tuple[tuple[int, ...], ...]) -> list[Fraction]:
    kind = op[0]
    if kind == "linear":
        _, src, rows, bias = op
        v = values[src]
        return [sum((c * v[j] for j, c in row.items()), Fraction(0)) + b for row, b in zip(rows, bias)]
    if kind == "relu":
        return [u if u > 0 else Fraction(0) for u in values[op[1]]]
    if kind == "leaky_relu":
        return [u if u >= 0 else op[2] * u for u in values[op[1]]]
    if kind == "abs":
        return [abs(u) for u in values[op[1]]]
    if kind == "add":
        return [u + w for u, w in zip(values[op[1]], values[op[2]])]
    if kind == "sub":
        return [u - w for u, w in zip(values[op[1]], values[op[2]])]
    if kind == "add_const":
        return [u + c for u, c in zip(values[op[1]], op[2])]
    if kind == "mul_const":
        return [u * c for u, c in zip(values[op[1]], op[2])]
    if kind == "reshape":
        return list(values[op[1]])
    if kind == "concat":
        _, sources, axis = op
        blocks = [np.array(values[s], dtype=object).reshape(shapes[s]) for s in sources]
        return list(np.concatenate(blocks, axis=axis).reshape(-1))
    raise InputError(f"unknown exact operation {kind!r}")


def _fractions(array: np.ndarray) -> list[Fraction]:
    return [Fraction(float(v)) for v in np.asarray(array, dtype=np.float64).reshape(-1)]


def _index(shape: tuple[int, ...]):
    strides = np.cumprod((1,) + tuple(shape[::-1]))[::-1][1:]
    return lambda *position: int(sum(p * s for p, s in zip(position, strides)))


def _check_expansion(node, rows: int, cols: int) -> None:
    if rows * cols > MAX_EXPANSION:
        raise InputError(
            f"node {node.id} ({node.kind}) would expand to a {rows} x {cols} matrix; the exact oracle is meant "
            f"for small graphs (at most {MAX_EXPANSION} entries per node)"
        )


def _conv_rows(node, in_shape) -> tuple[list[dict[int, Fraction]], list[Fraction]]:
    weight = np.asarray(node.params["weight"])
    channels, height, width = in_shape
    out_channels, out_h, out_w = node.shape
    group_in = weight.shape[1]
    group_out = out_channels // int(node.attrs["groups"])
    (sh, sw), (ph, pw), (dh, dw) = node.attrs["stride"], node.attrs["padding"], node.attrs["dilation"]
    _check_expansion(node, out_channels * out_h * out_w, channels * height * width)
    at_in, at_out = _index(in_shape), _index(node.shape)
    rows: list[dict[int, Fraction]] = [dict() for _ in range(out_channels * out_h * out_w)]
    for o in range(out_channels):
        first = (o // group_out) * group_in
        for y in range(out_h):
            for x in range(out_w):
                row = rows[at_out(o, y, x)]
                for c in range(group_in):
                    for i in range(weight.shape[2]):
                        for j in range(weight.shape[3]):
                            iy, ix = y * sh - ph + i * dh, x * sw - pw + j * dw
                            if 0 <= iy < height and 0 <= ix < width and weight[o, c, i, j] != 0:
                                key = at_in(first + c, iy, ix)
                                row[key] = row.get(key, Fraction(0)) + Fraction(float(weight[o, c, i, j]))
    bias = node.params.get("bias")
    per_channel = [Fraction(0)] * out_channels if bias is None else _fractions(bias)
    return rows, [per_channel[o] for o in range(out_channels) for _ in range(out_h * out_w)]


def _conv_transpose_rows(node, in_shape) -> tuple[list[dict[int, Fraction]], list[Fraction]]:
    weight = np.asarray(node.params["weight"])
    channels, height, width = in_shape
    out_channels, out_h, out_w = node.shape
    (sh, sw), (ph, pw), (dh, dw) = node.attrs["stride"], node.attrs["padding"], node.attrs["dilation"]
    _check_expansion(node, out_channels * out_h * out_w, channels * height * width)
    at_in, at_out = _index(in_shape), _index(node.shape)
    rows: list[dict[int, Fraction]] = [dict() for _ in range(out_channels * out_h * out_w)]
    for c in range(channels):
        for iy in range(height):
            for ix in range(width):
                for o in range(out_channels):
                    for i in range(weight.shape[2]):
                        for j in range(weight.shape[3]):
                            y, x = iy * sh - ph + i * dh, ix * sw - pw + j * dw
                            if 0 <= y < out_h and 0 <= x < out_w and weight[c, o, i, j] != 0:
                                row = rows[at_out(o, y, x)]
                                key = at_in(c, iy, ix)
                                row[key] = row.get(key, Fraction(0)) + Fraction(float(weight[c, o, i, j]))
    bias = node.params.get("bias")
    per_channel = [Fraction(0)] * out_channels if bias is None else _fractions(bias)
    return rows, [per_channel[o] for o in range(out_channels) for _ in range(out_h * out_w)]


def _pool_rows(node, in_shape) -> list[dict[int, Fraction]]:
    channels, height, width = in_shape
    (kh, kw), (sh, sw), (ph, pw) = node.attrs["kernel_size"], node.attrs["stride"], node.attrs["padding"]
    include = node.attrs["count_include_pad"] or (ph == 0 and pw == 0)
    at_in, at_out = _index(in_shape), _index(node.shape)
    rows: list[dict[int, Fraction]] = [dict() for _ in range(int(np.prod(node.shape)))]
    for c in range(channels):
        for y in range(node.shape[1]):
            for x in range(node.shape[2]):
                inside = [(iy, ix) for iy in range(y * sh - ph, y * sh - ph + kh) for ix in range(x * sw - pw, x * sw - pw + kw)
                          if 0 <= iy < height and 0 <= ix < width]
                share = Fraction(1, kh * kw if include else len(inside))
                rows[at_out(c, y, x)] = {at_in(c, iy, ix): share for iy, ix in inside}
    return rows


def _nearest_rows(node, in_shape) -> list[dict[int, Fraction]]:
    sh, sw = node.attrs["scale"]
    at_in, at_out = _index(in_shape), _index(node.shape)
    rows: list[dict[int, Fraction]] = [dict() for _ in range(int(np.prod(node.shape)))]
    for c in range(node.shape[0]):
        for y in range(node.shape[1]):
            for x in range(node.shape[2]):
                rows[at_out(c, y, x)] = {at_in(c, y // sh, x // sw): Fraction(1)}
    return rows


def _bilinear_rows(node, in_shape) -> list[dict[int, Fraction]]:
    row_weights, col_weights = np.asarray(node.params["rows"]), np.asarray(node.params["cols"])
    at_in, at_out = _index(in_shape), _index(node.shape)
    rows: list[dict[int, Fraction]] = [dict() for _ in range(int(np.prod(node.shape)))]
    for c in range(node.shape[0]):
        for o in range(node.shape[1]):
            for p in range(node.shape[2]):
                row = {}
                for h in np.flatnonzero(row_weights[o]):
                    for w in np.flatnonzero(col_weights[p]):
                        row[at_in(c, int(h), int(w))] = Fraction(float(row_weights[o, h])) * Fraction(float(col_weights[p, w]))
                rows[at_out(c, o, p)] = row
    return rows


def describe_graph(graph: Graph) -> ExactNetwork:
    """Translate a :class:`Graph` into an :class:`ExactNetwork` on the exact binary64 parameter values.

    Linear kinds (``dense``, ``conv2d``, ``conv_transpose2d``,
    ``avg_pool2d``, ``upsample_nearest``, ``upsample_bilinear``,
    ``scale_shift``) become sparse ``"linear"`` rows, built here from the
    documented semantics of each kind (a dense expansion for the
    convolutions and pools). ``max_pool2d`` is not supported.

    Raises
    ------
    InputError
        For ``max_pool2d`` or an expansion above :data:`MAX_EXPANSION` entries.
    """
    shapes = [tuple(node.shape) for node in graph.nodes]
    ops: list[tuple] = []
    for node in graph.nodes[1:]:
        kind, src = node.kind, node.inputs[0] if node.inputs else None
        in_shape = shapes[src] if src is not None else None
        size = int(np.prod(node.shape, dtype=np.int64))
        if kind == "dense":
            weight = np.asarray(node.params["weight"])
            _check_expansion(node, weight.shape[0], weight.shape[1])
            rows = [{j: Fraction(float(w)) for j, w in enumerate(row) if w != 0} for row in weight]
            bias = _fractions(node.params["bias"]) if "bias" in node.params else [Fraction(0)] * weight.shape[0]
            ops.append(("linear", src, rows, bias))
        elif kind == "conv2d":
            ops.append(("linear", src, *_conv_rows(node, in_shape)))
        elif kind == "conv_transpose2d":
            ops.append(("linear", src, *_conv_transpose_rows(node, in_shape)))
        elif kind == "avg_pool2d":
            ops.append(("linear", src, _pool_rows(node, in_shape), [Fraction(0)] * size))
        elif kind == "upsample_nearest":
            ops.append(("linear", src, _nearest_rows(node, in_shape), [Fraction(0)] * size))
        elif kind == "upsample_bilinear":
            ops.append(("linear", src, _bilinear_rows(node, in_shape), [Fraction(0)] * size))
        elif kind == "scale_shift":
            per = int(np.prod(node.shape[1:], dtype=np.int64))
            scale, shift = _fractions(node.params["scale"]), _fractions(node.params["shift"])
            rows = [{i: scale[i // per]} for i in range(size)]
            ops.append(("linear", src, rows, [shift[i // per] for i in range(size)]))
        elif kind in ("add_const", "mul_const"):
            name = "const"
            ops.append((kind, src, _fractions(np.broadcast_to(node.params[name], node.shape))))
        elif kind in ("add", "sub"):
            ops.append((kind, node.inputs[0], node.inputs[1]))
        elif kind == "concat":
            ops.append(("concat", tuple(node.inputs), int(node.attrs["axis"])))
        elif kind == "reshape":
            ops.append(("reshape", src))
        elif kind in ("relu", "abs"):
            ops.append((kind, src))
        elif kind == "leaky_relu":
            ops.append(("leaky_relu", src, Fraction(float(node.attrs["negative_slope"]))))
        else:
            raise InputError(f"node {node.id} has kind {kind!r}, which the exact oracle does not support")
    return ExactNetwork(tuple(shapes[0]), tuple(shapes), tuple(ops), int(graph.output))


# ---------------------------------------------------------------------------
# The exact partition of a line.


@dataclass(frozen=True)
class ExactPartition:
    """Breakpoints of the exact partition of ``[lo, hi]``, ends included.

    ``changes[k]`` is the number of units (and cut functions) whose
    pre-activation changes sign strictly at the inner breakpoint
    ``breakpoints[k + 1]``: two or more mean a tie.
    """

    breakpoints: tuple[Fraction, ...]
    changes: tuple[int, ...]

    def pieces(self) -> list[tuple[Fraction, Fraction]]:
        """Return the pieces ``(lo, hi)`` in order."""
        return list(zip(self.breakpoints, self.breakpoints[1:]))

    def narrowest(self) -> Fraction:
        """Return the width of the narrowest piece."""
        return min(hi - lo for lo, hi in self.pieces())


def _line_values(network: ExactNetwork, a: list[Fraction], b: list[Fraction], z: Fraction,
                 cut_rows: list[tuple[list[Fraction], Fraction]] | None) -> list[list[Fraction]]:
    """Pre-activations of every piecewise operation (and the cut functions last) at ``z``."""
    values = network.evaluate([ai + bi * z for ai, bi in zip(a, b)])
    levels = [values[network.ops[k][1]] for k in network.piecewise_ops()]
    if cut_rows:
        output = values[network.output]
        levels.append([sum((w * v for w, v in zip(row, output)), Fraction(0)) + offset for row, offset in cut_rows])
    return levels


def exact_partition(
    graph: Graph | ExactNetwork,
    a: Any,
    b: Any,
    lo: Any,
    hi: Any,
    *,
    cut_rows: list[tuple[Sequence[Any], Any]] | None = None,
) -> ExactPartition:
    """Partition ``[lo, hi]`` into the pieces of constant activation pattern of ``graph`` on ``a + b z``.

    A breakpoint is a point where some unit's pre-activation (the input of a
    ``relu``, ``leaky_relu`` or ``abs`` unit) changes sign strictly, or where
    a cut function ``row . output + offset`` does. Breakpoints are exact
    rationals. The computation is layer-major: with the breakpoints of all
    earlier piecewise layers known, every pre-activation of the next layer
    is affine between consecutive breakpoints, so its zero crossings follow
    from its exact values at the breakpoints.

    Parameters
    ----------
    graph
        A :class:`Graph` (translated by :func:`describe_graph`) or an
        :class:`ExactNetwork`.
    a, b
        The line, of the graph's input shape (any real entries; floats are
        taken as their exact binary64 values).
    lo, hi
        Finite ends, ``lo < hi``.
    cut_rows
        Optional cut functions of the output, as ``(row, offset)`` pairs.

    Raises
    ------
    InputError
        For infinite or reversed ends, a line of the wrong size, or an
        unsupported node kind.
    """
    network = graph if isinstance(graph, ExactNetwork) else describe_graph(graph)
    a_exact = [_exact(v) for v in np.asarray(a, dtype=object).reshape(-1)]
    b_exact = [_exact(v) for v in np.asarray(b, dtype=object).reshape(-1)]
    size = int(np.prod(network.input_shape, dtype=np.int64))
    if len(a_exact) != size or len(b_exact) != size:
        raise InputError(f"the line has {len(a_exact)} and {len(b_exact)} entries; the input has {size}")
    lo, hi = _exact(lo), _exact(hi)
    if not lo < hi:
        raise InputError(f"range [{lo}, {hi}] is empty; pass lo < hi")
    cuts = None if cut_rows is None else [([_exact(w) for w in row], _exact(offset)) for row, offset in cut_rows]

    # 1. Add the zero crossings of one piecewise level at a time.
    cache: dict[Fraction, list[list[Fraction]]] = {}

    def levels_at(z: Fraction) -> list[list[Fraction]]:
        if z not in cache:
            cache[z] = _line_values(network, a_exact, b_exact, z, cuts)
        return cache[z]

    points = [lo, hi]
    count = len(levels_at(lo))
    for level in range(count):
        new_points = set(points)
        for z0, z1 in zip(points, points[1:]):
            u0, u1 = levels_at(z0)[level], levels_at(z1)[level]
            for v0, v1 in zip(u0, u1):
                if (v0 < 0 < v1) or (v1 < 0 < v0):
                    new_points.add(z0 + (z1 - z0) * v0 / (v0 - v1))
        points = sorted(new_points)

    # 2. Count the units that change sign at each inner breakpoint.
    changes = []
    for left, point, right in zip(points, points[1:], points[2:]):
        before = levels_at((left + point) / 2)
        after = levels_at((point + right) / 2)
        changes.append(sum(1 for u, v in zip(_flat(before), _flat(after)) if u * v < 0))
    return ExactPartition(tuple(points), tuple(changes))


def _flat(levels: list[list[Fraction]]) -> list[Fraction]:
    return [v for level in levels for v in level]


# ---------------------------------------------------------------------------
# Exact selective p-values by quadrature.


@dataclass(frozen=True)
class _LogMass:
    """``log(mass) = exponent + rest``: an exact rational Gaussian exponent and an mpf remainder."""

    exponent: Fraction
    rest: mpf


def _density_integral(lo: Fraction, hi: Endpoint, dps: int) -> _LogMass:
    """Log of the N(0, 1) mass of ``[lo, hi]`` for ``0 <= lo < hi``."""
    with mp.workdps(dps + 15):
        log_sqrt_two_pi = mp.log(2 * mp.pi) / 2
        if lo < 1:
            # Near the mode: integrate the density, split at the integers up to 40,
            # then add any part beyond 40 by the tail route below.
            top = hi if not isinstance(hi, float) and hi <= 40 else Fraction(40)
            nodes = [_mpf(lo)] + [mpf(k) for k in range(math.floor(lo) + 1, 41) if k < top] + [_mpf(top)]
            value, error = mp.quad(lambda x: mp.exp(-x * x / 2), nodes, error=True)
            _check_quadrature(value, error, dps)
            near = _LogMass(Fraction(0), mp.log(value) - log_sqrt_two_pi)
            if top == hi:
                return near
            return _log_add(near, _density_integral(Fraction(40), hi, dps), dps)
        # A tail: mass = phi(lo) / lo * integral_0^T exp(-s - s^2 / (2 lo^2)) ds with
        # T = lo (hi - lo); beyond s = (dps + 30) ln 10 the integrand is negligible.
        l_mp = _mpf(lo)
        limit = (dps + 30) * mp.log(10)
        span = limit if isinstance(hi, float) else min(_mpf(lo * (hi - lo)), limit)
        nodes = [mpf(0)] + [mpf(k) for k in (1, 4, 16, 64) if k < span] + [span]
        value, error = mp.quad(lambda s: mp.exp(-s - s * s / (2 * l_mp * l_mp)), nodes, error=True)
        _check_quadrature(value, error, dps)
        return _LogMass(-lo * lo / 2, mp.log(value) - mp.log(l_mp) - log_sqrt_two_pi)


def _mpf(value: Fraction) -> mpf:
    return mpf(value.numerator) / value.denominator


def _check_quadrature(value: mpf, error: mpf, dps: int) -> None:
    if not value > 0 or error > value * mpf(10) ** (-(dps + 5)):
        raise NumericalError(
            f"quadrature of a normal mass returned {mp.nstr(value, 10)} with error estimate {mp.nstr(error, 5)}; "
            "raise dps or split the interval"
        )


def _log_add(first: _LogMass | None, second: _LogMass, dps: int) -> _LogMass:
    return second if first is None else _log_sum([first, second], dps)


def _log_masses(intervals: list[tuple[Endpoint, Endpoint]], dps: int) -> _LogMass | None:
    """Log of the N(0, 1) mass of a union of disjoint intervals (None when empty).

    Intervals are folded onto ``[0, inf)`` and summed from the one nearest
    the mode outward. An interval at distance ``d >= 1`` from the mode has
    mass at most ``phi(d) / d``, so the sum stops once the remaining
    intervals cannot change its first ``dps + 10`` digits.
    """
    folded: list[tuple[Fraction, Endpoint]] = []
    for lo, hi in intervals:
        if not lo < hi:
            continue
        if not isinstance(lo, float) and lo >= 0:
            folded.append((lo, hi))
        elif not isinstance(hi, float) and hi <= 0:
            folded.append((-hi, math.inf if isinstance(lo, float) else -lo))
        else:
            folded.append((Fraction(0), hi))
            folded.append((Fraction(0), math.inf if isinstance(lo, float) else -lo))
    folded.sort(key=lambda pair: pair[0])
    total: _LogMass | None = None
    with mp.workdps(dps + 15):
        digits = (dps + 10) * mp.log(10) + mp.log(len(folded) + 1)
        for lo, hi in folded:
            if total is not None and lo >= 1:
                bound = _LogMass(-lo * lo / 2, -mp.log(_mpf(lo)) - mp.log(2 * mp.pi) / 2)
                gap = bound.exponent - total.exponent
                if _mpf(gap) + bound.rest - total.rest < -digits:
                    break
            total = _log_add(total, _density_integral(lo, hi, dps), dps)
    return total


def _log_sum(masses: list[_LogMass], dps: int) -> _LogMass:
    top = max(masses, key=lambda m: (m.exponent, m.rest))
    with mp.workdps(dps + 15):
        total = mpf(0)
        for mass in masses:
            gap = mass.exponent - top.exponent
            total += mp.exp(_mpf(gap) + mass.rest - top.rest)
        return _LogMass(top.exponent, top.rest + mp.log(total))


def _ratio(numerator: _LogMass | None, denominator: _LogMass, dps: int) -> mpf:
    if numerator is None:
        return mpf(0)
    gap = numerator.exponent - denominator.exponent
    # exp(gap) keeps dps digits only if gap itself is carried to dps digits after the point.
    with mp.workdps(dps + 15 + len(str(abs(gap.numerator // gap.denominator)))):
        return min(mp.exp(_mpf(gap) + numerator.rest - denominator.rest), mpf(1))


def _clip(intervals: list[tuple[Endpoint, Endpoint]], lo: Endpoint, hi: Endpoint) -> list[tuple[Endpoint, Endpoint]]:
    clipped = []
    for left, right in intervals:
        new_lo, new_hi = max(left, lo), min(right, hi)
        if new_lo < new_hi:
            clipped.append((new_lo, new_hi))
    return clipped


def _exact_end(value: Any) -> Endpoint:
    if isinstance(value, float) and math.isinf(value):
        return value
    if isinstance(value, str) and value.strip().lower() in ("inf", "+inf", "-inf"):
        return math.inf if not value.strip().startswith("-") else -math.inf
    if isinstance(value, str):
        return Fraction(value)
    return _exact(value)


def exact_selective_pvalue(t_obs: Any, sd: Any, intervals: Sequence[tuple[Any, Any]], *,
                           two_sided: str = "symmetric", dps: int = 30) -> mpf:
    """Selective p-value of ``T ~ N(0, sd^2)`` truncated to a union of intervals, by quadrature.

    Interval ends (floats, ints, Fractions, decimal strings, ``+-inf``) and
    ``t_obs``, ``sd`` are used exactly; the union is standardized in rational
    arithmetic. Each interval's mass is integrated with ``mpmath.quad``: the
    density itself within one standard deviation of the mode, and beyond it
    ``phi(l) / l * integral_0^{l (u - l)} exp(-s - s^2 / (2 l^2)) ds`` with the
    factor ``exp(-l^2 / 2)`` kept as an exact rational exponent, so that
    ``|t| / sd`` of 1e200 needs no extra digits.

    Parameters
    ----------
    t_obs, sd
        Observed statistic (inside the union) and standard deviation (> 0).
    intervals
        ``(lo, hi)`` pairs; they may overlap.
    two_sided
        ``"symmetric"``: ``P(|T| >= |t_obs| | T in Z)``; ``"equal-tailed"``:
        ``min(1, 2 min(F, 1 - F))`` with ``F = P(T <= t_obs | T in Z)``,
        each side from its own mass.
    dps
        Decimal digits of the result (the quadrature error estimate must be
        below ``10^-(dps + 5)`` relative).

    Returns
    -------
    mpmath.mpf
        The p-value, correct to about ``dps`` digits.

    Raises
    ------
    InputError
        If ``sd <= 0``, the union is empty, or ``t_obs`` lies outside it.
    NumericalError
        If a quadrature error estimate is too large.
    """
    if two_sided not in ("symmetric", "equal-tailed"):
        raise InputError(f"two_sided={two_sided!r}; use 'symmetric' or 'equal-tailed'")
    sd_exact = _exact(sd)
    if sd_exact <= 0:
        raise InputError(f"sd must be positive, got {sd!r}")
    c = _exact(t_obs) / sd_exact
    standardized = []
    for lo, hi in intervals:
        lo_e, hi_e = _exact_end(lo), _exact_end(hi)
        standardized.append((lo_e if isinstance(lo_e, float) else lo_e / sd_exact,
                             hi_e if isinstance(hi_e, float) else hi_e / sd_exact))
    standardized = [(lo, hi) for lo, hi in standardized if lo < hi]
    if not standardized:
        raise InputError("the truncation set is empty")
    if not any(lo <= c <= hi for lo, hi in standardized):
        raise InputError(f"t_obs / sd = {float(c)!r} lies outside the truncation set")
    merged = _merge(standardized)

    total = _log_masses(merged, dps)
    if two_sided == "symmetric":
        extreme = _clip(merged, -math.inf, -abs(c)) + _clip(merged, abs(c), math.inf)
        return _ratio(_log_masses(extreme, dps), total, dps)
    below = _ratio(_log_masses(_clip(merged, -math.inf, c), dps), total, dps)
    above = _ratio(_log_masses(_clip(merged, c, math.inf), dps), total, dps)
    with mp.workdps(dps + 15):
        return min(mpf(1), 2 * min(below, above))


def _merge(intervals: list[tuple[Endpoint, Endpoint]]) -> list[tuple[Endpoint, Endpoint]]:
    merged: list[tuple[Endpoint, Endpoint]] = []
    for lo, hi in sorted(intervals):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


# ---------------------------------------------------------------------------
# Strategies: graphs and lines.


@dataclass(frozen=True)
class PlantedGraph:
    """A drawn graph, its exact description, a line ``a + b z`` and the planted cases."""

    graph: Graph
    network: ExactNetwork
    a: np.ndarray
    b: np.ndarray
    planted: frozenset[str]


def _dyadic(draw, count: int, bound: int, denominator: int) -> list[float]:
    return [draw(st.integers(-bound, bound)) / denominator for _ in range(count)]


@st.composite
def lines(draw, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Draw a line ``(a, b)`` of the given input shape with dyadic entries (multiples of 1/8) and ``b != 0``."""
    size = int(np.prod(shape, dtype=np.int64))
    a = np.array(_dyadic(draw, size, 16, 8)).reshape(shape)
    b = np.array(_dyadic(draw, size, 16, 8)).reshape(shape)
    if not b.any():
        b.reshape(-1)[draw(st.integers(0, size - 1))] = 1.0
    return a, b


def _plant_rows(draw, rows: list[list[float]], bias: list[float], a: list[float], b: list[float]) -> set[str]:
    planted: set[str] = set()
    n_in = len(a)
    for plant in draw(st.lists(st.sampled_from(PLANTS), max_size=3)):
        source = draw(st.integers(0, len(rows) - 1))
        row, offset = rows[source], bias[source]
        slope = sum(w * v for w, v in zip(row, b))
        if plant == "tie":
            rows.append([2 * w for w in row])
            bias.append(2 * offset)
        elif plant == "zero_slope":
            rows.append([b[1], -b[0]] + [0.0] * (n_in - 2) if n_in >= 2 else [0.0])
            bias.append(draw(st.integers(-8, 8)) / 8)
        elif plant == "narrow":
            if slope == 0:
                continue
            rows.append(list(row))
            bias.append(offset + NARROW_GAP * slope)
        else:
            rows.append(list(row))
            bias.append(-sum(w * v for w, v in zip(row, a)))
        planted.add(plant)
    return planted


@st.composite
def dense_networks(draw, max_inputs: int = 3, max_width: int = 5, max_layers: int = 3) -> PlantedGraph:
    """Dense networks with ReLU, leaky ReLU (slopes 1/4, 1/2) and abs, residual add or sub,
    concatenation, constant add and multiply, and reshapes, with planted hard cases in the
    first layer (see the module docstring)."""
    n_in = draw(st.integers(1, max_inputs))
    a = _dyadic(draw, n_in, 16, 8)
    b = _dyadic(draw, n_in, 16, 8)
    if not any(b):
        b[0] = 1.0
    width = draw(st.integers(1, max_width))
    rows = [_dyadic(draw, n_in, 8, 4) for _ in range(width)]
    bias = _dyadic(draw, width, 16, 8)
    planted = _plant_rows(draw, rows, bias, a, b)

    builder = GraphBuilder((n_in,))
    current = builder.dense(0, np.array(rows), np.array(bias))
    current = _activation(draw, builder, current)
    outputs = [current]
    for _ in range(draw(st.integers(0, max_layers - 1))):
        width_in = builder.shape(current)[0]
        width = draw(st.integers(1, max_width))
        current = builder.dense(current, np.array([_dyadic(draw, width_in, 8, 4) for _ in range(width)]),
                                np.array(_dyadic(draw, width, 16, 8)))
        extra = draw(st.sampled_from(["none", "residual", "concat", "add_const", "mul_const", "reshape"]))
        same = [o for o in outputs if builder.shape(o) == builder.shape(current)]
        if extra == "residual" and same:
            current = builder.binary(draw(st.sampled_from(["add", "sub"])), current, draw(st.sampled_from(same)))
        elif extra == "concat":
            current = builder.concat([current, draw(st.sampled_from(outputs))], 0)
        elif extra == "add_const":
            current = builder.add_const(current, np.array(_dyadic(draw, builder.shape(current)[0], 16, 8)))
        elif extra == "mul_const":
            current = builder.mul_const(current, np.array(_dyadic(draw, builder.shape(current)[0], 8, 4)))
        elif extra == "reshape":
            size = builder.shape(current)[0]
            current = builder.reshape(builder.reshape(current, (1, size)), (size,))
        current = _activation(draw, builder, current)
        outputs.append(current)
    width_in = builder.shape(current)[0]
    out = draw(st.integers(1, 2))
    builder.dense(current, np.array([_dyadic(draw, width_in, 8, 4) for _ in range(out)]), np.zeros(out))
    graph = builder.build()
    return PlantedGraph(graph, describe_graph(graph), np.array(a), np.array(b), frozenset(planted))


def _activation(draw, builder: GraphBuilder, node: int) -> int:
    kind = draw(st.sampled_from(["relu", "leaky", "abs"]))
    if kind == "relu":
        return builder.relu(node)
    if kind == "abs":
        return builder.abs(node)
    return builder.leaky_relu(node, draw(st.sampled_from([0.25, 0.5])))


@st.composite
def conv_networks(draw, max_channels: int = 2, max_side: int = 4) -> PlantedGraph:
    """Small convolutional networks on ``(C, H, W)`` inputs: conv2d, an activation,
    optional average pooling, nearest upsampling or a second conv, then a reshape and a
    dense layer. Plants: ``"tie"`` (an output channel duplicated with doubled weights) and
    ``"zero_slope"`` (a channel whose kernel is zero, so only its bias remains)."""
    channels = draw(st.integers(1, max_channels))
    side = draw(st.integers(3, max_side))
    shape = (channels, side, side)
    a, b = draw(lines(shape))
    out_channels = draw(st.integers(1, 2))
    kernel = draw(st.integers(2, 3))
    weight = np.array(_dyadic(draw, out_channels * channels * kernel * kernel, 8, 4)).reshape(
        out_channels, channels, kernel, kernel)
    bias = np.array(_dyadic(draw, out_channels, 16, 8))
    planted = set()
    if draw(st.booleans()):
        weight = np.concatenate([weight, 2 * weight[:1]])
        bias = np.concatenate([bias, 2 * bias[:1]])
        planted.add("tie")
    if draw(st.booleans()):
        weight = np.concatenate([weight, np.zeros_like(weight[:1])])
        bias = np.concatenate([bias, [draw(st.integers(-8, 8)) / 8]])
        planted.add("zero_slope")

    builder = GraphBuilder(shape)
    padding = draw(st.integers(0, 1))
    current = builder.conv2d(0, weight, bias, stride=draw(st.integers(1, 2)), padding=padding)
    current = _activation(draw, builder, current)
    follow = draw(st.sampled_from(["none", "avg_pool", "upsample", "conv"]))
    if follow == "avg_pool" and min(builder.shape(current)[1:]) >= 2:
        current = builder.avg_pool2d(current, 2, 1)
    elif follow == "upsample":
        current = builder.upsample_nearest(current, 2)
    elif follow == "conv":
        in_channels = builder.shape(current)[0]
        second = np.array(_dyadic(draw, in_channels * 4, 8, 4)).reshape(1, in_channels, 2, 2)
        current = _activation(draw, builder, builder.conv2d(current, second, None, padding=1))

    size = int(np.prod(builder.shape(current)))
    flat = builder.reshape(current, (size,))
    builder.dense(flat, np.array([_dyadic(draw, size, 8, 4)]), np.zeros(1))
    graph = builder.build()
    return PlantedGraph(graph, describe_graph(graph), a, b, frozenset(planted))


def pl_graphs() -> st.SearchStrategy[PlantedGraph]:
    """Either a dense or a convolutional planted graph."""
    return st.one_of(dense_networks(), conv_networks())


# ---------------------------------------------------------------------------
# Strategies: truncation sets.


@dataclass(frozen=True)
class TruncationCase:
    """A truncation set ``Z`` (in units of ``T``) with ``t_obs`` inside it.

    Ends are exact: Fractions, or the floats ``-inf`` and ``inf``.
    """

    intervals: tuple[tuple[Endpoint, Endpoint], ...]
    t_obs: Fraction
    sd: Fraction
    regime: str

    @property
    def z_obs(self) -> Fraction:
        """``t_obs / sd``, exact."""
        return self.t_obs / self.sd

    def __repr__(self) -> str:
        shown = self.intervals if len(self.intervals) <= 10 else self.intervals[:3] + ("...",) + self.intervals[-3:]
        return (f"TruncationCase(regime={self.regime!r}, {len(self.intervals)} intervals {shown}, "
                f"t_obs={self.t_obs!r}, sd={self.sd!r})")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        # Hypothesis prints examples with this IPython protocol; keep cases of thousands of intervals short.
        printer.text(repr(self))


def _magnitude(draw, band: str) -> float:
    low, high = MAGNITUDES[band]
    # The band's ends are drawn explicitly, so the extremes are reached early.
    exponent = draw(st.one_of(st.sampled_from([math.log10(low), math.log10(high)]),
                              st.floats(math.log10(low), math.log10(high), allow_nan=False)))
    return float(10.0**exponent)


def _interval_points(rng: np.random.Generator, center: float, unit: float, count: int) -> list[float]:
    """Sorted distinct points around ``center`` with gaps of about ``unit``."""
    gaps = rng.exponential(unit, size=count)
    start = center - gaps.sum() * rng.uniform(0.2, 0.8)
    points = start + np.cumsum(gaps)
    return sorted(set(float(p) for p in points))


@st.composite
def truncation_cases(draw, regimes: Sequence[str] = REGIMES, max_intervals: int = 3000) -> TruncationCase:
    """A truncation set and an observed statistic in one of :data:`REGIMES`.

    ``|t_obs| / sd`` lies in the band of the regime (0.1 to 5, 5 to 40, 40
    to 1e4, 1e4 to 1e200; the other regimes draw a band). ``"many"`` draws
    1000 to ``max_intervals`` intervals, ``"narrow"`` makes the interval
    that contains ``t_obs`` narrower than 1e-12 relative to its ends, and
    ``"rational"`` moves every end, ``t_obs`` and ``sd`` off the binary64
    grid (rationals with a factor 3 in the denominator).
    """
    regime = draw(st.sampled_from(list(regimes)))
    if regime not in REGIMES:
        raise InputError(f"regime {regime!r} is unknown; use one of {REGIMES}")
    band = regime if regime in MAGNITUDES else draw(st.sampled_from(sorted(MAGNITUDES)))
    c = _magnitude(draw, band) * draw(st.sampled_from([1.0, -1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    count = int(rng.integers(1000, max(1000, max_intervals) + 1)) if regime == "many" else draw(st.integers(1, 6))

    # 1. Interval ends in standardized units: a cluster near t, one near -t, one near 0.
    unit = 1.0 / max(1.0, abs(c))
    points = _interval_points(rng, c, unit, 2 * count)
    points += _interval_points(rng, -c, unit, 2 * draw(st.integers(0, 2)))
    points += _interval_points(rng, 0.0, 1.0, 2 * draw(st.integers(0, 2)))
    points = sorted(set(points))
    pairs = [(points[i], points[i + 1]) for i in range(0, len(points) - 1, 2)]
    if draw(st.booleans()):
        pairs.append((-math.inf, min(points) - 1.0))
    if draw(st.booleans()):
        pairs.append((max(points) + 1.0, math.inf))

    # 2. The interval that contains t: narrow, or a few units wide.
    half = abs(c) * 2.0**-44 if regime == "narrow" else unit * float(rng.uniform(0.05, 2.0))
    half = max(half, 4 * math.ulp(c))
    if regime == "narrow":
        pairs = [(lo, hi) for lo, hi in pairs if hi < c - 2 * half or lo > c + 2 * half]
    pairs.append((c - half, c + half))

    # 3. Exact ends, the sd, and the rational perturbation.
    sd = Fraction(draw(st.sampled_from([1, 2, 3, 10])), draw(st.sampled_from([1, 4, 8])))
    c_exact = Fraction(c)
    exact_pairs = []
    for lo, hi in pairs:
        exact_pairs.append((lo if math.isinf(lo) else Fraction(lo), hi if math.isinf(hi) else Fraction(hi)))
    if regime == "rational":
        sd = sd * Fraction(3, 7) + Fraction(1, 3)
        exact_pairs = [_perturb(lo, hi) for lo, hi in exact_pairs]
        c_exact = _off_grid(c_exact, Fraction(half), 1)
    union = _merge([(lo * sd if not isinstance(lo, float) else lo, hi * sd if not isinstance(hi, float) else hi)
                    for lo, hi in exact_pairs if lo < hi])
    return TruncationCase(tuple(union), c_exact * sd, sd, regime)


def _off_grid(value: Fraction, scale: Fraction, direction: int) -> Fraction:
    """``value`` moved by ``direction / (3 * 2**m)``, at most ``scale * 2**-60``, off the binary64 grid.

    With ``2**m`` a multiple of the (power-of-two) denominator of ``value``,
    the numerator of the sum is not divisible by 3, so 3 stays in the reduced
    denominator and the result is not a binary64 number.
    """
    m = max(60 - math.floor(math.log2(scale)), value.denominator.bit_length())
    return value + Fraction(direction, 3 * 2**m)


def _perturb(lo: Endpoint, hi: Endpoint) -> tuple[Endpoint, Endpoint]:
    """Move the finite ends outward, off the binary64 grid, by far less than the interval's width."""
    width = Fraction(1) if isinstance(lo, float) or isinstance(hi, float) else hi - lo
    return (lo if isinstance(lo, float) else _off_grid(lo, width, -1),
            hi if isinstance(hi, float) else _off_grid(hi, width, 1))
