"""Exact check of proofs/direction_of_travel.md against the rule in dalverify/line/rule.py.

Run ``python proofs/check_direction_of_travel.py``; ``main()`` returns 0 when
every claim is true and raises AssertionError naming the claim otherwise.
"""

from __future__ import annotations

import math
import random
import sys
from fractions import Fraction

import numpy as np

from dalverify.line import rule


def decide(alpha: float, beta: float, z: float) -> bool:
    """Apply the coded rule to one unit at one point."""
    a, b = np.array([alpha]), np.array([beta])
    with np.errstate(divide="ignore", invalid="ignore"):
        root = rule.roots(np, a, b)
        return bool(rule.active(np, a, b, root, z)[0])


def sign_to_the_right(alpha: float, beta: float, z: float) -> bool:
    """Exact: is alpha + beta w >= 0 for all w in [z, z + h), h > 0 small?"""
    a, b, zq = Fraction(alpha), Fraction(beta), Fraction(z)
    value = a + b * zq
    if value != 0:
        return value > 0
    return b >= 0 if b != 0 else a >= 0


def dyadic(rng: random.Random, spread: int = 6) -> float:
    return rng.randint(-64, 64) / 2 ** rng.randint(0, spread)


def check_step_function(rng: random.Random) -> None:
    """Claim 1: decisions only change at stored roots, and are right-continuous there."""
    for _ in range(300):
        alpha, beta = dyadic(rng), dyadic(rng)
        if beta == 0:
            points = [dyadic(rng) for _ in range(20)]
            assert len({decide(alpha, beta, z) for z in points}) == 1, "claim 1: zero slope is constant"
            continue
        root = -alpha / beta
        for z in (math.nextafter(root, -math.inf), root, math.nextafter(root, math.inf), root - 1.0, root + 1.0):
            expected = (z >= root) if beta > 0 else (z < root)
            assert decide(alpha, beta, z) == expected, f"claim 1 at alpha={alpha}, beta={beta}, z={z}"


def check_direction_of_travel(rng: random.Random) -> None:
    """Claim 2: with an exactly representable root the rule is the sign to the right of z."""
    for _ in range(2000):
        # Power-of-two slopes make -alpha/beta exact, so r is the exact root.
        beta = rng.choice([-1, 1]) * 2.0 ** rng.randint(-4, 4)
        alpha = dyadic(rng)
        root = -alpha / beta
        assert Fraction(root) == -Fraction(alpha) / Fraction(beta)
        for z in (root, math.nextafter(root, -math.inf), math.nextafter(root, math.inf), dyadic(rng)):
            assert decide(alpha, beta, z) == sign_to_the_right(alpha, beta, z), (
                f"claim 2 at alpha={alpha}, beta={beta}, z={z}")
    # Zero slope: active exactly when alpha >= 0 (both zeros included), whatever z is.
    for alpha in (0.0, -0.0, 0.5, -0.5):
        for beta in (0.0, -0.0):
            for z in (-1.0, 0.0, 2.0):
                assert decide(alpha, beta, z) == (alpha >= 0), f"claim 2: zero slope at alpha={alpha}, beta={beta}"
    # A non-representable root: the rule may differ from the exact sign only at z = r.
    for _ in range(2000):
        alpha, beta = rng.uniform(-3, 3), rng.uniform(-3, 3)
        if beta == 0:
            continue
        r = -alpha / beta
        for z in (r, math.nextafter(r, -math.inf), math.nextafter(r, math.inf)):
            if z != r:
                assert decide(alpha, beta, z) == sign_to_the_right(alpha, beta, z), "claim 2: off the stored root"


def walk(units: list[tuple[float, float]], lo: float, hi: float) -> list[tuple[float, float, tuple[bool, ...], list[int]]]:
    """Walk ``[lo, hi]`` with the coded rule; return pieces as (lo, hi, pattern, binding units)."""
    alpha = np.array([u[0] for u in units])
    beta = np.array([u[1] for u in units])
    with np.errstate(divide="ignore", invalid="ignore"):
        root = rule.roots(np, alpha, beta)
    pieces = []
    z = lo
    while True:
        with np.errstate(invalid="ignore"):
            pattern = tuple(bool(v) for v in rule.active(np, alpha, beta, root, z))
            upcoming = rule.next_candidates(np, root, z)
        nxt = float(upcoming.min()) if upcoming.size else math.inf
        end = min(nxt, hi)
        binding = [int(i) for i in np.flatnonzero(upcoming == nxt)] if nxt < hi else []
        pieces.append((z, end, pattern, binding))
        if nxt >= hi:
            return pieces
        z = end


def check_breakpoints(rng: random.Random) -> None:
    """Claim 3 and 4: one breakpoint per distinct root, zero slopes never bind, no zero width,
    and the pattern is valid (closed signs) on every piece in exact arithmetic."""
    for _ in range(200):
        units = []
        for _ in range(rng.randint(1, 6)):
            beta = rng.choice([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
            units.append((dyadic(rng), beta))
        # Plant a tie: a second unit with the same root (slope scaled by 2).
        source = rng.randrange(len(units))
        units.append((2 * units[source][0], 2 * units[source][1]))
        pieces = walk(units, -64.0, 64.0)
        roots = sorted({-a / b for a, b in units if b != 0 and -64.0 < -a / b < 64.0})
        assert [p[1] for p in pieces[:-1]] == roots, "claim 3: one breakpoint per distinct root"
        for lo, hi, pattern, binding in pieces:
            assert lo < hi, "claim 3: no zero-width piece"
            assert all(units[i][1] != 0 for i in binding), "claim 3: zero slopes never bind"
            assert all(-units[i][0] / units[i][1] == hi for i in binding), "claim 3: binding units' roots are the end"
            for (alpha, beta), active in zip(units, pattern):
                sign = 1 if active else -1
                for w in (Fraction(lo), Fraction(hi)):
                    if math.isfinite(float(w)):
                        assert sign * (Fraction(alpha) + Fraction(beta) * w) >= 0, "claim 4: valid on the closed piece"
        for (lo, _, before, binding), (_, _, after, _) in zip(pieces, pieces[1:]):
            flipped = {i for i, (x, y) in enumerate(zip(before, after)) if x != y}
            assert flipped == set(binding), "claim 1: exactly the binding units flip"


def main() -> int:
    rng = random.Random(20260101)
    check_step_function(rng)
    check_direction_of_travel(rng)
    check_breakpoints(rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())
