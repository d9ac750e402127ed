"""Exact rational reference for the restriction of small dense graphs to a line.

Independent of the product code: graphs are given as plain Python lists of
layers and evaluated with ``fractions.Fraction``. The partition is computed
layer by layer (all breakpoints of a layer at once), not piece by piece as
the product walks, so the two algorithms share nothing but the semantics.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

# A tiny network is a list of layers; each layer is one of
#   ("dense", weight_rows, bias)       weight_rows: list[list[Fraction]], bias: list[Fraction]
#   ("relu",) / ("leaky", slope) / ("abs",)
#   ("residual_add", layer_index)      adds the output of an earlier layer (same width)
#   ("concat", layer_index)            appends the output of an earlier layer


def _piecewise(kind: tuple, value: Fraction) -> Fraction:
    if kind[0] == "relu":
        return value if value > 0 else Fraction(0)
    if kind[0] == "leaky":
        return value if value >= 0 else kind[1] * value
    return abs(value)


def evaluate_exact(layers: list[tuple], x: list[Fraction], *, trace: list | None = None) -> list[Fraction]:
    """Exact output of the network at input ``x``; ``trace`` collects every
    pre-activation vector of the piecewise layers, in order."""
    outputs = [list(x)]
    current = list(x)
    for layer in layers:
        if layer[0] == "dense":
            _, rows, bias = layer
            current = [sum((w * v for w, v in zip(row, current)), Fraction(0)) + c for row, c in zip(rows, bias)]
        elif layer[0] in ("relu", "leaky", "abs"):
            if trace is not None:
                trace.append(list(current))
            current = [_piecewise(layer, v) for v in current]
        elif layer[0] == "residual_add":
            current = [u + v for u, v in zip(current, outputs[layer[1]])]
        elif layer[0] == "concat":
            current = current + outputs[layer[1]]
        outputs.append(list(current))
    return current


def exact_breakpoints(layers: list[tuple], a: list[Fraction], b: list[Fraction], lo: Fraction, hi: Fraction,
                      cut_rows: list[tuple[list[Fraction], Fraction]] | None = None) -> list[Fraction]:
    """Sorted breakpoints (ends included) of the exact partition of ``[lo, hi]``.

    A breakpoint is a point where some piecewise unit's pre-activation
    strictly changes sign, or where a cut function ``row . output + offset``
    strictly changes sign.
    """
    points = [lo, hi]
    n_piecewise = sum(1 for layer in layers if layer[0] in ("relu", "leaky", "abs"))

    def pre_activations(z: Fraction) -> list[list[Fraction]]:
        trace: list = []
        output = evaluate_exact(layers, [ai + bi * z for ai, bi in zip(a, b)], trace=trace)
        if cut_rows:
            trace.append([sum((w * v for w, v in zip(row, output)), Fraction(0)) + c for row, c in cut_rows])
        return trace

    levels = n_piecewise + (1 if cut_rows else 0)
    for level in range(levels):
        values = [pre_activations(z)[level] for z in points]
        new_points = set(points)
        for (z0, v0), (z1, v1) in zip(zip(points, values), zip(points[1:], values[1:])):
            for u0, u1 in zip(v0, v1):
                if (u0 < 0 < u1) or (u1 < 0 < u0):
                    new_points.add(z0 + (z1 - z0) * u0 / (u0 - u1))
        points = sorted(new_points)
    return points


def to_fraction_layers(layers: list[tuple]) -> list[tuple]:
    """Convert float layer parameters to exact Fractions of their binary64 values."""
    converted: list[tuple[Any, ...]] = []
    for layer in layers:
        if layer[0] == "dense":
            converted.append(("dense", [[Fraction(w) for w in row] for row in layer[1]], [Fraction(c) for c in layer[2]]))
        elif layer[0] == "leaky":
            converted.append(("leaky", Fraction(layer[1])))
        else:
            converted.append(layer)
    return converted
