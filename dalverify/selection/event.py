"""The selection event ``{z : M(x(z)) = M(x)}`` on a line ``x(z) = a + b z``.

On a linear piece of the reconstruction, ``D(x(z)) = out_alpha + out_beta z``,
so the filtered residual of every pixel is affine in ``z``:
``r_i(z) = alpha_i + beta_i z``. Pixel ``i`` is in the region exactly when
``|alpha_i + beta_i z| >= lam``. This module provides

- :func:`residual_line`: the pair ``(alpha, beta)`` of the residual on a piece;
- :class:`LambdaCuts`: the cut functions ``r_i - lam`` and ``r_i + lam`` that
  the line walk adds to its breakpoints, and the map from their signs on an
  open interval to the region;
- :func:`interval_lemma`, :func:`truncation_from_lemma`,
  :func:`sign_interval`: exact descriptions of the same sets as unions of
  intervals with ``fractions.Fraction`` ends.

Interval results are sorted lists of disjoint ``(lo, hi)`` pairs with
``lo < hi``. Finite ends are ``Fraction`` values, unbounded ends are the
floats ``-inf`` and ``inf``. Whether an end point itself belongs to the set
is not represented: each returned union differs from the true set by at most
finitely many points, which carry no probability under a continuous
distribution of ``z``. The derivation of every case is in
``proofs/interval_lemma.md``.
"""

from __future__ import annotations

import logging
import math
import numbers
from fractions import Fraction
from typing import Union

import numpy as np

from dalverify.errors import InputError
from dalverify.images import validate_image
from dalverify.selection.region import average_filter, check_mask, check_threshold

logger = logging.getLogger(__name__)

#: An interval end: an exact rational, or the float -inf / inf.
End = Union[Fraction, float]
#: A closed interval ``(lo, hi)`` with ``lo < hi``.
Pair = tuple[End, End]

_NEG_INF = float("-inf")
_POS_INF = float("inf")

# Enclosure of a root (c - alpha) / beta computed in float64: two roundings
# (subtraction, division) give a relative error below 2u + u^2 with
# u = 2^-53, plus 2^-1075 absolute when the quotient is subnormal. A radius of
# 2^-48 |root| + 2^-1060 covers that bound and the rounding of the radius
# arithmetic itself with a wide margin; a wider radius only sends more pixels
# to the exact route.
_ROOT_RELATIVE_RADIUS = 2.0**-48
_ROOT_ABSOLUTE_RADIUS = 2.0**-1060


