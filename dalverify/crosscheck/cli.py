"""The ``dalverify crosscheck`` command.

Runs dalverify on the same model, images and settings as another tool, then
compares the two results with :func:`dalverify.crosscheck.compare.compare`.

Exit codes: 0 when the results agree, 7 when they disagree, 2 for bad input
(a missing file, a malformed JSON, an image of the wrong shape).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dalverify.errors import InputError

logger = logging.getLogger(__name__)

EXIT_AGREE = 0
EXIT_DISAGREE = 7


def _load_json(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"result file {path!r} not found")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputError(f"result file {path!r} is not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise InputError(f"result file {path!r} must hold a JSON object, not a {type(data).__name__}")
    return data


def _load_array(path: str, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{name} file {path!r} not found")
    try:
        array = np.load(file, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise InputError(f"{name} file {path!r} is not a .npy array ({error})") from error
    if shape is not None:
        if array.ndim == len(shape) - 1:
            array = array[None]
        if array.ndim == len(shape) + 1 and array.shape[0] == 1:
            array = array[0]
        if tuple(array.shape) != tuple(shape):
            raise InputError(f"{name} has shape {array.shape}; the model expects {tuple(shape)}")
    return np.asarray(array, dtype=np.float64)


def _load_model(path: str, seed: int | None):
    if path.endswith(".onnx"):
        from dalverify.graph.onnx_import import from_onnx

        return from_onnx(path, seed=seed)
    if path.endswith(".dalg"):
        from dalverify.graph.io import load_graph

        return load_graph(path)
    raise InputError(f"model {path!r} must be an ONNX file (.onnx) or a dalverify graph (.dalg)")


def _setting(args: argparse.Namespace, settings: dict[str, Any], option: str, keys: tuple[str, ...], default: Any) -> Any:
    value = getattr(args, option)
    if value is not None:
        return value
    for key in keys:
        if settings.get(key) is not None:
            return settings[key]
    return default


def _covariance(args: argparse.Namespace, settings: dict[str, Any], n: int):
    from dalverify.methods.covariance import Isotropic, load_covariance

    if args.covariance is not None:
        if args.sigma is not None:
            raise InputError("pass only one of --sigma and --covariance")
        return load_covariance(args.covariance)
    sigma = args.sigma
    if sigma is None and settings.get("sigma") is not None:
        sigma = float(settings["sigma"])
    if sigma is None and settings.get("variance") is not None:
        variance = float(settings["variance"])
        if not variance > 0:
            raise InputError(f"settings.variance = {variance!r} must be positive")
        sigma = variance ** 0.5
    if sigma is None:
        raise InputError("no noise level given; pass --sigma S (standard deviation), --covariance FILE, or "
                         "put 'sigma' or 'variance' in the result's settings")
    return Isotropic(float(sigma), n)


def cmd_crosscheck(args: argparse.Namespace) -> int:
    """Run dalverify and compare its result with another tool's."""
    from dalverify.crosscheck.compare import compare, normalize_their
    from dalverify.methods.dal_test import DALTest

    raw = _load_json(args.result)
    if args.sicore:
        from dalverify.crosscheck.compare import from_sicore

        raw = dict(from_sicore(raw, scale=raw.get("scale", "standardized"), tool=raw.get("tool", "sicore")),
                   settings=raw.get("settings") or {})
    their = normalize_their(raw)
    settings = their.settings

    graph = _load_model(args.model, args.seed)
    shape = graph.input_shape
    image = _load_array(args.image, "image", shape)
    reference = _load_array(args.reference, "reference", shape)
    mask = None if args.mask is None else _load_array(args.mask, "mask").astype(bool)

    threshold = _setting(args, settings, "threshold", ("threshold", "lambda"), None)
    if threshold is None:
        raise InputError("no threshold given; pass --threshold or put 'threshold' in the result's settings")
    default_profile = "si4onnx" if "si4onnx" in their.tool.lower() else "default"
    profile = _setting(args, settings, "profile", ("profile",), default_profile)
    kernel_size = int(_setting(args, settings, "kernel_size", ("kernel_size", "kernel"), 3))
    reference_scale = float(_setting(args, settings, "reference_scale", ("reference_scale",), 1.0))
    covariance = _covariance(args, settings, int(np.prod(shape)))

    search = args.search
    if search is None:
        search = "si4onnx" if profile == "si4onnx" else "adaptive"
    test = DALTest(graph, threshold=float(threshold), covariance=covariance, kernel_size=kernel_size,
                   reference_scale=reference_scale, mask=mask, profile=profile, search=search,
                   progress=False if args.quiet or args.json else None)
    result = test.run(image, reference)
    if result.status != "ok":
        raise InputError(f"dalverify finds no anomalous region at threshold {test.threshold}; there is nothing "
                         "to compare (check the threshold and the profile)")

    options = {}
    if args.search_step is not None:
        options["search_step"] = args.search_step
    if args.merge_gap is not None:
        options["merge_gap"] = args.merge_gap
    if args.rtol is not None:
        options["pvalue_rtol"] = args.rtol
    report = compare(their, result, **options)

    payload = report.to_dict()
    payload["settings"] = result.settings
    if args.out:
        from dalverify.graph.io import atomic_write_bytes

        atomic_write_bytes(args.out, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())
    if args.json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    elif not args.quiet:
        sys.stdout.write(report.summary() + "\n")
    return EXIT_AGREE if report.agree else EXIT_DISAGREE


