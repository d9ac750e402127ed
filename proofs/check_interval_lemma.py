"""Symbolic and exact check of proofs/interval_lemma.md.

Run ``python proofs/check_interval_lemma.py``; ``main()`` returns 0 when every
claim is true and raises AssertionError naming the claim otherwise.
"""

from __future__ import annotations

import math
import random
import sys
from fractions import Fraction

import sympy as sp

Z = sp.Symbol("z", real=True)


def lemma_sets(alpha: sp.Expr, beta: sp.Expr, lam: sp.Expr) -> tuple[sp.Set, sp.Set]:
    """Return the inside and outside sets as the proof states them, for numeric arguments."""
    if beta == 0:
        whole, empty = sp.S.Reals, sp.S.EmptySet
        return (whole, empty) if abs(alpha) >= lam else (empty, whole)
    roots = sorted([(-lam - alpha) / beta, (lam - alpha) / beta])
    low, high = roots
    inside = sp.Union(sp.Interval(-sp.oo, low), sp.Interval(high, sp.oo))
    return inside, sp.Interval.open(low, high)


def check_positive_slope() -> None:
    alpha = sp.Symbol("alpha", real=True)
    beta, lam = sp.symbols("beta lam", positive=True)
    r = alpha + beta * Z
    low, high = (-lam - alpha) / beta, (lam - alpha) / beta
    assert sp.expand(r - lam - beta * (Z - high)) == 0, "claim 1: r - lam = beta (z - high)"
    assert sp.expand(r + lam - beta * (Z - low)) == 0, "claim 1: r + lam = beta (z - low)"
    assert sp.simplify(high - low - 2 * lam / beta) == 0, "claim 1: high - low = 2 lam / beta"
    assert (high - low).simplify().is_positive, "claim 1: low < high"


def check_negative_slope() -> None:
    alpha = sp.Symbol("alpha", real=True)
    beta = sp.Symbol("beta", negative=True)
    lam = sp.Symbol("lam", positive=True)
    r = alpha + beta * Z
    low, high = (lam - alpha) / beta, (-lam - alpha) / beta
    assert sp.expand(r - lam - beta * (Z - low)) == 0, "claim 2: r - lam = beta (z - low)"
    assert sp.expand(r + lam - beta * (Z - high)) == 0, "claim 2: r + lam = beta (z - high)"
    assert (high - low).simplify().is_positive, "claim 2: low < high"


def check_against_solveset() -> None:
    # Intercepts below, at and above +-lam; slopes of both signs and zero.
    alphas = [sp.Rational(k, 4) for k in (-9, -4, -1, 0, 8)]
    betas = [sp.Rational(k, 4) for k in (-4, 0, 1, 8)]
    lams = [sp.Integer(1), sp.Rational(9, 4)]
    for alpha in alphas:
        for beta in betas:
            for lam in lams:
                expr = sp.Abs(alpha + beta * Z)
                inside = sp.solveset(expr >= lam, Z, sp.S.Reals)
                outside = sp.solveset(expr < lam, Z, sp.S.Reals)
                want_inside, want_outside = lemma_sets(alpha, beta, lam)
                case = f"alpha={alpha}, beta={beta}, lam={lam}"
                assert inside == want_inside, f"claims 1-3 (inside set) at {case}"
                assert outside == want_outside, f"claims 1-3 (outside set) at {case}"
                assert sp.Union(inside, outside) == sp.S.Reals, f"I u O = R at {case}"
                assert sp.Intersection(inside, outside) == sp.S.EmptySet, f"I n O empty at {case}"
                if beta != 0:
                    assert inside.inf == -sp.oo, f"claim 4: left ray at {case}"
                    assert inside.sup == sp.oo, f"claim 4: right ray at {case}"


