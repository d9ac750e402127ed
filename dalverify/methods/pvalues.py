"""Selective, naive, Bonferroni and permutation p-values in extended precision.

The statistic ``T`` is ``N(0, sd^2)`` under the null hypothesis, and the
selective p-values condition on ``T`` lying in a truncation set ``Z``, a
finite union of intervals in the scale of ``T``. Ends are exact (see
:class:`~dalverify.numerics.intervals.IntervalUnion`); standardization
``z / sd`` is done in exact rational arithmetic, and every mass is computed
in mpmath by :mod:`dalverify.numerics.truncnorm`.

Every p-value is computed twice, at ``dps`` and at ``2 * dps`` decimal
digits, and a :class:`~dalverify.errors.NumericalError` is raised when the
two differ by more than ``PVALUE_PRECISION_RTOL`` (relative). The returned
value is the one at ``2 * dps``.

Derivations, including the extremes used by
:func:`selective_pvalue_enclosure`, are in ``proofs/selective_pvalue.md``.
"""

from __future__ import annotations

import logging
import operator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable

from mpmath import mp, mpf

from dalverify.errors import InputError, NumericalError
from dalverify.numerics.intervals import IntervalUnion, as_exact, endpoint_to_decimal
from dalverify.numerics.truncnorm import log_tail, log_union_mass, logsumexp
from dalverify.tolerances import PVALUE_PRECISION_RTOL

__all__ = [
    "TWO_SIDED_OPTIONS",
    "PValue",
    "bonferroni_pvalue",
    "naive_pvalue",
    "permutation_pvalue",
    "selective_pvalue",
    "selective_pvalue_enclosure",
]

logger = logging.getLogger(__name__)

#: Accepted values of the ``two_sided`` option of the selective p-values.
TWO_SIDED_OPTIONS = ("symmetric", "equal-tailed")

#: Significant digits in :attr:`PValue.text`.
_TEXT_DIGITS = 15

#: Significant digits of the decimal strings written by :meth:`PValue.to_json`.
_JSON_DIGITS = 40

_INF = float("inf")
_NEG_INF_MP = mpf("-inf")


# ---------------------------------------------------------------------------
# Result type
# ---------------------------------------------------------------------------


def _as_probability_mpf(value: Any, name: str) -> mpf:
    if isinstance(value, PValue):
        return value.value
    if isinstance(value, mpf):
        result = value
    else:
        exact = as_exact(value, name=name)
        if isinstance(exact, float):
            raise InputError(f"{name} must be a probability in [0, 1], got {value!r}")
        with mp.workdps(_JSON_DIGITS + 10):
            result = mpf(exact.numerator) / exact.denominator
    if mp.isnan(result) or not 0 <= result <= 1:
        raise InputError(f"{name} must be a probability in [0, 1], got {value!r}")
    return result


