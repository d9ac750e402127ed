"""Noise covariance ``Sigma`` of an image vector, in a few structured forms.

Every object acts on the ``n``-vector of an image in pixel-major, then
channel order (entry ``i * C + c`` is channel ``c`` of pixel ``i``, pixels in
row-major order), and offers the same interface:

- ``n``: the dimension;
- ``apply(v)``: ``Sigma @ v`` for ``v`` of shape ``(n,)`` or ``(n, k)``;
- ``quad(u, v=None)``: ``u^T Sigma v`` (``v = u`` when omitted);
- ``validate()``: raise :class:`~dalverify.errors.CovarianceError` unless
  ``Sigma`` is symmetric positive definite at float64 working precision;
- ``to_dense()``: the ``(n, n)`` matrix, for ``n <= DENSE_LIMIT``;
- ``digest()``: sha256 over the kind and the exact bytes of the parameters;
- ``to_json()``, ``save_npz(path)``, with :func:`covariance_from_json` and
  :func:`load_covariance` to read them back losslessly.

Positive definiteness is decided by the Cholesky pivots: a matrix passes when
every pivot exceeds ``COVARIANCE_PIVOT_FACTOR * n * 2^-53`` times its largest
diagonal entry (see :mod:`dalverify.tolerances`).
"""

from __future__ import annotations

import abc
import hashlib
import io
import json
import logging
import numbers
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.linalg
import scipy.signal

from dalverify.graph.io import atomic_write_bytes
from dalverify.errors import CovarianceError, InputError
from dalverify.images import image_to_vector
from dalverify.tolerances import COVARIANCE_PIVOT_FACTOR

logger = logging.getLogger(__name__)

#: Largest dimension for which ``to_dense()`` builds the matrix (8 * 8192^2
#: bytes = 512 MiB).
DENSE_LIMIT = 8192

#: Largest dimension for which a failed validation also reports the smallest
#: eigenvalue (``numpy.linalg.eigvalsh`` takes about a second at 2048).
_EIGENVALUE_REPORT_LIMIT = 2048

_FORMAT = "dalverify.covariance"
_FORMAT_VERSION = 1
_UNIT_ROUNDOFF = 2.0**-53


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise InputError(f"{name}={value!r} must be a positive integer (the vector length H * W * C)")
    return int(value)


def _finite_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"{name}={value!r} is not a real number; pass a finite float")
    out = float(value)
    if not np.isfinite(out):
        raise InputError(f"{name}={value!r} is not finite; pass a finite float")
    return out


def _frozen(arr: np.ndarray) -> np.ndarray:
    out = np.array(arr, dtype=np.float64, copy=True, order="C")
    out.setflags(write=False)
    return out


def _pivot_threshold(n: int, max_diagonal: float) -> float:
    return COVARIANCE_PIVOT_FACTOR * n * _UNIT_ROUNDOFF * max_diagonal


def _shrinkage_hint() -> str:
    return (
        "estimate Sigma from more normal images, or use estimate_covariance(..., shrinkage=None) "
        "for automatic shrinkage toward the diagonal, or a structured model (Isotropic, Diagonal, AR1)"
    )