def check_region_on_piece() -> None:
    # Claim 5 on a concrete instance: intersection of per-pixel sets over a piece.
    lam = sp.Integer(1)
    pixels = [(sp.Integer(0), sp.Integer(1), True), (sp.Rational(1, 2), sp.Rational(-1, 2), False),
              (sp.Integer(3), sp.Integer(0), True), (sp.Rational(-1, 4), sp.Integer(2), True)]
    piece = sp.Interval(-10, 10)
    by_solveset = piece
    lows, highs, holes = [], [], []
    for alpha, beta, inside in pixels:
        relation = sp.Abs(alpha + beta * Z) >= lam if inside else sp.Abs(alpha + beta * Z) < lam
        by_solveset = sp.Intersection(by_solveset, sp.solveset(relation, Z, sp.S.Reals))
        if beta == 0:
            assert (abs(alpha) >= lam) == inside, "claim 5: constant pixels agree here"
            continue
        low, high = sorted([(-lam - alpha) / beta, (lam - alpha) / beta])
        if inside:
            holes.append(sp.Interval.open(low, high))
        else:
            lows.append(low)
            highs.append(high)
    window = sp.Intersection(piece, sp.Interval.open(max(lows), min(highs)))
    by_claim = sp.Complement(window, sp.Union(*holes))
    assert by_claim.symmetric_difference(by_solveset).measure == 0, "claim 5: intersection formula"
    # By hand: |z| >= 1, -1 < z < 3 and (z <= -3/8 or z >= 5/8) leave [1, 3).
    assert by_claim.measure == 2, "claim 5: measure of the example"


def check_sign_sets() -> None:
    for alpha in (sp.Integer(-2), sp.Integer(0), sp.Integer(3)):
        for beta in (sp.Integer(-2), sp.Integer(0), sp.Rational(1, 2)):
            expr = alpha + beta * Z
            positive = sp.solveset(expr >= 0, Z, sp.S.Reals)
            negative = sp.solveset(expr <= 0, Z, sp.S.Reals)
            if beta > 0:
                want = (sp.Interval(-alpha / beta, sp.oo), sp.Interval(-sp.oo, -alpha / beta))
            elif beta < 0:
                want = (sp.Interval(-sp.oo, -alpha / beta), sp.Interval(-alpha / beta, sp.oo))
            else:
                want = (sp.S.Reals if alpha >= 0 else sp.S.EmptySet, sp.S.Reals if alpha <= 0 else sp.S.EmptySet)
            assert (positive, negative) == want, f"claim 6 at alpha={alpha}, beta={beta}"


def float_root_error_ok(c: float, alpha: float, beta: float, computed: float | None = None) -> bool:
    """True when fl(fl(c - alpha) / beta), or ``computed`` if given, is within the claim-7 bound of the exact root.

    A float64 root that overflows counts as fine, because such pixels go to the exact route.
    """
    if computed is None:
        try:
            computed = (c - alpha) / beta
        except (OverflowError, ZeroDivisionError):
            return True
    if not math.isfinite(computed):
        return True
    exact = (Fraction(c) - Fraction(alpha)) / Fraction(beta)
    u = Fraction(1, 2**53)
    proven = (2 * u + u * u) * abs(exact) + Fraction(1, 2**1075)
    used = Fraction(2.0**-48) * abs(Fraction(computed)) + Fraction(2.0**-1060)
    error = abs(Fraction(computed) - exact)
    return error <= proven and proven < used


def check_float_root_bound() -> None:
    rng = random.Random(20240601)
    cases = 0
    for _ in range(4000):
        c = rng.choice([1.0, -1.0]) * math.ldexp(rng.random() + 0.5, rng.randint(-30, 30))
        alpha = math.ldexp(rng.uniform(-1, 1), rng.randint(-1074, 1000))
        beta = math.ldexp(rng.uniform(-1, 1), rng.randint(-1074, 1000))
        if beta == 0:
            continue
        assert float_root_error_ok(c, alpha, beta), f"claim 7 at c={c!r}, alpha={alpha!r}, beta={beta!r}"
        cases += 1
    # Adversarial: cancellation in c - alpha, subnormal quotients, one-ulp neighbours.
    for c in (1.0, 0.1, 3.0):
        for alpha in (c, math.nextafter(c, 0), math.nextafter(c, 2 * c), -c, 5e-324):
            for beta in (3.0, -7.0, 1e300, 1e-300, 5e-324, 0.1):
                assert float_root_error_ok(c, alpha, beta), f"claim 7 at c={c!r}, alpha={alpha!r}, beta={beta!r}"
                cases += 1
    assert cases > 3000, "claim 7: enough cases ran"


def main() -> int:
    check_positive_slope()
    check_negative_slope()
    check_against_solveset()
    check_region_on_piece()
    check_sign_sets()
    check_float_root_bound()
    return 0


if __name__ == "__main__":
    sys.exit(main())
