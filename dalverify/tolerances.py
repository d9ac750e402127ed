"""Every named tolerance of dalverify, each with its justification.

Interval and line-walk code uses no tolerance at all: breakpoints are
compared exactly. The constants below are used only where a float64 result
is compared with a second, independent computation, and each has a test at
its edge in ``tests/unit/test_tolerances.py``.
"""

from __future__ import annotations

#: Relative agreement required between the float64 graph evaluators (numpy
#: reference and torch) and a torch module, per output entry, scaled by the
#: magnitude of the terms summed. A U-Net forward sums at most ~10^4 products
#: per output over a few hundred layers; float64 accumulation error is below
#: n * 2^-53 ~ 1e-12 relative to the sum of absolute terms, so 1e-9 leaves
#: three orders of margin while still catching any wrong weight or wiring.
EVALUATOR_RTOL = 1e-9

#: Absolute floor for the evaluator comparison, relative to the largest
#: absolute value of the output, for entries that cancel to near zero.
EVALUATOR_ATOL_SCALE = 1e-9

#: Relative difference between the p-values computed at the working
#: precision and at twice that precision above which a NumericalError is
#: raised. Reported p-values carry 15 significant digits, so 1e-15 would be
#: the strictest meaningful value; 1e-12 allows for the conditioning of
#: sums of many interval masses.
PVALUE_PRECISION_RTOL = 1e-12

#: Scale-aware agreement between an LP optimum (HiGHS through cvxpy) and the
#: exact closed-form end of a piece: |lp - exact| <= LP_END_RTOL * max(1, |exact|).
#: HiGHS met 8e-17 relative in a 20,000-constraint probe; its primal
#: feasibility tolerance defaults to 1e-7, so disagreements up to that size
#: are within its contract and larger ones indicate a wrong piece.
LP_END_RTOL = 1e-7