class Covariance(abc.ABC):
    """Common interface of every covariance model; see the module docstring."""

    #: Name of the model, part of the digest and of saved files.
    kind: ClassVar[str] = ""

    n: int

    @abc.abstractmethod
    def _apply(self, v: np.ndarray) -> np.ndarray:
        """``Sigma @ v`` for a checked float64 ``v`` of shape ``(n,)`` or ``(n, k)``."""

    @abc.abstractmethod
    def _dense(self) -> np.ndarray:
        """Build the dense matrix without the size check."""

    @abc.abstractmethod
    def parameters(self) -> dict[str, np.ndarray]:
        """Return the parameters as named arrays (float64 or int64), enough to rebuild the object."""

    @classmethod
    @abc.abstractmethod
    def from_parameters(cls, params: dict[str, np.ndarray]) -> Covariance:
        """Rebuild the object from :meth:`parameters`."""

    @abc.abstractmethod
    def _check_positive_definite(self) -> None:
        """Raise CovarianceError when the matrix is not numerically positive definite."""

    def _check_vector(self, v: object, name: str) -> np.ndarray:
        arr = np.asarray(v, dtype=np.float64)
        if arr.ndim not in (1, 2) or arr.shape[0] != self.n:
            raise InputError(
                f"{name} has shape {arr.shape}; pass an array of shape ({self.n},) or ({self.n}, k) "
                "in pixel-major, then channel order"
            )
        if not np.isfinite(arr).all():
            raise InputError(f"{name} has {int((~np.isfinite(arr)).sum())} non-finite entries; pass finite values")
        return arr

    def apply(self, v: object) -> np.ndarray:
        """Return ``Sigma @ v`` for ``v`` of shape ``(n,)`` or ``(n, k)``, as a new float64 array.

        Raises
        ------
        InputError
            For a wrong shape or non-finite entries.
        """
        return self._apply(self._check_vector(v, "v"))

    def quad(self, u: object, v: object | None = None) -> float:
        """Return the bilinear form ``u^T Sigma v`` (``u^T Sigma u`` when ``v`` is None).

        Raises
        ------
        InputError
            For a vector of the wrong length or with non-finite entries.
        """
        u_arr = self._check_vector(u, "u")
        v_arr = u_arr if v is None else self._check_vector(v, "v")
        if u_arr.ndim != 1 or v_arr.ndim != 1:
            raise InputError(f"quad takes 1-D vectors of length {self.n}")
        return float(np.dot(u_arr, self._apply(v_arr)))

    def to_dense(self) -> np.ndarray:
        """Return the dense ``(n, n)`` matrix as a new float64 array.

        Raises
        ------
        InputError
            If ``n > DENSE_LIMIT``.
        """
        if self.n > DENSE_LIMIT:
            raise InputError(
                f"to_dense() with n={self.n} would need {8 * self.n**2 / 2**30:.1f} GiB; "
                f"it is limited to n <= {DENSE_LIMIT}, use apply() instead"
            )
        return np.array(self._dense(), dtype=np.float64, copy=True)

    def validate(self) -> None:
        """Check that ``Sigma`` is symmetric positive definite at float64 precision.

        The first successful check is remembered, so later calls are free.

        Raises
        ------
        CovarianceError
            Naming the failing Cholesky pivot (and, for ``n <= 2048``, the
            smallest eigenvalue), with the suggested fix.
        """
        if getattr(self, "_validated", False):
            return
        self._check_positive_definite()
        self._validated = True

    def digest(self) -> str:
        """Return the sha256 hex digest over the kind and the exact bytes of every parameter.

        The hashed bytes are ``"dalverify.covariance/1\\n<kind>\\n"``, then for
        each parameter in name order ``"<name>:<dtype>:<shape>\\n"`` followed by
        its values as little-endian float64 (``<f8``) or int64 (``<i8``) in C
        order, where ``<shape>`` is the Python tuple text such as ``()`` or
        ``(3, 3)``.
        """
        hasher = hashlib.sha256()
        hasher.update(f"{_FORMAT}/{_FORMAT_VERSION}\n{self.kind}\n".encode())
        for name, value in sorted(self.parameters().items()):
            arr = np.asarray(value)
            dtype = "<f8" if arr.dtype.kind == "f" else "<i8"
            hasher.update(f"{name}:{dtype}:{arr.shape}\n".encode())
            # tobytes() writes C order whatever the memory layout.
            hasher.update(arr.astype(dtype).tobytes(order="C"))
        return hasher.hexdigest()

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict that stores every float losslessly as ``float.hex()``.

        Dense matrices give ``n * n`` strings; prefer :meth:`save_npz` for
        large ``n``.
        """
        params: dict[str, Any] = {}
        for name, value in self.parameters().items():
            arr = np.asarray(value)
            if arr.dtype.kind == "f":
                data = [float(x).hex() for x in arr.reshape(-1)]
            else:
                data = [int(x) for x in arr.reshape(-1)]
            params[name] = {"shape": list(arr.shape), "dtype": "float64" if arr.dtype.kind == "f" else "int64",
                            "data": data}
        return {
            "type": _FORMAT,
            "version": _FORMAT_VERSION,
            "kind": self.kind,
            "parameters": params,
            "digest": self.digest(),
        }

    def save_npz(self, path: str | os.PathLike[str]) -> None:
        """Write the parameters and digest to an ``.npz`` file (temporary file, then rename)."""
        path = Path(path)
        arrays = {f"param_{name}": np.asarray(value) for name, value in self.parameters().items()}
        header = json.dumps({"type": _FORMAT, "version": _FORMAT_VERSION, "kind": self.kind, "digest": self.digest()})
        buffer = io.BytesIO()
        np.savez(buffer, header=np.array(header), **arrays)
        atomic_write_bytes(path, buffer.getvalue())

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, digest={self.digest()[:12]})"


class Isotropic(Covariance):
    """``Sigma = sigma^2 I_n``: independent pixels with a common standard deviation.

    Parameters
    ----------
    sigma : float
        Standard deviation, finite and > 0 (in pixel units).
    n : int
        Vector length ``H * W * C``.
    """

    kind = "isotropic"

    def __init__(self, sigma: float, n: int) -> None:
        self.sigma = _finite_float(sigma, "sigma")
        if self.sigma <= 0:
            raise CovarianceError(f"sigma={sigma!r} must be > 0; an isotropic covariance needs a positive scale")
        self.n = _positive_int(n, "n")

    def _apply(self, v: np.ndarray) -> np.ndarray:
        return (self.sigma * self.sigma) * v

    def _dense(self) -> np.ndarray:
        return (self.sigma * self.sigma) * np.eye(self.n)

    def parameters(self) -> dict[str, np.ndarray]:
        return {"sigma": np.array(self.sigma), "n": np.array(self.n, dtype=np.int64)}

    @classmethod
    def from_parameters(cls, params: dict[str, np.ndarray]) -> Isotropic:
        return cls(float(params["sigma"]), int(params["n"]))

    def _check_positive_definite(self) -> None:
        # Every pivot equals sigma^2; positivity was checked at construction.
        if not self.sigma * self.sigma > 0:
            raise CovarianceError(f"sigma={self.sigma!r} squares to zero in float64; use a larger scale")


class Diagonal(Covariance):
    """``Sigma = diag(variances)``: independent entries with their own variances.

    Parameters
    ----------
    variances : array_like
        1-D, finite, > 0, in pixel-major, then channel order.
    """

    kind = "diagonal"

    def __init__(self, variances: object) -> None:
        arr = np.asarray(variances, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise InputError(f"variances has shape {arr.shape}; pass a non-empty 1-D array of length H * W * C")
        if not np.isfinite(arr).all():
            raise InputError(f"variances has {int((~np.isfinite(arr)).sum())} non-finite entries; pass finite values")
        if not (arr > 0).all():
            index = int(np.argmin(arr))
            raise CovarianceError(
                f"variances[{index}] = {float(arr[index])!r} is not > 0, so the matrix is not positive definite; "
                "every entry needs a positive variance"
            )
        self.variances = _frozen(arr)
        self.n = int(arr.size)

    def _apply(self, v: np.ndarray) -> np.ndarray:
        scale = self.variances if v.ndim == 1 else self.variances[:, np.newaxis]
        return scale * v

    def _dense(self) -> np.ndarray:
        return np.diag(self.variances)

    def parameters(self) -> dict[str, np.ndarray]:
        return {"variances": self.variances}

    @classmethod
    def from_parameters(cls, params: dict[str, np.ndarray]) -> Diagonal:
        return cls(params["variances"])

    def _check_positive_definite(self) -> None:
        # The Cholesky pivots of a diagonal matrix are its entries.
        smallest = float(self.variances.min())
        threshold = _pivot_threshold(self.n, float(self.variances.max()))
        if smallest <= threshold:
            index = int(np.argmin(self.variances))
            raise CovarianceError(
                f"variances[{index}] = {smallest!r} is at or below {threshold:.3e}, the rounding level of the "
                "largest variance, so the matrix is singular at float64 precision; raise the smallest variances"
            )


class AR1(Covariance):
    """``Sigma_ij = sigma^2 rho^|i - j|`` over the vector index (pixel-major, then channel).

    ``apply`` runs in O(n) time for every ``n``: with the first-order
    recursions ``f_i = v_i + rho f_{i-1}`` (forward) and
    ``g_i = v_i + rho g_{i+1}`` (backward), ``Sigma v = sigma^2 (f + g - v)``.
    The recursions run in ``scipy.signal.lfilter``; their float64 error in
    entry ``i`` is of order ``u / (1 - |rho|)`` (``u = 2^-53``) relative to
    ``sum_j |rho|^|i-j| |v_j|``, an estimate that the tests check against the
    dense product.

    Parameters
    ----------
    rho : float
        Correlation of neighbouring entries, ``-1 < rho < 1``.
    n : int
        Vector length ``H * W * C``.
    sigma : float
        Standard deviation of every entry, > 0.
    """

    kind = "ar1"

    def __init__(self, rho: float, n: int, sigma: float = 1.0) -> None:
        self.rho = _finite_float(rho, "rho")
        if not -1.0 < self.rho < 1.0:
            raise CovarianceError(
                f"rho={rho!r} must satisfy -1 < rho < 1; at |rho| >= 1 the AR(1) matrix is singular or indefinite"
            )
        self.n = _positive_int(n, "n")
        self.sigma = _finite_float(sigma, "sigma")
        if self.sigma <= 0:
            raise CovarianceError(f"sigma={sigma!r} must be > 0")

    def _apply(self, v: np.ndarray) -> np.ndarray:
        recursion = ([1.0], [1.0, -self.rho])
        forward = scipy.signal.lfilter(*recursion, v, axis=0)
        backward = scipy.signal.lfilter(*recursion, v[::-1], axis=0)[::-1]
        return (self.sigma * self.sigma) * (forward + backward - v)

    def _dense(self) -> np.ndarray:
        lag = np.abs(np.subtract.outer(np.arange(self.n), np.arange(self.n)))
        return (self.sigma * self.sigma) * np.power(self.rho, lag)

    def parameters(self) -> dict[str, np.ndarray]:
        return {"rho": np.array(self.rho), "n": np.array(self.n, dtype=np.int64), "sigma": np.array(self.sigma)}

    @classmethod
    def from_parameters(cls, params: dict[str, np.ndarray]) -> AR1:
        return cls(float(params["rho"]), int(params["n"]), float(params["sigma"]))

    def _check_positive_definite(self) -> None:
        # The Cholesky pivots are sigma^2 once and sigma^2 (1 - rho^2) n - 1 times.
        if self.n == 1:
            return
        relative_pivot = 1.0 - self.rho * self.rho
        threshold = _pivot_threshold(self.n, 1.0)
        if relative_pivot <= threshold:
            raise CovarianceError(
                f"rho={self.rho!r} gives Cholesky pivots sigma^2 * (1 - rho^2) = sigma^2 * {relative_pivot:.3e}, "
                f"at or below the rounding level {threshold:.3e} for n={self.n}; use |rho| further from 1"
            )


class Dense(Covariance):
    """A general ``(n, n)`` covariance matrix.

    Parameters
    ----------
    matrix : array_like
        Square, finite and exactly symmetric (``matrix == matrix.T``
        entrywise). Positive definiteness is checked by :meth:`validate`.
    """

    kind = "dense"

    def __init__(self, matrix: object) -> None:
        arr = np.asarray(matrix, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
            raise InputError(f"matrix has shape {arr.shape}; pass a square (n, n) array with n = H * W * C")
        if not np.isfinite(arr).all():
            raise InputError(f"matrix has {int((~np.isfinite(arr)).sum())} non-finite entries; pass finite values")
        if not np.array_equal(arr, arr.T):
            i, j = (int(k) for k in np.argwhere(arr != arr.T)[0])
            raise CovarianceError(
                f"matrix is not symmetric: entry ({i}, {j}) = {float(arr[i, j])!r} but ({j}, {i}) = {float(arr[j, i])!r}; "
                "symmetrize it with (S + S.T) / 2"
            )
        self.matrix = _frozen(arr)
        self.n = int(arr.shape[0])

    def _apply(self, v: np.ndarray) -> np.ndarray:
        return self.matrix @ v

    def _dense(self) -> np.ndarray:
        return self.matrix

    def parameters(self) -> dict[str, np.ndarray]:
        return {"matrix": self.matrix}

    @classmethod
    def from_parameters(cls, params: dict[str, np.ndarray]) -> Dense:
        return cls(params["matrix"])

    def _check_positive_definite(self) -> None:
        diagonal = np.diag(self.matrix)
        if not (diagonal > 0).all():
            index = int(np.argmin(diagonal))
            raise CovarianceError(
                f"diagonal entry {index} is {float(diagonal[index])!r}, not > 0, so the matrix is not positive definite "
                f"(a zero variance means a constant entry); {_shrinkage_hint()}"
            )
        factor, info = scipy.linalg.lapack.dpotrf(self.matrix, lower=1, clean=1)
        threshold = _pivot_threshold(self.n, float(diagonal.max()))
        if info > 0:
            reason = f"the Cholesky factorization fails at pivot {info} (1-based): the leading {info} x {info} block is not positive definite"
        elif info < 0:
            raise CovarianceError(f"LAPACK dpotrf rejected argument {-info}; the matrix could not be factorized")
        else:
            pivots = np.diag(factor) ** 2
            index = int(np.argmin(pivots))
            if pivots[index] > threshold:
                return
            reason = (
                f"Cholesky pivot {index + 1} (1-based) is {pivots[index]:.3e}, at or below the rounding level "
                f"{threshold:.3e}, so the matrix is singular at float64 precision"
            )
        if self.n <= _EIGENVALUE_REPORT_LIMIT:
            smallest = float(np.linalg.eigvalsh(self.matrix)[0])
            reason += f"; its smallest eigenvalue is {smallest:.3e}"
        raise CovarianceError(f"covariance of dimension {self.n} is not positive definite: {reason}; {_shrinkage_hint()}")


_KINDS: dict[str, type[Covariance]] = {cls.kind: cls for cls in (Isotropic, Diagonal, AR1, Dense)}


def covariance_from_json(data: dict[str, Any]) -> Covariance:
    """Rebuild a covariance from :meth:`Covariance.to_json`, checking its digest.

    Raises
    ------
    InputError
        For an unknown type, version or kind, malformed parameters, or a
        digest that does not match the parameters (the data was altered).
    """
    if not isinstance(data, dict) or data.get("type") != _FORMAT or data.get("version") != _FORMAT_VERSION:
        raise InputError(f"not a covariance record of type {_FORMAT!r} version {_FORMAT_VERSION}")
    kind = data.get("kind")
    if kind not in _KINDS:
        raise InputError(f"covariance kind {kind!r} is unknown; expected one of {sorted(_KINDS)}")
    params: dict[str, np.ndarray] = {}
    try:
        for name, record in data["parameters"].items():
            shape = tuple(int(s) for s in record["shape"])
            if record["dtype"] == "float64":
                values = [float.fromhex(text) for text in record["data"]]
                params[name] = np.array(values, dtype=np.float64).reshape(shape)
            else:
                params[name] = np.array([int(x) for x in record["data"]], dtype=np.int64).reshape(shape)
        cov = _KINDS[kind].from_parameters(params)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"covariance record of kind {kind!r} is malformed: {exc}") from exc
    if cov.digest() != data.get("digest"):
        raise InputError(
            f"covariance record digest {data.get('digest')!r} does not match its parameters "
            f"({cov.digest()!r}); the record was altered or damaged, regenerate it"
        )
    return cov


def load_covariance(path: str | os.PathLike[str]) -> Covariance:
    """Read a covariance written by :meth:`Covariance.save_npz`, checking its digest.

    Raises
    ------
    InputError
        For a missing, unreadable or altered file.
    """
    try:
        with np.load(path, allow_pickle=False) as npz:
            header = json.loads(str(npz["header"]))
            params = {key[len("param_"):]: npz[key] for key in npz.files if key.startswith("param_")}
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read covariance file {str(path)!r}: {exc}") from exc
    if header.get("type") != _FORMAT or header.get("version") != _FORMAT_VERSION or header.get("kind") not in _KINDS:
        raise InputError(f"{str(path)!r} is not a covariance file of type {_FORMAT!r} version {_FORMAT_VERSION}")
    try:
        cov = _KINDS[header["kind"]].from_parameters(params)
    except KeyError as exc:
        raise InputError(f"covariance file {str(path)!r} lacks parameter {exc}") from exc
    if cov.digest() != header.get("digest"):
        raise InputError(
            f"covariance file {str(path)!r} does not match its recorded digest; it was altered or damaged, "
            "regenerate it"
        )
    return cov


def shrinkage_intensity(vectors: np.ndarray) -> float:
    """Estimate the intensity ``delta`` of shrinking the sample covariance toward its diagonal.

    For centred data ``y_k = x_k - mean`` (``k = 1 .. N``) with sample
    covariance ``s_ij = sum_k y_ki y_kj / (N - 1)`` and ``w_kij = y_ki y_kj``,
    the estimate is (Schaefer and Strimmer 2005, Stat. Appl. Genet. Mol.
    Biol. 4(1) art. 32, Table 1, target D, the Ledoit-Wolf analytic
    intensity for a diagonal target)::

        delta = sum_{i != j} Var^(s_ij) / sum_{i != j} s_ij^2,
        Var^(s_ij) = N / (N - 1)^3 * sum_k (w_kij - mean_k w_kij)^2,

    clipped to ``[0, 1]``. The numerator is formed without the ``N x n x n``
    array ``w`` through ``sum_{ij} w_kij^2 = (sum_i y_ki^2)^2``.

    Parameters
    ----------
    vectors : numpy.ndarray
        Shape ``(N, n)``, ``N >= 2`` observations (rows).

    Returns
    -------
    float
        ``delta`` in ``[0, 1]``; 0 when the sample covariance has no
        off-diagonal mass.
    """
    count = vectors.shape[0]
    centred = vectors - vectors.mean(axis=0)
    sample = centred.T @ centred / (count - 1)
    squares = centred * centred
    row_norm2 = squares.sum(axis=1)
    sum_w2_off = float(np.sum(row_norm2 * row_norm2) - np.sum(squares * squares))
    off_s2 = float(np.sum(sample * sample) - np.sum(np.diag(sample) ** 2))
    if off_s2 <= 0:
        return 0.0
    mean_w2_off = ((count - 1) / count) ** 2 * off_s2
    numerator = count / (count - 1) ** 3 * (sum_w2_off - count * mean_w2_off)
    return float(min(1.0, max(0.0, numerator / off_s2)))


def estimate_covariance(stack: object, shrinkage: float | None = None, *, constant_variance: float | None = None) -> Dense:
    """Estimate ``Sigma`` from normal images and shrink it toward its diagonal.

    The sample covariance ``S`` (divisor ``N - 1``) of the image vectors is
    combined with its diagonal ``D`` as ``(1 - delta) S + delta D``, which
    keeps every variance and scales every covariance by ``1 - delta``.

    Parameters
    ----------
    stack : array_like
        Normal images, shape ``(N, C, H, W)`` (or ``(N, H, W)`` for grey),
        ``N >= 2``. Use images that take part neither in training nor in
        testing.
    shrinkage : float, optional
        ``delta`` in ``[0, 1]``. ``None`` estimates it with
        :func:`shrinkage_intensity`.
    constant_variance : float, optional
        Variance given to entries that are constant across the images (for
        example a fixed background outside an anatomy mask), which have no
        estimable variance; they get no covariance with other entries. A
        test whose region avoids those pixels does not depend on this value,
        because ``nu`` is zero there. ``None`` rejects constant entries.

    Returns
    -------
    Dense
        A validated positive definite covariance of dimension ``H * W * C``.

    Raises
    ------
    InputError
        For a wrong shape, fewer than 2 images, non-finite pixels, or
        ``shrinkage`` outside ``[0, 1]``.
    CovarianceError
        If the result is not positive definite, for example with
        ``shrinkage=0`` and fewer than ``n + 1`` images, or with a pixel
        that is constant across the images.
    """
    arr = np.asarray(stack, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr[:, np.newaxis]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3) or min(arr.shape) < 1:
        raise InputError(f"stack has shape {np.shape(stack)}; pass normal images as (N, C, H, W) with C in (1, 3)")
    count = arr.shape[0]
    if count < 2:
        raise InputError(f"stack has {count} image(s); a covariance estimate needs at least 2")
    if not np.isfinite(arr).all():
        raise InputError(f"stack has {int((~np.isfinite(arr)).sum())} non-finite pixel values; remove those images")
    vectors = np.stack([image_to_vector(img) for img in arr])
    n = vectors.shape[1]

    if shrinkage is None:
        delta = shrinkage_intensity(vectors)
        logger.info("covariance from %d images, n=%d: automatic shrinkage %.4g", count, n, delta)
    else:
        delta = _finite_float(shrinkage, "shrinkage")
        if not 0.0 <= delta <= 1.0:
            raise InputError(f"shrinkage={shrinkage!r} must lie in [0, 1] (0 = sample covariance, 1 = its diagonal)")
    if delta == 0.0 and count - 1 < n:
        raise CovarianceError(
            f"the sample covariance of {count} images has rank at most {count - 1} < n = {n}, so it is singular; "
            f"{_shrinkage_hint()}"
        )

    centred = vectors - vectors.mean(axis=0)
    sample = centred.T @ centred / (count - 1)
    # The matrix product is not exactly symmetric in floating point.
    sample = (sample + sample.T) / 2
    variances = np.diag(sample).copy()
    if constant_variance is not None:
        floor = _finite_float(constant_variance, "constant_variance")
        if not floor > 0:
            raise InputError(f"constant_variance={constant_variance!r} must be positive")
        constant = variances == 0
        variances[constant] = floor
        logger.info("%d constant entries get variance %g", int(constant.sum()), floor)
    if not (variances > 0).all():
        index = int(np.argmin(variances))
        raise CovarianceError(
            f"vector entry {index} (pixel {index // arr.shape[1]}, channel {index % arr.shape[1]}) is constant "
            "across the images, so its variance is 0 and no shrinkage toward the diagonal helps; "
            "exclude that pixel, pass constant_variance, or use more varied normal images"
        )
    shrunk = (1.0 - delta) * sample
    np.fill_diagonal(shrunk, variances)
    result = Dense(shrunk)
    result.validate()
    return result
