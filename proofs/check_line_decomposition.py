"""Symbolic check of proofs/line_decomposition.md: d = a + b t_obs and Cov(a, T) = 0.

Run ``python proofs/check_line_decomposition.py``; ``main()`` returns 0 when
every claim is true and raises AssertionError naming the claim otherwise.
"""

from __future__ import annotations

import random
import sys
from fractions import Fraction

import sympy as sp


def canonical(expr):
    """Bring a rational expression (or matrix of them) to canonical form, so zero shows as 0."""
    if isinstance(expr, sp.MatrixBase):
        return expr.applyfunc(lambda entry: sp.cancel(sp.together(entry)))
    return sp.cancel(sp.together(expr))


def symbolic_setting(n: int, region: list[int]) -> dict:
    """Generic symmetric Sigma, scale c, data d and the derived nu, SigmaTilde, s^2, b, Q."""
    entries = {}
    for i in range(n):
        for j in range(i, n):
            entries[(i, j)] = entries[(j, i)] = sp.Symbol(f"S{i}{j}", real=True)
    sigma = sp.Matrix(n, n, lambda i, j: entries[(i, j)])
    c = sp.Symbol("c", nonnegative=True)
    d = sp.Matrix(sp.symbols(f"d0:{2 * n}", real=True))
    indicator = sp.Matrix([1 if i in region else 0 for i in range(n)])
    size = len(region)
    nu = sp.Matrix.vstack(indicator, -indicator) / size
    sigma_tilde = sp.diag(sigma, c * sigma)
    s2 = (nu.T * sigma_tilde * nu)[0, 0]
    b = sigma_tilde * nu / s2
    t = (nu.T * d)[0, 0]
    a = d - b * t
    return {"sigma": sigma, "c": c, "d": d, "indicator": indicator, "size": size, "nu": nu,
            "sigma_tilde": sigma_tilde, "s2": s2, "b": b, "t": t, "a": a, "n": n}


def check_case(n: int, region: list[int]) -> None:
    ctx = symbolic_setting(n, region)
    nu, b, a, d, t, s2 = ctx["nu"], ctx["b"], ctx["a"], ctx["d"], ctx["t"], ctx["s2"]
    sigma_tilde = ctx["sigma_tilde"]
    where = f"n={n}, region={region}"

    # Claim 1: a + b t_obs = d.
    assert canonical(a + b * t - d) == sp.zeros(2 * n, 1), f"claim 1 at {where}"

    # Claim 2: nu^T b = 1, nu^T a = 0, statistic of a + b z is z.
    z = sp.Symbol("z", real=True)
    assert canonical((nu.T * b)[0, 0] - 1) == 0, f"claim 2: nu^T b = 1 at {where}"
    assert canonical((nu.T * a)[0, 0]) == 0, f"claim 2: nu^T a = 0 at {where}"
    assert canonical((nu.T * (a + b * z))[0, 0] - z) == 0, f"claim 2: statistic on the line at {where}"

    # Claim 3: Cov(Q, T) = (I - b nu^T) SigmaTilde nu = 0, and the full covariance of Q is
    # SigmaTilde - b b^T s^2 (so Q carries no T component).
    projector = sp.eye(2 * n) - b * nu.T
    assert canonical(projector * sigma_tilde * nu) == sp.zeros(2 * n, 1), f"claim 3: Cov(Q, T) = 0 at {where}"
    cov_q = projector * sigma_tilde * projector.T
    assert canonical(cov_q - (sigma_tilde - b * b.T * s2)) == sp.zeros(2 * n, 2 * n), f"claim 3: Cov(Q) at {where}"

    # Claim 4: closed forms with w = Sigma 1_M and q = 1_M^T w.
    w = ctx["sigma"] * ctx["indicator"]
    q = (ctx["indicator"].T * w)[0, 0]
    c, size = ctx["c"], ctx["size"]
    assert canonical(s2 - (1 + c) * q / size**2) == 0, f"claim 4: s^2 at {where}"
    b_closed = sp.Matrix.vstack(w, -c * w) * size / ((1 + c) * q)
    assert canonical(b - b_closed) == sp.zeros(2 * n, 1), f"claim 4: b at {where}"
    t_closed = sum(d[i] - d[n + i] for i in region) / size
    assert canonical(t - t_closed) == 0, f"claim 4: t_obs at {where}"

    # Claim 5: with c = 0 the reference half of b vanishes and a keeps x_ref.
    b0 = b.subs(c, 0)
    a0 = a.subs(c, 0)
    assert canonical(b0[n:, :]) == sp.zeros(n, 1), f"claim 5: b_ref = 0 at {where}"
    assert canonical(a0[n:, :] - d[n:, :]) == sp.zeros(n, 1), f"claim 5: a_ref = x_ref at {where}"


def reconstruction_error(d: float, b: float, t: float) -> tuple[Fraction, Fraction, Fraction]:
    """Return (error, proven, used) of claim 6 for p = fl(b t), a = fl(d - p), error = |fl(a + p) - d|."""
    u = Fraction(1, 2**53)
    p = b * t
    a = d - p
    error = abs(Fraction(a + p) - Fraction(d))
    proven = u * (2 * abs(Fraction(d)) + abs(Fraction(p))) * (1 + u)
    used = 3 * u * (abs(Fraction(d)) + abs(Fraction(b) * Fraction(t)))
    return error, proven, used


def reconstruction_bound_holds(d: float, b: float, t: float) -> bool:
    """Claim 6: |fl(fl(d - p) + p) - d| <= u (2|d| + |p|)(1 + u) < 3u (|d| + |b t|)."""
    error, proven, used = reconstruction_error(d, b, t)
    return error <= proven <= used


def check_reconstruction_bound() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        d = rng.uniform(-1, 1) * 10 ** rng.randint(-8, 8)
        b = rng.uniform(-1, 1) * 10 ** rng.randint(-8, 8)
        t = rng.uniform(-1, 1) * 10 ** rng.randint(-8, 8)
        assert reconstruction_bound_holds(d, b, t), f"claim 6 at d={d!r}, b={b!r}, t={t!r}"


def main() -> int:
    check_case(1, [0])
    check_case(2, [0, 1])
    check_case(2, [1])
    check_case(3, [0, 2])
    check_reconstruction_bound()
    return 0


if __name__ == "__main__":
    sys.exit(main())
