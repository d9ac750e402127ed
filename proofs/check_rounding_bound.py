"""Exact check of proofs/rounding_bound.md.

Run ``python proofs/check_rounding_bound.py``; ``main()`` returns 0 when
every claim is true and raises AssertionError naming the claim otherwise.
"""

from __future__ import annotations

import math
import random
import sys
from fractions import Fraction

import numpy as np

from dalverify.certify.piece_check import float_zones, gamma

U = Fraction(1, 2**53)


def gamma_exact(n: int) -> Fraction:
    return n * U / (1 - n * U)


def check_gamma_and_inflation() -> None:
    """Section 4: gamma(n) >= gamma_n, and (1 + 3 gamma_{n+2})(1 - gamma_n)(1 - u)^3 >= 1."""
    for n in list(range(1, 200)) + [10**k for k in range(3, 10)] + [12345678]:
        assert Fraction(gamma(n)) >= gamma_exact(n), f"section 4: gamma({n}) is below gamma_n"
        factor = (1 + 3 * Fraction(gamma(n + 2))) * (1 - gamma_exact(n)) * (1 - U) ** 3
        assert factor >= 1, f"section 4: inflation factor too small at n={n}"
    # The float evaluation of the inflation itself rounds up enough.
    for n in (1, 10, 577, 10**6):
        value = 1.0 + 3.0 * gamma(n + 2)
        assert Fraction(value) * (1 - gamma_exact(n)) * (1 - U) ** 3 >= 1, f"section 4: float factor at n={n}"


def _orders(products: list[float]) -> dict[str, float]:
    """Several evaluation orders of a float64 sum."""
    forward = 0.0
    for p in products:
        forward += p
    backward = 0.0
    for p in reversed(products):
        backward += p

    def pairwise(values: list[float]) -> float:
        if len(values) == 1:
            return values[0]
        mid = len(values) // 2
        return pairwise(values[:mid]) + pairwise(values[mid:])

    return {"forward": forward, "backward": backward, "pairwise": pairwise(products),
            "numpy": float(np.sum(np.array(products))), "sorted": sum(sorted(products, key=abs))}


def check_sums_of_products(rng: random.Random) -> None:
    """Section 2: |fl(sum x_i y_i) - sum x_i y_i| <= gamma_n sum |x_i y_i| in every order, with a bias."""
    cases = 0
    for n in (1, 2, 3, 9, 27, 100, 577):
        for _ in range(12):
            x = [rng.gauss(0, 1) * 10 ** rng.uniform(-8, 8) for _ in range(n)]
            y = [rng.gauss(0, 1) * 10 ** rng.uniform(-8, 8) for _ in range(n)]
            bias = rng.gauss(0, 1)
            # Heavy cancellation: make the exact sum nearly zero.
            if n > 1:
                partial = sum(Fraction(a) * Fraction(b) for a, b in zip(x[:-1], y[:-1])) + Fraction(bias)
                y[-1] = float(-partial / Fraction(x[-1])) if x[-1] != 0 else y[-1]
            exact = sum(Fraction(a) * Fraction(b) for a, b in zip(x, y)) + Fraction(bias)
            size = sum(abs(Fraction(a) * Fraction(b)) for a, b in zip(x, y)) + abs(Fraction(bias))
            products = [a * b for a, b in zip(x, y)] + [bias]
            for name, value in _orders(products).items():
                assert abs(Fraction(value) - exact) <= gamma_exact(n + 1) * size, f"section 2: {name} order, n={n}"
                cases += 1
            dotted = float(np.dot(np.array(x), np.array(y))) + bias
            assert abs(Fraction(dotted) - exact) <= gamma_exact(n + 1) * size, f"section 2: BLAS dot, n={n}"
    assert cases > 300


def check_propagation(rng: random.Random) -> None:
    """Section 3: the propagated radius bounds the error of a dense + ReLU chain with a fixed pattern."""
    for trial in range(30):
        width = [3, 7, 5, 2]
        x_hat = np.array([rng.gauss(0, 1) for _ in range(width[0])])
        x_exact = [Fraction(v) for v in x_hat]
        radius = np.zeros(width[0])
        for layer, (n_in, n_out) in enumerate(zip(width, width[1:])):
            weight = np.array([[rng.gauss(0, 1) * 10 ** rng.uniform(-3, 3) for _ in range(n_in)] for _ in range(n_out)])
            bias = np.array([rng.gauss(0, 1) for _ in range(n_out)])
            n = n_in + 1
            y_hat = weight @ x_hat + bias
            bound = np.abs(weight) @ radius + gamma(n) * (np.abs(weight) @ np.abs(x_hat) + np.abs(bias))
            radius = bound * (1 + 3 * gamma(n + 2))
            y_exact = [sum(Fraction(w) * v for w, v in zip(row, x_exact)) + Fraction(c) for row, c in zip(weight, bias)]
            for value, r, exact in zip(y_hat, radius, y_exact):
                assert abs(Fraction(float(value)) - exact) <= Fraction(float(r)), f"section 3: trial {trial}, layer {layer}"
            # A fixed pattern: the sign of the float value decides, exact copies or zeros follow.
            active = y_hat > 0
            x_hat = np.where(active, y_hat, 0.0)
            radius = np.where(active, radius, 0.0)
            x_exact = [v if on else Fraction(0) for v, on in zip(y_exact, active)]


