"""Runs the checks of proofs/selective_pvalue.md (p-value formulas, tail series, enclosure)."""

from __future__ import annotations


import pytest

from reference.proof_scripts import load_proof_script


def test_selective_pvalue_proof_checks_pass():
    assert load_proof_script("check_selective_pvalue").main() == 0


def test_brute_force_rejects_all_in_all_out_extremes():
    module = load_proof_script("check_selective_pvalue")

    def all_in_all_out(a, b, u1, u0):
        all_out = a / (a + b)
        all_in = (a + u1) / (a + b + u1 + u0)
        return min(all_out, all_in), max(all_out, all_in)

    with pytest.raises(AssertionError, match="symmetric extremes"):
        module.check_enclosure_brute_force(symmetric=all_in_all_out)


def test_brute_force_rejects_one_minus_f_shortcut():
    module = load_proof_script("check_selective_pvalue")

    def wrong_equal_tailed(left, right, u_left, u_right):
        # Uses F at the known part only, ignoring the unexplored mass.
        f = left / (left + right)
        value = 2 * min(f, 1 - f)
        return value, value

    with pytest.raises(AssertionError, match="equal-tailed"):
        module.check_enclosure_brute_force(equal_tailed=wrong_equal_tailed)
