"""The test statistic ``T = nu^T (X; X_ref)`` and the line through the data along it.

For a region ``M`` of pixels, ``T`` is the mean over the region's pixels of
the channel sum of ``X - X_ref``:
``T = (1/|M|) sum_{i in M} sum_c (X_{i,c} - X_ref_{i,c})``. With
``X ~ N(mu, Sigma)``, ``X_ref ~ N(mu_ref, c_ref Sigma)`` independent, the
joint covariance is ``SigmaTilde = blockdiag(Sigma, c_ref Sigma)`` and

- ``s^2 = Var(T) = nu^T SigmaTilde nu``,
- ``b = SigmaTilde nu / s^2`` and ``a = (x; x_ref) - b t_obs``,

so that ``(x; x_ref) = a + b t_obs`` and ``a`` is independent of ``T`` under
the Gaussian model (``proofs/line_decomposition.md``). Vectors of length
``2n`` hold ``x`` in the first ``n`` entries and ``x_ref`` in the last ``n``,
each in pixel-major, then channel order.
"""

from __future__ import annotations

import logging
import math
import numbers
from dataclasses import dataclass

import numpy as np

from dalverify.errors import CovarianceError, InputError, NumericalError
from dalverify.images import image_to_vector, validate_image, vector_to_image
from dalverify.methods.covariance import Covariance
from dalverify.tolerances import LINE_RECONSTRUCTION_ULPS

logger = logging.getLogger(__name__)

_UNIT_ROUNDOFF = 2.0**-53


def _check_region(region: object, shape: tuple[int, int] | None = None) -> np.ndarray:
    arr = np.asarray(region)
    if arr.dtype != np.bool_:
        raise InputError(f"region has dtype {arr.dtype}; pass the boolean (H, W) region")
    if arr.ndim != 2 or (shape is not None and arr.shape != shape):
        expected = "(H, W)" if shape is None else str(shape)
        raise InputError(f"region has shape {arr.shape}; pass a boolean array of shape {expected}")
    if not arr.any():
        raise InputError(
            "region is empty, so there is no hypothesis to test; report 'no anomalous region' instead of a p-value"
        )
    return arr


def test_direction(region: np.ndarray, n_channels: int) -> np.ndarray:
    """Return the test direction ``nu = (1/|M|) (1_M; -1_M)`` of length ``2n``.

    ``1_M`` has a 1 on every channel of every region pixel, in pixel-major,
    then channel order, so ``n = H * W * C`` and ``|M|`` counts pixels.

    Parameters
    ----------
    region : numpy.ndarray
        Boolean ``(H, W)`` region, not empty.
    n_channels : int
        ``C``, 1 or 3.

    Returns
    -------
    numpy.ndarray
        float64 vector of length ``2 * H * W * C``. Its entries are
        ``+-fl(1/|M|)``, exact when ``|M|`` is a power of two.

    Raises
    ------
    InputError
        For an empty or non-boolean region or an invalid channel count.
    """
    mask = _check_region(region)
    if isinstance(n_channels, bool) or not isinstance(n_channels, numbers.Integral) or n_channels not in (1, 3):
        raise InputError(f"n_channels={n_channels!r} must be 1 (grey) or 3 (RGB)")
    indicator = np.repeat(mask.reshape(-1), int(n_channels)).astype(np.float64)
    size = int(mask.sum())
    return np.concatenate([indicator, -indicator]) / size


# The name starts with "test_"; this keeps pytest from collecting it where it is imported.
test_direction.__test__ = False  # type: ignore[attr-defined]


def _check_reference_scale(reference_scale: object) -> float:
    if isinstance(reference_scale, bool) or not isinstance(reference_scale, numbers.Real):
        raise InputError(f"reference_scale={reference_scale!r} is not a real number; pass c_ref >= 0")
    value = float(reference_scale)
    if not math.isfinite(value) or value < 0:
        raise InputError(
            f"reference_scale={reference_scale!r} must be finite and >= 0: 1 for one reference image, "
            "1/N for the mean of N independent normal images, 0 for a fixed template"
        )
    return value


@dataclass(frozen=True)
class Line:
    """The statistic and the line ``(x(z); x_ref(z)) = a + b z`` through the data.

    Attributes
    ----------
    nu : numpy.ndarray
        Test direction, length ``2n``.
    t_obs : float
        Observed statistic ``nu^T (x; x_ref)``.
    sd : float
        ``s = sqrt(nu^T SigmaTilde nu)``, the standard deviation of ``T``.
    a, b : numpy.ndarray
        Intercept and direction of the line, length ``2n``;
        ``b = SigmaTilde nu / s^2`` and ``a = (x; x_ref) - b t_obs``.
    a_image, b_image : numpy.ndarray
        The first ``n`` entries of ``a`` and ``b`` as ``(C, H, W)`` images:
        the model input along the line is ``a_image + b_image * z``.
    reconstruction_error : float
        ``max |a + b t_obs - (x; x_ref)|`` evaluated in float64.
    reconstruction_error_ulps : float
        The largest entrywise error in units of
        ``2^-53 (|d_i| + |b_i t_obs|)``, checked against
        ``LINE_RECONSTRUCTION_ULPS``.
    region : numpy.ndarray
        The boolean ``(H, W)`` region that defines ``nu``.
    reference_scale : float
        ``c_ref``.
    image_shape : tuple of int
        ``(C, H, W)``.
    covariance_digest : str
        :meth:`Covariance.digest` of ``Sigma``.
    """

    nu: np.ndarray
    t_obs: float
    sd: float
    a: np.ndarray
    b: np.ndarray
    a_image: np.ndarray
    b_image: np.ndarray
    reconstruction_error: float
    reconstruction_error_ulps: float
    region: np.ndarray
    reference_scale: float
    image_shape: tuple[int, int, int]
    covariance_digest: str


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr = np.ascontiguousarray(arr)
    arr.setflags(write=False)
    return arr


