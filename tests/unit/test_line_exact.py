"""The line walk against an exact rational, layer-major reference."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as st

from dalverify.line import walk_line
from reference.exact_line import exact_breakpoints, to_fraction_layers
from reference.strategies import as_fractions, build_graph, tiny_networks

LO, HI = -64.0, 64.0

#: Breakpoints may differ from the correctly rounded exact ones by a few ulps
#: when a planted narrow gap (2**-40) pushes an intermediate alpha past 53
#: significant bits: each of the at most 3 dense layers then rounds once, and
#: each rounding moves a root by at most a few ulps of the root. Pieces are
#: still compared one to one, so a skipped or extra piece always fails, and a
#: 1e-12 piece is 70 ulps wide even at |z| = 64.
BREAKPOINT_ULPS = 8


def assert_same_breakpoints(walked, exact):
    exact = [float(p) for p in exact]
    assert len(walked) == len(exact), (list(walked), exact)
    for got, want in zip(walked, exact):
        assert abs(got - want) <= BREAKPOINT_ULPS * np.spacing(max(abs(want), 1e-300)), (got, want)


def walk_breakpoints(layers, a, b, backend="numpy"):
    graph = build_graph(layers, len(a))
    partition = walk_line(graph, np.array(a), np.array(b), LO, HI, backend=backend)
    partition.check_tiling()
    return partition


@given(tiny_networks())
def test_walk_matches_exact_partition(case):
    layers, a, b, _ = case
    partition = walk_breakpoints(layers, a, b)
    expected = exact_breakpoints(to_fraction_layers(layers), as_fractions(a), as_fractions(b), Fraction(LO), Fraction(HI))
    assert_same_breakpoints(partition.ends(), expected)


@given(tiny_networks())
@settings(max_examples=15)
def test_torch_backend_matches_numpy(case):
    layers, a, b, _ = case
    by_numpy = walk_breakpoints(layers, a, b, "numpy")
    by_torch = walk_breakpoints(layers, a, b, "torch")
    assert [(p.lo, p.hi, p.pattern, p.end_units) for p in by_numpy.pieces] == [
        (p.lo, p.hi, p.pattern, p.end_units) for p in by_torch.pieces
    ]


@given(tiny_networks())
def test_neighbour_patterns_differ(case):
    layers, a, b, _ = case
    partition = walk_breakpoints(layers, a, b)
    for left, right in zip(partition.pieces, partition.pieces[1:]):
        assert left.pattern != right.pattern
        assert left.end_units, "an inner end must name its binding units"


def _has(feature):
    def predicate(case):
        layers, a, b, planted = case
        partition = walk_breakpoints(layers, a, b)
        if feature == "tie":
            return any(len({u for u in p.end_units}) >= 2 for p in partition.pieces[:-1])
        if feature == "narrow":
            return any(0 < p.hi - p.lo < 1e-12 for p in partition.pieces)
        if feature == "zero_root":
            return any(p.hi == 0.0 for p in partition.pieces[:-1])
        if feature == "zero_slope":
            return "zero_slope" in planted
        raise AssertionError(feature)

    return predicate


@pytest.mark.parametrize("feature", ["tie", "narrow", "zero_root", "zero_slope"])
def test_generator_reaches_planted_case(feature):
    found = find(tiny_networks(), _has(feature), settings=settings(max_examples=2000, database=None))
    assert found is not None


def test_dyadic_triple_crossing_one_breakpoint():
    # Three units with roots exactly at z = 0.75: one breakpoint naming all three.
    layers = [("dense", [[1.0], [2.0], [-4.0]], [-0.75, -1.5, 3.0]), ("relu",), ("dense", [[1.0, 1.0, 1.0]], [0.0])]
    partition = walk_breakpoints(layers, [0.0], [1.0])
    assert list(partition.ends()) == [LO, 0.75, HI]
    assert sorted(partition.pieces[0].end_units) == [(2, 0), (2, 1), (2, 2)]


def test_narrow_piece_is_kept():
    gap = 2.0 ** -42
    layers = [("dense", [[1.0], [1.0]], [-1.0, -1.0 - gap]), ("relu",), ("dense", [[1.0, -1.0]], [0.0])]
    partition = walk_breakpoints(layers, [0.0], [1.0])
    assert list(partition.ends()) == [LO, 1.0, 1.0 + gap, HI]


def test_zero_slope_unit_never_binds():
    layers = [("dense", [[0.0], [1.0]], [1.0, 0.5]), ("relu",), ("dense", [[1.0, 1.0]], [0.0])]
    partition = walk_breakpoints(layers, [0.0], [1.0])
    assert list(partition.ends()) == [LO, -0.5, HI]
    assert all(unit[1] != 0 for piece in partition.pieces for unit in piece.end_units)


def test_unbounded_range_ends_with_unbounded_piece():
    layers = [("dense", [[1.0], [-1.0]], [0.0, 2.0]), ("relu",), ("dense", [[1.0, 1.0]], [0.0])]
    graph = build_graph(layers, 1)
    partition = walk_line(graph, np.array([0.0]), np.array([1.0]), backend="numpy")
    assert list(partition.ends()) == [-np.inf, 0.0, 2.0, np.inf]
    assert partition.pieces[-1].end_units == ()


def test_root_at_negative_zero_is_plain_zero():
    layers = [("dense", [[-1.0]], [0.0]), ("relu",), ("dense", [[1.0]], [0.0])]
    partition = walk_breakpoints(layers, [0.0], [1.0])
    inner = partition.pieces[0].hi
    assert inner == 0.0
    assert np.copysign(1.0, inner) == 1.0


@given(st.floats(-60, 60), st.floats(-60, 60))
def test_sub_range_walk_is_a_restriction(lo, hi):
    if not lo < hi:
        lo, hi = min(lo, hi) - 1.0, max(lo, hi)
    layers = [("dense", [[1.0], [-0.5], [0.25]], [0.5, 1.0, -2.0]), ("abs",), ("dense", [[1.0, 1.0, -1.0]], [0.0])]
    graph = build_graph(layers, 1)
    full = walk_line(graph, np.array([0.0]), np.array([1.0]), backend="numpy").ends()
    part = walk_line(graph, np.array([0.0]), np.array([1.0]), lo, hi, backend="numpy").ends()
    assert list(part) == [lo] + [z for z in full if lo < z < hi] + [hi]


@given(tiny_networks())
def test_walk_is_bit_exact_without_narrow_plant(case):
    layers, a, b, planted = case
    if "narrow" in planted:
        return
    # Every alpha and beta is then exact in float64, so each breakpoint is the
    # correctly rounded exact root.
    partition = walk_breakpoints(layers, a, b)
    expected = exact_breakpoints(to_fraction_layers(layers), as_fractions(a), as_fractions(b), Fraction(LO), Fraction(HI))
    assert list(partition.ends()) == [float(p) for p in expected]
