"""The audit certificate of a DAL-Test run: a versioned JSON file plus a sidecar ``.npz``.

The certificate records everything needed to re-check a run's p-values
without trusting the code that produced them: the hashes of the graph, the
images, the covariance, the eligibility mask and the settings; the line and
the images themselves (in the sidecar, referenced by its sha256); ``t_obs``
and ``sd`` as ``float.hex`` strings; every interval of the walk with its
ends, pattern digest, end units, cut-sign digest and region flag; the
p-values as decimal strings with ``log10`` and enclosures; and the result of
the producer's own certification (:mod:`dalverify.certify.piece_check`).
The schema is documented in ``docs/certificate.md``; the independent check
is :func:`dalverify.certify.verify.verify`.

Files are written atomically (temporary file, then rename).
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import logging
import math
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np

from dalverify.errors import CertificateError, GraphFileError, InputError
from dalverify.graph.io import atomic_write_bytes, load_graph, save_graph

logger = logging.getLogger(__name__)

FORMAT = "dalverify-certificate"
FORMAT_VERSION = 1

#: The statement of the certified object, written into every certificate.
SEMANTICS = (
    "The certified object is the real-valued function defined by the exported graph's float64 parameters, "
    "each read as the exact binary64 rational it stores, on the stored line x(z) = a + b z with a and b "
    "the exact binary64 vectors of the sidecar file, together with the selection event "
    "{z : region(x(z)) = observed region} computed with the same filter and threshold in exact arithmetic. "
    "Nothing is claimed about a torch float32 or GPU evaluation of the model. The stored t_obs, a and b "
    "define the test; how far a + b t_obs is from the observed images is recorded separately."
)


# ---------------------------------------------------------------------------
# Hashes (the verifier re-implements each of them).


def image_sha256(image: np.ndarray) -> str:
    """sha256 of ``b"dalverify-image/1\\n" + JSON shape + b"\\n" + little-endian float64 bytes (C order)``."""
    array = np.ascontiguousarray(np.asarray(image, dtype="<f8"))
    hasher = hashlib.sha256(b"dalverify-image/1\n")
    hasher.update(json.dumps(list(array.shape)).encode() + b"\n")
    hasher.update(array.tobytes())
    return hasher.hexdigest()


def mask_sha256(mask: np.ndarray) -> str:
    """sha256 of ``b"dalverify-mask/1\\n" + JSON shape + b"\\n" + packbits(mask)`` (row-major)."""
    array = np.ascontiguousarray(np.asarray(mask, dtype=bool))
    hasher = hashlib.sha256(b"dalverify-mask/1\n")
    hasher.update(json.dumps(list(array.shape)).encode() + b"\n")
    hasher.update(np.packbits(array.ravel()).tobytes())
    return hasher.hexdigest()


def settings_sha256(settings: dict[str, Any]) -> str:
    """sha256 of the settings as canonical JSON (sorted keys, ``(",", ":")`` separators)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes."""
    hasher = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def _hex(value: float) -> str:
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value.hex()


def package_versions() -> dict[str, str | None]:
    """Versions of dalverify, Python and the numerical packages used by producer and verifier."""
    from importlib import metadata

    import dalverify

    versions: dict[str, str | None] = {"dalverify": dalverify.__version__, "python": platform.python_version()}
    for name in ("numpy", "mpmath", "cvxpy", "highspy", "scipy", "torch"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# ---------------------------------------------------------------------------
# Writer.


def _interval_record(piece, check) -> dict[str, Any]:
    record = {
        "lo": _hex(piece.lo),
        "hi": _hex(piece.hi),
        "pattern": piece.pattern,
        "end_units": [[int(node), int(index)] for node, index in piece.end_units],
        "signs": piece.signs,
        "in_z": bool(piece.label),
        "network_piece": int(piece.network_piece),
    }
    if check is not None and check.end_roots is not None:
        record["end_roots"] = list(check.end_roots)
    return record


def _sidecar_bytes(line, image: np.ndarray, reference: np.ndarray, region: np.ndarray, mask: np.ndarray | None) -> bytes:
    arrays = {
        "a": np.asarray(line.a, dtype="<f8"),
        "b": np.asarray(line.b, dtype="<f8"),
        "image": np.asarray(image, dtype="<f8"),
        "reference": np.asarray(reference, dtype="<f8"),
        "region": np.asarray(region, dtype=bool),
    }
    if mask is not None:
        arrays["mask"] = np.asarray(mask, dtype=bool)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _as_image(value: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim == 2:
        array = array[np.newaxis]
    if array.shape != tuple(shape):
        raise InputError(f"{name} has shape {array.shape}; the run's images have shape {tuple(shape)}")
    return array


def _relative(path: Path, base: Path) -> str:
    try:
        return os.path.relpath(path, base)
    except ValueError:  # another drive on Windows
        return str(path)


def build_certificate(
    result: Any,
    image: Any,
    reference: Any,
    *,
    graph: Any = None,
    covariance: Any = None,
    mask: np.ndarray | None = None,
    method: str = "auto",
    lp: bool | None = None,
    progress: bool | None = None,
) -> tuple[dict[str, Any], Any]:
    """Certify a run and return ``(certificate_dict_without_files, PartitionCertificate or None)``.

    See :func:`write_certificate` for the parameters. The ``files`` and the
    sidecar hash are filled in by the writer.
    """
    from dalverify.certify.piece_check import ResidualCuts, certify_partition
    from dalverify.methods.pvalues import selective_pvalue_enclosure
    from dalverify.numerics.intervals import IntervalUnion

    if getattr(result, "status", None) != "ok" or result.partition is None or result.line is None:
        raise CertificateError(
            f"a certificate needs a run with a p-value; this run has status {getattr(result, 'status', None)!r} "
            "(no anomalous region, or no walk)"
        )
    line = result.line
    settings = dict(result.settings)
    shape = tuple(line.image_shape)
    x = _as_image(image, shape, "image")
    ref = _as_image(reference, shape, "reference")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != shape[1:]:
            raise InputError(f"mask has shape {mask.shape}; the run's images have (H, W) = {shape[1:]}")
    if settings.get("mask_pixels") is not None and mask is None:
        logger.warning("the run used an eligibility mask of %s pixels but none was passed to the certificate; "
                       "the verifier will need it", settings.get("mask_pixels"))
    if mask is not None and settings.get("mask_pixels") is not None and int(mask.sum()) != int(settings["mask_pixels"]):
        raise InputError(f"mask has {int(mask.sum())} eligible pixels, the run used {settings['mask_pixels']}")

    profile = settings.get("profile", "default")
    filter_profile = "si4onnx" if profile == "si4onnx" else "inside"
    strict = profile == "si4onnx"
    two_sided = settings.get("two_sided", "symmetric")
    dps = int(settings.get("dps", 50))
    partition = result.partition
    pieces = partition.pieces

    # 1. The producer's own certification of every interval.
    check_result = None
    certification: dict[str, Any] = {"method": "none", "reason": "no graph was given"}
    outcome = "unchecked: no graph was given; verify with --graph"
    if graph is not None and method == "none":
        certification = {"method": "none", "reason": "certification left to the independent verifier"}
        outcome = "unchecked: run 'dalverify verify' on this file"
    elif graph is not None:
        if graph.digest() != result.graph_digest:
            raise CertificateError(
                f"the graph passed has digest {graph.digest()[:16]}..., the run used {result.graph_digest[:16]}...; "
                "pass the run's graph"
            )
        cuts = ResidualCuts(line.a_image, line.b_image, settings["threshold"], settings["kernel_size"],
                            filter_profile, mask, result.region, strict)
        check_result = certify_partition(graph, line.a_image, line.b_image, partition, cuts=cuts, method=method,
                                         lp=lp, t_obs=line.t_obs, progress=progress)
        certification = check_result.summary()
        certification["certified_z"] = check_result.in_z.to_json()
        outside = IntervalUnion([(-math.inf, partition.lo), (partition.hi, math.inf)])
        unexplored = outside | check_result.unresolved
        if check_result.issues:
            outcome = f"rejected: {check_result.issues[0]}"
        elif line.t_obs not in check_result.in_z:
            outcome = "rejected: t_obs lies outside the certified truncation set"
        else:
            p_lo, p_hi = selective_pvalue_enclosure(line.t_obs, line.sd, check_result.in_z, unexplored,
                                                    two_sided=two_sided, dps=dps)
            certification["certified_enclosure"] = [p_lo.to_json()["value"], p_hi.to_json()["value"]]
            width = 0.0 if p_hi.value == 0 else float((p_hi.value - p_lo.value) / p_hi.value)
            certification["certified_relative_width"] = width
            outcome = "certified" if check_result.unresolved.is_empty else "enclosure_only"
    checks = check_result.pieces if check_result is not None else [None] * len(pieces)

    # 2. The record.
    statistic = {
        "t_obs": _hex(line.t_obs),
        "sd": _hex(line.sd),
        "reference_scale": _hex(line.reference_scale),
        "region": np.argwhere(result.region).tolist(),
        "region_size": int(result.region.sum()),
        "eligible_pixels": int(shape[1] * shape[2] if mask is None else mask.sum()),
        "reconstruction_error": line.reconstruction_error,
        "reconstruction_error_ulps": line.reconstruction_error_ulps,
    }
    pvalues = {name: value.to_json() for name, value in result.pvalues.items()}
    certificate = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "semantics": SEMANTICS,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "hashes": {
            "graph": result.graph_digest,
            "image": image_sha256(x),
            "reference": image_sha256(ref),
            "covariance": settings.get("covariance") or line.covariance_digest,
            "settings": settings_sha256(settings),
            "mask": None if mask is None else mask_sha256(mask),
            "sidecar": None,
        },
        "files": {},
        "settings": settings,
        "image_shape": list(shape),
        "statistic": statistic,
        "search": {"lo": _hex(partition.lo), "hi": _hex(partition.hi), "backend": partition.backend,
                   "network_pieces": int(partition.network_pieces)},
        "intervals": [_interval_record(piece, check) for piece, check in zip(pieces, checks)],
        "truncation": None if result.truncation is None else result.truncation.to_json(),
        "overconditioned": None if result.overconditioned is None else result.overconditioned.to_json(),
        "pvalues": pvalues,
        "certification": certification,
        "versions": package_versions(),
        "mpmath_dps": {"producer": dps, "checked_at": 2 * dps},
        "outcome": outcome,
    }
    return certificate, check_result


def write_certificate(
    path: str | os.PathLike,
    result: Any,
    image: Any,
    reference: Any,
    *,
    graph: Any = None,
    graph_path: str | os.PathLike | None = None,
    covariance: Any = None,
    mask: np.ndarray | None = None,
    method: str = "auto",
    lp: bool | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Certify a DAL-Test run and write its audit certificate.

    Writes ``path`` (JSON), the sidecar ``<stem>.npz`` (line ``a``, ``b``,
    the images, the region and the mask), the graph ``<stem>.dalg`` unless
    ``graph_path`` names an existing file, and the covariance
    ``<stem>.covariance.npz`` when the covariance object is known. Every file
    is written to a temporary name and renamed into place.

    Parameters
    ----------
    path
        Certificate file to write.
    result
        A :class:`~dalverify.methods.dal_test.TestResult` with status ``"ok"``.
    image, reference
        The test and reference images of the run, ``(C, H, W)`` or ``(H, W)``.
    graph
        The reconstruction graph of the run. Defaults to ``result.graph``
        when the result carries it, else the graph in ``graph_path``.
        Without a graph the intervals are recorded but not certified.
    graph_path
        An existing ``.dalg`` file of the graph, recorded instead of writing
        a copy next to the certificate.
    covariance
        The run's covariance object (default ``result.covariance`` when
        present). Without it the verifier needs ``--covariance``.
    mask
        The run's eligibility mask (default ``result.mask`` when present).
    method
        ``"auto"``, ``"exact"`` or ``"enclosure"`` (see
        :func:`~dalverify.certify.piece_check.certify_partition`), or
        ``"none"`` to record the run without certifying it here (the
        verifier then does all the checking).
    lp
        Run the LP cross-check (default: only for small partitions).
    progress
        Progress bar on stderr.

    Returns
    -------
    dict
        The certificate as written.

    Raises
    ------
    CertificateError
        If the run has no p-value, or ``graph`` is not the run's graph.
    """
    path = Path(path)
    graph = graph if graph is not None else getattr(result, "graph", None)
    if graph_path is not None:
        try:
            from_file = load_graph(graph_path, expected_digest=getattr(result, "graph_digest", None))
        except GraphFileError as error:
            raise CertificateError(f"graph_path {str(graph_path)!r} is not the run's graph: {error}") from error
        graph = from_file if graph is None else graph
    covariance = covariance if covariance is not None else getattr(result, "covariance", None)
    mask = mask if mask is not None else getattr(result, "mask", None)

    certificate, _ = build_certificate(result, image, reference, graph=graph, covariance=covariance, mask=mask,
                                       method=method, lp=lp, progress=progress)
    stem = path.name[: -len(".json")] if path.name.endswith(".json") else path.name
    base = path.parent

    # Sidecar with the line, the images, the region and the mask.
    line = result.line
    shape = tuple(line.image_shape)
    sidecar = base / f"{stem}.npz"
    data = _sidecar_bytes(line, _as_image(image, shape, "image"), _as_image(reference, shape, "reference"),
                          result.region, None if mask is None else np.asarray(mask, dtype=bool))
    atomic_write_bytes(sidecar, data)
    certificate["hashes"]["sidecar"] = hashlib.sha256(data).hexdigest()
    files: dict[str, Any] = {"sidecar": sidecar.name, "graph": None, "covariance": None}

    # The graph file.
    if graph_path is not None:
        files["graph"] = _relative(Path(graph_path).resolve(), base.resolve())
    elif graph is not None:
        graph_file = base / f"{stem}.dalg"
        if not (graph_file.is_file() and _digest_of(graph_file) == certificate["hashes"]["graph"]):
            save_graph(graph, graph_file)
        files["graph"] = graph_file.name

    # The covariance file.
    if covariance is not None and hasattr(covariance, "save_npz"):
        if covariance.digest() != certificate["hashes"]["covariance"]:
            raise CertificateError("the covariance passed is not the run's covariance (its digest differs)")
        covariance_file = base / f"{stem}.covariance.npz"
        covariance.save_npz(covariance_file)
        files["covariance"] = covariance_file.name
    certificate["files"] = files

    atomic_write_bytes(path, (json.dumps(certificate, indent=1) + "\n").encode())
    logger.info("wrote certificate %s (%d intervals, outcome %s)", path, len(certificate["intervals"]),
                certificate["outcome"])
    return certificate


def _digest_of(graph_file: Path) -> str | None:
    try:
        return load_graph(graph_file).digest()
    except Exception:  # noqa: BLE001 - any unreadable file is simply rewritten
        return None


def read_certificate(path: str | os.PathLike) -> dict[str, Any]:
    """Read a certificate JSON file and check its format tag and version.

    Raises
    ------
    CertificateError
        If the file is missing, not JSON, or not a dalverify certificate of
        this version.
    """
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except FileNotFoundError as error:
        raise CertificateError(f"certificate file {str(path)!r} not found") from error
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CertificateError(f"certificate file {str(path)!r} is not readable JSON ({error})") from error
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != FORMAT_VERSION:
        raise CertificateError(
            f"{str(path)!r} is not a {FORMAT!r} version {FORMAT_VERSION} file; it has format "
            f"{data.get('format') if isinstance(data, dict) else None!r}"
        )
    return data


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SEMANTICS",
    "build_certificate",
    "file_sha256",
    "image_sha256",
    "mask_sha256",
    "package_versions",
    "read_certificate",
    "settings_sha256",
    "write_certificate",
]
