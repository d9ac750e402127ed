"""Runs the checks of proofs/direction_of_travel.md and proofs/rounding_bound.md, and shows they can fail."""

from __future__ import annotations

import numpy as np
import pytest

from reference.proof_scripts import load_proof_script


def test_direction_of_travel_checks_pass() -> None:
    assert load_proof_script("check_direction_of_travel").main() == 0


def test_rounding_bound_checks_pass() -> None:
    assert load_proof_script("check_rounding_bound").main() == 0


def test_direction_check_detects_a_rule_that_reads_the_value_at_z(monkeypatch) -> None:
    module = load_proof_script("check_direction_of_travel")

    def value_at_z(xp, alpha, beta, root, z):
        # Decides by the value at z (si4onnx's x >= 0): wrong for units that are zero at z.
        return alpha + beta * z >= 0

    monkeypatch.setattr(module.rule, "active", value_at_z)
    with pytest.raises(AssertionError, match="claim"):
        module.main()


def test_rounding_check_detects_a_missing_gamma(monkeypatch) -> None:
    module = load_proof_script("check_rounding_bound")
    monkeypatch.setattr(module, "gamma", lambda n: 0.0)
    with pytest.raises(AssertionError, match="section"):
        module.main()


def test_zone_check_detects_zones_without_margins(monkeypatch) -> None:
    module = load_proof_script("check_rounding_bound")

    def no_margin(alpha, beta, rad_alpha, rad_beta, sign):
        # Zones of the midpoint line alone, ignoring the radii.
        root = -alpha / beta
        up = sign * beta > 0
        return np.where(up, root, -np.inf), np.where(up, np.inf, root)

    monkeypatch.setattr(module, "float_zones", no_margin)
    with pytest.raises(AssertionError, match="section 5"):
        module.check_zones(__import__("random").Random(1))
