"""Soundness of interval certification on tiny networks with planted hard cases.

The reference is the exact layer-major brute force of
``tests/reference/exact_line.py`` (Fractions of the binary64 parameters),
which shares no code with the walk, the producer's checks or the verifier.
Planted cases: several units crossing at one dyadic point, pieces narrower
than 1e-12, weights scaled by 1e8 and 1e-8, roots at zero, zero-slope units.
The float enclosures are also checked entry by entry against exact values
from the verifier's Fraction pass, an implementation independent of the
producer's scaled-integer pass.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings

from dalverify.certify import piece_check, verify as verifier
from dalverify.graph import GraphBuilder
from dalverify.line import walk_line
from reference.exact_line import exact_breakpoints, to_fraction_layers
from reference.strategies import as_fractions, build_graph, tiny_networks

LO, HI = -64.0, 64.0


def exact_ends(layers, a, b):
    return exact_breakpoints(to_fraction_layers(layers), as_fractions(a), as_fractions(b), Fraction(LO), Fraction(HI))


def walk(layers, a, b):
    graph = build_graph(layers, len(a))
    partition = walk_line(graph, np.array(a, dtype=float), np.array(b, dtype=float), LO, HI, backend="numpy")
    return graph, partition


def assert_exact_certificate(layers, a, b):
    """Exact certification proves every interval and its ends are the brute-force breakpoints."""
    graph, partition = walk(layers, a, b)
    result = piece_check.certify_partition(graph, np.array(a, float), np.array(b, float), partition,
                                           method="exact", lp=False)
    assert result.ok, result.issues
    assert result.unresolved.is_empty
    expected = exact_ends(layers, a, b)
    proven = [Fraction(LO)] + [check.proven[1] for check in result.pieces[:-1]] + [Fraction(HI)]
    assert proven == expected
    for check, left in zip(result.pieces[1:], expected[1:-1]):
        assert check.proven[0] == left
    return graph, partition, result, expected


def assert_enclosure_sound(graph, partition, a, b, expected):
    """Every float-proven interval lies inside the exact piece it certifies."""
    result = piece_check.certify_partition(graph, np.array(a, float), np.array(b, float), partition,
                                           method="enclosure", lp=False)
    assert result.ok, result.issues
    for check, left, right in zip(result.pieces, expected, expected[1:]):
        if check.proven is None:
            continue
        lo = max(Fraction(check.proven[0]) if math.isfinite(check.proven[0]) else Fraction(LO), Fraction(LO))
        hi = min(Fraction(check.proven[1]) if math.isfinite(check.proven[1]) else Fraction(HI), Fraction(HI))
        assert left <= lo, (check.index, float(lo), float(left))
        assert hi <= right, (check.index, float(hi), float(right))
    return result


@given(tiny_networks())
@settings(max_examples=25)
def test_exact_certification_matches_brute_force(case):
    layers, a, b, _ = case
    graph, partition, _, expected = assert_exact_certificate(layers, a, b)
    # NOTE: the float path may leave whole pieces unresolved here: a unit that
    # cancels to exactly zero through rounded operations keeps a positive
    # radius, so its sign cannot be proven. Only soundness is asserted.
    assert_enclosure_sound(graph, partition, a, b, expected)


@given(tiny_networks())
@settings(max_examples=15)
def test_verifier_zones_match_brute_force(case):
    """The verifier's own passes prove the same exact intervals, and float zones inside them."""
    layers, a, b, _ = case
    graph, partition = walk(layers, a, b)
    expected = exact_ends(layers, a, b)
    a_arr, b_arr = np.array(a, float), np.array(b, float)
    for k, piece in enumerate(partition.pieces):
        z = verifier._interior(piece.lo, piece.hi)
        bits, groups, _, _ = verifier._float_pass(graph, a_arr, b_arr, z)
        exact_groups, _ = verifier._exact_pass(graph, a_arr, b_arr, bits)
        lo, hi = verifier._proven(exact_groups, True, set())
        assert max(lo, Fraction(LO)) == expected[k]
        assert min(hi, Fraction(HI)) == expected[k + 1]
        flo, fhi = verifier._proven(groups, False, set())
        assert Fraction(max(flo, LO)) >= expected[k]
        assert Fraction(min(fhi, HI)) <= expected[k + 1]


