"""Hypothesis strategies for tiny dense networks with planted hard cases.

Parameters are small dyadic rationals (multiples of 1/4 for weights, 1/8
for biases and line entries), so that every float64 operation of the walk on
these networks is exact and its breakpoints must equal the correctly
rounded exact breakpoints.

Planted cases in the first layer, where they can be controlled exactly:
- tie: a unit that duplicates another unit's row scaled by 2 (same root);
- zero slope: a unit whose row is orthogonal to the line direction ``b``;
- narrow: a unit whose root sits 2**-40 (about 9.1e-13) from another's;
- zero root: a unit whose pre-activation is ``0`` at ``z = 0``.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import strategies as st

from dalverify.graph.builder import GraphBuilder

NARROW_GAP = 2.0 ** -40


def _weights(draw, rows: int, cols: int) -> list[list[float]]:
    return [[draw(st.integers(-8, 8)) / 4 for _ in range(cols)] for _ in range(rows)]


@st.composite
def tiny_networks(draw, max_inputs: int = 3, max_width: int = 5, max_layers: int = 3):
    """Draw ``(layers, a, b, planted)``: a network, a line, and the planted cases used."""
    n_in = draw(st.integers(1, max_inputs))
    a = [draw(st.integers(-16, 16)) / 8 for _ in range(n_in)]
    b = [draw(st.integers(-16, 16)) / 8 for _ in range(n_in)]
    if all(v == 0 for v in b):
        b[0] = 1.0

    width = draw(st.integers(1, max_width))
    rows = _weights(draw, width, n_in)
    bias = [draw(st.integers(-16, 16)) / 8 for _ in range(width)]
    planted = set()
    plants = draw(st.lists(st.sampled_from(["tie", "zero_slope", "narrow", "zero_root"]), max_size=3))
    for plant in plants:
        source = draw(st.integers(0, len(rows) - 1))
        row, offset = rows[source], bias[source]
        slope = sum(w * v for w, v in zip(row, b))
        if plant == "tie":
            rows.append([2 * w for w in row])
            bias.append(2 * offset)
        elif plant == "zero_slope":
            # Orthogonal to b in the first two coordinates (or all-zero row).
            if n_in >= 2:
                rows.append([b[1], -b[0]] + [0.0] * (n_in - 2))
            else:
                rows.append([0.0])
            bias.append(draw(st.integers(-8, 8)) / 8)
        elif plant == "narrow":
            if slope == 0:
                continue
            rows.append(list(row))
            bias.append(offset + NARROW_GAP * slope)
        else:  # zero root: alpha = row . a + bias = 0
            rows.append(list(row))
            bias.append(-sum(w * v for w, v in zip(row, a)))
        planted.add(plant)
    layers: list[tuple] = [("dense", rows, bias)]
    current = len(rows)
    layers.append(draw(st.sampled_from([("relu",), ("leaky", 0.25), ("abs",)])))

    for _ in range(draw(st.integers(0, max_layers - 1))):
        width = draw(st.integers(1, max_width))
        layers.append(("dense", _weights(draw, width, current), [draw(st.integers(-16, 16)) / 8 for _ in range(width)]))
        current = width
        if draw(st.booleans()) and len(layers) >= 2:
            # Residual connection to the most recent layer output of the same width, if any.
            for index in range(len(layers) - 2, -1, -1):
                if _width_after(layers[: index + 1], n_in) == current:
                    layers.append(("residual_add", index + 1))
                    break
        layers.append(draw(st.sampled_from([("relu",), ("leaky", 0.5), ("abs",)])))
    layers.append(("dense", _weights(draw, draw(st.integers(1, 2)), current), [0.0]))
    layers[-1] = ("dense", layers[-1][1], [0.0] * len(layers[-1][1]))
    return layers, a, b, frozenset(planted)


def _width_after(layers: list[tuple], n_in: int) -> int:
    width = n_in
    outputs = [n_in]
    for layer in layers:
        if layer[0] == "dense":
            width = len(layer[1])
        elif layer[0] == "concat":
            width += outputs[layer[1]]
        outputs.append(width)
    return width


def build_graph(layers: list[tuple], n_in: int):
    """Build the product's Graph for a tiny network."""
    builder = GraphBuilder((n_in,))
    outputs = [0]
    current = 0
    for layer in layers:
        if layer[0] == "dense":
            current = builder.dense(current, np.array(layer[1], dtype=float).reshape(len(layer[1]), -1), np.array(layer[2]))
        elif layer[0] == "relu":
            current = builder.relu(current)
        elif layer[0] == "leaky":
            current = builder.leaky_relu(current, layer[1])
        elif layer[0] == "abs":
            current = builder.abs(current)
        elif layer[0] == "residual_add":
            current = builder.binary("add", current, outputs[layer[1]])
        elif layer[0] == "concat":
            current = builder.concat([current, outputs[layer[1]]], 0)
        outputs.append(current)
    return builder.build(current)


def as_fractions(values) -> list[Fraction]:
    return [Fraction(v) for v in values]
