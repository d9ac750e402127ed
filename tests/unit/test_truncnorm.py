"""Tests of the log normal masses against independent high-precision routes."""

from __future__ import annotations

from fractions import Fraction

import pytest
from mpmath import mp, mpf

from dalverify.errors import InputError
from dalverify.numerics import truncnorm
from dalverify.numerics.intervals import IntervalUnion
from dalverify.numerics.truncnorm import (
    asymptotic_threshold,
    log1mexp,
    log_normal_mass,
    log_tail,
    log_union_mass,
    logsumexp,
)

INF = float("inf")


def mills_ratio_continued_fraction(x, terms):
    """Laplace's continued fraction Q(x) / phi(x) = 1 / (x + 1 / (x + 2 / (x + ...))), for large x."""
    tail = mpf(0)
    for k in range(terms, 0, -1):
        tail = k / (x + tail)
    return 1 / (x + tail)


def reference_log_tail(x, digits):
    """log Q(x) by erfc at ``digits`` digits, or by the continued fraction for huge x."""
    with mp.workdps(digits):
        x = mpf(x)
        if x > 1e100:
            return -x * x / 2 - mp.log(2 * mp.pi) / 2 + mp.log(mills_ratio_continued_fraction(x, 10))
        return mp.log(mp.erfc(x / mp.sqrt(2)) / 2)


@pytest.mark.parametrize(
    "x", ["-40", "-3", "-1e-20", "0", "1e-30", "0.5", "1.96", "8.3", "30", "40", "42.5", "1000", "1e10", "1e100"]
)
def test_log_tail_matches_erfc(x):
    value = log_tail(x, 50)
    with mp.workdps(400):
        reference = reference_log_tail(x, 400)
        assert abs(value - reference) <= mpf(10) ** -48, x


@pytest.mark.parametrize("x", ["1e155", "1e200", "3.7e1000"])
def test_log_tail_beyond_erfc_overflow(x):
    # mpmath.erfc raises OverflowError here; the reference is Laplace's continued fraction.
    value = log_tail(x, 30)
    with mp.workdps(2 * int(x.split("e")[1]) + 80):
        reference = reference_log_tail(x, mp.dps)
        assert abs(value - reference) < mpf(10) ** -28


def test_log_tail_infinities_and_types():
    assert log_tail(INF, 20) == mpf("-inf")
    assert log_tail(-INF, 20) == 0
    with mp.workdps(40):
        assert abs(log_tail(Fraction(1, 3), 20) - mp.log(mp.erfc(mpf(1) / 3 / mp.sqrt(2)) / 2)) < mpf(10) ** -19


@pytest.mark.parametrize("digits", [30, 60, 130])
def test_log_tail_continuous_at_series_threshold(digits):
    # Just below the threshold mpmath's erfc is used, just above it the series.
    threshold = asymptotic_threshold(digits)
    for x in (Fraction(threshold) - Fraction(1, 10**6), Fraction(threshold) + Fraction(1, 10**6)):
        value = truncnorm._log_upper_tail(x, digits)
        with mp.workdps(digits + 50):
            reference = mp.log(mp.erfc(mpf(x.numerator) / x.denominator / mp.sqrt(2)) / 2)
            assert abs(value - reference) < mpf(10) ** -(digits - 4) * abs(reference), float(x)


def test_narrow_mass_far_in_tail():
    # [40, 40 + 4e-12]: quadrature of exp(-40 s - s^2 / 2) on [0, w], rescaled to [0, 1].
    value = log_normal_mass(40, "40.000000000004", 50)
    with mp.workdps(120):
        w = mpf("4e-12")
        integral = w * mp.quad(lambda v: mp.exp(-40 * w * v - (w * v) ** 2 / 2), [0, 1])
        reference = -mpf(800) - mp.log(2 * mp.pi) / 2 + mp.log(integral)
        assert abs(value - reference) < mpf(10) ** -45