@dataclass(frozen=True, repr=False)
class PValue:
    """A p-value in extended precision.

    Parameters
    ----------
    value : mpmath.mpf or real
        The p-value, in ``[0, 1]``. Stored as an ``mpmath.mpf``, whose exponent
        is unbounded, so values below ``1e-308`` are kept exactly as computed.
    enclosure : (lo, hi), optional
        Bounds with ``lo <= value <= hi`` (mpf, reals or PValue), for example
        the range that an unexplored part of the line leaves open. ``value``
        may lie outside by ``PVALUE_PRECISION_RTOL`` relative, the rounding
        allowed between two routes to the same p-value.
    dps : int
        Decimal digits to which ``value`` is known; sets the precision of
        :attr:`log10` and of :meth:`to_json` (at most 40 digits there).

    Attributes
    ----------
    log10 : mpmath.mpf
        ``log10(value)``; finite whenever ``value > 0``, also below the
        float64 range (for example ``-411.49`` for ``3.2e-412``), and ``-inf``
        for a p-value of exactly 0.
    text : str
        The value as a decimal string with 15 significant digits, such as
        ``"3.2e-412"`` or ``"0.0455002638963584"``.

    Notes
    -----
    ``float(p)`` rounds to binary64 and returns ``0.0`` for values below
    about ``4.9e-324``; use :attr:`log10` or :attr:`text` for those.
    """

    value: mpf
    enclosure: tuple[mpf, mpf] | None = None
    dps: int = field(default=50, compare=False)
    log10: mpf = field(init=False, compare=False)
    text: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        _check_dps(self.dps)
        value = _as_probability_mpf(self.value, "value")
        object.__setattr__(self, "value", value)
        if self.enclosure is not None:
            try:
                lo_raw, hi_raw = self.enclosure
            except (TypeError, ValueError):
                raise InputError(f"enclosure must be a (lo, hi) pair, got {self.enclosure!r}") from None
            lo = _as_probability_mpf(lo_raw, "enclosure lo")
            hi = _as_probability_mpf(hi_raw, "enclosure hi")
            # Bounds and value computed by different routes may differ in
            # their last digits; PVALUE_PRECISION_RTOL bounds that rounding.
            with mp.workdps(self.dps + 10):
                slack = value * PVALUE_PRECISION_RTOL
                contained = lo - slack <= value <= hi + slack
            if lo > hi or not contained:
                raise InputError(
                    f"enclosure ({mp.nstr(lo, 15)}, {mp.nstr(hi, 15)}) does not contain "
                    f"the value {mp.nstr(value, 15)}; pass bounds with lo <= value <= hi"
                )
            object.__setattr__(self, "enclosure", (lo, hi))
        if value == 0:
            log10 = _NEG_INF_MP
        else:
            with mp.workdps(self.dps + 10 + len(str(abs(value._mpf_[2])))):
                log10 = mp.log10(value)
        object.__setattr__(self, "log10", log10)
        object.__setattr__(self, "text", mp.nstr(value, _TEXT_DIGITS))

    @classmethod
    def from_log(cls, log_value: mpf, dps: int, enclosure: tuple[Any, Any] | None = None) -> PValue:
        """Build a PValue from its natural logarithm, computed to ``dps`` digits.

        Values with ``log_value >= 0`` are clipped to exactly 1.
        """
        if not isinstance(log_value, mpf):
            with mp.workdps(dps + 10):
                log_value = mpf(log_value)
        if log_value >= 0:
            return cls(mpf(1), enclosure, dps)
        if mp.isinf(log_value):
            return cls(mpf(0), enclosure, dps)
        with mp.workdps(dps + 10):
            return cls(+mp.exp(log_value), enclosure, dps)

    def with_enclosure(self, lo: Any, hi: Any) -> PValue:
        """Return a copy with the enclosure ``(lo, hi)``."""
        return PValue(self.value, (lo, hi), self.dps)

    def __float__(self) -> float:
        return float(self.value)

    def __repr__(self) -> str:
        if self.enclosure is None:
            return f"PValue({self.text!r})"
        lo, hi = self.enclosure
        return f"PValue({self.text!r}, enclosure=({mp.nstr(lo, 15)!r}, {mp.nstr(hi, 15)!r}))"

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict of decimal strings.

        ``value`` and the enclosure carry ``min(dps, 40)`` significant
        digits, ``text`` 15, and ``log10`` 17.
        """
        digits = min(_JSON_DIGITS, self.dps)
        enclosure = None
        if self.enclosure is not None:
            enclosure = [mp.nstr(end, digits) for end in self.enclosure]
        return {
            "value": mp.nstr(self.value, digits),
            "text": self.text,
            "log10": "-inf" if mp.isinf(self.log10) else mp.nstr(self.log10, 17),
            "enclosure": enclosure,
            "dps": self.dps,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PValue:
        """Rebuild a PValue from :meth:`to_json` output (to 40 digits)."""
        if not isinstance(data, dict) or "value" not in data:
            raise InputError(f"a PValue JSON object needs a 'value' field, got {data!r:.200}")
        with mp.workdps(_JSON_DIGITS + 10):
            value = mpf(data["value"])
            enclosure = data.get("enclosure")
            if enclosure is not None:
                enclosure = (mpf(enclosure[0]), mpf(enclosure[1]))
        dps = data.get("dps", _JSON_DIGITS)
        return cls(value, enclosure, min(_check_dps(dps), _JSON_DIGITS))


# ---------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------


def _finite_exact(value: Any, name: str) -> Fraction:
    exact = as_exact(value, name=name)
    if isinstance(exact, float):
        raise InputError(f"{name} must be finite, got {value!r}")
    return exact


def _check_sd(sd: Any) -> Fraction:
    exact = _finite_exact(sd, "sd")
    if exact <= 0:
        raise InputError(f"sd must be positive (the standard deviation of T), got {sd!r}")
    return exact


def _check_dps(dps: Any) -> int:
    if isinstance(dps, bool) or not isinstance(dps, int) or not 15 <= dps <= 50_000:
        raise InputError(f"dps must be an int between 15 and 50000 (decimal digits), got {dps!r}")
    return dps


def _check_two_sided(two_sided: Any) -> str:
    if two_sided not in TWO_SIDED_OPTIONS:
        raise InputError(f"two_sided must be one of {TWO_SIDED_OPTIONS}, got {two_sided!r}")
    return two_sided


def _check_union(intervals: Any, name: str) -> IntervalUnion:
    if isinstance(intervals, IntervalUnion):
        return intervals
    if isinstance(intervals, (str, bytes)):
        raise InputError(f"{name} must be an IntervalUnion or a list of (lo, hi) pairs, got a string")
    try:
        return IntervalUnion(intervals)
    except TypeError:
        raise InputError(
            f"{name} must be an IntervalUnion or a list of (lo, hi) pairs, got {type(intervals).__name__}"
        ) from None


def _check_contains(union: IntervalUnion, t_obs: Fraction, raw_t: Any, name: str) -> None:
    if union.is_empty:
        raise InputError(
            f"{name} is empty (or has only zero-length intervals); T cannot be conditioned on it"
        )
    if t_obs not in union:
        raise InputError(
            f"t_obs = {raw_t!r} lies outside {name} ({len(union)} intervals); the observed statistic "
            "must lie in the truncation set: check that both are in the same (unstandardized) scale"
        )


# ---------------------------------------------------------------------------
# Precision agreement
# ---------------------------------------------------------------------------


def _agree(log_low: mpf, log_high: mpf, what: str, dps: int) -> None:
    """Raise NumericalError unless two log p-values give the same p to PVALUE_PRECISION_RTOL."""
    low_inf, high_inf = mp.isinf(log_low), mp.isinf(log_high)
    if low_inf or high_inf:
        if log_low == log_high:
            return
        raise NumericalError(
            f"{what}: the p-value is exactly 0 at one precision but not at the other "
            f"(log p = {mp.nstr(log_low, 17)} at {dps} digits, {mp.nstr(log_high, 17)} at {2 * dps})"
        )
    with mp.workdps(_work_digits(dps, log_low, log_high)):
        relative = abs(mp.expm1(min(log_low, mpf(0)) - min(log_high, mpf(0))))
    if relative > PVALUE_PRECISION_RTOL:
        raise NumericalError(
            f"{what}: the p-values at {dps} and {2 * dps} digits differ by {mp.nstr(relative, 3)} "
            f"relative (limit {PVALUE_PRECISION_RTOL}); raise dps"
        )


def _two_precisions(compute: Callable[[int], tuple[mpf, ...]], dps: int, what: str) -> tuple[mpf, ...]:
    """Run ``compute`` at ``dps`` and ``2 * dps`` digits and check that each output agrees."""
    low = compute(dps)
    high = compute(2 * dps)
    for index, (log_low, log_high) in enumerate(zip(low, high)):
        _agree(log_low, log_high, what if len(low) == 1 else f"{what} (bound {index})", dps)
    return high


def _work_digits(dps: int, *logs: mpf) -> int:
    """Return the digits that keep an absolute error near ``10^-(dps + 10)`` in sums of these logs."""
    finite = [abs(v) for v in logs if not mp.isinf(v)]
    magnitude = max(finite + [mpf(1)])
    # mag(v) is the binary exponent with |v| < 2^mag(v); 0.302 > log10(2).
    return dps + 12 + int(mp.mag(magnitude) * 0.302)


def _log_ratio(log_num: mpf, log_den: mpf, dps: int) -> mpf:
    """Return ``log_num - log_den``, clipped to at most 0, with enough digits for the size of both."""
    if mp.isinf(log_num):
        return _NEG_INF_MP
    with mp.workdps(_work_digits(dps, log_num, log_den)):
        return min(log_num - log_den, mpf(0))


def _lse(values: list[mpf], dps: int) -> mpf:
    """Return the log-sum-exp of natural-log masses with 10 guard digits."""
    return logsumexp(values, dps + 10)


# ---------------------------------------------------------------------------
# Selective p-values
# ---------------------------------------------------------------------------


def _tails_symmetric(c_abs: Fraction) -> IntervalUnion:
    """Return the set ``{t : |t| >= c}`` for ``c >= 0``."""
    return IntervalUnion([(-_INF, -c_abs), (c_abs, _INF)])


def _check_scalars(
    t_obs: Any, sd: Any, dps: Any, two_sided: Any
) -> tuple[Fraction, Fraction, int, str]:
    """Validate the scalar arguments of the selective p-values and convert them exactly."""
    t_exact = _finite_exact(t_obs, "t_obs")
    sd_exact = _check_sd(sd)
    return t_exact, sd_exact, _check_dps(dps), _check_two_sided(two_sided)


def _log_selective(z_std: IntervalUnion, c: Fraction, two_sided: str, dps: int) -> mpf:
    """Return the natural log of the selective p-value for a standardized union and statistic."""
    log_total = log_union_mass(z_std, dps + 10)
    if two_sided == "symmetric":
        extreme = z_std & _tails_symmetric(abs(c))
        if extreme == z_std:
            return mpf(0)
        return _log_ratio(log_union_mass(extreme, dps + 10), log_total, dps)

    below = z_std & IntervalUnion([(-_INF, c)])
    above = z_std & IntervalUnion([(c, _INF)])
    log_lower = _log_ratio(log_union_mass(below, dps + 10), log_total, dps)
    log_upper = _log_ratio(log_union_mass(above, dps + 10), log_total, dps)
    with mp.workdps(_work_digits(dps, log_lower, log_upper)):
        return min(mp.ln2 + min(log_lower, log_upper), mpf(0))


def selective_pvalue(
    t_obs: Any,
    sd: Any,
    intervals: IntervalUnion | list[tuple[Any, Any]],
    *,
    two_sided: str = "symmetric",
    dps: int = 50,
) -> PValue:
    """Compute the selective p-value of ``T ~ N(0, sd^2)`` truncated to a union ``Z``.

    Parameters
    ----------
    t_obs : real
        Observed statistic, finite, in the scale of ``T``. Any value accepted
        by :func:`~dalverify.numerics.intervals.as_exact` (float, int,
        Fraction, decimal string, mpf); it is used exactly.
    sd : real
        Standard deviation of ``T`` under the null, finite and positive, used exactly.
    intervals : IntervalUnion or list of (lo, hi)
        The truncation set ``Z`` in the (unstandardized) scale of ``T``, with
        exact ends; ``+-inf`` allowed. ``t_obs`` must lie in ``Z`` (ends included).
    two_sided : {"symmetric", "equal-tailed"}
        ``"symmetric"``: ``P(|T| >= |t_obs| | T in Z)``.
        ``"equal-tailed"``: ``2 min(F, 1 - F)`` with ``F = P(T <= t_obs | T in Z)``,
        each side computed from its own mass (never as ``1 - F``) and clipped
        to 1. It is 0 when ``t_obs`` is the lowest or highest point of ``Z``.
    dps : int
        Decimal digits of the computation (the check runs at ``2 * dps``).

    Returns
    -------
    PValue
        Accurate to about 15 significant digits or better, also far below
        ``1e-308`` and for ``|t_obs| / sd`` up to ``1e200`` and beyond.

    Raises
    ------
    InputError
        If ``sd`` is not finite and positive, ``t_obs`` is not finite or lies
        outside ``Z``, ``Z`` is empty, or ``two_sided`` is unknown.
    NumericalError
        If the values at ``dps`` and ``2 * dps`` digits differ by more than
        ``PVALUE_PRECISION_RTOL`` relative.

    Notes
    -----
    Both forms are uniform on (0, 1) under the null hypothesis, conditionally
    on ``T in Z`` (``proofs/selective_pvalue.md``).
    """
    t_exact, sd_exact, dps, two_sided = _check_scalars(t_obs, sd, dps, two_sided)
    z_union = _check_union(intervals, "intervals")
    _check_contains(z_union, t_exact, t_obs, "the truncation set Z")

    z_std = z_union.scaled(1 / sd_exact)
    c = t_exact / sd_exact
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "selective p-value (%s): %d intervals, t_obs/sd = %s",
            two_sided, len(z_std), endpoint_to_decimal(c, 7),
        )
    (log_p,) = _two_precisions(
        lambda digits: (_log_selective(z_std, c, two_sided, digits),), dps, "selective p-value"
    )
    return PValue.from_log(log_p, dps)


def _log_enclosure_symmetric(
    known: IntervalUnion, unexplored: IntervalUnion, c: Fraction, dps: int
) -> tuple[mpf, mpf]:
    """Return the logs of ``(p_lo, p_hi)`` for the symmetric form.

    The derivation is in proofs/selective_pvalue.md, section 6.
    """
    extreme = _tails_symmetric(abs(c))
    inner = extreme.complement()
    work = dps + 10
    a = log_union_mass(known & extreme, work)
    b = log_union_mass(known & inner, work)
    u1 = log_union_mass(unexplored & extreme, work)
    u0 = log_union_mass(unexplored & inner, work)
    # p is increasing in the unexplored mass with |t| >= |t_obs| and
    # decreasing in the unexplored mass with |t| < |t_obs|.
    log_lo = _log_ratio(a, _lse([a, b, u0], dps), dps)
    log_hi = _log_ratio(_lse([a, u1], dps), _lse([a, b, u1], dps), dps)
    return log_lo, log_hi


def _log_enclosure_equal_tailed(
    known: IntervalUnion, unexplored: IntervalUnion, c: Fraction, dps: int
) -> tuple[mpf, mpf]:
    """Return the logs of ``(p_lo, p_hi)`` for the equal-tailed form.

    The derivation is in proofs/selective_pvalue.md, section 6.
    """
    below = IntervalUnion([(-_INF, c)])
    above = IntervalUnion([(c, _INF)])
    work = dps + 10
    left = log_union_mass(known & below, work)
    right = log_union_mass(known & above, work)
    u_left = log_union_mass(unexplored & below, work)
    u_right = log_union_mass(unexplored & above, work)

    # F increases with the unexplored mass below t_obs and decreases with the
    # mass above, so its range is [F_min, F_max]. p = 2 min(F, 1 - F) is a tent in F.
    log_f_min = _log_ratio(left, _lse([left, right, u_right], dps), dps)
    log_one_minus_f_min = _log_ratio(_lse([right, u_right], dps), _lse([left, right, u_right], dps), dps)
    log_f_max = _log_ratio(_lse([left, u_left], dps), _lse([left, u_left, right], dps), dps)
    log_one_minus_f_max = _log_ratio(right, _lse([left, u_left, right], dps), dps)

    with mp.workdps(_work_digits(dps, log_f_min, log_f_max, log_one_minus_f_min, log_one_minus_f_max)):
        log_half = -mp.ln2
        log_lo = mp.ln2 + min(log_f_min, log_one_minus_f_max)
        if log_f_min <= log_half <= log_f_max:
            log_hi = mpf(0)
        elif log_f_max < log_half:
            log_hi = mp.ln2 + log_f_max
        else:
            log_hi = mp.ln2 + log_one_minus_f_min
        return min(log_lo, mpf(0)), min(log_hi, mpf(0))


def selective_pvalue_enclosure(
    t_obs: Any,
    sd: Any,
    intervals_in_z: IntervalUnion | list[tuple[Any, Any]],
    unexplored: IntervalUnion | list[tuple[Any, Any]],
    *,
    two_sided: str = "symmetric",
    dps: int = 50,
) -> tuple[PValue, PValue]:
    """Bound the selective p-value when part of the line is not resolved.

    The true truncation set is ``Z = K ∪ S`` for the known part
    ``K = intervals_in_z`` and some unknown measurable ``S`` inside
    ``unexplored``. The returned bounds are the minimum and maximum of the
    p-value over all such ``S``, and both are attained.

    Parameters
    ----------
    t_obs, sd, two_sided, dps
        As in :func:`selective_pvalue`. ``t_obs`` must lie in ``K``.
    intervals_in_z : IntervalUnion or list of (lo, hi)
        Intervals known to belong to ``Z`` (scale of ``T``).
    unexplored : IntervalUnion or list of (lo, hi)
        Intervals whose membership in ``Z`` is not known: the line outside the
        searched range and any unresolved slivers. It must not overlap ``K``
        (sharing ends is fine). May be empty.

    Returns
    -------
    (PValue, PValue)
        ``(p_lo, p_hi)`` with ``p_lo <= p(Z) <= p_hi`` for every admissible ``Z``.

    Raises
    ------
    InputError, NumericalError
        As in :func:`selective_pvalue`; InputError also when the two unions overlap.

    Notes
    -----
    Symmetric form, with ``E = {|t| >= |t_obs|}``: the p-value
    ``(a + s1) / (a + b + s1 + s0)`` (masses of ``K ∩ E``, ``K \\ E``,
    ``S ∩ E``, ``S \\ E``) increases with ``s1`` and decreases with ``s0``, so
    ``p_lo = a / (a + b + u0)`` (only the unexplored part with
    ``|t| < |t_obs|`` put in ``Z``) and ``p_hi = (a + u1) / (a + b + u1)``
    (only the part with ``|t| >= |t_obs|``). Putting all of ``unexplored``
    in or out of ``Z`` does not give the extremes in general.
    Equal-tailed form: ``F`` ranges over ``[l / (l + r + u_r), (l + u_l) / (l + u_l + r)]``
    and ``p = 2 min(F, 1 - F)`` is taken at the ends of that range (minimum)
    or at the point nearest 1/2 (maximum).
    """
    t_exact, sd_exact, dps, two_sided = _check_scalars(t_obs, sd, dps, two_sided)
    known = _check_union(intervals_in_z, "intervals_in_z")
    unknown = _check_union(unexplored, "unexplored")
    _check_contains(known, t_exact, t_obs, "intervals_in_z")
    overlap = known & unknown
    if not overlap.is_empty:
        lo, hi = overlap.intervals[0]
        raise InputError(
            f"intervals_in_z and unexplored overlap on {len(overlap)} interval(s), the first "
            f"[{endpoint_to_decimal(lo)}, {endpoint_to_decimal(hi)}]; an interval is either known to be "
            "in Z or unexplored"
        )

    scale = 1 / sd_exact
    known_std = known.scaled(scale)
    unknown_std = unknown.scaled(scale)
    c = t_exact / sd_exact
    compute = _log_enclosure_symmetric if two_sided == "symmetric" else _log_enclosure_equal_tailed
    log_lo, log_hi = _two_precisions(
        lambda digits: compute(known_std, unknown_std, c, digits), dps, "selective p-value enclosure"
    )
    low = PValue.from_log(log_lo, dps)
    high = PValue.from_log(log_hi, dps)
    if low.value > high.value:
        raise NumericalError(
            f"selective p-value enclosure came out inverted: lo = {low.text} > hi = {high.text}"
        )
    return low, high


# ---------------------------------------------------------------------------
# Unconditional baselines
# ---------------------------------------------------------------------------


def _log_naive(c_abs: Fraction, dps: int) -> mpf:
    log_q = log_tail(c_abs, dps + 10)
    with mp.workdps(_work_digits(dps, log_q)):
        return min(mp.ln2 + log_q, mpf(0))


def naive_pvalue(t_obs: Any, sd: Any, *, dps: int = 50) -> PValue:
    """Compute the naive two-sided p-value ``2 Phi(-|t_obs| / sd)``, ignoring selection.

    Parameters
    ----------
    t_obs, sd : real
        Finite statistic and positive standard deviation, used exactly.
    dps : int
        Decimal digits (checked again at ``2 * dps``).

    Returns
    -------
    PValue
        Right in the far tail: about ``7.3e-350`` at ``|t_obs| / sd = 40``.

    Raises
    ------
    InputError
        If ``t_obs`` is not finite or ``sd`` is not finite and positive.
    NumericalError
        If the two precisions disagree.
    """
    t_exact = _finite_exact(t_obs, "t_obs")
    sd_exact = _check_sd(sd)
    dps = _check_dps(dps)
    c_abs = abs(t_exact) / sd_exact
    (log_p,) = _two_precisions(lambda digits: (_log_naive(c_abs, digits),), dps, "naive p-value")
    return PValue.from_log(log_p, dps)


def bonferroni_pvalue(t_obs: Any, sd: Any, m: int, *, dps: int = 50) -> PValue:
    """Compute the Bonferroni p-value ``min(1, 2^m * naive)`` in log space.

    Parameters
    ----------
    t_obs, sd : real
        As in :func:`naive_pvalue`.
    m : int
        Number of eligible pixels (``2^m`` possible regions), ``m >= 0``.
        ``2^m`` is never formed as a float, so ``m > 1023`` is fine.
    dps : int
        Decimal digits (checked again at ``2 * dps``).

    Returns
    -------
    PValue
        For ``|t_obs| / sd = 40`` and ``m = 1024``, about ``1.3e-41``.

    Raises
    ------
    InputError
        If ``m`` is not a non-negative int, or as in :func:`naive_pvalue`.
    """
    if isinstance(m, bool):
        raise InputError(f"m must be a non-negative int (number of eligible pixels), got {m!r}")
    try:
        m_int = operator.index(m)
    except TypeError:
        raise InputError(f"m must be a non-negative int (number of eligible pixels), got {m!r}") from None
    if m_int < 0:
        raise InputError(f"m must be a non-negative int (number of eligible pixels), got {m!r}")
    t_exact = _finite_exact(t_obs, "t_obs")
    sd_exact = _check_sd(sd)
    dps = _check_dps(dps)
    c_abs = abs(t_exact) / sd_exact

    def compute(digits: int) -> tuple[mpf]:
        log_naive = _log_naive(c_abs, digits)
        with mp.workdps(_work_digits(digits, log_naive, mpf(m_int))):
            return (min(m_int * mp.ln2 + log_naive, mpf(0)),)

    (log_p,) = _two_precisions(compute, dps, "Bonferroni p-value")
    return PValue.from_log(log_p, dps)


def permutation_pvalue(count_extreme: int, n_permutations: int) -> PValue:
    """Compute the permutation p-value ``(1 + count_extreme) / (n_permutations + 1)``.

    Parameters
    ----------
    count_extreme : int
        Number of permutations whose statistic is at least as extreme as the
        observed one, ``0 <= count_extreme <= n_permutations``.
    n_permutations : int
        Number of permutations ``B >= 1``.

    Returns
    -------
    PValue
        The value rounded to 60 significant digits; never below ``1 / (B + 1)``.

    Raises
    ------
    InputError
        If either count is not an int or they are out of range.
    """
    counts = []
    for name, value in (("count_extreme", count_extreme), ("n_permutations", n_permutations)):
        if isinstance(value, bool):
            raise InputError(f"{name} must be an int, got {value!r}")
        try:
            counts.append(operator.index(value))
        except TypeError:
            raise InputError(f"{name} must be an int, got {value!r}") from None
    count, total = counts
    if total < 1:
        raise InputError(f"n_permutations must be at least 1, got {n_permutations!r}")
    if not 0 <= count <= total:
        raise InputError(
            f"count_extreme must lie in [0, n_permutations] = [0, {total}], got {count_extreme!r}"
        )
    with mp.workdps(60):
        return PValue(mpf(1 + count) / (total + 1), dps=60)