def check_zones(rng: random.Random) -> None:
    """Section 5: on the computed zone, every (alpha*, beta*) of the box has the declared sign."""
    finite_ends = 0
    for _ in range(3000):
        alpha, beta = rng.gauss(0, 1) * 10 ** rng.uniform(-5, 5), rng.gauss(0, 1) * 10 ** rng.uniform(-5, 5)
        rad_a = abs(alpha) * 10 ** rng.uniform(-16, -1)
        rad_b = abs(beta) * 10 ** rng.uniform(-16, 0.5)
        sign = rng.choice([-1.0, 1.0])
        lo, hi = (v[0] for v in float_zones(np.array([alpha]), np.array([beta]), np.array([rad_a]),
                                            np.array([rad_b]), np.array([sign])))
        if not lo <= hi:
            continue
        corners = [(Fraction(alpha) + da * Fraction(rad_a), Fraction(beta) + db * Fraction(rad_b))
                   for da in (-1, 1) for db in (-1, 1)]
        for end in (lo, hi):
            if math.isfinite(end):
                finite_ends += 1
                for a_star, b_star in corners:
                    assert sign * (a_star + b_star * Fraction(end)) >= 0, "section 5: sign proven at a zone end"
        # Unbounded ends: the slope of every corner points the right way.
        for end, direction in ((lo, -1), (hi, 1)):
            if math.isinf(end):
                assert all(sign * b_star * direction >= 0 for _, b_star in corners), "section 5: unbounded zone"
    assert finite_ends > 1000, "section 5: enough zone ends were checked"


def check_sliver_argument(rng: random.Random) -> None:
    """Section 5: with one flipped unit and every other unit valid, the two validity sets cover the gap.

    Brute force on two-layer networks whose second-layer pre-activations do
    not depend on the flipped unit except through its affine value.
    """
    checked = 0
    for _ in range(200):
        w1 = [Fraction(rng.randint(-4, 4), 2) for _ in range(3)]
        b1 = [Fraction(rng.randint(-4, 4), 4) for _ in range(3)]
        w2 = [Fraction(rng.randint(-4, 4), 2) for _ in range(3)]

        def pre(z: Fraction, pattern: tuple[bool, ...]) -> tuple[list[Fraction], Fraction]:
            first = [w * z + c for w, c in zip(w1, b1)]
            hidden = [v if on else Fraction(0) for v, on in zip(first, pattern)]
            return first, sum(w * h for w, h in zip(w2, hidden)) + Fraction(1, 8)

        def valid(z: Fraction, pattern: tuple[bool, ...]) -> bool:
            first, _ = pre(z, pattern)
            return all((v >= 0) if on else (v <= 0) for v, on in zip(first, pattern))

        # Patterns k and k + 1 differ in unit 0 only. When units 1 and 2 keep
        # their signs on a window, one of the two patterns is valid at every z.
        if w1[0] == 0:
            continue
        root = -b1[0] / w1[0]
        window = [root + Fraction(d, 64) for d in range(-8, 9)]
        others = tuple((w1[j] * root + b1[j]) >= 0 for j in (1, 2))
        if not all(all(((w1[j] * z + b1[j]) >= 0) == others[j - 1] or w1[j] * z + b1[j] == 0 for j in (1, 2)) for z in window):
            continue
        left = (w1[0] < 0,) + others
        right = (w1[0] > 0,) + others
        for z in window:
            assert valid(z, left) or valid(z, right), "section 5: the sliver is covered"
        checked += 1
    assert checked > 20, "section 5: enough slivers were checked"


def main() -> int:
    rng = random.Random(53)
    check_gamma_and_inflation()
    check_sums_of_products(rng)
    check_propagation(rng)
    check_zones(rng)
    check_sliver_argument(rng)
    return 0


if __name__ == "__main__":
    sys.exit(main())
