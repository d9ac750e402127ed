"""Finite unions of real intervals with exact endpoints.

An :class:`IntervalUnion` is the truncation set ``Z`` of a selective test (and
the unexplored part of the line) in exact arithmetic. Finite endpoints are
stored as :class:`fractions.Fraction`, infinite ones as ``float('inf')`` or
``-float('inf')``. No tolerance is used anywhere: two components are merged
only when they overlap or when one ends exactly where the next begins.

Semantics
---------
A union stands for a finite union of closed intervals of positive length,
that is, a *regular closed* subset of the real line (the closure of its
interior). Endpoints carry no probability under a continuous distribution,
so this represents events such as ``{T in Z}`` without loss. It also makes
the set operations an exact Boolean algebra:

* ``A | B`` is the ordinary union.
* ``A & B`` is the closure of the interior of ``A ∩ B``: points where ``A``
  and ``B`` only touch are dropped, because they have measure zero.
* ``A.complement(lo, hi)`` is the closure of ``[lo, hi] \\ A``.

With these definitions the union, intersection and complement laws
(commutativity, associativity, distributivity, De Morgan, double complement,
``A | ~A`` is the whole range and ``A & ~A`` is empty) hold exactly. A pair
``(v, v)`` of length zero is a null set and contributes nothing. Membership
(``z in A``) is closed: both ends of every component belong to ``A``.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Iterable, Iterator
from decimal import Decimal
from fractions import Fraction
from typing import Any, Union

import mpmath

from dalverify.errors import InputError

__all__ = [
    "Endpoint",
    "IntervalUnion",
    "as_exact",
    "endpoint_from_text",
    "endpoint_to_decimal",
    "endpoint_to_text",
]

#: A stored endpoint: an exact rational, or a signed float infinity.
Endpoint = Union[Fraction, float]

_INF = float("inf")
_NEG_INF = -_INF
_INFINITY_WORDS = {"inf": _INF, "+inf": _INF, "infinity": _INF, "+infinity": _INF,
                   "-inf": _NEG_INF, "-infinity": _NEG_INF}

#: Version tag written by :meth:`IntervalUnion.to_json`.
_JSON_TYPE = "dalverify.IntervalUnion"
_JSON_VERSION = 1


def as_exact(value: Any, *, name: str = "value") -> Endpoint:
    """Convert a real number to its exact value without rounding.

    Parameters
    ----------
    value : float, int, Fraction, Decimal, str, mpmath.mpf or numbers.Real
        Floats (numpy floats included) are taken as the binary64 rational they
        denote. Strings may be decimal (``"1.5e-300"``), rational (``"1/3"``),
        hexadecimal floats (``"0x1.8p+0"``) or ``"inf"``/``"-inf"``/``"infinity"``.
        ``mpmath.mpf`` values are binary rationals and converted exactly.
    name : str
        Name of the value, used in error messages.

    Returns
    -------
    Fraction or float
        A :class:`~fractions.Fraction` for a finite value, ``float('inf')`` or
        ``-float('inf')`` for an infinite one.

    Raises
    ------
    InputError
        If the value is NaN, a bool, a complex number or a string that is not
        a real number.
    """
    if isinstance(value, bool):
        raise InputError(f"{name} must be a real number, got the bool {value!r}; pass 0 or 1 as an int")
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, float):
        return _from_float(value, name)
    if isinstance(value, mpmath.mpf):
        return _from_mpf(value, name)
    if isinstance(value, str):
        return _from_text(value, name)
    if isinstance(value, Decimal):
        if value.is_nan():
            raise InputError(f"{name} is NaN ({value!r}); pass a finite number or +-inf")
        if value.is_infinite():
            return _INF if value > 0 else _NEG_INF
        return Fraction(value)
    if isinstance(value, numbers.Rational):
        return Fraction(int(value.numerator), int(value.denominator))
    if isinstance(value, numbers.Integral):
        return Fraction(int(value))
    if isinstance(value, numbers.Real):
        return _from_float(float(value), name)
    raise InputError(
        f"{name} must be a real number (float, int, Fraction, decimal string or mpmath.mpf), "
        f"got {type(value).__name__} {value!r}"
    )


def _from_float(value: float, name: str) -> Endpoint:
    if math.isnan(value):
        raise InputError(f"{name} is NaN; pass a finite number or +-inf")
    if math.isinf(value):
        return _INF if value > 0 else _NEG_INF
    return Fraction(value)


def _from_mpf(value: mpmath.mpf, name: str) -> Endpoint:
    if mpmath.isnan(value):
        raise InputError(f"{name} is an mpmath NaN; pass a finite number or +-inf")
    if mpmath.isinf(value):
        return _INF if value > 0 else _NEG_INF
    mantissa, exponent = value.man_exp
    if exponent >= 0:
        return Fraction(int(mantissa) << int(exponent))
    return Fraction(int(mantissa), 1 << int(-exponent))


def _from_text(value: str, name: str) -> Endpoint:
    text = value.strip()
    lowered = text.lower()
    if lowered in _INFINITY_WORDS:
        return _INFINITY_WORDS[lowered]
    if lowered.lstrip("+-").startswith("0x"):
        try:
            return _from_float(float.fromhex(text), name)
        except (ValueError, OverflowError):
            raise InputError(f"{name} = {value!r} is not a valid hexadecimal float") from None
    if "nan" in lowered:
        raise InputError(f"{name} = {value!r} is NaN; pass a finite number or +-inf")
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        raise InputError(
            f"{name} = {value!r} is not a real number; use a decimal ('1.5e-3'), "
            "a rational ('1/3'), a hexadecimal float ('0x1.8p+0') or 'inf'"
        ) from None


def endpoint_to_text(value: Endpoint) -> str:
    """Return a lossless text form of an exact endpoint.

    Infinities become ``"inf"``/``"-inf"``; a finite value that is exactly a
    binary64 number becomes its ``float.hex`` form; any other rational becomes
    ``"p/q"``. :func:`endpoint_from_text` inverts it exactly.
    """
    if isinstance(value, float):
        return "inf" if value > 0 else "-inf"
    try:
        as_float = float(value)
    except OverflowError:
        as_float = None
    if as_float is not None and not math.isinf(as_float) and Fraction(as_float) == value:
        return as_float.hex()
    return f"{value.numerator}/{value.denominator}"


def endpoint_from_text(text: str) -> Endpoint:
    """Parse the output of :func:`endpoint_to_text` (or any accepted string) exactly."""
    if not isinstance(text, str):
        raise InputError(f"an endpoint in JSON must be a string, got {type(text).__name__} {text!r}")
    return _from_text(text, "endpoint")


def endpoint_to_decimal(value: Endpoint, digits: int = 17) -> str:
    """Return a rounded decimal form of an exact endpoint for messages and logs.

    Unlike ``float(value)``, it never overflows: ``Fraction(10**400)`` gives ``"1.0e+400"``.
    """
    if isinstance(value, float):
        return "inf" if value > 0 else "-inf"
    with mpmath.mp.workdps(digits + 5):
        rounded = mpmath.mpf(value.numerator) / value.denominator
        return mpmath.nstr(rounded, digits)


def _format_endpoint(value: Endpoint) -> str:
    """Readable repr of an endpoint: a float literal when exact, else a Fraction."""
    if isinstance(value, float):
        return "inf" if value > 0 else "-inf"
    try:
        as_float = float(value)
    except OverflowError:
        as_float = None
    if as_float is not None and not math.isinf(as_float) and Fraction(as_float) == value:
        return repr(as_float)
    return f"Fraction({value.numerator}, {value.denominator})"


class IntervalUnion:
    """A finite union of disjoint closed intervals with exact endpoints.

    Parameters
    ----------
    pairs : iterable of (lo, hi), optional
        Intervals in any order; they may overlap or touch, and are merged
        exactly. Each end is converted by :func:`as_exact`. A pair with
        ``lo == hi`` has length zero and is dropped.

    Raises
    ------
    InputError
        If a pair is not a 2-sequence, an end is NaN or not a real number, or
        ``lo > hi``. The message names the pair and its position.

    Notes
    -----
    Instances are immutable and hashable. Components are kept sorted, each
    with ``lo < hi``, and separated by gaps of positive length
    (``hi_k < lo_{k+1}``). Endpoints are never rounded or moved.
    """

    __slots__ = ("_ends", "_his", "_los")

    def __init__(self, pairs: Iterable[tuple[Any, Any]] = ()) -> None:
        if isinstance(pairs, IntervalUnion):
            self._set_components(pairs.intervals)
            return
        checked: list[tuple[Endpoint, Endpoint]] = []
        for index, pair in enumerate(pairs):
            checked.append(_check_pair(index, pair))
        self._set_components(_merge_sorted(sorted(checked)))

    def _set_components(self, components: Iterable[tuple[Endpoint, Endpoint]]) -> None:
        ends = tuple(components)
        object.__setattr__(self, "_ends", ends)
        object.__setattr__(self, "_los", [lo for lo, _ in ends])
        object.__setattr__(self, "_his", [hi for _, hi in ends])

    @classmethod
    def _from_components(cls, components: Iterable[tuple[Endpoint, Endpoint]]) -> IntervalUnion:
        """Build from components that are already sorted, disjoint and non-touching."""
        union = cls.__new__(cls)
        union._set_components(components)
        return union

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("IntervalUnion is immutable")

    # -- read access -------------------------------------------------------

    @property
    def intervals(self) -> tuple[tuple[Endpoint, Endpoint], ...]:
        """The components as a sorted tuple of ``(lo, hi)`` pairs with exact ends."""
        return self._ends

    @property
    def measure(self) -> Endpoint:
        """Lebesgue measure (total length): a Fraction, or ``inf`` if unbounded."""
        total = Fraction(0)
        for lo, hi in self._ends:
            if isinstance(lo, float) or isinstance(hi, float):
                return _INF
            total += hi - lo
        return total

    @property
    def is_empty(self) -> bool:
        """Whether the union has no component."""
        return not self._ends

    def __len__(self) -> int:
        return len(self._ends)

    def __iter__(self) -> Iterator[tuple[Endpoint, Endpoint]]:
        return iter(self._ends)

    def __bool__(self) -> bool:
        return bool(self._ends)

    def __contains__(self, z: Any) -> bool:
        return self._index_containing(as_exact(z, name="z")) is not None

    def component_containing(self, z: Any) -> tuple[Endpoint, Endpoint] | None:
        """Return the component ``(lo, hi)`` with ``lo <= z <= hi``, or None."""
        index = self._index_containing(as_exact(z, name="z"))
        return None if index is None else self._ends[index]

    def _index_containing(self, z: Endpoint) -> int | None:
        index = bisect.bisect_right(self._los, z) - 1
        if index >= 0 and z <= self._his[index]:
            return index
        return None

    # -- set operations ----------------------------------------------------

    def union(self, other: IntervalUnion) -> IntervalUnion:
        """Return the union of two interval unions (touching components merge)."""
        other = _coerce(other)
        merged = sorted(self._ends + other._ends)
        return IntervalUnion._from_components(_merge_sorted(merged))

    def intersection(self, other: IntervalUnion) -> IntervalUnion:
        """Return the closure of the interior of the intersection.

        Points where the two unions only touch are dropped (they have measure
        zero), so the result again has components of positive length.
        """
        other = _coerce(other)
        result: list[tuple[Endpoint, Endpoint]] = []
        i = j = 0
        left, right = self._ends, other._ends
        while i < len(left) and j < len(right):
            lo = max(left[i][0], right[j][0])
            hi = min(left[i][1], right[j][1])
            if lo < hi:
                result.append((lo, hi))
            if left[i][1] < right[j][1]:
                i += 1
            else:
                j += 1
        return IntervalUnion._from_components(result)

    def complement(self, lo: Any = _NEG_INF, hi: Any = _INF) -> IntervalUnion:
        """Return the closure of ``[lo, hi]`` minus this union.

        Parameters
        ----------
        lo, hi : real, optional
            The range to complement within (default the whole line). Ends are
            converted exactly by :func:`as_exact`.

        Raises
        ------
        InputError
            If ``lo > hi`` or an end is NaN.
        """
        range_lo, range_hi = _check_pair(0, (lo, hi), what="complement range")
        result: list[tuple[Endpoint, Endpoint]] = []
        cursor = range_lo
        for comp_lo, comp_hi in self._ends:
            if comp_hi <= cursor:
                continue
            if comp_lo >= range_hi:
                break
            if cursor < comp_lo:
                result.append((cursor, comp_lo))
            cursor = comp_hi
            if cursor >= range_hi:
                break
        if cursor < range_hi:
            result.append((cursor, range_hi))
        return IntervalUnion._from_components(result)

    def difference(self, other: IntervalUnion) -> IntervalUnion:
        """Return the closure of this union minus ``other``."""
        return self.intersection(_coerce(other).complement())

    def scaled(self, factor: Any) -> IntervalUnion:
        """Return the union multiplied by an exact positive factor.

        Raises
        ------
        InputError
            If ``factor`` is not a finite positive real.
        """
        exact = as_exact(factor, name="factor")
        if isinstance(exact, float) or exact <= 0:
            raise InputError(f"factor must be finite and positive, got {factor!r}")
        return IntervalUnion._from_components(
            (_scale_end(lo, exact), _scale_end(hi, exact)) for lo, hi in self._ends
        )

    def __or__(self, other: object) -> IntervalUnion:
        if not isinstance(other, IntervalUnion):
            return NotImplemented
        return self.union(other)

    def __and__(self, other: object) -> IntervalUnion:
        if not isinstance(other, IntervalUnion):
            return NotImplemented
        return self.intersection(other)

    def __sub__(self, other: object) -> IntervalUnion:
        if not isinstance(other, IntervalUnion):
            return NotImplemented
        return self.difference(other)

    def __invert__(self) -> IntervalUnion:
        return self.complement()

    # -- comparison, hashing, text -----------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntervalUnion):
            return NotImplemented
        return self._ends == other._ends

    def __hash__(self) -> int:
        return hash(self._ends)

    def __repr__(self) -> str:
        inner = ", ".join(f"({_format_endpoint(lo)}, {_format_endpoint(hi)})" for lo, hi in self._ends)
        return f"IntervalUnion([{inner}])"

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict that :meth:`from_json` reads back exactly.

        Finite ends are written as ``float.hex`` strings when they are binary64
        numbers and as ``"p/q"`` otherwise; infinities as ``"inf"``/``"-inf"``.
        """
        return {
            "type": _JSON_TYPE,
            "version": _JSON_VERSION,
            "intervals": [[endpoint_to_text(lo), endpoint_to_text(hi)] for lo, hi in self._ends],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IntervalUnion:
        """Rebuild a union from :meth:`to_json` output.

        Raises
        ------
        InputError
            If the dict has the wrong type tag or version, or malformed pairs.
        """
        if not isinstance(data, dict) or data.get("type") != _JSON_TYPE:
            raise InputError(
                f"not an IntervalUnion JSON object (expected type {_JSON_TYPE!r}): {data!r:.200}"
            )
        if data.get("version") != _JSON_VERSION:
            raise InputError(
                f"unsupported IntervalUnion JSON version {data.get('version')!r}; expected {_JSON_VERSION}"
            )
        pairs = data.get("intervals")
        if not isinstance(pairs, list):
            raise InputError("IntervalUnion JSON has no 'intervals' list")
        parsed = []
        for index, pair in enumerate(pairs):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise InputError(f"interval #{index} in JSON must be a [lo, hi] pair, got {pair!r}")
            parsed.append((endpoint_from_text(pair[0]), endpoint_from_text(pair[1])))
        return cls(parsed)


def _coerce(other: Any) -> IntervalUnion:
    if isinstance(other, IntervalUnion):
        return other
    return IntervalUnion(other)


def _scale_end(value: Endpoint, factor: Fraction) -> Endpoint:
    return value if isinstance(value, float) else value * factor


def _check_pair(index: int, pair: Any, *, what: str = "interval") -> tuple[Endpoint, Endpoint]:
    """Validate one ``(lo, hi)`` pair and convert its ends exactly."""
    if isinstance(pair, (str, bytes)):
        raise InputError(f"{what} #{index} must be a (lo, hi) pair, got the string {pair!r}")
    try:
        lo_raw, hi_raw = pair
    except (TypeError, ValueError):
        raise InputError(f"{what} #{index} must be a (lo, hi) pair, got {pair!r}") from None
    try:
        lo = as_exact(lo_raw, name="lo")
        hi = as_exact(hi_raw, name="hi")
    except InputError as error:
        raise InputError(f"{what} #{index} {pair!r} is invalid: {error}") from None
    if lo > hi:
        raise InputError(f"{what} #{index} {pair!r} has lo > hi; pass the ends in increasing order")
    return lo, hi


def _merge_sorted(pairs: list[tuple[Endpoint, Endpoint]]) -> list[tuple[Endpoint, Endpoint]]:
    """Merge sorted pairs that overlap or touch exactly; drop pairs of length zero."""
    merged: list[tuple[Endpoint, Endpoint]] = []
    for lo, hi in pairs:
        if not lo < hi:
            continue
        if merged and lo <= merged[-1][1]:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged
