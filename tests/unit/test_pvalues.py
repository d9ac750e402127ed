"""Tests of the p-value API: PValue, argument checks, special cases, baselines.

Reference values come from scipy's float64 normal functions (cephes
``ndtr``/``log_ndtr``, an implementation independent of mpmath) or from exact
fractions. The committed high-precision table is tested in
``tests/reference/test_pvalues_reference.py``.
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from mpmath import mp, mpf
from scipy import stats

from dalverify.errors import InputError, NumericalError
from dalverify.methods import pvalues
from dalverify.methods.pvalues import (
    PValue,
    bonferroni_pvalue,
    naive_pvalue,
    permutation_pvalue,
    selective_pvalue,
    selective_pvalue_enclosure,
)
from dalverify.numerics.intervals import IntervalUnion
from dalverify.tolerances import PVALUE_PRECISION_RTOL

INF = float("inf")
Z = [(-INF, -2.0), (-0.5, 0.7), (2.0, INF)]


# ---------------------------------------------------------------------------
# PValue
# ---------------------------------------------------------------------------


def test_pvalue_below_float_range():
    with mp.workdps(30):
        value = mpf("3.2e-412")
    p = PValue(value)
    assert p.text == "3.2e-412"
    assert float(p) == 0.0
    assert abs(float(p.log10) - (math.log10(3.2) - 412)) < 1e-12
    assert p.to_json()["text"] == "3.2e-412"


def test_pvalue_text_and_float():
    p = PValue(mpf(1) / 3)
    assert p.text == "0.333333333333333"
    assert float(p) == pytest.approx(1 / 3, rel=1e-15)
    assert PValue(1).text == "1.0"
    assert PValue(0).log10 == mpf("-inf")
    with mp.workdps(50):
        assert abs(PValue("0.05").value - mpf("0.05")) < mpf(10) ** -48


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), INF, "x"])
def test_pvalue_rejects_non_probability(bad):
    with pytest.raises(InputError):
        PValue(bad)


def test_pvalue_enclosure_checked():
    p = PValue(mpf("0.2"), enclosure=(mpf("0.1"), mpf("0.3")))
    assert p.enclosure == (mpf("0.1"), mpf("0.3"))
    assert PValue(mpf("0.2")).with_enclosure(PValue(0.1), 0.25).enclosure[1] == mpf(0.25)
    with pytest.raises(InputError, match="does not contain"):
        PValue(mpf("0.5"), enclosure=(mpf("0.1"), mpf("0.3")))
    with pytest.raises(InputError, match="does not contain"):
        PValue(mpf("0.2"), enclosure=(mpf("0.3"), mpf("0.1")))


def test_pvalue_enclosure_rounding_slack():
    with mp.workdps(60):
        value = mpf("0.2")
        inside = value * (1 + PVALUE_PRECISION_RTOL / 2)
        outside = value * (1 + PVALUE_PRECISION_RTOL * 2)
    assert PValue(value, enclosure=(inside, mpf("0.3"))).enclosure[0] == inside
    with pytest.raises(InputError, match="does not contain"):
        PValue(value, enclosure=(outside, mpf("0.3")))
    with pytest.raises(InputError, match="pair"):
        PValue(mpf("0.5"), enclosure=(mpf("0.1"),))


def test_pvalue_frozen_and_json_round_trip():
    with mp.workdps(60):
        p = PValue(mpf(2) / 7, enclosure=(mpf("0.1"), mpf("0.5")))
    with pytest.raises(AttributeError):
        p.value = mpf("0.5")
    data = p.to_json()
    assert set(data) == {"value", "text", "log10", "enclosure", "dps"}
    back = PValue.from_json(data)
    with mp.workdps(60):
        assert abs(back.value - mpf(2) / 7) < mpf(10) ** -39
    with mp.workdps(60):
        assert abs(back.enclosure[0] - mpf("0.1")) < mpf(10) ** -39
        assert back.enclosure[1] == mpf("0.5")
    assert repr(p).startswith("PValue('0.285714285714286', enclosure=")


# ---------------------------------------------------------------------------
# selective_pvalue: argument checks
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sd": 0}, "sd must be positive"),
        ({"sd": -1.0}, "sd must be positive"),
        ({"sd": INF}, "sd must be finite"),
        ({"sd": float("nan")}, "NaN"),
        ({"t_obs": INF}, "t_obs must be finite"),
        ({"t_obs": float("nan")}, "NaN"),
        ({"t_obs": 1.0}, "outside"),
        ({"intervals": []}, "empty"),
        ({"intervals": [(3, 3)]}, "empty"),
        ({"intervals": "0,1"}, "IntervalUnion"),
        ({"intervals": [(2, 1)]}, "lo > hi"),
        ({"two_sided": "two-sided"}, "two_sided"),
        ({"dps": 5}, "dps"),
        ({"dps": 50.0}, "dps"),
    ],
)
def test_selective_rejects_bad_input(kwargs, message):
    arguments = {"t_obs": 2.5, "sd": 1.0, "intervals": Z, "two_sided": "symmetric", "dps": 20}
    arguments.update(kwargs)
    with pytest.raises(InputError, match=message):
        selective_pvalue(
            arguments["t_obs"], arguments["sd"], arguments["intervals"],
            two_sided=arguments["two_sided"], dps=arguments["dps"],
        )


def test_selective_accepts_t_obs_at_closed_end():
    p = selective_pvalue(2.0, 1.0, Z, dps=20)
    reference = (2 * stats.norm.sf(2.0)) / (2 * stats.norm.sf(2.0) + stats.norm.cdf(0.7) - stats.norm.cdf(-0.5))
    assert float(p) == pytest.approx(reference, rel=1e-13)


# ---------------------------------------------------------------------------
# selective_pvalue: values
# ---------------------------------------------------------------------------


def test_whole_line_equals_naive_scipy():
    p = selective_pvalue(1.96, 1, [(-INF, INF)], dps=20)
    assert float(p) == pytest.approx(2 * stats.norm.sf(1.96), rel=1e-14)


def test_zero_statistic_gives_one():
    assert selective_pvalue(0, 1, [(-1, 1)], dps=20).value == 1
    assert naive_pvalue(0, 3).value == 1


def test_t_obs_at_lowest_end():
    union = [(1.5, 2.0), (3.0, INF)]
    assert selective_pvalue(1.5, 1, union, two_sided="equal-tailed", dps=20).value == 0
    assert selective_pvalue(1.5, 1, union, two_sided="symmetric", dps=20).value == 1


def test_symmetric_against_scipy_on_asymmetric_union():
    union = [(-3.0, -1.0), (-0.2, 0.4), (1.5, 2.5)]
    sd, t = 2.0, 1.8 * 2.0
    scaled = [(lo * sd, hi * sd) for lo, hi in union]
    p_sym = selective_pvalue(t, sd, scaled, dps=20)
    p_eq = selective_pvalue(t, sd, scaled, two_sided="equal-tailed", dps=20)
    total = sum(stats.norm.cdf(hi) - stats.norm.cdf(lo) for lo, hi in union)
    upper = stats.norm.sf(1.8) - stats.norm.sf(2.5)
    lower = stats.norm.cdf(-1.8) - stats.norm.cdf(-3.0)
    assert float(p_sym) == pytest.approx((upper + lower) / total, rel=1e-12)
    assert float(p_eq) == pytest.approx(2 * upper / total, rel=1e-12)


def test_scale_invariance_exact():
    first = selective_pvalue(Fraction(5, 2), Fraction(1), [(Fraction(-3), Fraction(-1)), (Fraction(2), Fraction(7, 2))])
    k = Fraction(3, 7)
    second = selective_pvalue(Fraction(5, 2) * k, k, [(Fraction(-3) * k, -k), (2 * k, Fraction(7, 2) * k)])
    assert first.value == second.value


def test_interval_union_and_pairs_agree():
    union = IntervalUnion(Z)
    assert selective_pvalue(2.5, 1, union, dps=20) == selective_pvalue(2.5, 1, Z, dps=20)


def test_global_precision_untouched():
    before = mp.prec
    selective_pvalue("1e200", 1, [(-1, 1), ("1e200", "2e200")], dps=20)
    bonferroni_pvalue(40, 1, 5000)
    assert mp.prec == before


# ---------------------------------------------------------------------------
# Two-precision agreement (PVALUE_PRECISION_RTOL at its edge)
# ---------------------------------------------------------------------------


def fake_selective(relative_error):
    """A stand-in for the log p-value that is off by ``relative_error`` at the lower precision."""

    def compute(z_std, c, two_sided, dps):
        with mp.workdps(60):
            log_p = mp.log(mpf("0.01"))
            return log_p + (mp.log1p(relative_error) if dps < 40 else 0)

    return compute


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_precision_disagreement_edge(monkeypatch, factor):
    monkeypatch.setattr(pvalues, "_log_selective", fake_selective(PVALUE_PRECISION_RTOL * factor))
    if factor < 1:
        assert selective_pvalue(2.5, 1, Z, dps=20).text == "0.01"
    else:
        with pytest.raises(NumericalError, match="differ"):
            selective_pvalue(2.5, 1, Z, dps=20)


def test_precision_disagreement_zero_against_nonzero(monkeypatch):
    def compute(z_std, c, two_sided, dps):
        return mpf("-inf") if dps < 40 else mpf(-3)

    monkeypatch.setattr(pvalues, "_log_selective", compute)
    with pytest.raises(NumericalError, match="exactly 0"):
        selective_pvalue(2.5, 1, Z, dps=20)


# ---------------------------------------------------------------------------
# Enclosure
# ---------------------------------------------------------------------------


def test_enclosure_without_unexplored_is_point():
    low, high = selective_pvalue_enclosure(2.5, 1, Z, [], dps=20)
    point = selective_pvalue(2.5, 1, Z, dps=20)
    assert low.value == point.value == high.value


def test_enclosure_rejects_overlap_and_outside_t():
    with pytest.raises(InputError, match="overlap"):
        selective_pvalue_enclosure(2.5, 1, [(2, 3)], [(2.9, 4)], dps=20)
    with pytest.raises(InputError, match="outside"):
        selective_pvalue_enclosure(3.5, 1, [(2, 3)], [(3, 4)], dps=20)
    low, high = selective_pvalue_enclosure(2.5, 1, [(2, 3)], [(3, 4)], dps=20)
    assert low.value <= high.value


# ---------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.1, 2.0, 40.0, 1000.0, 30000.0])
def test_naive_far_tail_against_scipy_log_ndtr(ratio):
    p = naive_pvalue(ratio * 0.3, 0.3)
    expected_log10 = (math.log(2) + stats.norm.logsf(ratio)) / math.log(10)
    assert float(p.log10) == pytest.approx(expected_log10, rel=1e-13, abs=1e-14)


def test_bonferroni_40_sd_1024_pixels_not_one():
    p = bonferroni_pvalue(40, 1, 1024)
    expected_log10 = (1025 * math.log(2) + stats.norm.logsf(40)) / math.log(10)
    assert float(p.log10) == pytest.approx(expected_log10, rel=1e-13)
    assert 1e-42 < float(p) < 1e-40


def test_bonferroni_clip_and_m_zero():
    assert bonferroni_pvalue(2, 1, 10).value == 1
    assert bonferroni_pvalue(3, 1, 0).value == naive_pvalue(3, 1).value


@pytest.mark.parametrize("m", [-1, True, 2.5, "3"])
def test_bonferroni_rejects_bad_m(m):
    with pytest.raises(InputError, match="m must be"):
        bonferroni_pvalue(2, 1, m)


def test_permutation_exact():
    p = permutation_pvalue(3, 1000)
    with mp.workdps(60):
        assert p.value == mpf(4) / 1001
        assert permutation_pvalue(0, 9).value == mpf("0.1")
    assert permutation_pvalue(9, 9).value == 1


@pytest.mark.parametrize(("count", "total"), [(-1, 10), (11, 10), (0, 0), (1.0, 10), (True, 10), (1, "10")])
def test_permutation_rejects_bad_counts(count, total):
    with pytest.raises(InputError):
        permutation_pvalue(count, total)