def test_units_crossing_at_one_dyadic_point():
    # Three first-layer units vanish at z = 1/4 (one with slope 2), one has slope 0.
    rows = [[1.0, 0.0], [2.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    bias = [-0.25, -0.5, -0.125, 0.5]
    layers = [("dense", rows, bias), ("relu",), ("dense", [[1.0, -1.0, 0.5, 0.25]], [0.0])]
    a, b = [0.0, 0.0], [1.0, 0.0]
    graph, partition, result, expected = assert_exact_certificate(layers, a, b)
    assert expected == [Fraction(LO), Fraction(1, 4), Fraction(HI)]
    piece = partition.pieces[0]
    assert piece.hi == 0.25
    assert sorted(piece.end_units) == [(2, 0), (2, 1), (2, 2)]
    assert result.pieces[0].end_roots is None  # the float end is the exact root
    assert result.unexplained_flips == 0


def test_pieces_narrower_than_a_picometre():
    gap = 2.0**-42  # about 2.3e-13
    rows = [[1.0], [1.0], [1.0]]
    bias = [-0.5, -0.5 - gap, -0.5 - 2 * gap]
    layers = [("dense", rows, bias), ("relu",), ("dense", [[1.0, -2.0, 1.5]], [0.0])]
    graph, partition, result, expected = assert_exact_certificate(layers, [0.0], [1.0])
    widths = [float(right - left) for left, right in zip(expected, expected[1:])]
    assert len(widths) == 4
    assert min(widths) < 1e-12
    enclosure = assert_enclosure_sound(graph, partition, [0.0], [1.0], expected)
    assert enclosure.unresolved_width < 1e-12


@pytest.mark.parametrize("scale", [1e8, 1e-8])
def test_weights_scaled_by_powers_of_ten(scale):
    rng = np.random.default_rng(7)
    rows = (rng.integers(-8, 9, size=(5, 2)) / 4 * scale).tolist()
    bias = (rng.integers(-8, 9, size=5) / 8 * scale).tolist()
    second = (rng.integers(-8, 9, size=(3, 5)) / 4 / scale).tolist()
    layers = [("dense", rows, bias), ("relu",), ("dense", second, [0.125, -0.25, 0.5]), ("leaky", 0.25),
              ("dense", [[1.0, 0.5, -1.0]], [0.0])]
    a, b = [0.3, -0.7], [1.1, 0.9]  # not dyadic: every float operation rounds
    graph, partition, result, expected = assert_exact_certificate(layers, a, b)
    assert_enclosure_sound(graph, partition, a, b, expected)


def test_roots_at_zero():
    rows = [[1.0], [-1.0], [2.0]]
    layers = [("dense", rows, [0.0, -0.0, 0.0]), ("abs",), ("dense", [[1.0, -0.5, 0.25]], [0.0])]
    graph, partition, result, expected = assert_exact_certificate(layers, [0.0], [1.0])
    assert Fraction(0) in expected
    assert any(piece.hi == 0.0 and math.copysign(1.0, piece.hi) == 1.0 for piece in partition.pieces)


def test_wrong_end_is_reported_by_the_producer():
    layers = [("dense", [[1.0], [1.0]], [-0.5, 0.25]), ("relu",), ("dense", [[1.0, -1.0]], [0.0])]
    graph, partition = walk(layers, [0.0], [1.0])
    moved = partition.pieces[0].hi + 1e-6
    pieces = list(partition.pieces)
    pieces[0] = type(pieces[0])(pieces[0].lo, moved, pieces[0].pattern, pieces[0].end_units)
    pieces[1] = type(pieces[1])(moved, pieces[1].hi, pieces[1].pattern, pieces[1].end_units)
    partition.pieces = pieces
    result = piece_check.certify_partition(graph, np.array([0.0]), np.array([1.0]), partition, method="exact", lp=False)
    assert any("enclosure of the root" in issue for issue in result.issues)


def _kitchen_sink_graph(scale: float = 1.0):
    """Every linear kind and every piecewise kind on a 2x4x4 input, with non-dyadic weights."""
    rng = np.random.default_rng(11)
    g = GraphBuilder((2, 4, 4))
    c1 = g.conv2d(0, rng.normal(size=(4, 1, 3, 3)) * scale, rng.normal(size=4), padding=1, groups=2)
    r1 = g.leaky_relu(c1, 0.1)
    p1 = g.max_pool2d(r1, 2)
    t1 = g.conv_transpose2d(p1, rng.normal(size=(4, 2, 2, 2)) / scale, rng.normal(size=2), stride=2)
    s1 = g.scale_shift(t1, rng.normal(size=2), rng.normal(size=2))
    a1 = g.avg_pool2d(s1, 3, stride=1, padding=1, count_include_pad=False)
    b1 = g.upsample_bilinear(g.abs(a1), (6, 6))
    d1 = g.conv2d(b1, rng.normal(size=(2, 2, 3, 3)), None, stride=1, dilation=1)
    u1 = g.upsample_nearest(g.relu(d1), 1)
    k1 = g.add_const(g.mul_const(u1, 0.3), rng.normal(size=(2, 1, 1)))
    cat = g.concat([k1, g.binary("sub", k1, u1)], 0)
    flat = g.reshape(cat, (64,))
    out = g.dense(g.relu(g.dense(flat, rng.normal(size=(6, 64)) * 0.2, rng.normal(size=6))), rng.normal(size=(3, 6)))
    return g.build(out)


@pytest.mark.parametrize("scale", [1.0, 1e8])
def test_radius_encloses_exact_values(scale):
    graph = _kitchen_sink_graph(scale)
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(2, 4, 4)), rng.normal(size=(2, 4, 4))
    largest_error = 0.0
    for z in (-0.7, 0.1, 1.3):
        fpass = piece_check.float_pass(graph, a, b, z=z)
        exact_groups, exact_out = verifier._exact_pass(graph, a, b, fpass.bits)
        int_pass = piece_check.exact_pass(graph, a, b, fpass.bits)
        for group, int_group in zip(fpass.groups, int_pass.groups):
            alpha, beta = exact_groups.data[group.key][0], exact_groups.data[group.key][1]
            for i in range(group.alpha.size):
                for value, radius, truth in ((group.alpha[i], group.rad_alpha[i], alpha[i]),
                                             (group.beta[i], group.rad_beta[i], beta[i])):
                    error = abs(Fraction(float(value)) - truth)
                    assert error <= Fraction(float(radius)), (group.key, i, float(error), radius)
                    largest_error = max(largest_error, float(error))
                # Scaled integers and Fractions give the same signs and roots.
                sign_int = (int_group.alpha[i] > 0) - (int_group.alpha[i] < 0)
                sign_frac = (alpha[i] > 0) - (alpha[i] < 0)
                assert sign_int == sign_frac
                if beta[i] != 0:
                    assert Fraction(-int_group.alpha[i], int_group.beta[i]) == -alpha[i] / beta[i]
        for row in range(2):
            for value, radius, truth in zip(fpass.out[row].ravel(), fpass.out_rad[row].ravel(), exact_out[row].ravel()):
                assert abs(Fraction(float(value)) - truth) <= Fraction(float(radius))
    # The floats do round, so a radius of zero would fail this test.
    assert largest_error > 0


def test_lp_cross_check_agrees_and_detects_a_wrong_end():
    alpha = np.array([-0.5, 2.0, 0.25, -1.0])
    beta = np.array([1.0, -1.0, 0.5, 0.0])
    sign = np.array([1.0, 1.0, 1.0, -1.0])  # z >= 0.5, z <= 2, z >= -0.5, 1 >= 0
    checker = piece_check.LPCrossCheck()
    checker.check(0, alpha, beta, sign, Fraction(1, 2), Fraction(2))
    assert checker.summary.statuses == {"optimal": 2}
    assert not checker.summary.failures
    assert checker.summary.worst_disagreement < 1e-12
    checker.check(1, alpha, beta, sign, Fraction(1, 2), Fraction(3))
    assert checker.summary.failures and "differs from the proven end" in checker.summary.failures[0]


def test_gamma_bound_covers_adversarial_sums():
    """|fl(sum) - sum| <= gamma_{n-1} sum |x| for recursive summation, checked exactly."""
    rng = np.random.default_rng(0)
    for n in (2, 10, 1000):
        for _ in range(20):
            values = rng.normal(size=n) * np.exp(rng.normal(size=n) * 10)
            values[-1] = -float(sum(Fraction(v) for v in values[:-1]))  # heavy cancellation
            total = 0.0
            for v in values:
                total += v
            error = abs(Fraction(total) - sum(Fraction(v) for v in values))
            assert error <= Fraction(piece_check.gamma(n - 1)) * sum(Fraction(abs(v)) for v in values)
