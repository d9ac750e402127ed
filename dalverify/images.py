"""Image validation and the image <-> vector layout used everywhere in dalverify.

An image is a float64 array of shape ``(C, H, W)`` with ``C = 1`` (grey) or
``C = 3`` (RGB). As a vector it has ``n = H * W * C`` entries in
pixel-major, then channel order: entry ``i * C + c`` is channel ``c`` of
pixel ``i``, and pixels are numbered in row-major order (``i = row * W + col``).
That is ``vector = image.transpose(1, 2, 0).reshape(-1)``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from dalverify.errors import InputError

logger = logging.getLogger(__name__)

#: Channel counts accepted for an image: grey or RGB.
ALLOWED_CHANNELS = (1, 3)


def validate_image(
    img: object,
    *,
    name: str,
    expected_shape: Sequence[int] | None = None,
) -> np.ndarray:
    """Check an image and return it as a new float64 ``(C, H, W)`` array.

    Parameters
    ----------
    img : array_like
        Pixel values, shape ``(C, H, W)`` with ``C`` in ``{1, 3}``, or
        ``(H, W)`` for a grey image (a channel axis is added).
    name : str
        Name of the argument, used in error messages.
    expected_shape : sequence of int, optional
        Required ``(C, H, W)`` shape after the channel axis is added, for
        example the shape of the other image of a pair.

    Returns
    -------
    numpy.ndarray
        A float64 copy of shape ``(C, H, W)``, every pixel finite.

    Raises
    ------
    InputError
        If the values are not real numbers, the array is not 2-D or 3-D, the
        channel count is not 1 or 3, a side is empty, the shape differs from
        ``expected_shape``, or a pixel is NaN or infinite (the message gives
        the count and the first such index).
    """
    try:
        arr = np.asarray(img)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} cannot be read as an array ({exc}); pass a numpy array of shape (C, H, W)") from exc
    if arr.dtype == np.bool_ or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(
            f"{name} has dtype {arr.dtype}; pass real pixel values (float64, or integers that are converted to float64)"
        )
    if arr.ndim == 2:
        arr = arr[np.newaxis, :, :]
    elif arr.ndim != 3:
        raise InputError(
            f"{name} has {arr.ndim} dimension(s) with shape {arr.shape}; pass (C, H, W) or (H, W) for a grey image"
        )
    if arr.shape[0] not in ALLOWED_CHANNELS:
        hint = ""
        if arr.shape[-1] in ALLOWED_CHANNELS:
            hint = f" (the last axis has {arr.shape[-1]}: for a channels-last (H, W, C) image pass img.transpose(2, 0, 1))"
        raise InputError(
            f"{name} has {arr.shape[0]} channels in shape {arr.shape}; "
            f"the channel axis comes first and must be 1 (grey) or 3 (RGB){hint}"
        )
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise InputError(f"{name} has shape {arr.shape} with an empty side; pass an image with at least one pixel")
    if expected_shape is not None and tuple(arr.shape) != tuple(int(s) for s in expected_shape):
        raise InputError(
            f"{name} has shape {arr.shape} but shape {tuple(expected_shape)} is required; "
            "resize or crop it to the shape of the other image and of the model input"
        )
    out = np.array(arr, dtype=np.float64, copy=True)
    bad = ~np.isfinite(out)
    if bad.any():
        count = int(bad.sum())
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(
            f"{name} has {count} non-finite pixel value(s) (NaN or infinite), the first at index "
            f"(c, row, col) = {first} with value {float(out[first])!r}; replace or mask them before testing"
        )
    return out


def image_to_vector(img: np.ndarray) -> np.ndarray:
    """Flatten a ``(C, H, W)`` image into the pixel-major, then channel vector.

    A 2-D ``(H, W)`` array is treated as a grey image. The dtype is kept, so
    exact (``object``) arrays of ``fractions.Fraction`` flatten the same way.

    Returns
    -------
    numpy.ndarray
        A new 1-D array of length ``H * W * C`` with entry ``i * C + c`` equal
        to ``img[c, i // W, i % W]``.

    Raises
    ------
    InputError
        If the array is not 2-D or 3-D.
    """
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[np.newaxis]
    if arr.ndim != 3:
        raise InputError(f"image has shape {arr.shape}; pass (C, H, W) or (H, W)")
    return np.ascontiguousarray(arr.transpose(1, 2, 0)).reshape(-1).copy()


def vector_to_image(vec: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Reshape a pixel-major, then channel vector into a ``(C, H, W)`` image.

    This is the inverse of :func:`image_to_vector`; the dtype is kept.

    Parameters
    ----------
    vec : numpy.ndarray
        1-D array of length ``C * H * W``.
    shape : sequence of int
        The target ``(C, H, W)``.

    Raises
    ------
    InputError
        If ``shape`` is not three positive integers or its size differs from
        the length of ``vec``.
    """
    arr = np.asarray(vec)
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(f"shape {shape} is not a (C, H, W) shape of positive sizes")
    channels, height, width = shape
    if arr.ndim != 1 or arr.size != channels * height * width:
        raise InputError(
            f"vector of shape {arr.shape} cannot become an image of shape {shape}; "
            f"it needs exactly {channels * height * width} entries in a 1-D array"
        )
    return np.ascontiguousarray(arr.reshape(height, width, channels).transpose(2, 0, 1)).copy()
