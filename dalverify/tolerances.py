"""Every named tolerance of dalverify, each with its justification.

Interval and line-walk code uses no tolerance at all: breakpoints are
compared exactly. The constants below are used only where a float64 result
is compared with a second, independent computation, and each has a test at
its edge in the tests (``tests/unit/test_tolerances.py`` lists where).
"""

from __future__ import annotations

#: Relative agreement required between the float64 graph evaluators (numpy
#: reference and torch) and a torch module, per output entry, scaled by the
#: magnitude of the terms summed. A U-Net forward sums at most ~10^4 products
#: per output over a few hundred layers. The float64 accumulation error is then
#: below n * 2^-53 ~ 1e-12 relative to the sum of absolute terms, so 1e-9 leaves
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
#: HiGHS met 8e-17 relative in a 20,000-constraint probe. Its primal
#: feasibility tolerance defaults to 1e-7, so disagreements up to that size
#: are within its contract, and larger ones indicate a wrong piece.
LP_END_RTOL = 1e-7

#: A covariance matrix counts as positive definite when every Cholesky pivot
#: exceeds COVARIANCE_PIVOT_FACTOR * n * 2^-53 times its largest diagonal
#: entry. The computed factor of an n x n matrix is the exact factor of a
#: matrix perturbed by about (n + 1) * 2^-53 relative to its entries
#: (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed.,
#: Thm 10.3), so a pivot below that level cannot be told from zero: the
#: sample covariance of fewer than n + 1 images, singular in exact
#: arithmetic, leaves pivots at this level instead of exact zeros.
COVARIANCE_PIVOT_FACTOR = 4.0

#: The line (a, b) of a test statistic is accepted when every entry of
#: a + b * t_obs differs from the data d by at most
#: LINE_RECONSTRUCTION_ULPS * 2^-53 * (|d_i| + |b_i * t_obs|). With
#: p = fl(b_i * t_obs) and a_i = fl(d_i - p), the float64 sum fl(a_i + p)
#: differs from d_i by at most 2^-53 * (2|d_i| + |p|) * (1 + 2^-53), which is
#: below 3 * 2^-53 * (|d_i| + |b_i t_obs|); 4 leaves a margin for the
#: rounding of the bound itself.
LINE_RECONSTRUCTION_ULPS = 4.0

#: Relative agreement required between another tool's selective or naive
#: p-value and the value dalverify computes for the same definition. Tools
#: that compute the truncated normal CDF in float64 are accurate to about
#: 1e-12 relative away from the tails, and float64 interval ends move each
#: interval's mass by far less; the differences a cross-check exists to find
#: are a factor up to 2 (symmetric versus equal-tailed), a missed interval
#: or a tail value rounded to 0, all far above 1e-6.
CROSSCHECK_PVALUE_RTOL = 1e-6

#: A difference between two truncation sets counts as endpoint rounding, not
#: as a missed or added interval, when it touches an end of both sets and is
#: at most CROSSCHECK_ENDPOINT_RTOL * max(1, |end|) wide in standardized
#: units. Two float64 implementations compute a breakpoint -alpha/beta with
#: different operation orders; for sums of up to 10^4 products the relative
#: difference stays below about 1e-12, so 1e-9 leaves three orders of margin.
CROSSCHECK_ENDPOINT_RTOL = 1e-9

#: The verifier recomputes sd and the line direction b from the images and
#: Sigma with its own float64 arithmetic, which may round differently from
#: the producer's (another summation order, BLAS, an AR(1) recursion). Each
#: entry of w = Sigma 1_M is a sum of at most n products, so both results lie
#: within gamma_n (|Sigma| 1_M)_i of the exact value (Higham, Accuracy and
#: Stability of Numerical Algorithms, 2nd ed., eq. 3.5; n <= 10^6 gives
#: gamma_n < 1.2e-10), and an AR(1) recursion adds at most 2^-53 / (1 - |rho|)
#: relative to the same sum (1e-13 for |rho| <= 0.999). The entries of b, and
#: sd, are accepted within LINE_RECOMPUTE_RTOL of the verifier's value,
#: relative to those absolute sums. 1e-8 leaves two orders of margin, while
#: any change of Sigma, of the region or of c_ref moves b by O(1) relative.
LINE_RECOMPUTE_RTOL = 1e-8
