"""Tests of the selection event on a line: interval lemma, truncation, cuts and the residual line.

Reference sets come from sympy's ``solveset`` over the reals with exact
rationals; reference residuals from Fraction brute force.
"""

from __future__ import annotations

import math
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import sympy
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dalverify.errors import InputError
from dalverify.selection.event import (
    LambdaCuts,
    interval_lemma,
    intersect_pairs,
    residual_line,
    sign_interval,
    truncation_from_lemma,
)
from dalverify.selection.region import average_filter

Z = sympy.Symbol("z", real=True)
INF = float("inf")


def to_rational(value: object) -> sympy.Rational:
    q = Fraction(value)
    return sympy.Rational(q.numerator, q.denominator)


def sympy_pairs(sym_set: sympy.Set) -> list[tuple]:
    """Closed components of positive length of a sympy subset of the reals, as Fraction/inf pairs."""
    if sym_set is sympy.S.EmptySet or isinstance(sym_set, sympy.FiniteSet):
        return []
    if sym_set == sympy.S.Reals:
        return [(-INF, INF)]
    if isinstance(sym_set, sympy.Union):
        pairs = [pair for part in sym_set.args for pair in sympy_pairs(part)]
    elif isinstance(sym_set, sympy.Interval):

        def end(value: sympy.Expr) -> object:
            if value == sympy.oo:
                return INF
            if value == -sympy.oo:
                return -INF
            return Fraction(int(value.p), int(value.q))

        lo, hi = end(sym_set.start), end(sym_set.end)
        pairs = [(lo, hi)] if lo < hi else []
    else:  # pragma: no cover - would mean sympy returned an unexpected set type
        raise AssertionError(f"unexpected sympy set {sym_set!r}")
    return merge(pairs)


def merge(pairs: list[tuple]) -> list[tuple]:
    """Sort and join touching or overlapping closed intervals."""
    out: list[list] = []
    for lo, hi in sorted(pairs, key=lambda pair: pair[0]):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [tuple(pair) for pair in out]


def lemma_by_sympy(alpha: object, beta: object, lam: object, inside: bool) -> list[tuple]:
    expr = sympy.Abs(to_rational(alpha) + to_rational(beta) * Z)
    relation = expr >= to_rational(lam) if inside else expr < to_rational(lam)
    return sympy_pairs(sympy.solveset(relation, Z, sympy.S.Reals))


def check_pair_types(pairs: list[tuple]) -> None:
    for lo, hi in pairs:
        for end in (lo, hi):
            assert isinstance(end, Fraction) or end in (-INF, INF)
        assert lo < hi


# ---------------------------------------------------------------- interval lemma


LEMMA_CASES = [
    # (alpha, beta, lam): beta > 0, beta < 0, beta = 0 above / at / below lam, zero intercept.
    (0.5, 2.0, 1.0),
    (0.5, -2.0, 1.0),
    (-3.25, 0.125, 0.75),
    (3.0, 0.0, 1.0),
    (-1.0, 0.0, 1.0),
    (0.25, 0.0, 1.0),
    (0.0, 1.0, 0.5),
    (0.1, 3.0, 0.8),
]


@pytest.mark.parametrize("inside", [True, False])
@pytest.mark.parametrize(("alpha", "beta", "lam"), LEMMA_CASES)
def test_interval_lemma_matches_solveset(alpha: float, beta: float, lam: float, inside: bool) -> None:
    got = interval_lemma(alpha, beta, lam, inside)
    check_pair_types(got)
    assert got == lemma_by_sympy(alpha, beta, lam, inside)


def test_interval_lemma_inside_set_has_both_rays() -> None:
    for beta in (2.0, -2.0):
        rays = interval_lemma(0.5, beta, 1.0, True)
        assert len(rays) == 2
        assert rays[0][0] == -INF
        assert rays[1][1] == INF
        assert rays[0][1] < rays[1][0]


def test_interval_lemma_zero_slope() -> None:
    assert interval_lemma(2.0, 0.0, 1.0, True) == [(-INF, INF)]
    assert interval_lemma(2.0, 0.0, 1.0, False) == []
    assert interval_lemma(0.5, 0.0, 1.0, True) == []
    assert interval_lemma(0.5, 0.0, 1.0, False) == [(-INF, INF)]
    # |alpha| == lam is inside (the region uses >=).
    assert interval_lemma(-1.0, 0.0, 1.0, True) == [(-INF, INF)]


