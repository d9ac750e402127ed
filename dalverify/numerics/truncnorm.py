"""Logarithms of standard normal masses of intervals, in extended precision.

Every function here works in mpmath at a requested number of significant
decimal digits ``dps`` and returns natural logarithms as ``mpmath.mpf``,
whose exponent range is unbounded, so masses such as ``1e-400`` or
``exp(-5e399)`` are represented without underflow.

How each mass is computed
-------------------------
* The upper tail ``Q(x) = P(N(0, 1) >= x)`` for ``x >= 0`` comes from
  ``erfc(x / sqrt(2)) / 2``. For large ``x`` (see :func:`asymptotic_threshold`)
  the asymptotic series of the Mills ratio is used instead,
  ``Q(x) = phi(x) / x * sum_n (-1)^n (2n - 1)!! / x^(2n)``, whose remainder
  is bounded by the first omitted term. ``mpmath.erfc`` (1.3.0) raises
  OverflowError for arguments above about 1.1e154 and takes milliseconds
  above about 1e100, so the series is the only route there.
* The mass of ``[lo, hi]`` with ``lo >= 0`` is
  ``log Q(lo) + log(1 - exp(log Q(hi) - log Q(lo)))``: the tail away from the
  mode, never a difference of two CDF values near 1. Intervals with
  ``hi <= 0`` are mirrored. An interval around 0 has mass
  ``1 - Q(hi) - Q(-lo)``.
* Working precision is raised per interval above ``dps`` by guard digits
  that cover the size of ``log Q`` (about ``x^2 / 2``, so that its absolute
  error stays below ``10^-dps``) and the cancellation in ``log Q(hi) - log Q(lo)``
  for narrow intervals (about ``log10(x / (hi - lo))`` digits).
* A union is summed outward from 0 with a log-sum-exp. Once the components
  not yet visited lie beyond distance ``a`` from 0, their total mass is at
  most ``Q(a_left) + Q(a_right) <= 2 phi(a) / a``. Summation stops when that
  bound is below ``10^-(dps + 10)`` times the largest term, so the result
  changes by less than that relative amount.

The derivations are in ``proofs/selective_pvalue.md``. Global ``mp.dps`` is
never changed: every computation runs inside ``mp.workdps``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

from mpmath import libmp, mp, mpf

from dalverify.errors import InputError, NumericalError
from dalverify.numerics.intervals import Endpoint, IntervalUnion, as_exact, endpoint_to_decimal

__all__ = [
    "asymptotic_threshold",
    "log1mexp",
    "log_normal_mass",
    "log_tail",
    "log_union_mass",
    "logsumexp",
]

_LOG10_2 = math.log10(2.0)
_LN10 = math.log(10.0)
_INF = float("inf")

#: Extra decimal digits carried on top of the requested precision in every
#: mass, before the per-interval guard digits are added.
_BASE_GUARD_DIGITS = 10

#: Precisions are rounded up to a multiple of this many digits so that the
#: tails at a shared end are found in the cache by different intervals.
_DIGIT_STEP = 10

#: Bound on the number of cached tail values and interval masses (each keyed
#: by its exact ends and precision). Repeated p-values over one truncation
#: set reuse them.
_TAIL_CACHE_SIZE = 1 << 16


def _check_dps(dps: Any) -> int:
    if isinstance(dps, bool) or not isinstance(dps, int) or dps < 15 or dps > 100_000:
        raise InputError(f"dps must be an int between 15 and 100000 (decimal digits), got {dps!r}")
    return dps


def _log10_abs(value: Fraction) -> float:
    """Estimate log10 |value| of a non-zero Fraction to within about 0.31."""
    numerator = abs(value.numerator)
    return (numerator.bit_length() - value.denominator.bit_length()) * _LOG10_2


def _round_digits(digits: float) -> int:
    return int(math.ceil(digits / _DIGIT_STEP)) * _DIGIT_STEP


def _to_mpf(value: Endpoint) -> mpf:
    """Round an exact value to the current working precision (to nearest)."""
    if isinstance(value, float):
        return mpf(value)
    return mp.make_mpf(libmp.from_rational(value.numerator, value.denominator, mp.prec, libmp.round_nearest))


def log1mexp(d: Any) -> mpf:
    """Return ``log(1 - exp(d))`` for ``d <= 0`` at the current precision.

    Near 0 (``d > -log 2``) it forms ``1 - exp(d)`` with the digits lost to
    cancellation added to the precision, and below ``-log 2`` it uses
    ``log1p(-exp(d))`` (where ``exp(d) <= 1/2``), so neither form loses
    digits. ``d = 0`` gives ``-inf`` and ``d = -inf`` gives 0.
    """
    if not isinstance(d, mpf):
        d = mpf(d)
    if d > 0:
        raise InputError(f"log1mexp needs d <= 0, got {d}")
    if d == 0:
        return mpf("-inf")
    if mp.isinf(d):
        return mpf(0)
    if d > -mp.ln2:
        # 1 - exp(d) loses about log10(1 / |d|) digits to cancellation; those
        # digits are added for the subtraction (faster than mpmath's expm1).
        extra = max(0, -int(mp.mag(d) * _LOG10_2)) + 5
        with mp.workdps(mp.dps + extra):
            one_minus = 1 - mp.exp(d)
        return mp.log(one_minus)
    return mp.log1p(-mp.exp(d))


def logsumexp(values: Iterable[Any], dps: int) -> mpf:
    """Return ``log(sum(exp(v)))`` of natural-log values at ``dps`` digits.

    The precision is raised by the number of digits in the largest
    ``|v|`` so that the absolute error of the result stays near ``10^-dps``.
    An empty input or all ``-inf`` gives ``-inf``.
    """
    _check_dps(dps)
    # mpf(v) rounds an mpf to the current global precision, so mpf inputs
    # are kept as they are. Other inputs are read at dps + 20 digits.
    with mp.workdps(dps + 20):
        items = [v if isinstance(v, mpf) else mpf(v) for v in values]
    finite = [v for v in items if not mp.isinf(v)]
    if any(mp.isinf(v) and v > 0 for v in items):
        return mpf("inf")
    if not finite:
        return mpf("-inf")
    biggest = max(abs(v) for v in finite)
    # mag(v) is the binary exponent with |v| < 2^mag(v); 0.302 > log10(2).
    extra = max(0, int(mp.mag(biggest) * 0.302) + 1) if biggest > 0 else 0
    with mp.workdps(dps + _BASE_GUARD_DIGITS + extra):
        top = max(finite)
        total = mp.fsum(mp.exp(v - top) for v in finite)
        return top + mp.log(total)


def asymptotic_threshold(digits: int) -> float:
    """Smallest ``x`` at which the Mills-ratio series is used at ``digits`` digits.

    At ``x^2 >= 14 (digits + 5)`` the terms ``(2n - 1)!! / x^(2n)`` fall below
    ``10^-(digits + 2)`` long before they start to grow again (the ratio of
    successive terms is ``(2n + 1) / x^2``), so the truncated series carries
    the full precision.
    """
    return max(10.0, math.sqrt(14.0 * (digits + 5)))


@functools.lru_cache(maxsize=_TAIL_CACHE_SIZE)
def _log_upper_tail(x: Endpoint, digits: int) -> mpf:
    """Return ``log Q(x)`` for an exact ``x`` at ``digits`` significant digits (cached)."""
    if isinstance(x, float):
        return mpf("-inf") if x > 0 else mpf(0)
    with mp.workdps(digits):
        if x < 0:
            return mp.log1p(-mp.exp(_log_upper_tail(-x, digits)))
        if x >= asymptotic_threshold(digits):
            return _log_upper_tail_series(x, digits)
        erfc_value = mp.erfc(_to_mpf(x) / mp.sqrt(2))
        return mp.log(erfc_value) - mp.ln2


def _log_upper_tail_series(x: Fraction, digits: int) -> mpf:
    """Return ``log Q(x)`` from the asymptotic series at the caller's precision.

    The sum runs in binary fixed point with 20 guard bits, so each term adds
    at most one unit in the last place. ``1 / x^2`` is formed exactly from
    the rational ``x``, and ``-x^2 / 2`` is rounded once from the exact
    rational ``x^2 / 2``.
    """
    working_bits = mp.prec + 20
    one = 1 << working_bits
    numerator, denominator = x.numerator, x.denominator
    inverse_square = (denominator * denominator << working_bits) // (numerator * numerator)
    cutoff = one // 10 ** (digits + 2)
    total = one
    term = one
    n = 0
    while True:
        n += 1
        term = (term * (2 * n - 1) * inverse_square) >> working_bits
        if term < cutoff:
            break
        if n % 2:
            total -= term
        else:
            total += term
        # The threshold rules this out (proofs/selective_pvalue.md, section 3).
        if (2 * n + 1) * inverse_square >= one:
            raise NumericalError(
                f"the asymptotic series of Q(x) at x={endpoint_to_decimal(x, 7)} stopped decreasing "
                f"at term {n} before reaching {digits} digits, so the series threshold is too low"
            )
    series = mp.make_mpf(libmp.from_man_exp(total, -working_bits, mp.prec, libmp.round_nearest))
    half_square = _to_mpf(x * x / 2)
    return -half_square - mp.log(_to_mpf(x)) - _log_sqrt_two_pi() + mp.log(series)


def _log_sqrt_two_pi() -> mpf:
    """Return ``log(2 pi) / 2`` at the current precision."""
    return mp.log(2 * mp.pi) / 2


def _tail_digits(x: Endpoint, dps: int) -> int:
    """Return the digits that give ``log Q(x)`` an absolute error near ``10^-dps``."""
    guard = _BASE_GUARD_DIGITS
    if not isinstance(x, float) and x != 0:
        magnitude = _log10_abs(x)
        if magnitude > 0:
            guard += 2 * magnitude + 1
    return _round_digits(dps + guard)


def log_tail(x: Any, dps: int = 50) -> mpf:
    """Return ``log P(N(0, 1) >= x)`` with about ``dps`` correct digits.

    Parameters
    ----------
    x : real
        Any value accepted by :func:`~dalverify.numerics.intervals.as_exact`
        (float, int, Fraction, decimal string, mpf), ``+-inf`` allowed.
    dps : int
        Decimal digits of accuracy requested. The absolute error of the
        logarithm is about ``10^-dps`` even when ``x^2 / 2`` is huge.

    Returns
    -------
    mpmath.mpf
        The natural logarithm; ``-inf`` for ``x = +inf`` and 0 for ``x = -inf``.
    """
    _check_dps(dps)
    exact = as_exact(x, name="x")
    return _log_upper_tail(exact, _tail_digits(exact, dps))


def _one_sided_digits(near: Fraction, far: Endpoint, dps: int) -> int:
    """Return the working digits for the mass of ``[near, far]`` with ``0 <= near < far``.

    ``log Q(near)`` must have absolute error below ``10^-dps`` times
    ``min(1, |d|)``, where ``d = log Q(far) - log Q(near)`` is about
    ``-(far - near) * max(near, 1)`` when small.
    """
    guard = float(_BASE_GUARD_DIGITS)
    if near > 0:
        magnitude = _log10_abs(near)
        guard += max(0.0, 2 * magnitude) + 1
        scale = max(0.0, magnitude)
    else:
        scale = 0.0
    if not isinstance(far, float):
        width_digits = _log10_abs(far - near) + scale
        if width_digits < 1:
            guard += 1 - width_digits + 1
    return _round_digits(dps + guard)


def _central_digits(lo: Endpoint, hi: Endpoint, dps: int) -> int:
    """Return the working digits for the mass ``1 - Q(hi) - Q(-lo)`` of ``[lo, hi]`` with ``lo < 0 < hi``."""
    guard = float(_BASE_GUARD_DIGITS)
    if not isinstance(lo, float) and not isinstance(hi, float):
        width_digits = _log10_abs(hi - lo)
        if width_digits < 1:
            guard += 1 - width_digits + 1
            # The logarithm of a mass near the width is about 2.3 * log10(width).
            guard += math.log10(2.4 * (2 - width_digits))
    return _round_digits(dps + guard)


@functools.lru_cache(maxsize=_TAIL_CACHE_SIZE)
def _log_mass_exact(lo: Endpoint, hi: Endpoint, dps: int) -> mpf:
    """Return ``log P(lo <= N(0, 1) <= hi)`` for exact ends with ``lo < hi`` (cached)."""
    if lo >= 0:
        return _log_mass_one_sided(lo, hi, dps)
    if hi <= 0:
        return _log_mass_one_sided(-hi, -lo, dps)
    digits = _central_digits(lo, hi, dps)
    log_right = _log_upper_tail(hi, digits)
    log_left = _log_upper_tail(-lo, digits)
    with mp.workdps(digits):
        return mp.log1p(-(mp.exp(log_right) + mp.exp(log_left)))


@functools.lru_cache(maxsize=_TAIL_CACHE_SIZE)
def _log_mass_one_sided(near: Fraction, far: Endpoint, dps: int) -> mpf:
    """Return ``log(Q(near) - Q(far))`` for exact ``0 <= near < far`` (cached)."""
    digits = _one_sided_digits(near, far, dps)
    log_near = _log_upper_tail(near, digits)
    log_far = _log_upper_tail(far, digits)
    with mp.workdps(digits):
        return log_near + log1mexp(log_far - log_near)


def log_normal_mass(lo: Any, hi: Any, dps: int = 50) -> mpf:
    """Return ``log P(lo <= N(0, 1) <= hi)`` with absolute error near ``10^-dps``.

    Parameters
    ----------
    lo, hi : real
        Standardized ends, exact as given (see
        :func:`~dalverify.numerics.intervals.as_exact`); ``+-inf`` allowed.
    dps : int
        Decimal digits requested.

    Returns
    -------
    mpmath.mpf
        Natural logarithm of the mass; ``-inf`` when ``lo == hi``.

    Raises
    ------
    InputError
        If ``lo > hi`` or an end is NaN.
    """
    _check_dps(dps)
    lo_exact = as_exact(lo, name="lo")
    hi_exact = as_exact(hi, name="hi")
    if lo_exact > hi_exact:
        raise InputError(f"log_normal_mass needs lo <= hi, got lo={lo!r}, hi={hi!r}")
    if lo_exact == hi_exact:
        return mpf("-inf")
    return _log_mass_exact(lo_exact, hi_exact, dps)


#: Below this ``a``, the tail bound ``a^2 / 2 + log a`` has a float64 rounding
#: error under 1e-3, far inside the one unit of slack in the bound.
_FLOAT_BOUND_LIMIT = 1e6

#: Below this size, a log-mass converted to float64 has an absolute error under 1e-3.
_FLOAT_LOG_LIMIT = 1e12


def _log_tail_upper_bound(a: Endpoint) -> mpf | float:
    """Return an upper bound on ``log Q(a)`` for ``a >= 0``, ``min(log 1/2, log(phi(a) / a))``.

    One unit of slack covers the rounding of the evaluation, which is done in
    float64 for moderate ``a`` and otherwise with 20 digits more than the
    size of ``a^2 / 2`` needs.
    """
    if isinstance(a, float):
        return -_INF
    if a <= 1:
        return -math.log(2.0)
    if a < _FLOAT_BOUND_LIMIT:
        a_float = float(a)
        return -a_float * a_float / 2 - math.log(a_float) - 0.5 * math.log(2 * math.pi) + 1
    with mp.workdps(_tail_digits(a, 20)):
        return -_to_mpf(a * a / 2) - mp.log(_to_mpf(a)) - _log_sqrt_two_pi() + 1


def _is_negligible(log_bound: mpf | float, largest: mpf, dps: int) -> bool:
    """Check whether ``2 exp(log_bound) < 10^-(dps + 10) exp(largest)``, with enough digits."""
    threshold = (dps + _BASE_GUARD_DIGITS) * _LN10 - math.log(2.0)
    if isinstance(log_bound, float) and abs(largest) < _FLOAT_LOG_LIMIT:
        # One more unit of margin absorbs the float64 rounding of both sides.
        return log_bound < float(largest) - threshold - 1
    finite = [abs(v) for v in (mpf(log_bound), largest) if not mp.isinf(v)]
    magnitude = max(finite + [mpf(1)])
    with mp.workdps(21 + int(mp.mag(magnitude) * 0.302)):
        return mpf(log_bound) < largest - threshold


def log_union_mass(intervals: IntervalUnion | Iterable[tuple[Any, Any]], dps: int = 50) -> mpf:
    """Return ``log P(N(0, 1) in union)`` for a union of standardized intervals.

    Parameters
    ----------
    intervals : IntervalUnion or iterable of (lo, hi)
        Standardized, exact ends. Pairs are merged as by :class:`IntervalUnion`.
    dps : int
        Decimal digits requested for the result.

    Returns
    -------
    mpmath.mpf
        Natural logarithm of the total mass; ``-inf`` for an empty union.

    Notes
    -----
    Components are visited in order of their distance from 0, and summation
    stops once the components not visited can change the sum by less than
    ``10^-(dps + 10)`` relative (a rigorous bound, see the module docstring).
    A union of thousands of components far in one tail therefore costs only
    the components that matter.
    """
    _check_dps(dps)
    union = intervals if isinstance(intervals, IntervalUnion) else IntervalUnion(intervals)
    if union.is_empty:
        return mpf("-inf")

    # 1. Split into the component around 0 (if any) and the two sides, each
    #    side as (near, far) pairs sorted by distance from 0.
    central: list[mpf] = []
    right: list[tuple[Endpoint, Endpoint]] = []
    left: list[tuple[Endpoint, Endpoint]] = []
    for lo, hi in union:
        if lo >= 0:
            right.append((lo, hi))
        elif hi <= 0:
            left.append((-hi, -lo))
        else:
            central.append(_log_mass_exact(lo, hi, dps))
    left.reverse()

    # 2. Visit the sides outward, stopping when the rest is negligible.
    terms = list(central)
    largest = max(terms) if terms else mpf("-inf")
    i = j = 0
    while i < len(right) or j < len(left):
        take_right = j >= len(left) or (i < len(right) and right[i][0] <= left[j][0])
        near, far = right[i] if take_right else left[j]
        if not mp.isinf(largest) and _is_negligible(_log_tail_upper_bound(near), largest, dps):
            break
        term = _log_mass_one_sided(near, far, dps)
        terms.append(term)
        if term > largest:
            largest = term
        if take_right:
            i += 1
        else:
            j += 1
    return logsumexp(terms, dps)
