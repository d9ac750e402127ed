"""Write ``pvalue_table.json``: reference p-values computed without dalverify.

Run from the repository root::

    python tests/reference/make_pvalue_table.py

It takes a few minutes on one core. The route here shares no code with
``dalverify.numerics`` and uses different formulas:

* Each interval mass is a quadrature (``mpmath.quad``, tanh-sinh) of the
  normal density, never a tail function. Quadrature of a raw density far
  below 1 stops too early, because mpmath's error test is absolute. So every
  integrand is first normalized to size about 1. On ``[a, b]`` with
  ``a >= 1`` the substitution ``x = a + u / a`` gives
  ``phi(a) / a * integral_0^{a (b - a)} exp(-u - u^2 / (2 a^2)) du``, and
  narrow ranges are rescaled to ``[0, 1]``.
* Masses are summed as plain mpf numbers (whose exponent is unbounded), not
  in log space, and p-values are plain ratios.
* The working precision is at least 120 digits (more than twice the 50
  digits dalverify uses by default) plus twice the number of digits of the
  largest standardized end, so that ``x^2 / 2`` keeps its absolute accuracy.
* Where all ends are moderate (``|x| < 50``), every mass is recomputed as a
  difference of ``mpmath.ncdf`` values at 300 digits, taken on the side away
  from the mode, and the two routes must agree to 1e-60 relative.
* Enclosures are found by brute force: the unexplored set is cut at
  ``+-|t_obs|`` (or at ``t_obs``) into pieces, and the p-value is computed for
  every subset of the pieces added to the known part.

Ends are stored as strings: decimal or ``p/q`` rationals (``end_type="str"``,
passed to dalverify as strings) or ``float.hex`` (``end_type="float"``,
passed as Python floats).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import sys
from fractions import Fraction
from pathlib import Path

import mpmath
from mpmath import mp, mpf

OUTPUT = Path(__file__).with_name("pvalue_table.json")
INF = float("inf")
CODE_DPS = 50
CROSS_CHECK_DPS = 300
CROSS_CHECK_LIMIT = 50


# ---------------------------------------------------------------------------
# Exact parsing and interval helpers (independent of dalverify)
# ---------------------------------------------------------------------------


def parse(text):
    """Exact value of a stored end: Fraction, or +-inf."""
    if text in ("inf", "-inf"):
        return INF if text == "inf" else -INF
    if "0x" in text:
        return Fraction(float.fromhex(text))
    return Fraction(text)


def hexs(value):
    """Return the text of a float end: ``float.hex``, or ``"inf"``/``"-inf"``."""
    if value == INF:
        return "inf"
    if value == -INF:
        return "-inf"
    return float(value).hex()


def rational_text(value):
    """Return ``"p/q"`` for a Fraction."""
    return f"{value.numerator}/{value.denominator}"


def clip(pairs, lo, hi):
    """Return the pieces of sorted disjoint pairs inside [lo, hi] that have positive length."""
    out = []
    for a, b in pairs:
        a2, b2 = max(a, lo), min(b, hi)
        if a2 < b2:
            out.append((a2, b2))
    return out


def to_mpf(value):
    if isinstance(value, float):
        return mpf(value)
    return mpf(value.numerator) / value.denominator


# ---------------------------------------------------------------------------
# Route 1: normalized quadrature
# ---------------------------------------------------------------------------

_QUAD_CACHE = {}


def _density(x):
    return mp.exp(-x * x / 2) / mp.sqrt(2 * mp.pi)


def _mass_near_zero(a, b):
    """Return the mass of [a, b], 0 <= a < b <= 1, by quadrature rescaled to [0, 1]."""
    a_mp, width = to_mpf(a), to_mpf(b - a)
    return width * mp.quad(lambda v: _density(a_mp + width * v), [0, 1])


def _mass_tail_side(a, b):
    """Return the mass of [a, b], 1 <= a < b <= inf, by quadrature after x = a + u / a."""
    a_mp = to_mpf(a)
    half_square = to_mpf(a * a / 2)
    prefactor = mp.exp(-half_square) / (a_mp * mp.sqrt(2 * mp.pi))
    inv = 1 / (2 * a_mp * a_mp)
    span = INF if b == INF else a * (b - a)
    if span != INF and span <= 1:
        span_mp = to_mpf(span)
        integral = span_mp * mp.quad(lambda v: mp.exp(-span_mp * v - (span_mp * v) ** 2 * inv), [0, 1])
        return prefactor * integral
    # exp(-u) bounds the integrand, so the part beyond u_max is below exp(-u_max).
    u_max = mpf(int((mp.dps + 20) * math.log(10)) + 1)
    top = u_max if span == INF else min(to_mpf(span), u_max)
    points = [mpf(0)]
    step = mpf(1)
    while points[-1] + step < top:
        points.append(points[-1] + step)
        step *= 4
    points.append(top)
    integral = mp.quad(lambda u: mp.exp(-u - u * u * inv), points)
    return prefactor * integral


def mass_quad(lo, hi):
    key = (lo, hi, mp.dps)
    if key in _QUAD_CACHE:
        return _QUAD_CACHE[key]
    if lo >= 0:
        value = _right_mass(lo, hi)
    elif hi <= 0:
        value = _right_mass(-hi, -lo)
    else:
        value = _right_mass(Fraction(0), hi) + _right_mass(Fraction(0), -lo)
    _QUAD_CACHE[key] = value
    return value


def _right_mass(a, b):
    total = mpf(0)
    if a < 1:
        top = b if b != INF and b <= 1 else Fraction(1)
        total += _mass_near_zero(a, top)
        if top == b:
            return total
        a = Fraction(1)
    return total + _mass_tail_side(a, b)


# ---------------------------------------------------------------------------
# Route 2: CDF differences on the side away from the mode
# ---------------------------------------------------------------------------


def mass_ncdf(lo, hi):
    with mp.workdps(CROSS_CHECK_DPS):
        if lo >= 0:
            return mp.ncdf(-to_mpf(lo)) - (0 if hi == INF else mp.ncdf(-to_mpf(hi)))
        if hi <= 0:
            return mp.ncdf(to_mpf(hi)) - (0 if lo == -INF else mp.ncdf(to_mpf(lo)))
        upper = 0 if hi == INF else mp.ncdf(-to_mpf(hi))
        lower = 0 if lo == -INF else mp.ncdf(to_mpf(lo))
        return 1 - upper - lower


def total_mass(pairs, cross_check):
    total = mpf(0)
    for lo, hi in pairs:
        value = mass_quad(lo, hi)
        if cross_check:
            other = mass_ncdf(lo, hi)
            with mp.workdps(CROSS_CHECK_DPS):
                if abs(other - value) > mpf(10) ** -60 * abs(other):
                    raise SystemExit(
                        f"quadrature and ncdf routes disagree on [{lo}, {hi}]: {value} vs {other}"
                    )
        total += value
    return total


# ---------------------------------------------------------------------------
# p-values by plain ratios
# ---------------------------------------------------------------------------


def reference_dps(*values):
    """At least 120 digits, plus twice the decimal size of the largest standardized value."""
    finite = [abs(v) for v in values if v not in (INF, -INF) and v != 0]
    biggest = max(finite + [Fraction(1)])
    size = len(str(biggest.numerator)) - len(str(biggest.denominator)) + 1
    return max(2 * CODE_DPS, 100) + 20 + max(0, 2 * size)


def standardize(pairs, sd):
    return [(lo if lo in (INF, -INF) else lo / sd, hi if hi in (INF, -INF) else hi / sd) for lo, hi in pairs]


def moderate(pairs):
    return all(abs(e) < CROSS_CHECK_LIMIT for pair in pairs for e in pair if e not in (INF, -INF))


def selective_reference(pairs, c, two_sided):
    """p-value of N(0,1) truncated to sorted disjoint standardized pairs."""
    cross = moderate(pairs) and abs(c) < CROSS_CHECK_LIMIT
    denominator = total_mass(pairs, cross)
    if two_sided == "symmetric":
        a = abs(c)
        extreme = clip(pairs, -INF, -a) + clip(pairs, a, INF)
        if a == 0 or extreme == pairs:
            return mpf(1)
        return total_mass(extreme, cross) / denominator
    lower = total_mass(clip(pairs, -INF, c), cross)
    upper = total_mass(clip(pairs, c, INF), cross)
    return min(mpf(1), 2 * min(lower, upper) / denominator)


def merge(pairs):
    out = []
    for lo, hi in sorted(pairs):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


def enclosure_reference(known, unexplored, c, two_sided):
    """Brute-force min and max over subsets of the unexplored pieces."""
    cuts = [-abs(c), abs(c)] if two_sided == "symmetric" else [c]
    pieces = []
    for lo, hi in unexplored:
        bounds = [lo] + [x for x in cuts if lo < x < hi] + [hi]
        pieces.extend(zip(bounds[:-1], bounds[1:]))
    values, lower_fractions = [], []
    for size in range(len(pieces) + 1):
        for subset in itertools.combinations(pieces, size):
            z = merge(list(known) + list(subset))
            values.append(selective_reference(z, c, two_sided))
            if two_sided == "equal-tailed":
                lower_fractions.append(total_mass(clip(z, -INF, c), False) / total_mass(z, False))
    p_lo, p_hi = min(values), max(values)
    if two_sided == "equal-tailed" and min(lower_fractions) <= mpf(1) / 2 <= max(lower_fractions):
        # F moves continuously between its extremes as a piece is added bit by bit.
        p_hi = mpf(1)
    return p_lo, p_hi


def naive_reference(c):
    a = abs(c)
    return 2 * mass_quad(a, INF) if a > 0 else mpf(1)


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------


def encode(value):
    """Decimal text of a reference p-value and its log10, precise to about 1e-40 in log10."""
    if value == 0:
        return {"value": "0", "log10": "-inf"}
    log10 = mp.log10(value)
    digits = 45 + max(0, int(mp.log10(abs(log10) + 1)))
    return {"value": mp.nstr(value, 45), "log10": mp.nstr(log10, digits)}


def add_selective(cases, case_id, t_obs, sd, pairs, two_sided, end_type="str", note="", shared=None):
    t_exact, sd_exact = parse(t_obs), parse(sd)
    exact_pairs = [(parse(lo), parse(hi)) for lo, hi in pairs]
    assert all(lo < hi for lo, hi in exact_pairs) and all(
        exact_pairs[i][1] < exact_pairs[i + 1][0] for i in range(len(exact_pairs) - 1)
    ), case_id
    std = standardize(exact_pairs, sd_exact)
    c = t_exact / sd_exact
    with mp.workdps(reference_dps(c, *[e for p in std for e in p])):
        value = selective_reference(std, c, two_sided)
        expected = encode(value)
    case = {
        "id": case_id, "kind": "selective", "two_sided": two_sided, "t_obs": t_obs, "sd": sd,
        "end_type": end_type, "note": note, "expected": expected,
    }
    if shared is None:
        case["intervals"] = [list(p) for p in pairs]
    else:
        case["intervals_ref"] = shared
    cases.append(case)
    print(f"{case_id}: {expected['value'][:20]}", file=sys.stderr)


def add_enclosure(cases, case_id, t_obs, sd, known, unexplored, two_sided, note=""):
    sd_exact = parse(sd)
    c = parse(t_obs) / sd_exact
    known_std = standardize([(parse(a), parse(b)) for a, b in known], sd_exact)
    unexplored_std = standardize([(parse(a), parse(b)) for a, b in unexplored], sd_exact)
    with mp.workdps(reference_dps(c, *[e for p in known_std + unexplored_std for e in p])):
        p_lo, p_hi = enclosure_reference(known_std, unexplored_std, c, two_sided)
        expected = {"lo": encode(p_lo), "hi": encode(p_hi)}
    cases.append({
        "id": case_id, "kind": "enclosure", "two_sided": two_sided, "t_obs": t_obs, "sd": sd,
        "intervals": [list(p) for p in known], "unexplored": [list(p) for p in unexplored],
        "end_type": "str", "note": note, "expected": expected,
    })
    print(f"{case_id}: {expected['lo']['value'][:16]} .. {expected['hi']['value'][:16]}", file=sys.stderr)


def add_naive(cases, case_id, t_obs, sd, m=None):
    c = parse(t_obs) / parse(sd)
    with mp.workdps(reference_dps(c)):
        naive = naive_reference(c)
        if m is None:
            expected = encode(naive)
            kind = "naive"
        else:
            expected = encode(min(mpf(1), mp.ldexp(naive, m)))
            kind = "bonferroni"
    cases.append({"id": case_id, "kind": kind, "t_obs": t_obs, "sd": sd, "m": m, "expected": expected})
    print(f"{case_id}: {expected['value'][:20]}", file=sys.stderr)


def build_cases(unions):
    """Return the list of cases; long unions go into ``unions`` and are referenced by name."""
    cases = []
    both = ("symmetric", "equal-tailed")

    # 1. |t|/sd from 0.1 to 1e200, with sd of several kinds.
    for ratio, sd in (("0.1", "1"), ("2", "0.37"), ("40", "3/7"), ("1000", "2.5e-3"), ("1e200", "1")):
        c = Fraction(ratio)
        s = parse(sd)
        t = c * s
        t_text = rational_text(t)
        for two_sided in both:
            near = [(-t * Fraction(11, 10), -t * Fraction(9, 10)),
                    (t * Fraction(19, 20), t * Fraction(21, 20))]
            pairs = [[rational_text(a), rational_text(b)] for a, b in near]
            add_selective(cases, f"ratio{ratio}-two-bands-{two_sided}", t_text, sd, pairs, two_sided,
                          note="two bands at about +-t_obs")
            rays = [("-inf", rational_text(-t * Fraction(3, 4))), ("-1/2", "1/4"),
                    (rational_text(t * Fraction(4, 5)), "inf")]
            if t * Fraction(4, 5) > Fraction(1, 4) and -t * Fraction(3, 4) < Fraction(-1, 2):
                add_selective(cases, f"ratio{ratio}-rays-{two_sided}", t_text, sd, [list(p) for p in rays],
                              two_sided, note="rays beyond selection thresholds plus a central band")
        add_naive(cases, f"naive-ratio{ratio}", t_text, sd)
        for m in (1, 10, 1024, 5000):
            add_naive(cases, f"bonferroni-ratio{ratio}-m{m}", t_text, sd, m)
    add_naive(cases, "naive-zero", "0", "1")
    add_naive(cases, "bonferroni-zero-m0", "0", "1", 0)
    add_naive(cases, "bonferroni-m0", "3", "1", 0)

    # 2. p-values below 1e-308, where float64 underflows.
    for two_sided in both:
        add_selective(cases, f"underflow-40-{two_sided}", "40.5", "1", [["-1", "1"], ["40", "41"]], two_sided,
                      note="p about 1e-358")
        add_selective(cases, f"underflow-1000-{two_sided}", "-1000.25", "1",
                      [["-1001", "-1000"], ["-2", "3"], ["999", "1002"]], two_sided, note="p about 1e-217000")

    # 3. Unions of 2000 intervals, ends as binary64 floats.
    rng = random.Random(20240611)
    for label, low, high, sd in (("center", -9.0, 9.0, 1.7), ("tail", 37.0, 48.0, 1.0)):
        ends = sorted({rng.uniform(low, high) * sd for _ in range(4000)})
        ends = ends[:4000] if len(ends) % 2 == 0 else ends[:-1]
        pairs = list(zip(ends[::2], ends[1::2]))
        k = len(pairs) // 3
        t = (pairs[k][0] + pairs[k][1]) / 2
        if label == "tail":
            pairs = [(-INF, -36.0)] + pairs
        text_pairs = [[hexs(a), hexs(b)] for a, b in pairs]
        unions[f"many-{label}"] = text_pairs
        for two_sided in both:
            add_selective(cases, f"many-{label}-{two_sided}", float(t).hex(), float(sd).hex(), text_pairs,
                          two_sided, end_type="float", note=f"{len(pairs)} intervals", shared=f"many-{label}")

    # 4. Intervals 1e-13 wide relative to their position.
    narrow = []
    for center in (Fraction(-7, 2), Fraction(2), Fraction(5), Fraction(40)):
        lo = center
        hi = center + abs(center) * Fraction(1, 10**13)
        narrow.append((lo, hi))
    narrow.sort()
    text = [[rational_text(a), rational_text(b)] for a, b in narrow]
    for t_text in ("5000000000000025/1000000000000000", "40000000000002/1000000000000"):
        for two_sided in both:
            add_selective(cases, f"narrow-t{t_text[:4]}-{two_sided}", t_text, "1", text, two_sided,
                          note="components 1e-13 wide relative")
    add_selective(cases, "narrow-1e-40", "2.00000000000000000000000000000000000000005", "1",
                  [["-1", "1"], ["2", "2.0000000000000000000000000000000000000001"]], "symmetric",
                  note="a component 1e-40 wide, ends beyond float64 resolution")

    # 5. Rational and decimal-string ends.
    for two_sided in both:
        add_selective(cases, f"rational-{two_sided}", "2/3", "3/7", [["-13/3", "-1/7"], ["1/3", "7/3"]],
                      two_sided, note="rational ends and sd")
        add_selective(cases, f"decimal-{two_sided}", "2.0000000000000000000005", "0.1",
                      [["-0.3", "0.1"], ["2", "2.000000000000000000001"]], two_sided,
                      note="decimal ends closer than float64 can resolve")

    # 6. t_obs at an end of Z: equal-tailed gives 0, symmetric does not.
    for two_sided in both:
        add_selective(cases, f"at-lowest-end-{two_sided}", "1.5", "1", [["1.5", "2"], ["3", "inf"]],
                      two_sided, note="t_obs is the lowest point of Z")
        add_selective(cases, f"at-highest-end-{two_sided}", "2.5", "1", [["-inf", "-1"], ["0.5", "2.5"]],
                      two_sided, note="t_obs is the highest point of Z")

    # 7. Enclosures with unexplored rays and slivers.
    for two_sided in both:
        add_enclosure(cases, f"enclosure-rays-{two_sided}", "2.5", "1",
                      [["-3", "-2"], ["-0.5", "0.7"], ["2", "3"]], [["-inf", "-3"], ["3", "inf"]],
                      two_sided)
        add_enclosure(cases, f"enclosure-slivers-{two_sided}", "1.2", "0.5",
                      [["-2", "-0.25"], ["0.5", "1.5"]], [["-0.25", "0.1"], ["1.5", "2"], ["2.5", "inf"]],
                      two_sided)
        add_enclosure(cases, f"enclosure-far-{two_sided}", "40.5", "1",
                      [["-1", "1"], ["40", "41"]], [["-inf", "-1"], ["1", "2"], ["41", "inf"]], two_sided)
    return cases


def main():
    unions = {}
    cases = build_cases(unions)
    table = {
        "description": (
            "Reference p-values for dalverify, computed by tests/reference/make_pvalue_table.py "
            "with normalized quadrature and ncdf differences as a cross-check (see its docstring). "
            "A case with 'intervals_ref' uses the union of that name in 'unions'."
        ),
        "mpmath_version": mpmath.__version__,
        "unions": unions,
        "cases": cases,
    }
    OUTPUT.write_text(json.dumps(table, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {OUTPUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
