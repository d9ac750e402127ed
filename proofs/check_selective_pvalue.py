"""Symbolic, exact and high-precision checks of proofs/selective_pvalue.md.

Run ``python proofs/check_selective_pvalue.py``; ``main()`` returns 0 when
every claim is true and raises AssertionError naming the claim otherwise.
"""

from __future__ import annotations

import math
import random
import sys
from fractions import Fraction

import mpmath
import sympy as sp
from sympy.codegen.cfunctions import expm1, log1p

X = sp.Symbol("x", positive=True)
PHI = sp.exp(-X**2 / 2) / sp.sqrt(2 * sp.pi)


def double_factorial_odd(n: int) -> int:
    """(2n - 1)!! with (-1)!! = 1."""
    return math.prod(range(1, 2 * n, 2)) if n > 0 else 1


def check_integration_by_parts() -> None:
    """Claim 3: Q = phi/x * S_N + R_N, checked through d/dx of both sides."""
    for n_terms in range(1, 7):
        partial = PHI * sum((-1) ** n * double_factorial_odd(n) * X ** (-2 * n - 1) for n in range(n_terms))
        # d/dx R_N = -(-1)^N (2N-1)!! phi(x) x^(-2N), and d/dx Q = -phi.
        remainder_derivative = -((-1) ** n_terms) * double_factorial_odd(n_terms) * PHI * X ** (-2 * n_terms)
        residual = sp.simplify(sp.diff(partial, X) + remainder_derivative + PHI)
        assert residual == 0, f"claim 3: integration by parts fails for N = {n_terms}: {residual}"
        # Both sides vanish at infinity, so equal derivatives give equal functions.
        assert sp.limit(partial, X, sp.oo) == 0, "claim 3: partial sum must vanish at infinity"


def check_remainder_sign_and_bound() -> None:
    """Claim 3: R_N has sign (-1)^N and |R_N| <= phi(x)/x * (2N-1)!! x^(-2N)."""
    with mpmath.mp.workdps(60):
        for x in (mpmath.mpf(3), mpmath.mpf(10), mpmath.mpf(30), mpmath.mpf(100)):
            q = mpmath.erfc(x / mpmath.sqrt(2)) / 2
            lead = mpmath.npdf(x) / x
            partial = mpmath.mpf(0)
            for n_terms in range(0, 7):
                remainder = q - lead * partial
                bound = lead * double_factorial_odd(n_terms) * x ** (-2 * n_terms)
                assert remainder * (-1) ** n_terms > 0, f"claim 3: sign of R_{n_terms} at x = {x}"
                assert abs(remainder) <= bound, f"claim 3: |R_{n_terms}| exceeds the first omitted term at x = {x}"
                partial += (-1) ** n_terms * double_factorial_odd(n_terms) * x ** (-2 * n_terms)


def check_series_threshold() -> None:
    """Claim 3: at x^2 >= 14 (D + 5), x >= 10, terms reach 10^-(D+2) while still decreasing."""
    for digits in list(range(15, 200)) + list(range(200, 20000, 97)):
        x_squared = max(100.0, 14.0 * (digits + 5))
        log10_term, n = 0.0, 0
        target = -(digits + 2)
        while log10_term >= target:
            ratio = (2 * n + 1) / x_squared
            assert ratio < 1, f"claim 3: terms stop decreasing before 10^-{digits + 2} at D = {digits}"
            log10_term += math.log10(ratio)
            n += 1
        assert n <= x_squared / 4, f"claim 3: more than x^2/4 terms at D = {digits}"


def check_log1mexp_forms() -> None:
    """Claim 2: both log1mexp forms equal log(1 - e^d) and 1 - e^d lies in [1/2, 1) on the second."""
    d = sp.Symbol("d", negative=True)
    expm1_form = sp.log(-expm1(d)).expand(func=True)
    log1p_form = log1p(-sp.exp(d)).expand(func=True)
    assert sp.simplify(expm1_form - sp.log(1 - sp.exp(d))) == 0, "claim 2: expm1 form"
    assert sp.simplify(log1p_form - sp.log(1 - sp.exp(d))) == 0, "claim 2: log1p form"
    assert sp.exp(-sp.log(2)) == sp.Rational(1, 2), "claim 2: switch point exp(-log 2) = 1/2"
    # |d| e^d / (1 - e^d) <= 1 for d < 0: with y = -d > 0 this is y <= e^y - 1.
    y = sp.Symbol("y", positive=True)
    gap = sp.exp(y) - 1 - y
    assert gap.subs(y, 0) == 0, "claim 4: e^y - 1 - y is 0 at y = 0"
    assert sp.diff(gap, y).subs(y, 0) == 0, "claim 4: e^y - 1 - y has slope 0 at y = 0"
    assert sp.simplify(sp.diff(gap, y, 2)).is_positive, "claim 4: e^y - 1 - y is convex"