def line_from_images(
    x_img: object,
    ref_img: object,
    region: object,
    covariance: Covariance,
    reference_scale: float,
) -> Line:
    """Compute ``t_obs``, ``s`` and the line ``a + b z`` for a test image, its reference and a region.

    With ``1_M`` the region indicator on every channel, ``w = Sigma 1_M``
    and ``q = 1_M^T w``, the closed forms used are ``s^2 = (1 + c_ref) q /
    |M|^2``, ``b = |M| / ((1 + c_ref) q) * (w; -c_ref w)`` and
    ``t_obs = sum_{M, c} (x - x_ref) / |M|`` (sums formed with ``math.fsum``).

    Parameters
    ----------
    x_img, ref_img : array_like
        Test and reference images, same shape ``(C, H, W)`` (or ``(H, W)``).
    region : numpy.ndarray
        Boolean ``(H, W)`` region, not empty (callers check emptiness and
        report "no anomalous region" themselves).
    covariance : Covariance
        ``Sigma`` of the test image, dimension ``n = H * W * C``; it is
        validated here.
    reference_scale : float
        ``c_ref >= 0``: the reference noise is ``N(0, c_ref Sigma)``; 0 means a
        fixed template without noise.

    Returns
    -------
    Line

    Raises
    ------
    InputError
        For invalid images, region, scale, or a covariance of the wrong
        dimension.
    CovarianceError
        If ``Sigma`` is not positive definite, or ``1_M^T Sigma 1_M`` is not
        positive in float64.
    NumericalError
        If ``a + b t_obs`` misses the data by more than the proven float64
        bound allows.
    """
    # 1. Validate every input.
    x = validate_image(x_img, name="x_img")
    ref = validate_image(ref_img, name="ref_img", expected_shape=x.shape)
    channels, height, width = x.shape
    mask = _check_region(region, (height, width))
    c_ref = _check_reference_scale(reference_scale)
    if not isinstance(covariance, Covariance):
        raise InputError(f"covariance is a {type(covariance).__name__}; pass a dalverify Covariance object")
    n = channels * height * width
    if covariance.n != n:
        raise InputError(
            f"covariance has dimension {covariance.n} but the images have H * W * C = {n} entries; "
            "pass a covariance built for this image shape"
        )
    covariance.validate()

    # 2. The statistic and its variance.
    size = int(mask.sum())
    indicator = np.repeat(mask.reshape(-1), channels).astype(np.float64)
    x_vec = image_to_vector(x)
    ref_vec = image_to_vector(ref)
    selected = indicator.astype(bool)
    t_obs = math.fsum(np.concatenate([x_vec[selected], -ref_vec[selected]]).tolist()) / size
    w = covariance.apply(indicator)
    q = math.fsum((w[selected]).tolist())
    if not q > 0:
        raise CovarianceError(
            f"1_M^T Sigma 1_M = {q!r} is not positive for a region of {size} pixels, so Var(T) would not be "
            "positive; check that Sigma is positive definite"
        )
    variance = (1.0 + c_ref) * q / (size * size)
    sd = math.sqrt(variance)

    # 3. The line: b = SigmaTilde nu / s^2, a = d - b t_obs.
    scale = size / ((1.0 + c_ref) * q)
    b_top = scale * w
    b = np.concatenate([b_top, -c_ref * b_top])
    data = np.concatenate([x_vec, ref_vec])
    shift = b * t_obs
    a = data - shift

    # 4. Check that the line reproduces the data within the proven rounding bound.
    error = np.abs((a + shift) - data)
    bound_unit = _UNIT_ROUNDOFF * (np.abs(data) + np.abs(shift))
    with np.errstate(divide="ignore", invalid="ignore"):
        ulps = np.where(error == 0, 0.0, error / bound_unit)
    worst_ulps = float(ulps.max())
    reconstruction_error = float(error.max())
    if not worst_ulps <= LINE_RECONSTRUCTION_ULPS:
        index = int(np.argmax(ulps))
        raise NumericalError(
            f"a + b * t_obs misses the data at entry {index} by {error[index]:.3e} = {worst_ulps:.2f} units of "
            f"2^-53 * (|d| + |b t_obs|), above the bound {LINE_RECONSTRUCTION_ULPS}; the float64 arithmetic "
            "is not behaving as IEEE 754 requires"
        )
    logger.debug(
        "line: |M|=%d t_obs=%r sd=%r reconstruction error %.3e (%.2f ulps)",
        size, t_obs, sd, reconstruction_error, worst_ulps,
    )

    nu = np.concatenate([indicator, -indicator]) / size
    shape = (channels, height, width)
    return Line(
        nu=_frozen(nu),
        t_obs=float(t_obs),
        sd=float(sd),
        a=_frozen(a),
        b=_frozen(b),
        a_image=_frozen(vector_to_image(a[:n], shape)),
        b_image=_frozen(vector_to_image(b[:n], shape)),
        reconstruction_error=reconstruction_error,
        reconstruction_error_ulps=worst_ulps,
        region=_frozen(mask.copy()),
        reference_scale=c_ref,
        image_shape=shape,
        covariance_digest=covariance.digest(),
    )