def test_narrow_mass_around_zero():
    value = log_normal_mass("-1e-20", "1e-20", 50)
    with mp.workdps(120):
        reference = mp.log(mp.erf(mpf("1e-20") / mp.sqrt(2)))
        assert abs(value - reference) < mpf(10) ** -45


def test_mass_one_sided_and_central_match_quadrature():
    for lo, hi in ((0.25, 3.0), (-2.0, -0.5), (-0.7, 1.9), (-INF, -3.0), (2.0, INF), (-INF, INF)):
        value = log_normal_mass(lo, hi, 40)
        with mp.workdps(80):
            reference = mp.log(mp.quad(mp.npdf, [mpf(lo), mpf(hi)]))
            assert abs(value - reference) < mpf(10) ** -35, (lo, hi)


def test_mass_edge_cases():
    assert log_normal_mass(1, 1, 20) == mpf("-inf")
    with pytest.raises(InputError, match="lo <= hi"):
        log_normal_mass(2, 1, 20)
    with pytest.raises(InputError):
        log_normal_mass(float("nan"), 1, 20)
    with pytest.raises(InputError, match="dps"):
        log_normal_mass(0, 1, 10)


def test_log1mexp_against_direct():
    for d in ("-1e-30", "-1e-5", "-0.5", "-0.6931", "-0.7", "-5", "-800"):
        with mp.workdps(100):
            value = log1mexp(mpf(d))
        # 700 digits keep 1 - exp(-800) ~ 1 - 1e-348 exact enough for a plain log.
        with mp.workdps(700):
            reference = mp.log(1 - mp.exp(mpf(d)))
            assert abs(value - reference) < mpf(10) ** -95 * abs(reference), d
    assert log1mexp(mpf(0)) == mpf("-inf")
    assert log1mexp(mpf("-inf")) == 0
    with pytest.raises(InputError):
        log1mexp(mpf("1e-3"))


def test_logsumexp_large_magnitudes():
    with mp.workdps(200):
        values = [mpf("-1e50"), mpf("-1e50") - 1, mpf("-1e50") - 2]
        reference = mpf("-1e50") + mp.log(1 + mp.exp(-1) + mp.exp(-2))
    result = logsumexp(values, 30)
    with mp.workdps(200):
        assert abs(result - reference) < mpf(10) ** -28
    assert logsumexp([], 20) == mpf("-inf")
    assert logsumexp([mpf("-inf")], 20) == mpf("-inf")


def test_union_mass_tiny_near_component():
    # The component nearest 0 is tiny; the early stop must not drop the far one.
    union = IntervalUnion([(0, Fraction(1, 10**30)), (5, 6), (40, 41)])
    value = log_union_mass(union, 40)
    with mp.workdps(100):
        reference = mp.log(
            mp.ncdf(mpf(1) / 10**30) - mp.ncdf(0) + mp.ncdf(-5) - mp.ncdf(-6) + mp.ncdf(-40) - mp.ncdf(-41)
        )
        assert abs(value - reference) < mpf(10) ** -38


def test_union_mass_many_far_components():
    pieces = [(Fraction(k, 10), Fraction(k, 10) + Fraction(1, 20)) for k in range(-500, 500)]
    value = log_union_mass(pieces, 30)
    with mp.workdps(80):
        reference = mp.log(mp.fsum(mp.ncdf(mpf(hi.numerator) / hi.denominator) - mp.ncdf(mpf(lo.numerator) / lo.denominator)
                                   for lo, hi in pieces))
        assert abs(value - reference) < mpf(10) ** -28


def test_union_mass_empty_and_whole_line():
    assert log_union_mass(IntervalUnion(), 20) == mpf("-inf")
    assert log_union_mass([(-INF, INF)], 20) == 0


def test_global_precision_untouched():
    before = mp.prec
    log_union_mass([(-3, -1), (2, 1e200)], 60)
    log_tail("1e300", 40)
    assert mp.prec == before