def check_tail_mass_identities() -> None:
    """Claim 2: one-sided, mirrored and central masses, against direct quadrature."""
    with mpmath.mp.workdps(40):
        def q(x):
            return mpmath.erfc(x / mpmath.sqrt(2)) / 2

        for lo, hi in ((0.5, 2.0), (-3.0, -1.0), (-0.7, 1.3), (3.0, 3.0001)):
            lo_mp, hi_mp = mpmath.mpf(lo), mpmath.mpf(hi)
            direct = mpmath.quad(mpmath.npdf, [lo_mp, hi_mp])
            if lo >= 0:
                d = mpmath.log(q(hi_mp)) - mpmath.log(q(lo_mp))
                formula = q(lo_mp) * (1 - mpmath.exp(d))
            elif hi <= 0:
                formula = q(-hi_mp) - q(-lo_mp)
            else:
                formula = 1 - q(hi_mp) - q(-lo_mp)
            assert abs(formula - direct) <= mpmath.mpf(10) ** -30 * direct, f"claim 2: mass of [{lo}, {hi}]"


def check_hazard_bound() -> None:
    """Claim 4: h = phi/Q is increasing with h(0) = sqrt(2/pi) and h(a) >= a."""
    with mpmath.mp.workdps(30):
        previous = None
        for k in range(0, 400):
            a = mpmath.mpf(k) / 10
            h = mpmath.npdf(a) / (mpmath.erfc(a / mpmath.sqrt(2)) / 2)
            assert h >= a, f"claim 4: h({a}) < {a}"
            if previous is not None:
                assert h > previous, f"claim 4: h not increasing at {a}"
            previous = h
        h0 = mpmath.npdf(0) / mpmath.mpf("0.5")
        assert abs(h0 - mpmath.sqrt(2 / mpmath.pi)) < mpmath.mpf(10) ** -25, "claim 4: h(0)"


def symmetric_extremes(a, b, u1, u0):
    return a / (a + b + u0), (a + u1) / (a + b + u1)


def equal_tailed_extremes(left, right, u_left, u_right):
    f_min = left / (left + right + u_right)
    f_max = (left + u_left) / (left + u_left + right)
    one_minus_f_min = (right + u_right) / (left + right + u_right)
    one_minus_f_max = right / (left + u_left + right)
    low = min(1, 2 * min(f_min, one_minus_f_max))
    if f_min <= Fraction(1, 2) <= f_max:
        high = Fraction(1)
    elif f_max < Fraction(1, 2):
        high = 2 * f_max
    else:
        high = 2 * one_minus_f_min
    return low, high


def check_enclosure_derivatives() -> None:
    """Claim 6: signs of the partial derivatives of p (symmetric) and F (equal-tailed)."""
    a, b, s1, s0 = sp.symbols("a b s1 s0", nonnegative=True)
    p = (a + s1) / (a + b + s1 + s0)
    denominator = (a + b + s1 + s0) ** 2
    assert sp.simplify(sp.diff(p, s1) - (b + s0) / denominator) == 0, "claim 6: dp/ds1"
    assert sp.simplify(sp.diff(p, s0) + (a + s1) / denominator) == 0, "claim 6: dp/ds0"
    left, right, s_left, s_right = sp.symbols("l r sL sR", nonnegative=True)
    f = (left + s_left) / (left + right + s_left + s_right)
    denominator = (left + right + s_left + s_right) ** 2
    assert sp.simplify(sp.diff(f, s_left) - (right + s_right) / denominator) == 0, "claim 6: dF/dsL"
    assert sp.simplify(sp.diff(f, s_right) + (left + s_left) / denominator) == 0, "claim 6: dF/dsR"
    assert sp.simplify(1 - f.subs({s_left: 0}) - (right + s_right) / (left + right + s_right)) == 0, (
        "claim 6: 1 - F_min form"
    )
    assert sp.simplify(1 - f.subs({s_right: 0}) - right / (left + s_left + right)) == 0, "claim 6: 1 - F_max form"


