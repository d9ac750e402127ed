"""Residual filter, residual scores and the anomaly region.

The residual of a test image ``x`` with reconstruction ``D(x)`` is
``r = F(mean_c(x - D(x)))``, an ``(H, W)`` map, where ``F`` is a ``K x K``
mean filter. The anomaly region is ``M(x) = {i eligible : |r_i| >= lam}``
with a threshold ``lam > 0``.

Two filter profiles exist:

``"inside"`` (default)
    Each output pixel is the mean of its neighbours that lie inside the
    image, so border pixels divide by fewer than ``K * K`` values.
``"si4onnx"``
    Zero padding and division by ``K * K`` everywhere (average pooling that
    counts the padded cells). It is offered for comparison with the public
    ``si4onnx`` package. NOTE: that this is the filter of ``si4onnx`` is
    taken from a description of that package, not checked against its code.

Both profiles are linear maps without offset, so the filter of an affine
function of the line parameter ``z`` is the affine function of the filtered
intercept and slope.
"""

from __future__ import annotations

import logging
import numbers

import numpy as np

from dalverify.errors import InputError
from dalverify.images import validate_image

logger = logging.getLogger(__name__)

#: Names of the residual filter profiles, see the module docstring.
FILTER_PROFILES = ("inside", "si4onnx")


def _check_kernel_size(kernel_size: object) -> int:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, numbers.Integral):
        raise InputError(f"kernel_size={kernel_size!r} is not an integer; pass an odd integer such as 3")
    k = int(kernel_size)
    if k < 1 or k % 2 == 0:
        raise InputError(f"kernel_size={k} must be odd and at least 1 (for example 1, 3 or 5)")
    return k


def _check_profile(profile: object) -> str:
    if profile not in FILTER_PROFILES:
        raise InputError(f"profile={profile!r} is unknown; pass one of {FILTER_PROFILES}")
    return str(profile)


def _window_sums(arr: np.ndarray, half: int, axis: int) -> np.ndarray:
    """Sum ``arr`` over the window ``[j - half, j + half]`` along ``axis`` with zero padding."""
    pad = [(0, 0)] * arr.ndim
    pad[axis] = (half, half)
    padded = np.pad(arr, pad)
    length = arr.shape[axis]
    total = np.take(padded, range(0, length), axis=axis)
    for shift in range(1, 2 * half + 1):
        total = total + np.take(padded, range(shift, shift + length), axis=axis)
    return total


def _inside_counts(length: int, half: int) -> np.ndarray:
    """Number of window positions ``[j - half, j + half]`` that fall inside ``[0, length)``."""
    j = np.arange(length)
    return np.minimum(j + half, length - 1) - np.maximum(j - half, 0) + 1


def average_filter(img2d: np.ndarray, kernel_size: int, *, profile: str = "inside") -> np.ndarray:
    """Apply the ``K x K`` mean filter to a 2-D map.

    The sum over the window is separable, so it is formed as ``K`` shifted
    additions along rows followed by ``K`` along columns; each output pixel
    is then divided by its neighbour count. Every output is a sum of at most
    ``K * K`` inputs, so the float64 rounding error of an output is at most
    about ``K * K`` units in the last place of the sum of absolute values in
    its window.

    Parameters
    ----------
    img2d : numpy.ndarray
        Shape ``(H, W)``. float64 (or any real dtype, converted to float64),
        or ``object`` holding ``fractions.Fraction`` values for an exact
        result.
    kernel_size : int
        Odd ``K >= 1``. ``K = 1`` is the identity.
    profile : {"inside", "si4onnx"}
        ``"inside"`` divides by the number of neighbours inside the image;
        ``"si4onnx"`` pads with zeros and divides by ``K * K``.

    Returns
    -------
    numpy.ndarray
        Shape ``(H, W)``, float64 (or ``object`` for exact input).

    Raises
    ------
    InputError
        For a wrong ``kernel_size``, an unknown profile, a non-2-D array or
        non-finite float input.
    """
    k = _check_kernel_size(kernel_size)
    profile = _check_profile(profile)
    arr = np.asarray(img2d)
    if arr.ndim != 2:
        raise InputError(f"the map to filter has shape {arr.shape}; pass a 2-D (H, W) array")
    exact = arr.dtype == object
    if not exact:
        arr = arr.astype(np.float64)
        if not np.isfinite(arr).all():
            raise InputError(
                f"the map to filter has {int((~np.isfinite(arr)).sum())} non-finite value(s); "
                "pass finite residuals"
            )
    half = k // 2
    height, width = arr.shape

    sums = _window_sums(_window_sums(arr, half, axis=0), half, axis=1)
    if profile == "si4onnx":
        counts = np.full((height, width), k * k, dtype=np.int64)
    else:
        counts = np.outer(_inside_counts(height, half), _inside_counts(width, half))
    if exact:
        # astype(object) yields Python ints, so Fraction / int stays exact.
        return sums / counts.astype(object)
    return sums / counts.astype(np.float64)