def _exact(value: object, name: str) -> Fraction:
    """Convert a finite real number to the exact Fraction it denotes."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name}={value!r} is not a real number; pass a float, int or fractions.Fraction")
    if isinstance(value, numbers.Integral):
        return Fraction(int(value))
    as_float = float(value)
    if not math.isfinite(as_float):
        raise InputError(f"{name}={value!r} is not finite; pass a finite value")
    return Fraction(as_float)


def _exact_lam(lam: object) -> Fraction:
    value = _exact(lam, "lam")
    if value <= 0:
        raise InputError(f"lam={lam!r} must be > 0; pass the positive region threshold")
    return value


def _end(value: object, name: str) -> End:
    """Convert an interval end: +-inf stays a float, anything else becomes an exact Fraction."""
    if isinstance(value, (float, np.floating)) and math.isinf(float(value)):
        return float(value)
    return _exact(value, name)


def _round_down(value: End) -> float:
    """Largest float64 that is <= ``value``."""
    if isinstance(value, float):
        return value
    try:
        out = float(value)
    except OverflowError:
        return _NEG_INF if value < 0 else float(np.finfo(np.float64).max)
    if Fraction(out) > value:
        out = math.nextafter(out, _NEG_INF)
    return out


def _round_up(value: End) -> float:
    """Smallest float64 that is >= ``value``."""
    if isinstance(value, float):
        return value
    try:
        out = float(value)
    except OverflowError:
        return _POS_INF if value > 0 else -float(np.finfo(np.float64).max)
    if Fraction(out) < value:
        out = math.nextafter(out, _POS_INF)
    return out


def _lemma_roots(alpha: Fraction, beta: Fraction, lam: Fraction) -> tuple[Fraction, Fraction]:
    """Return ``(low, high)``, the two roots of ``|alpha + beta z| = lam`` for ``beta != 0``, with low < high."""
    first = (-lam - alpha) / beta
    second = (lam - alpha) / beta
    return (first, second) if first < second else (second, first)


def interval_lemma(alpha: object, beta: object, lam: object, inside: bool) -> list[Pair]:
    """Return the exact set of ``z`` where ``|alpha + beta z| >= lam`` (inside) or ``< lam`` (outside).

    With ``low < high`` the two roots of ``|alpha + beta z| = lam``
    (``(-lam - alpha) / beta`` and ``(lam - alpha) / beta`` in the order that
    the sign of ``beta`` gives):

    ============  =================================  ======================
    case          inside (``>= lam``)                outside (``< lam``)
    ============  =================================  ======================
    beta != 0     ``(-inf, low] u [high, inf)``      ``(low, high)``
    beta == 0     whole line if ``|alpha| >= lam``,   the complement
                  else empty
    ============  =================================  ======================

    Parameters
    ----------
    alpha, beta : float, int or fractions.Fraction
        Intercept and slope of the residual ``r(z) = alpha + beta z``,
        finite. Floats are taken as the exact binary64 rationals they store.
    lam : float, int or fractions.Fraction
        Threshold, > 0.
    inside : bool
        True for the pixel-in-region set, False for its complement.

    Returns
    -------
    list of (lo, hi)
        Sorted disjoint pairs with Fraction finite ends and float +-inf
        unbounded ends (see the module docstring about end points).

    Raises
    ------
    InputError
        For non-finite or non-real inputs or ``lam <= 0``.

    Notes
    -----
    Derivation and the check script: ``proofs/interval_lemma.md``.
    """
    alpha_q = _exact(alpha, "alpha")
    beta_q = _exact(beta, "beta")
    lam_q = _exact_lam(lam)
    inside = bool(inside)

    if beta_q == 0:
        constant_inside = abs(alpha_q) >= lam_q
        return [(_NEG_INF, _POS_INF)] if constant_inside == inside else []

    low, high = _lemma_roots(alpha_q, beta_q, lam_q)
    if inside:
        return [(_NEG_INF, low), (high, _POS_INF)]
    return [(low, high)]


def sign_interval(alpha: object, beta: object, positive: bool) -> list[Pair]:
    """Return the exact set of ``z`` where ``alpha + beta z >= 0`` (positive) or ``<= 0`` (negative).

    Used for the over-conditioned event, which also fixes the sign of each
    residual. Both sets are closed, so a residual that is identically zero
    satisfies either sign on the whole line, and the two sets of a residual
    that is not identically zero share only its root.

    Parameters
    ----------
    alpha, beta : float, int or fractions.Fraction
        Intercept and slope, finite.
    positive : bool
        Which sign to keep.

    Returns
    -------
    list of (lo, hi)
        ``[]``, one ray, or the whole line, ends as in :func:`interval_lemma`.

    Raises
    ------
    InputError
        For non-finite or non-real inputs.
    """
    alpha_q = _exact(alpha, "alpha")
    beta_q = _exact(beta, "beta")
    positive = bool(positive)
    if beta_q == 0:
        holds = alpha_q >= 0 if positive else alpha_q <= 0
        return [(_NEG_INF, _POS_INF)] if holds else []
    root = -alpha_q / beta_q
    # alpha + beta z >= 0 is the ray on the side where beta points.
    if (beta_q > 0) == positive:
        return [(root, _POS_INF)]
    return [(_NEG_INF, root)]


def intersect_pairs(first: list[Pair], second: list[Pair]) -> list[Pair]:
    """Intersect two sorted lists of disjoint closed intervals, dropping zero-width results."""
    out: list[Pair] = []
    i = j = 0
    while i < len(first) and j < len(second):
        lo = max(first[i][0], second[j][0])
        hi = min(first[i][1], second[j][1])
        if lo < hi:
            out.append((lo, hi))
        if first[i][1] < second[j][1]:
            i += 1
        else:
            j += 1
    return out


def _subtract_open(base: Pair, holes: list[Pair]) -> list[Pair]:
    """Remove the union of open intervals ``holes`` from the closed interval ``base``."""
    lo, hi = base
    out: list[Pair] = []
    cursor = lo
    for hole_lo, hole_hi in sorted(holes, key=lambda pair: pair[0]):
        if hole_hi <= cursor:
            continue
        if hole_lo >= hi:
            break
        if cursor < hole_lo:
            out.append((cursor, hole_lo))
        cursor = max(cursor, hole_hi)
        if cursor >= hi:
            break
    if cursor < hi:
        out.append((cursor, hi))
    return out


def _as_pixel_arrays(r_alpha: object, r_beta: object) -> tuple[np.ndarray, np.ndarray, bool]:
    """Flatten ``r_alpha``, ``r_beta``; return them with a flag telling whether they hold exact objects."""
    alpha = np.asarray(r_alpha)
    beta = np.asarray(r_beta)
    if alpha.shape != beta.shape:
        raise InputError(f"r_alpha has shape {alpha.shape} but r_beta has shape {beta.shape}; pass equal shapes")
    alpha = alpha.reshape(-1)
    beta = beta.reshape(-1)
    exact = alpha.dtype == object or beta.dtype == object
    if not exact:
        alpha = alpha.astype(np.float64)
        beta = beta.astype(np.float64)
        if not (np.isfinite(alpha).all() and np.isfinite(beta).all()):
            raise InputError("r_alpha or r_beta has non-finite entries; the residual line must be finite")
    return alpha, beta, exact


def _classify_float(
    alpha: np.ndarray,
    beta: np.ndarray,
    lam: float,
    lo: End,
    hi: End,
) -> tuple[np.ndarray, np.ndarray]:
    """Decide in float64, where rounding cannot change the result, how each pixel behaves on ``(lo, hi)``.

    Returns boolean arrays ``(decided, inside)``: ``decided`` marks pixels
    whose membership is provably constant on the open piece, because both
    roots of ``|alpha + beta z| = lam`` lie outside it, and ``inside`` gives
    that membership. Undecided pixels may have a root inside the piece.
    """
    lo_f = _round_down(lo)
    hi_f = _round_up(hi)
    flat = beta == 0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        first = (-lam - alpha) / beta
        second = (lam - alpha) / beta

    def position(root: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        radius = _ROOT_RELATIVE_RADIUS * np.abs(root) + _ROOT_ABSOLUTE_RADIUS
        finite = np.isfinite(root) & np.isfinite(radius)
        with np.errstate(invalid="ignore", over="ignore"):
            at_or_below = finite & (root + radius <= lo_f)
            at_or_above = finite & (root - radius >= hi_f)
        return at_or_below, at_or_above

    first_below, first_above = position(first)
    second_below, second_above = position(second)
    decided = flat | ((first_below | first_above) & (second_below | second_above))
    # Beyond both roots on the same side the pixel is inside; between them, outside.
    both_same_side = (first_below & second_below) | (first_above & second_above)
    inside = np.where(flat, np.abs(alpha) >= lam, both_same_side)
    return decided, inside


def truncation_from_lemma(
    r_alpha: object,
    r_beta: object,
    lam: object,
    region: object,
    piece_lo: object,
    piece_hi: object,
) -> list[Pair]:
    """Return the part of ``[piece_lo, piece_hi]`` on which the region equals ``region``.

    This is the intersection over pixels ``i`` of :func:`interval_lemma`
    ``(r_alpha[i], r_beta[i], lam, region[i])`` with the piece. Pixels whose
    roots lie provably outside the open piece are settled in float64 with a
    rigorous rounding bound; the others are computed with exact Fraction
    arithmetic, so the returned ends are exact.

    Parameters
    ----------
    r_alpha, r_beta : array_like
        Residual intercepts and slopes on the piece, one entry per eligible
        pixel (pass ``r[eligible]``), float64 or ``object`` arrays of
        Fractions. Any shape; they are flattened.
    lam : float, int or fractions.Fraction
        Threshold, > 0.
    region : array_like of bool
        Required membership, one entry per pixel in the same order.
    piece_lo, piece_hi : float, int or fractions.Fraction
        Ends of the linear piece, ``piece_lo < piece_hi``; +-inf allowed.

    Returns
    -------
    list of (lo, hi)
        Sorted disjoint subintervals of the piece, ends as in
        :func:`interval_lemma`. Empty when the region never equals
        ``region`` on the piece.

    Raises
    ------
    InputError
        For mismatched lengths, non-finite residuals, ``lam <= 0`` or
        ``piece_lo >= piece_hi``.
    """
    alpha, beta, exact = _as_pixel_arrays(r_alpha, r_beta)
    wanted = np.asarray(region)
    if wanted.dtype != np.bool_:
        raise InputError(f"region has dtype {wanted.dtype}; pass a boolean array, one entry per pixel")
    wanted = wanted.reshape(-1)
    if wanted.shape != alpha.shape:
        raise InputError(
            f"region has {wanted.size} entries but r_alpha has {alpha.size}; pass one entry per pixel in the same order"
        )
    lam_q = _exact_lam(lam)
    lo = _end(piece_lo, "piece_lo")
    hi = _end(piece_hi, "piece_hi")
    if not lo < hi:
        raise InputError(f"piece [{piece_lo!r}, {piece_hi!r}] is empty; pass piece_lo < piece_hi")

    # 1. Settle in float64 every pixel whose membership is provably constant on the piece.
    lam_is_float = Fraction(float(lam_q)) == lam_q
    if exact or not lam_is_float:
        pending = np.arange(alpha.size)
    else:
        decided, inside = _classify_float(alpha, beta, float(lam_q), lo, hi)
        if np.any(decided & (inside != wanted)):
            return []
        pending = np.flatnonzero(~decided)

    # 2. Intersect the exact sets of the remaining pixels: the outside sets are
    #    open intervals whose intersection is one interval; the inside sets are
    #    complements of open intervals, removed as holes.
    window_lo, window_hi = lo, hi
    holes: list[Pair] = []
    for index in pending:
        alpha_q = _exact(alpha[index], "r_alpha")
        beta_q = _exact(beta[index], "r_beta")
        if beta_q == 0:
            if (abs(alpha_q) >= lam_q) != bool(wanted[index]):
                return []
            continue
        low, high = _lemma_roots(alpha_q, beta_q, lam_q)
        if wanted[index]:
            holes.append((low, high))
        else:
            window_lo = max(window_lo, low)
            window_hi = min(window_hi, high)
            if not window_lo < window_hi:
                return []
    return _subtract_open((window_lo, window_hi), holes)


class LambdaCuts:
    """Cut functions at ``+-lam`` for the eligible pixels, and the region they imply.

    For eligible pixel ``e_j`` (``j = 0 .. m-1``, in row-major order) the walk
    receives two affine functions of ``z``: cut ``j`` is ``r_{e_j} - lam`` and
    cut ``m + j`` is ``r_{e_j} + lam``. On an open interval where no cut
    changes sign, pixel ``e_j`` is in the region exactly when cut ``j`` is
    positive or cut ``m + j`` is negative; a cut that is identically zero on
    the interval means ``|r| = lam`` there, which is inside unless ``strict``.

    Parameters
    ----------
    threshold : float
        ``lam``, finite and > 0.
    shape : tuple of int
        ``(H, W)`` of the residual map.
    mask : numpy.ndarray, optional
        Boolean ``(H, W)`` eligibility mask; ``None`` makes every pixel
        eligible.
    strict : bool
        Region uses ``|r| > lam`` instead of ``>=``.

    Attributes
    ----------
    lam : float
    shape : tuple of int
    eligible : numpy.ndarray
        Boolean ``(H, W)`` mask.
    eligible_index : numpy.ndarray
        Flat row-major indices of the eligible pixels, ascending.
    m : int
        Number of eligible pixels; there are ``2 * m`` cuts.
    """

    def __init__(
        self,
        threshold: float,
        shape: tuple[int, int],
        mask: np.ndarray | None = None,
        *,
        strict: bool = False,
    ) -> None:
        self.lam = check_threshold(threshold)
        shape = tuple(int(s) for s in shape)
        if len(shape) != 2 or min(shape) < 1:
            raise InputError(f"shape={shape} is not an (H, W) shape of positive sizes")
        self.shape = shape
        self.eligible = check_mask(mask, shape)
        self.eligible_index = np.flatnonzero(self.eligible.reshape(-1))
        self.m = int(self.eligible_index.size)
        self.strict = bool(strict)

    def _eligible_pair(self, r_alpha: object, r_beta: object) -> tuple[np.ndarray, np.ndarray, bool]:
        alpha, beta, exact = _as_pixel_arrays(r_alpha, r_beta)
        pixels = self.shape[0] * self.shape[1]
        if alpha.size != pixels:
            raise InputError(
                f"r_alpha has {alpha.size} entries but the residual map has {pixels} pixels; "
                "pass the full flat residual line from residual_line"
            )
        return alpha[self.eligible_index], beta[self.eligible_index], exact

    def cuts(self, r_alpha: np.ndarray, r_beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the cut functions ``(alpha_c, beta_c)``, each a float64 array of ``2 * m`` entries.

        Parameters
        ----------
        r_alpha, r_beta : numpy.ndarray
            Full flat residual line over all ``H * W`` pixels (row-major), as
            returned by :func:`residual_line`.

        Returns
        -------
        alpha_c, beta_c : numpy.ndarray
            ``alpha_c = (r_alpha[e] - lam, r_alpha[e] + lam)``,
            ``beta_c = (r_beta[e], r_beta[e])``.

        Notes
        -----
        NOTE: ``r_alpha[e] -+ lam`` is rounded to float64, which can move a
        cut's root by about one unit in the last place of its intercept. Exact
        crossing points come from :meth:`exact_crossings`, and exact
        membership sets from :func:`truncation_from_lemma`.
        """
        alpha, beta, exact = self._eligible_pair(r_alpha, r_beta)
        if exact:
            raise InputError("cuts() works on float64 residual lines; use exact_crossings() for Fraction input")
        alpha_c = np.concatenate([alpha - self.lam, alpha + self.lam])
        beta_c = np.concatenate([beta, beta])
        return alpha_c, beta_c

    def region_from_signs(self, signs: object) -> np.ndarray:
        """Map the cut signs on an open interval to the boolean ``(H, W)`` region.

        Parameters
        ----------
        signs : array_like
            ``2 * m`` entries in cut order. Booleans (True = positive, False =
            negative), or integers in ``{-1, 0, 1}`` where 0 marks a cut that
            is identically zero on the interval.

        Raises
        ------
        InputError
            For a wrong length or values outside the accepted ones.
        """
        arr = np.asarray(signs)
        if arr.shape != (2 * self.m,):
            raise InputError(f"signs has shape {arr.shape}; pass a 1-D array of 2 * m = {2 * self.m} cut signs")
        if arr.dtype == np.bool_:
            sign = np.where(arr, 1, -1)
        elif np.issubdtype(arr.dtype, np.integer) and np.isin(arr, (-1, 0, 1)).all():
            sign = arr.astype(np.int64)
        else:
            raise InputError(f"signs has dtype {arr.dtype}; pass booleans or integers in {{-1, 0, 1}}")
        upper, lower = sign[: self.m], sign[self.m :]
        member = (upper > 0) | (lower < 0)
        if not self.strict:
            member |= (upper == 0) | (lower == 0)
        region = np.zeros(self.shape[0] * self.shape[1], dtype=bool)
        region[self.eligible_index] = member
        return region.reshape(self.shape)

    def exact_crossings(
        self,
        r_alpha: object,
        r_beta: object,
        lo: object,
        hi: object,
    ) -> list[tuple[Fraction, tuple[int, ...]]]:
        """Return every exact point of the open interval ``(lo, hi)`` where a cut crosses zero.

        Cut ``j`` crosses at ``(lam - r_alpha[e_j]) / r_beta[e_j]`` and cut
        ``m + j`` at ``(-lam - r_alpha[e_j]) / r_beta[e_j]``, computed with
        Fraction arithmetic on the stored binary64 values (and on ``lam``).
        Cuts with zero slope never cross.

        Returns
        -------
        list of (z, cut_indices)
            Sorted by ``z``; each distinct crossing point once, with the
            ascending indices of all cuts that are zero there.
        """
        alpha, beta, exact = self._eligible_pair(r_alpha, r_beta)
        lo_e = _end(lo, "lo")
        hi_e = _end(hi, "hi")
        if not lo_e < hi_e:
            raise InputError(f"interval ({lo!r}, {hi!r}) is empty; pass lo < hi")
        lam_q = Fraction(self.lam)
        if exact:
            pending = np.arange(self.m)
        else:
            decided, _ = _classify_float(alpha, beta, self.lam, lo_e, hi_e)
            pending = np.flatnonzero(~decided)

        found: dict[Fraction, list[int]] = {}
        for j in pending:
            alpha_q = _exact(alpha[j], "r_alpha")
            beta_q = _exact(beta[j], "r_beta")
            if beta_q == 0:
                continue
            for cut, root in ((int(j), (lam_q - alpha_q) / beta_q), (self.m + int(j), (-lam_q - alpha_q) / beta_q)):
                if lo_e < root < hi_e:
                    found.setdefault(root, []).append(cut)
        return [(z, tuple(sorted(found[z]))) for z in sorted(found)]

    def region_at(self, r_alpha: object, r_beta: object, z: object) -> np.ndarray:
        """Return the boolean ``(H, W)`` region at the point ``z``, decided in exact arithmetic.

        Each eligible pixel is compared as ``|alpha + beta z| >= lam`` (``>``
        when ``strict``) with Fraction arithmetic, so a score equal to ``lam``
        at ``z`` is decided by the definition and not by rounding.
        """
        alpha, beta, _ = self._eligible_pair(r_alpha, r_beta)
        z_q = _exact(z, "z")
        lam_q = Fraction(self.lam)
        member = np.zeros(self.m, dtype=bool)
        for j in range(self.m):
            score = abs(_exact(alpha[j], "r_alpha") + _exact(beta[j], "r_beta") * z_q)
            member[j] = score > lam_q if self.strict else score >= lam_q
        region = np.zeros(self.shape[0] * self.shape[1], dtype=bool)
        region[self.eligible_index] = member
        return region.reshape(self.shape)


