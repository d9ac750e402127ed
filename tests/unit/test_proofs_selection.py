"""Runs the checks of proofs/interval_lemma.md and proofs/line_decomposition.md, and shows they can fail."""

from __future__ import annotations

import random
from fractions import Fraction

import sympy as sp

from reference.proof_scripts import load_proof_script


def test_interval_lemma_proof_checks_pass() -> None:
    assert load_proof_script("check_interval_lemma").main() == 0


def test_line_decomposition_proof_checks_pass() -> None:
    assert load_proof_script("check_line_decomposition").main() == 0


def test_interval_lemma_check_detects_swapped_slope_and_intercept() -> None:
    module = load_proof_script("check_interval_lemma")
    z = module.Z
    alpha, beta, lam = sp.Rational(1, 2), sp.Integer(2), sp.Integer(1)
    inside = sp.solveset(sp.Abs(alpha + beta * z) >= lam, z, sp.S.Reals)
    # Ends with the roles of slope and intercept exchanged, (+-lam - beta) / alpha.
    swapped_inside, _ = module.lemma_sets(beta, alpha, lam)
    correct_inside, _ = module.lemma_sets(alpha, beta, lam)
    assert correct_inside == inside
    assert swapped_inside != inside


def test_line_decomposition_check_detects_ignoring_reference_noise() -> None:
    module = load_proof_script("check_line_decomposition")
    ctx = module.symbolic_setting(2, [0])
    n, c = ctx["n"], ctx["c"]
    # A direction built from Sigma on both halves (reference noise ignored) is correlated with T.
    wrong_tilde = sp.diag(ctx["sigma"], ctx["sigma"])
    wrong_b = wrong_tilde * ctx["nu"] / (ctx["nu"].T * wrong_tilde * ctx["nu"])[0, 0]
    projector = sp.eye(2 * n) - wrong_b * ctx["nu"].T
    covariance = module.canonical(projector * ctx["sigma_tilde"] * ctx["nu"])
    assert covariance != sp.zeros(2 * n, 1)
    assert module.canonical(covariance.subs(c, 1)) == sp.zeros(2 * n, 1)


def test_reconstruction_bound_is_reached_in_part() -> None:
    # The bound is not vacuous: some inputs leave an error above u |d| / 4.
    module = load_proof_script("check_line_decomposition")
    rng = random.Random(3)
    worst = 0
    for _ in range(2000):
        d, b, t = rng.uniform(-1, 1), rng.uniform(-1, 1) * 1e3, rng.uniform(-1, 1)
        error, proven, used = module.reconstruction_error(d, b, t)
        assert error <= proven <= used
        worst = max(worst, error / (Fraction(1, 2**53) * abs(Fraction(d))))
    assert worst > Fraction(1, 4)


def test_float_root_check_rejects_a_wrong_root() -> None:
    module = load_proof_script("check_interval_lemma")
    assert module.float_root_error_ok(1.0, 0.1, 3.0)
    root = (1.0 - 0.1) / 3.0
    # A root off by 2^-40 relative is outside the proven float64 error bound.
    assert not module.float_root_error_ok(1.0, 0.1, 3.0, computed=root * (1 + 2.0**-40))
