"""Test your own line walk and p-value code with dalverify.testing.

The two functions under test, ``my_breakpoints`` and ``my_pvalue``, call
dalverify here; replace their bodies with calls into your implementation.
The tests draw graphs with planted ties, zero slopes and pieces narrower
than 1e-12, and truncation sets from |t|/sd = 0.1 to 1e200 with up to
thousands of intervals, and compare with the exact oracles.

Run with::

    pytest examples/testing_strategies_example.py -q
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from mpmath import mpf

from dalverify import testing

#: Walk breakpoints may differ from the correctly rounded exact ones by a few
#: ulps where a planted 2**-40 gap pushes an intermediate value past 53 bits.
BREAKPOINT_ULPS = 8

#: Relative agreement required of a p-value implementation.
PVALUE_RTOL = mpf(10) ** -12


def my_breakpoints(graph, a, b, lo: float, hi: float) -> list[float]:
    """Return the breakpoints (ends included) of the linear pieces of ``graph`` on ``a + b z`` over ``[lo, hi]``."""
    from dalverify.line import walk_line

    return list(walk_line(graph, a, b, lo, hi, backend="numpy").ends())


def my_pvalue(t_obs, sd, intervals, two_sided: str):
    """Return the selective p-value of ``T ~ N(0, sd^2)`` truncated to ``intervals`` (exact ends)."""
    from dalverify.methods.pvalues import selective_pvalue

    return selective_pvalue(t_obs, sd, list(intervals), two_sided=two_sided).value


@given(testing.pl_graphs())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_breakpoints_match_the_exact_partition(case):
    lo, hi = -16.0, 16.0
    exact = testing.exact_partition(case.graph, case.a, case.b, lo, hi)
    got = my_breakpoints(case.graph, case.a, case.b, lo, hi)
    assert len(got) == len(exact.breakpoints), f"{len(got)} breakpoints, exactly {len(exact.breakpoints)}"
    for value, want in zip(got, exact.breakpoints):
        want = float(want)
        assert abs(value - want) <= BREAKPOINT_ULPS * np.spacing(max(abs(want), 1e-300)), (value, want)


@given(testing.truncation_cases(max_intervals=1500))
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_pvalues_match_the_exact_oracle(case):
    for two_sided in ("symmetric", "equal-tailed"):
        exact = testing.exact_selective_pvalue(case.t_obs, case.sd, case.intervals, two_sided=two_sided)
        got = mpf(my_pvalue(case.t_obs, case.sd, case.intervals, two_sided))
        if exact == 0:
            assert got == 0
        else:
            assert abs(got / exact - 1) < PVALUE_RTOL, (case.regime, two_sided, got, exact)