def test_interval_lemma_uses_exact_binary64_values() -> None:
    (lo, hi), = interval_lemma(0.1, 3.0, 0.8, False)
    assert lo == (-Fraction(0.8) - Fraction(0.1)) / 3
    assert hi == (Fraction(0.8) - Fraction(0.1)) / 3


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        ((0.0, 1.0, 0.0), "lam"),
        ((0.0, 1.0, -1.0), "lam"),
        ((float("nan"), 1.0, 1.0), "alpha"),
        ((0.0, float("inf"), 1.0), "beta"),
        ((0.0, 1.0, float("inf")), "lam"),
        ((True, 1.0, 1.0), "alpha"),
        (("1", 1.0, 1.0), "alpha"),
    ],
)
def test_interval_lemma_rejects_bad_input(args: tuple, pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        interval_lemma(*args, inside=True)


def dyadic(max_exponent: int = 6, bound: int = 200) -> st.SearchStrategy[Fraction]:
    return st.builds(
        lambda k, e: Fraction(k, 2**e), st.integers(-bound, bound), st.integers(0, max_exponent)
    )


@settings(deadline=None)
@given(
    alpha=dyadic(),
    beta=st.one_of(st.just(Fraction(0)), dyadic()),
    lam=dyadic().filter(lambda v: v > 0),
    inside=st.booleans(),
    as_float=st.booleans(),
)
def test_interval_lemma_dyadic_property(alpha: Fraction, beta: Fraction, lam: Fraction, inside: bool, as_float: bool) -> None:
    args = (float(alpha), float(beta), float(lam)) if as_float else (alpha, beta, lam)
    got = interval_lemma(*args, inside)
    check_pair_types(got)
    assert got == lemma_by_sympy(alpha, beta, lam, inside)
    # The inside set and the outside set split the line.
    other = interval_lemma(*args, not inside)
    assert intersect_pairs(got, other) == []
    assert merge(got + other) == [(-INF, INF)]


# ---------------------------------------------------------------- sign interval


@pytest.mark.parametrize("positive", [True, False])
@pytest.mark.parametrize(("alpha", "beta"), [(1.5, 2.0), (1.5, -2.0), (-1.0, 0.0), (1.0, 0.0), (0.0, 0.0), (0.0, 4.0)])
def test_sign_interval_matches_solveset(alpha: float, beta: float, positive: bool) -> None:
    expr = to_rational(alpha) + to_rational(beta) * Z
    relation = expr >= 0 if positive else expr <= 0
    expected = sympy_pairs(sympy.solveset(relation, Z, sympy.S.Reals))
    got = sign_interval(alpha, beta, positive)
    check_pair_types(got)
    assert got == expected


# ---------------------------------------------------------------- truncation on a piece


def truncation_by_sympy(alphas: list, betas: list, lam: object, region: list, lo: object, hi: object) -> list[tuple]:
    lo_s = -sympy.oo if lo == -INF else to_rational(lo)
    hi_s = sympy.oo if hi == INF else to_rational(hi)
    total = sympy.Interval(lo_s, hi_s)
    for alpha, beta, inside in zip(alphas, betas, region):
        expr = sympy.Abs(to_rational(alpha) + to_rational(beta) * Z)
        relation = expr >= to_rational(lam) if inside else expr < to_rational(lam)
        total = sympy.Intersection(total, sympy.solveset(relation, Z, sympy.S.Reals))
    return sympy_pairs(total)


def test_truncation_small_example() -> None:
    alphas = [0.0, 3.0, 0.5]
    betas = [1.0, 0.0, -0.5]
    region = [True, True, False]
    got = truncation_from_lemma(np.array(alphas), np.array(betas), 1.0, np.array(region), -10.0, 10.0)
    # Pixel 0 inside: |z| >= 1; pixel 2 outside: |0.5 - z/2| < 1, i.e. -1 < z < 3.
    assert got == [(Fraction(1), Fraction(3))]
    assert got == truncation_by_sympy(alphas, betas, 1.0, region, -10.0, 10.0)


def test_truncation_constant_pixel_mismatch() -> None:
    got = truncation_from_lemma(np.array([0.0, 3.0]), np.array([1.0, 0.0]), 1.0, np.array([True, False]), -INF, INF)
    assert got == []


def test_truncation_rejects_bad_piece_and_shapes() -> None:
    with pytest.raises(InputError, match="piece"):
        truncation_from_lemma(np.zeros(2), np.ones(2), 1.0, np.array([True, False]), 1.0, 1.0)
    with pytest.raises(InputError, match="entries"):
        truncation_from_lemma(np.zeros(2), np.ones(2), 1.0, np.array([True]), 0.0, 1.0)
    with pytest.raises(InputError, match="boolean"):
        truncation_from_lemma(np.zeros(2), np.ones(2), 1.0, np.array([1, 0]), 0.0, 1.0)
    with pytest.raises(InputError, match="non-finite"):
        truncation_from_lemma(np.array([np.nan]), np.ones(1), 1.0, np.array([True]), 0.0, 1.0)


@settings(deadline=None)
@given(
    data=st.data(),
    m=st.integers(1, 4),
    lam=dyadic(3, 40).filter(lambda v: v > 0),
    exact_arrays=st.booleans(),
)
def test_truncation_matches_sympy_on_dyadic_pixels(data: st.DataObject, m: int, lam: Fraction, exact_arrays: bool) -> None:
    alphas = data.draw(st.lists(dyadic(4, 100), min_size=m, max_size=m))
    betas = data.draw(st.lists(st.one_of(st.just(Fraction(0)), dyadic(4, 40)), min_size=m, max_size=m))
    region = data.draw(st.lists(st.booleans(), min_size=m, max_size=m))
    lo = data.draw(st.one_of(st.just(-INF), dyadic(2, 60)))
    hi = data.draw(st.one_of(st.just(INF), dyadic(2, 60)))
    assume(lo < hi)
    if exact_arrays:
        alpha_arr, beta_arr = np.array(alphas, dtype=object), np.array(betas, dtype=object)
    else:
        alpha_arr, beta_arr = np.array([float(v) for v in alphas]), np.array([float(v) for v in betas])
    got = truncation_from_lemma(alpha_arr, beta_arr, float(lam), np.array(region), lo, hi)
    check_pair_types(got)
    assert merge(got) == got
    assert got == truncation_by_sympy(alphas, betas, lam, region, lo, hi)


@settings(deadline=None)
@given(
    alpha=st.floats(-1e3, 1e3, allow_nan=False),
    beta=st.floats(1e-3, 1e3).flatmap(lambda v: st.sampled_from([v, -v])),
    lam=st.floats(1e-3, 10.0),
    which=st.sampled_from([1.0, -1.0]),
    lo_ulps=st.integers(-2, 2),
    width=st.sampled_from([1e-9, 1.0, INF]),
    inside=st.booleans(),
)
def test_truncation_root_near_piece_end(
    alpha: float, beta: float, lam: float, which: float, lo_ulps: int, width: float, inside: bool
) -> None:
    # The piece starts within 2 ulps of a root, so the float64 root cannot tell the side.
    root = (which * lam - alpha) / beta
    lo = root
    for _ in range(abs(lo_ulps)):
        lo = math.nextafter(lo, INF if lo_ulps > 0 else -INF)
    hi = lo + width if math.isfinite(width) else INF
    assume(lo < hi)
    got = truncation_from_lemma(np.array([alpha]), np.array([beta]), lam, np.array([inside]), lo, hi)
    exact = truncation_from_lemma(np.array([alpha], dtype=object), np.array([beta], dtype=object), lam, np.array([inside]), lo, hi)
    assert got == exact
    assert got == truncation_by_sympy([alpha], [beta], lam, [inside], lo, hi)


def test_truncation_handles_roots_beyond_float_range() -> None:
    # beta = 2^-1070 puts the roots near +-2^1070, which overflows float64.
    beta = 2.0**-1070
    got = truncation_from_lemma(np.array([0.0]), np.array([beta]), 1.0, np.array([False]), -INF, INF)
    assert got == [(-Fraction(2) ** 1070, Fraction(2) ** 1070)]
    got_inside = truncation_from_lemma(np.array([0.0]), np.array([beta]), 1.0, np.array([True]), 0.0, INF)
    assert got_inside == [(Fraction(2) ** 1070, INF)]


# ---------------------------------------------------------------- LambdaCuts


def test_cuts_layout_and_mask() -> None:
    mask = np.array([[True, False], [True, True]])
    cuts = LambdaCuts(0.5, (2, 2), mask)
    r_alpha = np.array([1.0, 2.0, 3.0, 4.0])
    r_beta = np.array([-1.0, -2.0, -3.0, -4.0])
    alpha_c, beta_c = cuts.cuts(r_alpha, r_beta)
    np.testing.assert_array_equal(alpha_c, [0.5, 2.5, 3.5, 1.5, 3.5, 4.5])
    np.testing.assert_array_equal(beta_c, [-1.0, -3.0, -4.0, -1.0, -3.0, -4.0])
    assert cuts.m == 3
    np.testing.assert_array_equal(cuts.eligible_index, [0, 2, 3])


@pytest.mark.parametrize("strict", [False, True])
def test_region_from_signs_single_pixel_truth_table(strict: bool) -> None:
    cuts = LambdaCuts(1.0, (1, 1), strict=strict)
    # (sign of r - lam, sign of r + lam) -> in region
    table = {
        (1, 1): True,  # r > lam
        (-1, 1): False,  # -lam < r < lam
        (-1, -1): True,  # r < -lam
        (0, 1): not strict,  # r == lam throughout
        (-1, 0): not strict,  # r == -lam throughout
    }
    for signs, expected in table.items():
        assert cuts.region_from_signs(np.array(signs))[0, 0] == expected
    assert cuts.region_from_signs(np.array([True, True]))[0, 0]
    assert not cuts.region_from_signs(np.array([False, True]))[0, 0]


def test_region_from_signs_rejects_bad_input() -> None:
    cuts = LambdaCuts(1.0, (1, 2))
    with pytest.raises(InputError, match="2 \\* m = 4"):
        cuts.region_from_signs(np.array([True, False]))
    with pytest.raises(InputError, match="-1, 0, 1"):
        cuts.region_from_signs(np.array([2, 1, 1, 1]))


def test_lambda_cuts_rejects_bad_settings() -> None:
    with pytest.raises(InputError, match="threshold"):
        LambdaCuts(0.0, (2, 2))
    with pytest.raises(InputError, match="no eligible"):
        LambdaCuts(1.0, (2, 2), np.zeros((2, 2), dtype=bool))
    with pytest.raises(InputError, match="pixels"):
        LambdaCuts(1.0, (2, 2)).cuts(np.zeros(3), np.zeros(3))


@settings(deadline=None)
@given(data=st.data(), m=st.integers(1, 5), strict=st.booleans())
def test_cut_signs_crossings_and_lemma_agree(data: st.DataObject, m: int, strict: bool) -> None:
    # Independent pieces of LambdaCuts and the lemma must describe the same event.
    alphas = np.array([float(v) for v in data.draw(st.lists(dyadic(3, 40), min_size=m, max_size=m))])
    betas = np.array([float(v) for v in data.draw(st.lists(st.one_of(st.just(Fraction(0)), dyadic(3, 20)), min_size=m, max_size=m))])
    lam = float(data.draw(dyadic(2, 12).filter(lambda v: v > 0)))
    cuts = LambdaCuts(lam, (1, m), strict=strict)
    lo, hi = Fraction(-20), Fraction(20)
    crossings = cuts.exact_crossings(alphas, betas, lo, hi)

    # Crossing points are the sympy roots of |alpha + beta z| = lam inside (lo, hi).
    expected_points: dict[Fraction, set[int]] = {}
    for j in range(m):
        for cut, sign in ((j, 1), (m + j, -1)):
            roots = sympy.solveset(to_rational(alphas[j]) + to_rational(betas[j]) * Z - sign * to_rational(lam), Z, sympy.S.Reals)
            if isinstance(roots, sympy.FiniteSet):
                for root in roots:
                    q = Fraction(int(root.p), int(root.q))
                    if lo < q < hi:
                        expected_points.setdefault(q, set()).add(cut)
    assert [(z, set(idx)) for z, idx in crossings] == sorted(expected_points.items())

    # Between crossings: signs at the midpoint map to the region computed by the definition.
    ends = [lo] + [z for z, _ in crossings] + [hi]
    region_target = np.array(data.draw(st.lists(st.booleans(), min_size=m, max_size=m)))
    rebuilt = []
    for left, right in zip(ends[:-1], ends[1:]):
        mid = (left + right) / 2
        values = [Fraction(alphas[j]) + Fraction(betas[j]) * mid for j in range(m)]
        signs = np.array(
            [int(np.sign(v - Fraction(lam))) for v in values] + [int(np.sign(v + Fraction(lam))) for v in values]
        )
        region = cuts.region_from_signs(signs)[0]
        by_definition = [(abs(v) > Fraction(lam)) if strict else (abs(v) >= Fraction(lam)) for v in values]
        assert region.tolist() == by_definition
        assert cuts.region_at(alphas, betas, mid)[0].tolist() == by_definition
        if region.tolist() == region_target.tolist():
            rebuilt.append((left, right))
    # The elementary intervals with the target region rebuild the lemma's truncation set.
    assert merge(rebuilt) == truncation_from_lemma(alphas, betas, lam, region_target, lo, hi)


def test_exact_crossings_groups_ties() -> None:
    # Pixels 0 and 1 cross +lam at z = 1; pixel 1 also crosses -lam at z = -1.
    cuts = LambdaCuts(1.0, (1, 2))
    crossings = cuts.exact_crossings(np.array([0.0, 0.0]), np.array([1.0, 1.0]), -5.0, 5.0)
    assert crossings == [(Fraction(-1), (2, 3)), (Fraction(1), (0, 1))]
    # Crossings on the interval ends are excluded (open interval).
    assert cuts.exact_crossings(np.array([0.0, 0.0]), np.array([1.0, 1.0]), -1.0, 1.0) == []


def test_region_at_decides_ties_exactly() -> None:
    cuts = LambdaCuts(0.1, (1, 1))
    # 0.1 is not 1/10 in binary64; at z = 0 the score equals lam exactly.
    assert cuts.region_at(np.array([0.1]), np.array([1.0]), 0)[0, 0]
    assert not LambdaCuts(0.1, (1, 1), strict=True).region_at(np.array([0.1]), np.array([1.0]), 0)[0, 0]


# ---------------------------------------------------------------- residual line


def brute_residual(x: np.ndarray, recon: np.ndarray, k: int) -> list[list[Fraction]]:
    channels, height, width = x.shape
    mean = [
        [sum(Fraction(x[c, i, j]) - Fraction(recon[c, i, j]) for c in range(channels)) / channels for j in range(width)]
        for i in range(height)
    ]
    out = []
    half = k // 2
    for i in range(height):
        row = []
        for j in range(width):
            cells = [
                mean[i + di][j + dj]
                for di in range(-half, half + 1)
                for dj in range(-half, half + 1)
                if 0 <= i + di < height and 0 <= j + dj < width
            ]
            row.append(sum(cells, Fraction(0)) / len(cells))
        out.append(row)
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_residual_line_points_on_line(channels: int) -> None:
    rng = np.random.default_rng(7 + channels)
    shape = (channels, 3, 4)
    a, b, out_a, out_b = (rng.integers(-64, 65, size=shape) / 16.0 for _ in range(4))
    exact_alpha, exact_beta = residual_line(
        np.vectorize(Fraction, otypes=[object])(a), b, out_a, out_b, 3, "inside"
    )
    assert exact_alpha.dtype == object and all(isinstance(v, Fraction) for v in exact_alpha)
    for z in (Fraction(0), Fraction(3, 7), Fraction(-5, 2)):
        x_z = np.vectorize(lambda u, v: Fraction(u) + Fraction(v) * z, otypes=[object])(a, b)
        d_z = np.vectorize(lambda u, v: Fraction(u) + Fraction(v) * z, otypes=[object])(out_a, out_b)
        expected = brute_residual(x_z, d_z, 3)
        got = exact_alpha + exact_beta * z
        assert got.tolist() == [v for row in expected for v in row]

    float_alpha, float_beta = residual_line(a, b, out_a, out_b, 3, "inside")
    assert float_alpha.dtype == np.float64
    assert float_alpha.shape == (12,)
    for exact_v, float_v in zip(np.concatenate([exact_alpha, exact_beta]), np.concatenate([float_alpha, float_beta])):
        assert abs(Fraction(float_v) - exact_v) <= Fraction(1, 2**46)


def test_residual_line_si4onnx_profile_uses_zero_padding() -> None:
    a = np.ones((1, 3, 3))
    zeros = np.zeros((1, 3, 3))
    r_alpha, r_beta = residual_line(a, zeros, zeros, zeros, 3, "si4onnx")
    np.testing.assert_array_equal(r_alpha.reshape(3, 3), average_filter(np.ones((3, 3)), 3, profile="si4onnx"))
    assert r_alpha[0] == 4 / 9
    assert not r_beta.any()


def test_residual_line_rejects_mismatched_shapes() -> None:
    with pytest.raises(InputError, match="out_beta"):
        residual_line(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), np.zeros((1, 2, 3)), 3)


def test_selection_and_statistic_modules_import_without_torch() -> None:
    code = (
        "import sys\n"
        "import dalverify.selection, dalverify.selection.region, dalverify.selection.event\n"
        "import dalverify.images, dalverify.methods.covariance, dalverify.methods.statistic\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
