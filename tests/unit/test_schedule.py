"""Noise schedule and DDIM timesteps, checked against mpmath and exact integer arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dalverify.diffusion.schedule import NoiseSchedule, alpha_bar, linear_schedule, tau_sequence
from dalverify.errors import InputError


def mp_alpha_bar(t_values, num_steps=1000, start="1e-4", end="2e-2", dps=50):
    """abar_t from exact decimal betas, multiplied at ``dps`` digits."""
    out = {}
    with mpmath.workdps(dps):
        beta_start, beta_end = mpmath.mpf(start), mpmath.mpf(end)
        step = (beta_end - beta_start) / (num_steps - 1)
        product = mpmath.mpf(1)
        wanted = set(t_values)
        for t in range(0, max(wanted) + 1):
            if t >= 1:
                product *= 1 - (beta_start + (t - 1) * step)
            if t in wanted:
                out[t] = product
    return out


def test_betas_endpoints_exact():
    betas = NoiseSchedule().betas
    assert betas.shape == (1001,)
    assert betas.dtype == np.float64
    assert betas[0] == 0.0
    assert betas[1] == 1e-4
    assert betas[1000] == 2e-2


def test_betas_match_torch_linspace():
    ours = NoiseSchedule().betas[1:]
    theirs = torch.linspace(1e-4, 2e-2, 1000, dtype=torch.float64).numpy()
    assert np.all(np.abs(ours - theirs) <= 2 * np.finfo(np.float64).eps * theirs)


def test_alpha_bar_all_steps_match_mpmath():
    ours = alpha_bar()
    reference = mp_alpha_bar(range(1001))
    assert ours[0] == 1.0
    worst = max(abs(ours[t] - float(reference[t])) / float(reference[t]) for t in range(1001))
    assert worst < 3e-13


@pytest.mark.parametrize(
    ("t_start", "steps", "expected"),
    [
        (460, 5, [0, 92, 184, 276, 368, 460]),
        (300, 5, [0, 60, 120, 180, 240, 300]),
        (300, 4, [0, 75, 150, 225, 300]),
        # 300 * i / 8 = 37.5, 112.5, 187.5, 262.5 for odd i: floor, not rounding.
        (300, 8, [0, 37, 75, 112, 150, 187, 225, 262, 300]),
    ],
)
def test_tau_sequence_paper_settings(t_start, steps, expected):
    taus = tau_sequence(t_start, steps)
    assert taus == expected
    assert taus == [math.floor(Fraction(i * t_start, steps)) for i in range(steps + 1)]


def test_tau_sequence_floor_differs_from_rounding():
    taus = tau_sequence(300, 8)
    assert taus[1] == 37  # round-half-even and round-half-up both give 38
    assert taus[3] == 112  # round-half-up gives 113
    assert round(37.5) == 38
    assert math.floor(112.5 + 0.5) == 113


@pytest.mark.parametrize(("t_start", "steps"), [(460, 5), (300, 5), (300, 4), (300, 8)])
def test_alpha_bar_at_taus_match_mpmath(t_start, steps):
    taus = tau_sequence(t_start, steps)
    reference = mp_alpha_bar(taus)
    ours = alpha_bar()
    for t in taus:
        assert ours[t] == pytest.approx(float(reference[t]), rel=3e-13, abs=0.0)


def test_alpha_bar_known_magnitudes():
    # abar_T ~ exp(-sum beta) to first order: sum beta = 1000 * (1e-4 + 2e-2) / 2 = 10.05.
    ours = alpha_bar()
    assert 4e-5 < ours[1000] < 4.4e-5
    assert np.all(np.diff(ours) < 0)


@given(st.integers(1, 1000), st.data())
@settings(deadline=None)
def test_tau_sequence_invariants(t_start, data):
    steps = data.draw(st.integers(1, t_start))
    taus = tau_sequence(t_start, steps)
    assert len(taus) == steps + 1
    assert taus[0] == 0
    assert taus[-1] == t_start
    gaps = np.diff(taus)
    assert np.all(gaps >= t_start // steps)
    assert np.all(gaps <= -(-t_start // steps))


@pytest.mark.parametrize(
    ("t_start", "steps"),
    [(0, 1), (1001, 5), (5, 6), (300, 0), (300.0, 5), (True, 1), (300, "5")],
)
def test_tau_sequence_rejects_bad_arguments(t_start, steps):
    with pytest.raises(InputError):
        tau_sequence(t_start, steps)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_steps": 1},
        {"beta_start": 0.0},
        {"beta_start": 0.1, "beta_end": 0.05},
        {"beta_end": 1.0},
        {"num_steps": 10.5},
    ],
)
def test_schedule_rejects_bad_parameters(kwargs):
    with pytest.raises(InputError):
        NoiseSchedule(**kwargs)


def test_other_schedule_against_mpmath():
    schedule = linear_schedule(50, 1e-3, 5e-2)
    reference = mp_alpha_bar(range(51), num_steps=50, start="1e-3", end="5e-2")
    for t in range(51):
        assert schedule.alpha_bar[t] == pytest.approx(float(reference[t]), rel=1e-14, abs=0.0)
    assert schedule.params() == {
        "name": "linear", "num_steps": 50, "beta_start": 1e-3, "beta_end": 5e-2
    }
