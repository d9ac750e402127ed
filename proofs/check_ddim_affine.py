"""Symbolic check of proofs/ddim_affine.md: each DDIM step is affine in x_t given eps.

Run ``python proofs/check_ddim_affine.py``; ``main()`` returns 0 when every
claim holds and raises AssertionError naming the claim otherwise.
"""

from __future__ import annotations

import sys

import sympy as sp


def ddim_step(x_t, eps, noise, abar_t, abar_s, eta):
    """Return (x_s, c1, c2, sigma) of one DDIM step, in the textbook form and the regrouped constants."""
    f = (x_t - sp.sqrt(1 - abar_t) * eps) / sp.sqrt(abar_t)
    sigma = eta * sp.sqrt((1 - abar_s) / (1 - abar_t)) * sp.sqrt(1 - abar_t / abar_s)
    x_s = sp.sqrt(abar_s) * f + sp.sqrt(1 - abar_s - sigma**2) * eps + sigma * noise
    c1 = sp.sqrt(abar_s) / sp.sqrt(abar_t)
    c2 = sp.sqrt(1 - abar_s - sigma**2) - sp.sqrt(abar_s) * sp.sqrt(1 - abar_t) / sp.sqrt(abar_t)
    return x_s, c1, c2, sigma


def check_regrouped_form() -> None:
    x_t, eps, noise = sp.symbols("x_t eps e", real=True)
    abar_t, abar_s, eta = sp.symbols("abar_t abar_s eta", positive=True)
    x_s, c1, c2, sigma = ddim_step(x_t, eps, noise, abar_t, abar_s, eta)
    assert sp.simplify(x_s - (c1 * x_t + c2 * eps + sigma * noise)) == 0, "claim 1: regrouped form"
    assert sp.simplify(sp.diff(x_s, x_t) - c1) == 0, "claim 1: derivative in x_t is c1"
    assert sp.diff(x_s, x_t, 2) == 0, "claim 1: second derivative in x_t is 0"
    for symbol in (x_t, eps, noise):
        for coefficient in (c1, c2, sigma):
            assert symbol not in coefficient.free_symbols, "claim 1: constants are free of the data"


def check_real_square_root() -> None:
    abar_t, abar_s, eta, r = sp.symbols("abar_t abar_s eta r", positive=True)
    sigma_sq = eta**2 * (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s)
    factored = (1 - abar_s) * (1 - eta**2 * (1 - abar_t / abar_s) / (1 - abar_t))
    assert sp.simplify((1 - abar_s - sigma_sq) - factored) == 0, "claim 2: factorisation"
    # With abar_t = abar_s * r, 0 < r < 1: (1 - abar_t) - (1 - abar_t/abar_s) = r (1 - abar_s) >= 0.
    gap = (1 - abar_s * r) - (1 - r)
    assert sp.simplify(gap - r * (1 - abar_s)) == 0, "claim 2: 1 - abar_t/abar_s <= 1 - abar_t"


def check_last_step() -> None:
    x_t, eps, noise = sp.symbols("x_t eps e", real=True)
    abar_t, eta = sp.symbols("abar_t eta", positive=True)
    x_s, c1, c2, sigma = ddim_step(x_t, eps, noise, abar_t, sp.Integer(1), eta)
    assert sp.simplify(sigma) == 0, "claim 3: sigma is 0 when abar_s = 1"
    f = (x_t - sp.sqrt(1 - abar_t) * eps) / sp.sqrt(abar_t)
    assert sp.simplify(x_s - f) == 0, "claim 3: x_0 is the predicted clean image"
    assert sp.simplify(c1 - 1 / sp.sqrt(abar_t)) == 0, "claim 3: c1"
    assert sp.simplify(c2 + sp.sqrt(1 - abar_t) / sp.sqrt(abar_t)) == 0, "claim 3: c2"


def check_eta_zero() -> None:
    x_t, eps, noise = sp.symbols("x_t eps e", real=True)
    abar_t, abar_s = sp.symbols("abar_t abar_s", positive=True)
    x_s, _, _, sigma = ddim_step(x_t, eps, noise, abar_t, abar_s, sp.Integer(0))
    assert sigma == 0, "claim 4: sigma is 0 for eta = 0"
    assert sp.diff(x_s, noise) == 0, "claim 4: fresh noise has coefficient 0 for eta = 0"


def check_two_step_composition() -> None:
    x, e0, e1, e2 = sp.symbols("x e0 e1 e2", real=True)
    a_start, a_mid, eta = sp.symbols("abar_T abar_m eta", positive=True)
    slope1, slope2, bias1, bias2 = sp.symbols("A1 A2 b1 b2", real=True)
    # Two steps T' -> m -> 0 with affine noise predictors eps_i(y) = A_i y + b_i.
    x_start = sp.sqrt(a_start) * x + sp.sqrt(1 - a_start) * e0
    x_mid, c1_first, _, _ = ddim_step(x_start, slope1 * x_start + bias1, e1, a_start, a_mid, eta)
    x_out, c1_last, _, _ = ddim_step(x_mid, slope2 * x_mid + bias2, e2, a_mid, sp.Integer(1), eta)
    assert sp.diff(sp.expand(x_out), x, 2) == 0, "claim 5: composition is affine in x"
    derivative = sp.diff(x_out, x)
    assert x not in derivative.free_symbols, "claim 5: derivative is free of x"
    assert e2 not in sp.expand(x_out).free_symbols, "claim 5: the last step adds no noise"


CHECKS = (
    check_regrouped_form,
    check_real_square_root,
    check_last_step,
    check_eta_zero,
    check_two_step_composition,
)


def main() -> int:
    """Run every check; return 0 when all hold (AssertionError otherwise)."""
    for check in CHECKS:
        check()
        print(f"ok  {check.__name__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
