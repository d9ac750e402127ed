"""Tiny DAL-Test cases for the certificate tests, and an exact brute force for them.

The graphs map a ``(1, H, W)`` image to an image of the same shape with two
3x3 convolutions around a ReLU. :func:`dense_layers` rewrites such a graph as
the plain dense layer list of :mod:`reference.exact_line` (exact Fractions),
and :func:`brute_force_partition` computes the exact breakpoints of the
DAL-Test's walk (network units and the ``+-lambda`` cuts of the filtered
residual) with that independent layer-major reference.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from dalverify.graph import GraphBuilder
from dalverify.graph.reference import conv2d
from dalverify.methods.covariance import AR1
from dalverify.methods.dal_test import DALTest
from reference.exact_line import evaluate_exact, exact_breakpoints


def conv_graph(size: int = 8, channels: int = 3, seed: int = 3):
    """``conv(1 -> channels) -> relu -> conv(channels -> 1)``, 3x3, padding 1, on ``(1, size, size)``."""
    rng = np.random.default_rng(seed)
    builder = GraphBuilder((1, size, size))
    first = (rng.normal(size=(channels, 1, 3, 3)) * 0.5, rng.normal(size=channels) * 0.1)
    second = (rng.normal(size=(1, channels, 3, 3)) * 0.3, rng.normal(size=1) * 0.1)
    hidden = builder.relu(builder.conv2d(0, first[0], first[1], padding=1))
    builder.conv2d(hidden, second[0], second[1], padding=1)
    return builder.build(), (first, second)


def images(size: int = 8, seed: int = 3):
    """A test image with a bright 2x3 patch, and a reference image."""
    rng = np.random.default_rng(seed + 100)
    x = rng.normal(size=(1, size, size))
    x[0, 2:4, 2:5] += 3.0
    return x, rng.normal(size=(1, size, size))


def run_case(size: int = 8, channels: int = 3, seed: int = 3, *, mask=None, profile: str = "default",
             search: float = 6.0, threshold: float = 1.0):
    """Run the DAL-Test (numpy backend) and return ``(result, graph, x, ref, covariance, mask)``."""
    graph, _ = conv_graph(size, channels, seed)
    x, ref = images(size, seed)
    covariance = AR1(0.3, size * size)
    test = DALTest(graph, threshold=threshold, covariance=covariance, progress=False, search=search,
                   backend="numpy", mask=mask, profile=profile)
    result = test.run(x, ref)
    assert result.status == "ok", result.status
    return result, graph, x, ref, covariance, mask


def _conv_matrix(weight: np.ndarray, size: int) -> np.ndarray:
    """The dense matrix of a 3x3, padding-1 convolution (exact: one product per entry)."""
    in_channels = weight.shape[1]
    n_in = in_channels * size * size
    basis = np.eye(n_in).reshape(n_in, in_channels, size, size)
    out = conv2d(basis, weight, (1, 1), (1, 1), (1, 1), 1)
    return out.reshape(n_in, -1).T


def dense_layers(params, size: int) -> list[tuple]:
    """The conv graph as exact dense layers, with the input appended to the output.

    Flattening is channel-major (C, H, W), the graph's own layout.
    """
    (w1, b1), (w2, b2) = params
    rows1 = [[Fraction(v) for v in row] for row in _conv_matrix(w1, size)]
    bias1 = [Fraction(float(b1[c])) for c in range(w1.shape[0]) for _ in range(size * size)]
    rows2 = [[Fraction(v) for v in row] for row in _conv_matrix(w2, size)]
    bias2 = [Fraction(float(b2[0]))] * (size * size)
    return [("dense", rows1, bias1), ("relu",), ("dense", rows2, bias2), ("concat", 0)]


def _filter_rows(size: int) -> list[list[Fraction]]:
    """Rows of the 3x3 in-image mean filter on a ``size x size`` map."""
    rows = []
    for i in range(size):
        for j in range(size):
            cells = [(p, q) for p in range(i - 1, i + 2) for q in range(j - 1, j + 2) if 0 <= p < size and 0 <= q < size]
            row = [Fraction(0)] * (size * size)
            for p, q in cells:
                row[p * size + q] = Fraction(1, len(cells))
            rows.append(row)
    return rows


def cut_rows(size: int, lam: float) -> list[tuple[list[Fraction], Fraction]]:
    """Cut functions ``r_i -+ lam`` as rows over ``(D(x), x)`` (one channel, every pixel eligible),
    in the walk's order: all ``r - lam`` first, then all ``r + lam``."""
    n = size * size
    lam_q = Fraction(lam)
    rows = []
    for sign in (-1, 1):
        for filter_row in _filter_rows(size):
            # r = F(x - D(x)): -F on the reconstruction, +F on the input.
            rows.append(([-v for v in filter_row] + list(filter_row), sign * lam_q))
    assert len(rows) == 2 * n
    return rows


def brute_force_partition(params, size: int, a_image: np.ndarray, b_image: np.ndarray, lam: float,
                          lo: float, hi: float) -> list[Fraction]:
    """Exact breakpoints of the walk with cuts over ``[lo, hi]`` (ends included)."""
    layers = dense_layers(params, size)
    a = [Fraction(float(v)) for v in np.ravel(a_image)]
    b = [Fraction(float(v)) for v in np.ravel(b_image)]
    return exact_breakpoints(layers, a, b, Fraction(lo), Fraction(hi), cut_rows(size, lam))


def exact_region(params, size: int, a_image, b_image, lam: float, z: Fraction) -> np.ndarray:
    """The region ``{|r_i| >= lam}`` at the point ``z`` of the line, in exact arithmetic."""
    layers = dense_layers(params, size)
    point = [Fraction(float(u)) + Fraction(float(v)) * z for u, v in zip(np.ravel(a_image), np.ravel(b_image))]
    output = evaluate_exact(layers, point)
    lam_q = Fraction(lam)
    rows = cut_rows(size, lam)[: size * size]
    residual = [sum((w * v for w, v in zip(row, output)), Fraction(0)) for row, _ in rows]
    return np.array([abs(r) >= lam_q for r in residual]).reshape(size, size)