def _line_image(arr: object, name: str, shape: tuple[int, ...] | None, exact: bool) -> np.ndarray:
    """Validate one image of the line; with ``exact`` return it as an ``object`` array of Fractions."""
    raw = np.asarray(arr)
    if raw.dtype != object:
        image = validate_image(raw, name=name, expected_shape=shape)
        return np.vectorize(Fraction, otypes=[object])(image) if exact else image
    if raw.ndim == 2:
        raw = raw[np.newaxis]
    if raw.ndim != 3 or (shape is not None and raw.shape != shape):
        raise InputError(f"{name} has shape {raw.shape}; pass a (C, H, W) array matching the line input")
    return np.vectorize(lambda value: _exact(value, name), otypes=[object])(raw)


def residual_line(
    a_img: np.ndarray,
    b_img: np.ndarray,
    out_alpha: np.ndarray,
    out_beta: np.ndarray,
    kernel_size: int,
    profile: str = "inside",
) -> tuple[np.ndarray, np.ndarray]:
    """Return the filtered residual on one linear piece as ``r(z) = r_alpha + r_beta z``.

    With the line input ``x(z) = a + b z`` and the reconstruction on the piece
    ``D(x(z)) = out_alpha + out_beta z``, the residual map is
    ``F(mean_c(x(z) - D(x(z))))``. The filter ``F`` and the channel mean are
    linear without offset, so ``r_alpha = F(mean_c(a - out_alpha))`` and
    ``r_beta = F(mean_c(b - out_beta))``.

    Parameters
    ----------
    a_img, b_img : numpy.ndarray
        The line's intercept and direction as ``(C, H, W)`` images.
    out_alpha, out_beta : numpy.ndarray
        The reconstruction's intercept and slope on the piece, ``(C, H, W)``.
    kernel_size : int
        Odd ``K >= 1`` of the mean filter.
    profile : {"inside", "si4onnx"}
        Filter profile, see :func:`dalverify.selection.region.average_filter`.

    Returns
    -------
    r_alpha, r_beta : numpy.ndarray
        Flat arrays of ``H * W`` entries, pixels in row-major order. float64,
        or ``object`` arrays of exact Fractions when any input is an
        ``object`` array (float inputs are then taken as the exact binary64
        rationals they store).

    Raises
    ------
    InputError
        For invalid or mismatched images or filter settings.

    Notes
    -----
    In float64, ``r_alpha + r_beta * t`` at ``t = t_obs`` equals
    :func:`~dalverify.selection.region.residual_scores` of the observed image
    only up to rounding, so the observed region must be decided on the line
    (for example with :meth:`LambdaCuts.region_at`) to match the walk.
    """
    exact = any(np.asarray(arr).dtype == object for arr in (a_img, b_img, out_alpha, out_beta))
    a = _line_image(a_img, "a_img", None, exact)
    shape = a.shape
    b = _line_image(b_img, "b_img", shape, exact)
    alpha_out = _line_image(out_alpha, "out_alpha", shape, exact)
    beta_out = _line_image(out_beta, "out_beta", shape, exact)
    channels = shape[0]
    intercept = (a - alpha_out).sum(axis=0) / channels
    slope = (b - beta_out).sum(axis=0) / channels
    r_alpha = average_filter(intercept, kernel_size, profile=profile).reshape(-1)
    r_beta = average_filter(slope, kernel_size, profile=profile).reshape(-1)
    return r_alpha, r_beta