def check_enclosure_brute_force(symmetric=symmetric_extremes, equal_tailed=equal_tailed_extremes) -> None:
    """Claim 6: the formulas equal the min and max over a grid of (s1, s0) that contains the corners.

    The formulas are parameters so that a test can show a wrong one is caught.
    """
    rng = random.Random(7)
    steps = 8
    for _ in range(200):
        a, b = Fraction(rng.randint(0, 20), 7), Fraction(rng.randint(1, 20), 5)
        u1, u0 = Fraction(rng.randint(0, 20), 3), Fraction(rng.randint(0, 20), 9)
        grid = [
            (a + u1 * i / steps) / (a + b + u1 * i / steps + u0 * j / steps)
            for i in range(steps + 1) for j in range(steps + 1)
        ]
        assert (min(grid), max(grid)) == symmetric(a, b, u1, u0), "claim 6: symmetric extremes"

        left, right = Fraction(rng.randint(0, 20), 7), Fraction(rng.randint(0, 20), 5)
        if left + right == 0:
            continue
        u_left, u_right = Fraction(rng.randint(0, 20), 3), Fraction(rng.randint(0, 20), 9)
        values, fractions_seen = [], []
        for i in range(steps + 1):
            for j in range(steps + 1):
                s_left, s_right = u_left * i / steps, u_right * j / steps
                f = (left + s_left) / (left + right + s_left + s_right)
                fractions_seen.append(f)
                values.append(min(1, 2 * min(f, 1 - f)))
        low, high = equal_tailed(left, right, u_left, u_right)
        assert min(values) == low, "claim 6: equal-tailed minimum"
        assert max(values) <= high, "claim 6: equal-tailed maximum is an upper bound"
        if high < 1:
            assert max(values) == high, "claim 6: equal-tailed maximum attained at a corner"
        else:
            assert min(fractions_seen) <= Fraction(1, 2) <= max(fractions_seen), (
                "claim 6: F crosses 1/2 when the maximum is 1"
            )


def check_all_in_all_out_counterexample() -> None:
    """Claim 6: putting all of U in or out of Z misses the extremes."""
    one = Fraction(1)
    all_out = one / (one + one)
    all_in = (one + one) / (4 * one)
    assert all_out == all_in == Fraction(1, 2)
    assert symmetric_extremes(one, one, one, one) == (Fraction(1, 3), Fraction(2, 3)), "claim 6: counterexample"


def check_baselines() -> None:
    """Claim 7: naive at 40 sd and Bonferroni with m = 1024, from the erfc tail at 400 digits."""
    with mpmath.mp.workdps(400):
        naive = mpmath.erfc(40 / mpmath.sqrt(2))
        assert mpmath.mpf("7.31e-350") < naive < mpmath.mpf("7.32e-350"), "claim 7: naive at 40 sd"
        bonferroni = mpmath.ldexp(naive, 1024)
        assert mpmath.mpf("1.31e-41") < bonferroni < mpmath.mpf("1.32e-41"), "claim 7: Bonferroni m = 1024"
        assert 2**1024 > int(sys.float_info.max), "claim 7: 2^1024 overflows binary64"


def check_uniformity_symmetric_form() -> None:
    """Claim 1: P(p_sym <= alpha) = alpha for a fixed Z, by exact inversion of G."""
    with mpmath.mp.workdps(30):
        pieces = [(-mpmath.inf, mpmath.mpf(-2)), (mpmath.mpf(-0.5), mpmath.mpf(0.7)), (mpmath.mpf(2), mpmath.inf)]

        def mass(lo, hi):
            return mpmath.ncdf(hi) - mpmath.ncdf(lo)

        total = sum(mass(lo, hi) for lo, hi in pieces)

        def survival(a):
            return sum(mass(max(lo, a), hi) for lo, hi in pieces if hi > a) + sum(
                mass(lo, min(hi, -a)) for lo, hi in pieces if lo < -a
            )

        for alpha in (mpmath.mpf("0.01"), mpmath.mpf("0.05"), mpmath.mpf("0.3"), mpmath.mpf("0.8")):
            threshold = mpmath.findroot(lambda a: survival(a) / total - alpha, (mpmath.mpf(0), mpmath.mpf(8)),
                                        solver="bisect")
            # {p_sym <= alpha} = {|X| >= threshold}, whose conditional probability is survival / total.
            assert abs(survival(threshold) / total - alpha) < mpmath.mpf(10) ** -20, f"claim 1 at alpha = {alpha}"


def main() -> int:
    checks = [
        check_integration_by_parts,
        check_remainder_sign_and_bound,
        check_series_threshold,
        check_log1mexp_forms,
        check_tail_mass_identities,
        check_hazard_bound,
        check_enclosure_derivatives,
        check_enclosure_brute_force,
        check_all_in_all_out_counterexample,
        check_baselines,
        check_uniformity_symmetric_form,
    ]
    for check in checks:
        check()
    return 0


if __name__ == "__main__":
    sys.exit(main())
