"""Tests of IntervalUnion: exact ends, exact merging, set algebra, JSON."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

from dalverify.errors import InputError
from dalverify.numerics.intervals import IntervalUnion, as_exact, endpoint_from_text, endpoint_to_text

INF = float("inf")
# Example counts come from the Hypothesis profile in tests/conftest.py.
SETTINGS = settings(deadline=None)


# ---------------------------------------------------------------------------
# Construction and exact ends
# ---------------------------------------------------------------------------


def test_float_end_kept_as_binary64_rational():
    union = IntervalUnion([(0.1, 0.3)])
    lo, hi = union.intervals[0]
    assert lo == Fraction(3602879701896397, 36028797018963968)
    assert lo != Fraction(1, 10)
    assert hi == Fraction(0.3)


def test_string_end_kept_as_decimal_rational():
    union = IntervalUnion([("0.1", "1/3")])
    assert union.intervals == ((Fraction(1, 10), Fraction(1, 3)),)


def test_end_types_convert_exactly():
    with mpmath.mp.workdps(60):
        third = mpmath.mpf(1) / 3
    mantissa, exponent = third.man_exp
    cases = [
        (3, Fraction(3)),
        (Fraction(-7, 9), Fraction(-7, 9)),
        (Decimal("2.5e-400"), Fraction(25, 10**401)),
        ("-1e-300", Fraction(-1, 10**300)),
        ("0x1.8p+0", Fraction(3, 2)),
        (np.float64(0.1), Fraction(0.1)),
        (np.float32(0.1), Fraction(float(np.float32(0.1)))),
        (np.int64(-4), Fraction(-4)),
        (sympy.Rational(5, 7), Fraction(5, 7)),
        (mpmath.mpf("0.5"), Fraction(1, 2)),
        (third, Fraction(mantissa, 2**-exponent)),
        ("inf", INF),
        ("-Infinity", -INF),
        (mpmath.mpf("-inf"), -INF),
        (Decimal("Infinity"), INF),
    ]
    for value, expected in cases:
        assert as_exact(value) == expected, value
        assert type(as_exact(value)) is type(expected), value


def test_mpf_end_exact_beyond_float_precision():
    with mpmath.mp.workdps(60):
        value = mpmath.mpf(2) + mpmath.mpf(10) ** -40
    exact = as_exact(value)
    assert exact != 2
    assert abs(exact - 2 - Fraction(1, 10**40)) < Fraction(1, 10**58)


@pytest.mark.parametrize("bad", [float("nan"), "nan", mpmath.mpf("nan"), Decimal("NaN"), True, 1j, "abc", None])
def test_invalid_end_rejected(bad):
    with pytest.raises(InputError):
        IntervalUnion([(bad, 1)])


def test_reversed_pair_error_names_pair():
    with pytest.raises(InputError, match=r"#1 \(3, 2\).*lo > hi"):
        IntervalUnion([(0, 1), (3, 2)])


def test_nan_pair_error_names_pair():
    with pytest.raises(InputError, match=r"#0 .*nan.*NaN"):
        IntervalUnion([(float("nan"), 2.0)])


@pytest.mark.parametrize("bad", [(1,), (1, 2, 3), 5, "ab"])
def test_malformed_pair_rejected(bad):
    with pytest.raises(InputError, match="pair"):
        IntervalUnion([bad])


def test_zero_length_pairs_dropped():
    union = IntervalUnion([(1, 1), (INF, INF), (-INF, -INF), (2, 3)])
    assert union.intervals == ((Fraction(2), Fraction(3)),)
    assert IntervalUnion([(5, 5)]).is_empty


def test_overlapping_and_unsorted_pairs_merge():
    union = IntervalUnion([(5, 7), (0, 2), (1, 3), (6, 6.5)])
    assert union.intervals == ((0, 3), (5, 7))


def test_touching_pairs_merge_exactly():
    union = IntervalUnion([(0, Fraction(1, 3)), (Fraction(1, 3), 1)])
    assert union.intervals == ((0, 1),)


def test_nearly_touching_pairs_stay_apart():
    gap = Fraction(1, 10**400)
    union = IntervalUnion([(0, 1), (1 + gap, 2)])
    assert len(union) == 2
    next_float = math.nextafter(1.0, 2.0)
    assert len(IntervalUnion([(0.0, 1.0), (next_float, 2.0)])) == 2


def test_unbounded_components():
    union = IntervalUnion([(-INF, -1), (1, INF)])
    assert union.intervals == ((-INF, -1), (1, INF))
    assert union.measure == INF
    assert 1e308 in union
    assert 0 not in union


# ---------------------------------------------------------------------------
# Queries
# ---------------------------------------------------------------------------


def test_membership_includes_ends():
    union = IntervalUnion([(0, 1), (2, 3)])
    assert 0 in union
    assert 1 in union
    assert "2" in union
    assert Fraction(3) in union
    assert 1.5 not in union
    assert -1e-300 not in union
    assert Fraction(3) + Fraction(1, 10**50) not in union


def test_membership_rejects_nan():
    with pytest.raises(InputError):
        _ = float("nan") in IntervalUnion([(0, 1)])


def test_component_containing():
    union = IntervalUnion([(0, 1), (2, 3)])
    assert union.component_containing(2.5) == (2, 3)
    assert union.component_containing(1) == (0, 1)
    assert union.component_containing(1.5) is None
    assert IntervalUnion().component_containing(0) is None


def test_measure_exact():
    union = IntervalUnion([(0.1, 0.2), ("1/3", "2/3")])
    assert union.measure == Fraction(0.2) - Fraction(0.1) + Fraction(1, 3)
    assert IntervalUnion().measure == 0


def test_len_iter_bool():
    union = IntervalUnion([(0, 1), (2, 3)])
    assert len(union) == 2
    assert list(union) == [(0, 1), (2, 3)]
    assert union
    assert not IntervalUnion()


def test_complement_within_range():
    union = IntervalUnion([(0, 1), (2, 3)])
    assert union.complement(-1, 4).intervals == ((-1, 0), (1, 2), (3, 4))
    assert union.complement(0.5, 2.5).intervals == ((1, 2),)
    assert union.complement().intervals == ((-INF, 0), (1, 2), (3, INF))
    assert IntervalUnion().complement(0, 1).intervals == ((0, 1),)
    with pytest.raises(InputError):
        union.complement(2, 1)


def test_intersection_drops_touching_points():
    left = IntervalUnion([(0, 1)])
    right = IntervalUnion([(1, 2)])
    assert (left & right).is_empty
    assert (left | right).intervals == ((0, 2),)


def test_difference_and_scaling():
    union = IntervalUnion([(0, 4)])
    assert (union - IntervalUnion([(1, 2)])).intervals == ((0, 1), (2, 4))
    scaled = IntervalUnion([(-INF, 1), (2, 3)]).scaled(Fraction(1, 3))
    assert scaled.intervals == ((-INF, Fraction(1, 3)), (Fraction(2, 3), 1))
    with pytest.raises(InputError):
        union.scaled(0)
    with pytest.raises(InputError):
        union.scaled(INF)


def test_equality_hash_immutability():
    first = IntervalUnion([(0, 1), (1, 2)])
    second = IntervalUnion([("0", "2")])
    assert first == second
    assert hash(first) == hash(second)
    assert first != IntervalUnion([(0, 2.5)])
    assert first != [(0, 2)]
    with pytest.raises(AttributeError):
        first.foo = 1


def test_repr_shows_ends():
    assert repr(IntervalUnion([(-INF, 0.5), ("1/3", "0.4")])) == "IntervalUnion([(-inf, 0.5)])"
    assert repr(IntervalUnion([(0.5, 2)])) == "IntervalUnion([(0.5, 2.0)])"
    assert repr(IntervalUnion([("1/3", INF)])) == "IntervalUnion([(Fraction(1, 3), inf)])"


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------


def test_json_round_trip_lossless():
    union = IntervalUnion([(-INF, 0.1), ("1/3", "2.00000000000000000000001"), (2**70 + 1, INF)])
    data = json.loads(json.dumps(union.to_json()))
    assert IntervalUnion.from_json(data) == union
    assert data["intervals"][0] == ["-inf", (0.1).hex()]
    assert data["intervals"][1][0] == "1/3"
    assert data["intervals"][2][0] == f"{2**70 + 1}/1"


def test_endpoint_text_forms():
    assert endpoint_to_text(Fraction(3, 2)) == "0x1.8000000000000p+0"
    assert endpoint_to_text(Fraction(10**400)) == f"{10**400}/1"
    assert endpoint_to_text(-INF) == "-inf"
    assert endpoint_from_text("0x1.8000000000000p+0") == Fraction(3, 2)
    with pytest.raises(InputError):
        endpoint_from_text(1.5)


@pytest.mark.parametrize(
    "data",
    [
        {"type": "other", "version": 1, "intervals": []},
        {"type": "dalverify.IntervalUnion", "version": 2, "intervals": []},
        {"type": "dalverify.IntervalUnion", "version": 1},
        {"type": "dalverify.IntervalUnion", "version": 1, "intervals": [["1"]]},
        {"type": "dalverify.IntervalUnion", "version": 1, "intervals": [["2", "1"]]},
    ],
)
def test_json_malformed_rejected(data):
    with pytest.raises(InputError):
        IntervalUnion.from_json(data)


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------

# Ends on a coarse grid make touching and shared ends frequent; a few ends
# with huge denominators and the infinities cover the other shapes.
grid_ends = st.integers(-8, 8).map(lambda k: Fraction(k, 2))
odd_ends = st.sampled_from([Fraction(1, 3), Fraction(10**30 + 1, 10**30), Fraction(-7, 10**20)])
ends = st.one_of(grid_ends, grid_ends, grid_ends, odd_ends, st.sampled_from([INF, -INF]))
pairs = st.tuples(ends, ends).map(lambda p: (min(p), max(p)))
unions = st.lists(pairs, max_size=6).map(IntervalUnion)

# Points that are never an end in the strategies above, for pointwise checks.
PROBE_POINTS = [Fraction(2 * k + 1, 4) for k in range(-20, 20)] + [Fraction(-10**9), Fraction(10**9)]


def check_canonical(union):
    comps = union.intervals
    for lo, hi in comps:
        assert lo < hi
    for (_, hi), (lo, _) in zip(comps, comps[1:]):
        assert hi < lo


def all_ends(*unions_):
    return {end for union in unions_ for pair in union.intervals for end in pair}


@SETTINGS
@given(pairs_list=st.lists(pairs, max_size=6))
def test_construction_canonical_and_pointwise(pairs_list):
    union = IntervalUnion(pairs_list)
    check_canonical(union)
    assert all_ends(union) <= {end for pair in pairs_list for end in pair}
    for z in PROBE_POINTS:
        expected = any(lo <= z <= hi for lo, hi in pairs_list if lo < hi)
        assert (z in union) == expected


@SETTINGS
@given(a=unions, b=unions)
def test_union_intersection_pointwise(a, b):
    union, meet = a | b, a & b
    check_canonical(union)
    check_canonical(meet)
    assert all_ends(union) <= all_ends(a, b)
    assert all_ends(meet) <= all_ends(a, b)
    for z in PROBE_POINTS:
        in_a, in_b = z in a, z in b
        assert (z in union) == (in_a or in_b)
        assert (z in meet) == (in_a and in_b)


@SETTINGS
@given(a=unions)
def test_complement_pointwise_and_laws(a):
    complement = ~a
    check_canonical(complement)
    assert all_ends(complement) <= all_ends(a) | {INF, -INF}
    for z in PROBE_POINTS:
        assert (z in complement) == (z not in a)
    assert ~complement == a
    assert (a | complement) == IntervalUnion([(-INF, INF)])
    assert (a & complement).is_empty


@SETTINGS
@given(a=unions, b=unions, c=unions)
def test_boolean_algebra_laws(a, b, c):
    assert a | b == b | a
    assert a & b == b & a
    assert (a | b) | c == a | (b | c)
    assert (a & b) & c == a & (b & c)
    assert a & (b | c) == (a & b) | (a & c)
    assert a | (b & c) == (a | b) & (a | c)
    assert ~(a | b) == ~a & ~b
    assert ~(a & b) == ~a | ~b
    assert a - b == a & ~b
    assert a | a == a
    assert a & a == a


@SETTINGS
@given(a=unions, b=unions)
def test_measure_additive(a, b):
    if a.measure == INF or b.measure == INF:
        return
    assert (a | b).measure + (a & b).measure == a.measure + b.measure


@SETTINGS
@given(a=unions, lo=grid_ends, width=st.integers(0, 8))
def test_complement_within_range_laws(a, lo, width):
    hi = lo + width
    window = IntervalUnion([(lo, hi)])
    complement = a.complement(lo, hi)
    assert complement == window - a
    assert (complement | (a & window)) == window
    assert (complement & a).is_empty


@SETTINGS
@given(a=unions)
def test_json_round_trip_property(a):
    assert IntervalUnion.from_json(json.loads(json.dumps(a.to_json()))) == a


def test_strategy_reaches_touching_and_unbounded_cases():
    # The properties above are only meaningful if their inputs contain
    # touching components, infinite ends and huge denominators.
    seen = {"touching": False, "infinite": False, "odd": False}

    @settings(max_examples=300, deadline=None, derandomize=True)
    @given(pairs_list=st.lists(pairs, min_size=2, max_size=6))
    def probe(pairs_list):
        ordered = sorted(p for p in pairs_list if p[0] < p[1])
        if any(x[1] == y[0] for x, y in zip(ordered, ordered[1:])):
            seen["touching"] = True
        if any(INF in p or -INF in p for p in pairs_list):
            seen["infinite"] = True
        if any(isinstance(e, Fraction) and e.denominator > 10**10 for p in pairs_list for e in p):
            seen["odd"] = True

    probe()
    assert all(seen.values()), seen