def residual_scores(
    x: np.ndarray,
    reconstruction: np.ndarray,
    kernel_size: int,
    *,
    profile: str = "inside",
) -> np.ndarray:
    """Compute the filtered residual ``r = F(mean_c(x - D(x)))``.

    Parameters
    ----------
    x, reconstruction : numpy.ndarray
        The test image and its reconstruction ``D(x)``, same shape
        ``(C, H, W)`` (or ``(H, W)`` for grey).
    kernel_size : int
        Odd ``K >= 1`` of the mean filter.
    profile : {"inside", "si4onnx"}
        Filter profile, see :func:`average_filter`.

    Returns
    -------
    numpy.ndarray
        The signed residual map ``r`` of shape ``(H, W)``, float64. The score
        of pixel ``i`` is ``|r_i|``.

    Raises
    ------
    InputError
        For invalid images, mismatched shapes, or invalid filter settings.
    """
    x = validate_image(x, name="x")
    recon = validate_image(reconstruction, name="reconstruction", expected_shape=x.shape)
    diff = (x - recon).sum(axis=0) / x.shape[0]
    return average_filter(diff, kernel_size, profile=profile)


def check_threshold(threshold: object) -> float:
    """Return the threshold ``lam`` as a float after checking that it is finite and positive.

    Raises
    ------
    InputError
        If ``threshold`` is not a real number, is not finite, or is not > 0.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise InputError(f"threshold={threshold!r} is not a real number; pass a positive float such as 0.8")
    lam = float(threshold)
    if not np.isfinite(lam) or lam <= 0.0:
        raise InputError(
            f"threshold={threshold!r} must be finite and > 0 (a zero threshold would select every pixel); "
            "pass a positive float such as 0.8"
        )
    return lam


def check_mask(mask: object, shape: tuple[int, int]) -> np.ndarray:
    """Return the eligibility mask as a boolean ``(H, W)`` array with at least one True pixel.

    ``None`` means every pixel is eligible. Integer arrays of 0 and 1 are
    accepted.

    Raises
    ------
    InputError
        If the shape differs from ``shape``, the values are not booleans (or 0
        and 1), or no pixel is eligible.
    """
    if mask is None:
        return np.ones(shape, dtype=bool)
    arr = np.asarray(mask)
    if arr.shape != tuple(shape):
        raise InputError(
            f"mask has shape {arr.shape} but the residual map has shape {tuple(shape)}; "
            "pass a boolean (H, W) mask of eligible pixels"
        )
    if arr.dtype != np.bool_:
        if not (np.issubdtype(arr.dtype, np.integer) and np.isin(arr, (0, 1)).all()):
            raise InputError(f"mask has dtype {arr.dtype} with values other than 0 and 1; pass a boolean array")
        arr = arr.astype(bool)
    if not arr.any():
        raise InputError("mask has no eligible pixel; pass a mask with at least one True entry, or None for all pixels")
    return arr.copy()


def select_region(
    r: np.ndarray,
    threshold: float,
    mask: np.ndarray | None = None,
    strict: bool = False,
) -> np.ndarray:
    """Select the anomaly region ``{i eligible : |r_i| >= lam}``.

    Parameters
    ----------
    r : numpy.ndarray
        Residual map of shape ``(H, W)``, finite.
    threshold : float
        ``lam``, finite and > 0.
    mask : numpy.ndarray, optional
        Boolean ``(H, W)`` eligibility mask; pixels outside it are never
        selected. ``None`` makes every pixel eligible.
    strict : bool
        Use ``|r_i| > lam`` instead of ``>=``.

    Returns
    -------
    numpy.ndarray
        Boolean ``(H, W)`` region. An empty region is a valid result (all
        False); callers report "no anomalous region" instead of a p-value.

    Raises
    ------
    InputError
        For a non-finite or non-2-D ``r``, an invalid threshold, or an
        invalid or empty mask.
    """
    lam = check_threshold(threshold)
    arr = np.asarray(r)
    if arr.ndim != 2:
        raise InputError(f"r has shape {arr.shape}; pass the (H, W) residual map")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise InputError(f"r has {int((~np.isfinite(arr)).sum())} non-finite value(s); pass finite residuals")
    eligible = check_mask(mask, arr.shape)
    scores = np.abs(arr)
    selected = scores > lam if strict else scores >= lam
    region = selected & eligible
    logger.debug("region: %d of %d eligible pixels at lam=%r", int(region.sum()), int(eligible.sum()), lam)
    return region
