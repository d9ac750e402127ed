"""Runs the symbolic check of proofs/ddim_affine.md (each DDIM step is affine in x_t)."""

from __future__ import annotations

from reference.proof_scripts import load_proof_script


def test_ddim_affine_proof_checks_pass():
    assert load_proof_script("check_ddim_affine").main() == 0


def test_regrouped_form_check_detects_wrong_coefficient():
    import sympy as sp

    module = load_proof_script("check_ddim_affine")
    x_t, eps, noise = sp.symbols("x_t eps e", real=True)
    abar_t, abar_s, eta = sp.symbols("abar_t abar_s eta", positive=True)
    x_s, c1, c2, sigma = module.ddim_step(x_t, eps, noise, abar_t, abar_s, eta)
    # Dropping the eps part of f from c2 must leave a nonzero difference.
    wrong_c2 = sp.sqrt(1 - abar_s - sigma**2)
    assert sp.simplify(x_s - (c1 * x_t + wrong_c2 * eps + sigma * noise)) != 0
