"""dalverify.testing: the strategies reach their promised edge cases, and the oracles are right.

Each strategy is shown with ``hypothesis.find`` to produce the case it
promises (ties, zero slopes, pieces narrower than 1e-12, zeros at z = 0,
|t|/sd from 0.1 to 1e200, thousands of intervals, narrow intervals, ends off
the binary64 grid). The oracles are checked against closed forms computed
with mpmath's erfc/ncdf and hand-derived partitions, and against dalverify's
own implementations.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from mpmath import mp, mpf

from dalverify import testing
from dalverify.errors import InputError
from dalverify.graph import GraphBuilder, evaluate
from dalverify.line import walk_line
from dalverify.methods.pvalues import selective_pvalue

INF = math.inf
# Without shrinking, find returns the first example that shows the case, which is all these tests need.
FIND = settings(max_examples=600, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck))

#: Breakpoints of the walk may differ from the correctly rounded exact ones by
#: a few ulps when a planted narrow gap (2**-40) carries an intermediate value
#: past 53 significant bits (see tests/unit/test_line_exact.py).
BREAKPOINT_ULPS = 8


def partition(case, lo=-16, hi=16):
    return testing.exact_partition(case.graph, case.a, case.b, lo, hi)


def first_layer_slopes(case):
    """Exact slopes along the line of the units of the first linear operation."""
    kind, _, rows, _ = case.network.ops[0]
    assert kind == "linear"
    b = [Fraction(float(v)) for v in case.b.reshape(-1)]
    return [sum((c * b[j] for j, c in row.items()), Fraction(0)) for row in rows]


# ---------------------------------------------------------------------------
# Graph strategies reach their edge cases.


def test_dense_networks_reach_a_tie():
    case = find(testing.dense_networks(), lambda c: "tie" in c.planted and max(partition(c).changes, default=0) >= 2,
                settings=FIND)
    assert max(partition(case).changes) >= 2


def test_dense_networks_reach_a_narrow_piece():
    case = find(testing.dense_networks(), lambda c: "narrow" in c.planted and partition(c).narrowest() < 1e-12,
                settings=FIND)
    assert 0 < partition(case).narrowest() < Fraction(1, 10**12)


def test_dense_networks_reach_a_zero_root():
    case = find(testing.dense_networks(), lambda c: Fraction(0) in partition(c).breakpoints[1:-1], settings=FIND)
    assert Fraction(0) in partition(case).breakpoints


def test_dense_networks_reach_a_zero_slope():
    case = find(testing.dense_networks(), lambda c: "zero_slope" in c.planted and 0 in first_layer_slopes(c),
                settings=FIND)
    assert Fraction(0) in first_layer_slopes(case)


def test_dense_networks_reach_every_kind():
    wanted = {"add", "sub", "concat", "add_const", "mul_const", "reshape", "leaky_relu", "abs", "relu"}
    seen: set[str] = set()

    def covers(case):
        seen.update(node.kind for node in case.graph.nodes)
        return wanted <= seen

    find(testing.dense_networks(), covers, settings=FIND)


def test_conv_networks_reach_tie_and_zero_slope():
    tie = find(testing.conv_networks(), lambda c: "tie" in c.planted and max(partition(c).changes, default=0) >= 2,
               settings=FIND)
    assert "conv2d" in [node.kind for node in tie.graph.nodes]
    flat = find(testing.conv_networks(), lambda c: "zero_slope" in c.planted, settings=FIND)
    assert Fraction(0) in first_layer_slopes(flat)


@given(testing.lines((2, 3, 1)))
def test_lines_have_shape_and_direction(line):
    a, b = line
    assert a.shape == b.shape == (2, 3, 1)
    assert b.any()
    assert all(float(v * 8).is_integer() for v in np.concatenate([a.ravel(), b.ravel()]))


# ---------------------------------------------------------------------------
# Truncation strategies reach every regime.


def is_float(value):
    return isinstance(value, float) or Fraction(float(value)) == value


def test_truncation_cases_reach_the_extremes_of_z():
    far = find(testing.truncation_cases(), lambda c: abs(c.z_obs) >= Fraction(10) ** 199, settings=FIND)
    assert abs(far.z_obs) >= Fraction(10) ** 199
    near = find(testing.truncation_cases(), lambda c: abs(c.z_obs) <= Fraction(1, 5), settings=FIND)
    assert abs(near.z_obs) <= Fraction(1, 5)


def test_truncation_cases_reach_thousands_of_intervals():
    case = find(testing.truncation_cases(regimes=["many"]), lambda c: len(c.intervals) >= 1000, settings=FIND)
    assert len(case.intervals) >= 1000


def test_truncation_cases_reach_narrow_intervals():
    def narrow(case):
        return any(not isinstance(hi - lo, float) and hi - lo <= Fraction(1, 10**12) * max(1, abs(lo))
                   for lo, hi in case.intervals)

    case = find(testing.truncation_cases(), narrow, settings=FIND)
    assert narrow(case)


def test_truncation_cases_reach_rational_ends():
    def rational(case):
        finite = [end for pair in case.intervals for end in pair if not isinstance(end, float)]
        return all(not is_float(end) for end in finite) and not is_float(case.t_obs) and not is_float(case.sd)

    case = find(testing.truncation_cases(), rational, settings=FIND)
    assert rational(case)


@given(testing.truncation_cases(max_intervals=1200))
@settings(max_examples=25)
def test_truncation_cases_are_valid(case):
    assert case.sd > 0
    assert any(lo <= case.t_obs <= hi for lo, hi in case.intervals)
    for (lo, hi), (next_lo, _) in zip(case.intervals, case.intervals[1:]):
        assert lo < hi < next_lo


# ---------------------------------------------------------------------------
# exact_partition and describe_graph.


def test_exact_partition_hand_example():
    builder = GraphBuilder((1,))
    hidden = builder.relu(builder.dense(0, [[1.0], [1.0], [2.0]], [0.0, -1.0, -2.0]))
    builder.dense(hidden, [[1.0, -1.0, 1.0]])
    result = testing.exact_partition(builder.build(), [0.0], [1.0], -2, 3)
    assert result.breakpoints == (-2, 0, 1, 3)
    assert result.changes == (1, 2)  # units 2 and 3 both cross at z = 1


def test_exact_partition_with_cut_rows():
    builder = GraphBuilder((1,))
    builder.dense(0, [[3.0]])
    result = testing.exact_partition(builder.build(), [0.0], [1.0], -1, 1, cut_rows=[([1], Fraction(-1, 2))])
    assert result.breakpoints == (-1, Fraction(1, 6), 1)


def test_exact_partition_rejects_max_pool_and_bad_ranges():
    builder = GraphBuilder((1, 2, 2))
    builder.max_pool2d(0, 2)
    with pytest.raises(InputError):
        testing.exact_partition(builder.build(), np.zeros((1, 2, 2)), np.ones((1, 2, 2)), -1, 1)
    plain = GraphBuilder((1,))
    plain.relu(0)
    with pytest.raises(InputError):
        testing.exact_partition(plain.build(), [0.0], [1.0], 1, -1)


@given(testing.dense_networks())
@settings(max_examples=30)
def test_exact_partition_matches_the_walk(case):
    exact = partition(case)
    walked = walk_line(case.graph, case.a, case.b, -16.0, 16.0, backend="numpy")
    ends = walked.ends()
    assert len(ends) == len(exact.breakpoints)
    for got, want in zip(ends, exact.breakpoints):
        want = float(want)
        assert abs(got - want) <= BREAKPOINT_ULPS * np.spacing(max(abs(want), 1e-300))


def every_kind_graph():
    rng = np.random.default_rng(3)
    builder = GraphBuilder((2, 4, 4))
    conv = builder.conv2d(0, rng.normal(size=(4, 1, 3, 3)), rng.normal(size=4), stride=1, padding=1, dilation=1,
                          groups=2)
    wide = builder.conv2d(conv, rng.normal(size=(2, 4, 2, 2)), None, stride=2, padding=1, dilation=2)
    up = builder.conv_transpose2d(builder.leaky_relu(wide, 0.2), rng.normal(size=(2, 3, 3, 3)), rng.normal(size=3),
                                  stride=2, padding=1, output_padding=1)
    pooled = builder.avg_pool2d(up, 3, 1, 1, count_include_pad=False)
    scaled = builder.scale_shift(builder.relu(pooled), rng.normal(size=3), rng.normal(size=3))
    bilinear = builder.upsample_bilinear(scaled, (5, 7))
    nearest = builder.upsample_nearest(builder.avg_pool2d(scaled, 2), (2, 3))
    tall = builder.concat([bilinear, builder.abs(builder.add_const(bilinear, 0.5))], 0)
    mixed = builder.binary("sub", builder.mul_const(tall, rng.normal(size=(6, 5, 7))), tall)
    flat = builder.reshape(mixed, (6 * 5 * 7,))
    small = builder.dense(flat, rng.normal(size=(4, 210)), rng.normal(size=4))
    near = builder.reshape(nearest, (3 * 4 * 6,))
    builder.concat([small, builder.dense(near, rng.normal(size=(2, 72)))], 0)
    return builder.build()


def test_describe_graph_matches_the_numpy_semantics():
    graph = every_kind_graph()
    network = testing.describe_graph(graph)
    x = np.random.default_rng(4).normal(size=(2, 2, 4, 4))
    values = evaluate(graph, x)
    for sample, want in zip(x, values):
        got = np.array([float(v) for v in network.output_at(sample.reshape(-1))])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())


# ---------------------------------------------------------------------------
# exact_selective_pvalue.


@pytest.mark.parametrize("c", [0.5, 3.0, 40.0, 1000.0])
def test_pvalue_on_the_whole_line_is_erfc(c):
    got = testing.exact_selective_pvalue(c, 1, [(-INF, INF)], dps=40)
    with mp.workdps(80):
        want = mp.erfc(mpf(c) / mp.sqrt(2))
        assert abs(got / want - 1) < mpf(10) ** -35


def test_pvalue_at_1e200_matches_the_asymptotic_series():
    c = Fraction(10) ** 200
    got = testing.exact_selective_pvalue(c * 3, 3, [(-INF, INF)], dps=30)
    with mp.workdps(500):
        big = mpf(10) ** 200
        # erfc(c / sqrt 2) = sqrt(2 / pi) exp(-c^2 / 2) / c * (1 - 1/c^2 + ...); 1/c^2 = 1e-400.
        want_log10 = -big * big / (2 * mp.ln(10)) + mp.log10(mp.sqrt(2 / mp.pi) / big)
        assert abs(mp.log10(got) - want_log10) < mpf(10) ** -25


def test_equal_tailed_pvalue_on_a_ray():
    # Z = [c - 1, inf) with t = c: F = (Phi(c) - Phi(c - 1)) / (1 - Phi(c - 1)).
    c = 2.5
    got = testing.exact_selective_pvalue(c, 1, [(c - 1, INF)], two_sided="equal-tailed", dps=40)
    with mp.workdps(80):
        lower, upper = mp.ncdf(-(c - 1)) - mp.ncdf(-c), mp.ncdf(-c)
        want = 2 * min(lower, upper) / (lower + upper)
        assert abs(got / want - 1) < mpf(10) ** -35


def test_symmetric_pvalue_with_rational_ends():
    # Z = [-2/3, 1/3] with t = 1/3 and sd = 1/3: in z units [-2, 1], t = 1.
    got = testing.exact_selective_pvalue(Fraction(1, 3), Fraction(1, 3), [("-2/3", "1/3")], dps=40)
    with mp.workdps(80):
        inside = mp.ncdf(1) - mp.ncdf(-2)
        want = (mp.ncdf(-1) - mp.ncdf(-2)) / inside
        assert abs(got / want - 1) < mpf(10) ** -35


@given(testing.truncation_cases(max_intervals=1500))
@settings(max_examples=12)
def test_oracle_agrees_with_dalverify(case):
    for two_sided in ("symmetric", "equal-tailed"):
        exact = testing.exact_selective_pvalue(case.t_obs, case.sd, case.intervals, two_sided=two_sided)
        ours = selective_pvalue(case.t_obs, case.sd, list(case.intervals), two_sided=two_sided)
        if exact == 0:
            assert ours.value == 0
        else:
            assert abs(ours.value / exact - 1) < mpf(10) ** -12, (case.regime, two_sided)


def test_oracle_rejects_bad_input():
    with pytest.raises(InputError):
        testing.exact_selective_pvalue(5.0, 1, [(0, 1)])
    with pytest.raises(InputError):
        testing.exact_selective_pvalue(0.5, 0, [(0, 1)])
    with pytest.raises(InputError):
        testing.exact_selective_pvalue(0.5, 1, [(0, 1)], two_sided="left")
