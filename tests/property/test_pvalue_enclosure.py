"""The selective p-value enclosure contains, and is attained by, admissible truncation sets.

A line is cut into pieces; a random subset of the pieces is the true ``Z``
and a random subset is declared unexplored. The reference p-values are
computed here with scipy's normal tails in float64 (far from the extreme
tails, so about 1e-15 relative), independently of dalverify's numerics.
The bounds must contain the p-value of the true ``Z``, and must equal the
minimum and maximum over every way of filling the unexplored pieces (split
at the cuts where the statistic's tail region begins).
"""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from dalverify.methods.pvalues import selective_pvalue_enclosure

INF = float("inf")
BREAKS = [-3.5, -2.25, -1.5, -0.75, 0.0, 0.5, 1.25, 2.0, 3.0]
PIECES = list(zip([-INF] + BREAKS, BREAKS + [INF]))
RELATIVE = 1e-9


def mass(lo, hi):
    """Standard normal mass of [lo, hi] from the tail away from the mode."""
    if lo >= 0:
        return stats.norm.sf(lo) - stats.norm.sf(hi)
    if hi <= 0:
        return stats.norm.cdf(hi) - stats.norm.cdf(lo)
    return 1.0 - stats.norm.sf(hi) - stats.norm.cdf(lo)


def clipped_mass(pieces, lo, hi):
    return sum(mass(max(a, lo), min(b, hi)) for a, b in pieces if max(a, lo) < min(b, hi))


def reference_pvalue(pieces, c, two_sided):
    total = clipped_mass(pieces, -INF, INF)
    if two_sided == "symmetric":
        return (clipped_mass(pieces, -INF, -abs(c)) + clipped_mass(pieces, abs(c), INF)) / total
    lower, upper = clipped_mass(pieces, -INF, c), clipped_mass(pieces, c, INF)
    return min(1.0, 2 * min(lower, upper) / total)


def split(pieces, cuts):
    out = []
    for lo, hi in pieces:
        ends = [lo] + [x for x in cuts if lo < x < hi] + [hi]
        out.extend(zip(ends[:-1], ends[1:]))
    return out


def brute_force_range(known, unexplored, c, two_sided):
    cuts = [-abs(c), abs(c)] if two_sided == "symmetric" else [c]
    parts = split(unexplored, cuts)
    values, lower_fractions = [], []
    for size in range(len(parts) + 1):
        for chosen in itertools.combinations(parts, size):
            pieces = list(known) + list(chosen)
            values.append(reference_pvalue(pieces, c, two_sided))
            lower_fractions.append(clipped_mass(pieces, -INF, c) / clipped_mass(pieces, -INF, INF))
    high = max(values)
    if two_sided == "equal-tailed" and min(lower_fractions) <= 0.5 <= max(lower_fractions):
        high = 1.0
    return min(values), high


def close(value, reference):
    return abs(value - reference) <= RELATIVE * max(abs(reference), 1e-300)


scenarios = st.fixed_dictionaries({
    "in_z": st.lists(st.booleans(), min_size=len(PIECES), max_size=len(PIECES)),
    "unexplored": st.lists(st.booleans(), min_size=len(PIECES), max_size=len(PIECES)),
    "obs_piece": st.integers(0, len(PIECES) - 1),
    "position": st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    "sd": st.sampled_from([1.0, 0.5, 3.0]),
    "two_sided": st.sampled_from(["symmetric", "equal-tailed"]),
})


def finite_point(lo, hi, position):
    if lo == -INF:
        return hi - 1.0 - position
    if hi == INF:
        return lo + 1.0 + position
    return lo + (hi - lo) * position


@given(scenario=scenarios)
def test_enclosure_contains_and_attains(scenario):
    index = scenario["obs_piece"]
    in_z = list(scenario["in_z"])
    in_z[index] = True
    unexplored_flags = list(scenario["unexplored"])
    unexplored_flags[index] = False
    sd, two_sided = scenario["sd"], scenario["two_sided"]

    true_z = [p for p, flag in zip(PIECES, in_z) if flag]
    known = [p for p, flag, hidden in zip(PIECES, in_z, unexplored_flags) if flag and not hidden]
    unexplored = [p for p, hidden in zip(PIECES, unexplored_flags) if hidden]
    c = finite_point(*PIECES[index], scenario["position"])

    low, high = selective_pvalue_enclosure(
        c * sd, sd, [(a * sd, b * sd) for a, b in known], [(a * sd, b * sd) for a, b in unexplored],
        two_sided=two_sided, dps=20,
    )
    truth = reference_pvalue(true_z, c, two_sided)
    assert float(low) <= truth * (1 + RELATIVE)
    assert truth <= float(high) * (1 + RELATIVE)

    expected_low, expected_high = brute_force_range(known, unexplored, c, two_sided)
    assert close(float(low), expected_low), (float(low), expected_low)
    assert close(float(high), expected_high), (float(high), expected_high)


def test_enclosure_wider_than_all_in_all_out():
    # Known part: [-1, 1] and [2, 3], t_obs = 2.5; unexplored pieces on both
    # sides of |t| = 2.5. Moving all of them together misses both extremes.
    known = [(-1.0, 1.0), (2.0, 3.0)]
    unexplored = [(1.0, 2.0), (3.0, INF)]
    low, high = selective_pvalue_enclosure(2.5, 1, known, unexplored, dps=20)
    all_out = reference_pvalue(known, 2.5, "symmetric")
    all_in = reference_pvalue([(-1.0, 3.0), (3.0, INF)], 2.5, "symmetric")
    assert float(low) < min(all_out, all_in) * (1 - 1e-6)
    assert float(high) > max(all_out, all_in) * (1 + 1e-6)
    assert close(float(low), reference_pvalue([(-1.0, 2.0), (2.0, 3.0)], 2.5, "symmetric"))
    assert close(float(high), reference_pvalue([(-1.0, 1.0), (2.0, INF)], 2.5, "symmetric"))