def add_commands(subparsers: Any) -> None:
    """Add ``dalverify crosscheck`` to the main parser's subcommands."""
    parser = subparsers.add_parser(
        "crosscheck",
        help="compare another tool's truncation intervals and p-values with dalverify's (exit 0 agree, 7 disagree)",
        description="Run dalverify on the same model, images and settings as another tool and compare: "
                    "exact z, p-values in both two-sided forms, intervals missed or added, tail precision.",
    )
    parser.add_argument("result", help="the other tool's result as JSON (format in docs/crosscheck.md)")
    parser.add_argument("--sicore", action="store_true",
                        help="the JSON uses sicore/si4onnx field names (truncated_intervals, naive_p, ...)")
    parser.add_argument("--model", required=True, help="the reconstruction model: ONNX (.onnx) or dalverify graph (.dalg)")
    parser.add_argument("--image", required=True, help="test image as .npy, shape (C, H, W) or (H, W)")
    parser.add_argument("--reference", required=True, help="reference image as .npy, same shape")

    parser.add_argument("--mask", default=None, help="eligibility mask as .npy (H, W), nonzero = eligible")
    parser.add_argument("--threshold", type=float, default=None, help="threshold lambda (default: the result's settings)")
    parser.add_argument("--kernel-size", dest="kernel_size", type=int, default=None,
                        help="odd averaging-filter size K (default: the result's settings, else 3)")
    parser.add_argument("--sigma", type=float, default=None, help="noise standard deviation: Sigma = sigma^2 I")
    parser.add_argument("--covariance", default=None, help="covariance file written by dalverify (.npz)")
    parser.add_argument("--reference-scale", dest="reference_scale", type=float, default=None,
                        help="c_ref: reference noise is N(0, c_ref Sigma) (default 1)")
    parser.add_argument("--profile", choices=["default", "si4onnx"], default=None,
                        help="dalverify profile (default: the result's settings, else si4onnx for si4onnx results)")
    parser.add_argument("--search", default=None,
                        help="dalverify search range: 'si4onnx', 'adaptive', 'whole' or a number of sd "
                             "(default: the profile's)")
    parser.add_argument("--seed", type=int, default=None, help="seed for RandomNormal(Like) nodes of an ONNX model")

    parser.add_argument("--search-step", dest="search_step", type=float, default=None,
                        help="the other tool's search step in sd (default: the result's, else 1e-6)")
    parser.add_argument("--merge-gap", dest="merge_gap", type=float, default=None,
                        help="gap in sd below which the other tool joins intervals (default 1e-10)")
    parser.add_argument("--rtol", type=float, default=None, help="relative p-value agreement (default 1e-6)")

    parser.add_argument("--out", default=None, help="write the JSON report to this file")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the summary")
    parser.add_argument("--quiet", action="store_true", help="print nothing; use the exit code")
    parser.set_defaults(handler=cmd_crosscheck)


__all__ = ["EXIT_AGREE", "EXIT_DISAGREE", "add_commands", "cmd_crosscheck"]
