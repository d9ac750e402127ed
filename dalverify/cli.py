"""Command-line interface: ``dalverify {demo,test,train,export,...}``.

Exit codes (stable, for scripts):

==  ========================================================
0   done (a p-value was computed, or a command succeeded)
1   unexpected internal error
2   bad input (invalid file, shape, option, covariance, ...)
3   no anomalous region: the threshold selected no pixel
4   numerical disagreement (two independent routes differ)
5   certificate rejected by the verifier
6   certificate verified only as an enclosure (see its width)
7   cross-check: the other tool's result disagrees
==  ========================================================
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from dalverify.errors import DalverifyError, InputError, NumericalError

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_NO_REGION = 3
EXIT_NUMERICAL = 4
EXIT_REJECTED = 5
EXIT_ENCLOSURE_ONLY = 6
EXIT_DISAGREE = 7

logger = logging.getLogger("dalverify.cli")


def _emit(text: str, args: argparse.Namespace) -> None:
    """Human-readable output on stdout (the CLI's product, not logging)."""
    if not getattr(args, "quiet", False) and not getattr(args, "json", False):
        sys.stdout.write(text + "\n")


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    from dalverify.graph.io import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


# ---------------------------------------------------------------------------
# Shared pieces of `test` and `demo`.

def _load_reconstruction_graph(model: str | None, t_start: int, steps: int, eta: float, seed: int, shape=None,
                               size: int = 64):
    """Load the reconstruction as a Graph from a .dalg file, a .dalv model, or the bundled model."""
    from dalverify.graph.io import load_graph

    if model is not None and str(model).endswith(".dalg"):
        return load_graph(model)
    import torch

    from dalverify.diffusion.checkpoint import load_model
    from dalverify.diffusion.reconstruction import Reconstruction
    from dalverify.export import export

    if model is None:
        from dalverify.data import load_bundled_model

        unet, manifest = load_bundled_model(size)
    else:
        unet, manifest = load_model(model)
    config = manifest.get("config", manifest) if isinstance(manifest, dict) else {}
    if shape is None:
        size = int(config.get("image_size", 64))
        shape = (int(config.get("in_channels", 1)), size, size)
    reconstruction = Reconstruction(unet, t_start=t_start, steps=steps, eta=eta, seed=seed, image_shape=tuple(shape))
    example = torch.zeros((1,) + tuple(shape), dtype=torch.float64)
    return export(reconstruction, example, metadata=reconstruction.settings())


def _summary(name: str, result, seconds: float) -> str:
    if result.status == "no_region":
        return f"{name}: no anomalous region at threshold {result.settings['threshold']} (nothing to test)"
    p = result.pvalues
    selective = p["selective"]
    enclosure = selective.enclosure
    lines = [
        f"{name}:",
        f"  region size          {result.region_size} pixels",
        f"  t_obs / sd           {result.t_obs:.6g} / {result.sd:.6g}  (z = {result.t_obs / result.sd:.4g})",
        f"  selective p          {selective.text}" + (f"  enclosure [{_number(enclosure[0])}, {_number(enclosure[1])}]" if enclosure else ""),
        f"  over-conditioned p   {p['overconditioned'].text}",
        f"  naive p              {p['naive'].text}",
        f"  Bonferroni p         {p['bonferroni'].text}",
    ]
    if "permutation" in p:
        lines.append(f"  permutation p        {p['permutation'].text}")
    lines += [
        f"  truncation set Z     {len(result.truncation)} interval(s) in [{result.searched[0]:.6g}, {result.searched[1]:.6g}]",
        f"  pieces walked        {result.network_pieces} network pieces, {result.pieces} intervals",
        f"  time                 {seconds:.1f} s",
    ]
    return "\n".join(lines)


def _number(value: Any) -> str:
    """Short decimal text of a p-value or an mpmath number."""
    if hasattr(value, "text"):
        return value.text
    import mpmath

    return mpmath.nstr(value, 6)


def _finish_run(result, out_dir: Path, image, reference, args, *, title: str, lesion_mask=None, name="result") -> dict:
    """Write result JSON, report figure and (on request) certificate into ``out_dir``."""
    from dalverify.report import write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    payload = result.to_dict()
    payload["title"] = title
    if lesion_mask is not None:
        payload["inserted_lesion_pixels"] = int(np.sum(lesion_mask))
    certificate = getattr(args, "certificate", None)
    if certificate and result.status == "ok":
        from dalverify.certify.certificate import write_certificate

        cert_path = Path(certificate) if not isinstance(certificate, bool) else out_dir / f"{name}.certificate.json"
        write_certificate(cert_path, result, image, reference, method=getattr(args, "certify_method", "auto"))
        payload["certificate"] = str(cert_path)
    _write_json(out_dir / f"{name}.json", payload)
    write_report(out_dir / f"{name.replace('result', 'report')}.png", image, result.reconstruction, reference, result,
                 title=title, lesion_mask=lesion_mask)
    return payload


# ---------------------------------------------------------------------------
# Commands.

def _demo_case(case: dict[str, Any]) -> tuple[dict[str, Any], str, int]:
    """Run one demo case (in a worker process) and write its outputs."""
    import torch

    from dalverify.data import BRAIN_RECONSTRUCTION
    from dalverify.methods.covariance import Diagonal
    from dalverify.methods.dal_test import DALTest

    torch.set_num_threads(1)
    settings = dict(BRAIN_RECONSTRUCTION)
    size = case["size"]
    graph = _load_reconstruction_graph(None, settings["t_start"], settings["steps"], settings["eta"], settings["seed"],
                                       (1, size, size), size=size)
    covariance = Diagonal(case["variances"])
    test = DALTest(graph, threshold=case["threshold"], covariance=covariance, reference_scale=1.0 / case["reference_count"],
                   mask=case["mask"], relative_width=case["relative_width"], progress=False)
    started = time.perf_counter()
    result = test.run(case["image"], case["reference"])
    seconds = time.perf_counter() - started
    arguments = argparse.Namespace(certificate=case["certificate"], certify_method=case["certify_method"])
    payload = _finish_run(result, Path(case["out"]), case["image"], case["reference"], arguments, title=case["title"],
                          lesion_mask=case["lesion"], name=f"result_{case['name']}")
    payload["seconds"] = seconds
    code = EXIT_NO_REGION if result.status == "no_region" else EXIT_OK
    return payload, _summary(case["title"], result, seconds), code


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the bundled brain model on a held-out normal slice and a slice with a synthetic lesion.

    The two cases run in two worker processes (one per CPU core).
    """
    from concurrent.futures import ProcessPoolExecutor

    from dalverify.data import BRAIN_RECONSTRUCTION, load_bundled_slice_references, load_bundled_slices
    from dalverify.lesions import insert_lesion

    started = time.perf_counter()
    size = int(args.size)
    slices = load_bundled_slices(size=size)
    references, counts = load_bundled_slice_references(size=size)
    variances = _bundled_variances(size)
    out_dir = Path(args.out)
    settings = BRAIN_RECONSTRUCTION
    index = int(args.slice)
    if not 0 <= index < len(slices.images):
        raise InputError(f"--slice {index} is outside 0..{len(slices.images) - 1}")
    count = int(counts[index])
    _emit(f"dalverify demo: bundled brain T1 model at {size}x{size} (T'={settings['t_start']}, k={settings['steps']}, "
          f"eta={settings['eta']}), threshold {args.threshold}; reference = mean of the {count} training slices of the "
          f"same brain within 8 slices (c_ref = 1/{count}); diagonal covariance from {len(_bundled_stack(size))} "
          "held-out slices", args)
    normal = slices.images[index]
    brain = slices.masks[index]
    radius = 2.0 if size == 32 else 4.0
    lesioned, lesion_mask = insert_lesion(normal, brain, radius=radius, contrast=float(args.lesion_contrast), seed=index)
    common = {"size": size, "variances": variances, "mask": brain, "relative_width": float(args.relative_width),
              "threshold": float(args.threshold), "reference": references[index], "reference_count": count,
              "out": str(out_dir), "certificate": None if args.no_certificate else True,
              "certify_method": "auto" if args.certify else "none"}
    cases = [
        dict(common, name="normal", image=normal, lesion=None,
             title=f"held-out normal slice {index} ({slices.source[index]}, z={slices.z[index]})"),
        dict(common, name="lesion", image=lesioned, lesion=lesion_mask,
             title=f"same slice with a SYNTHETIC lesion of known mask ({int(lesion_mask.sum())} px, +{args.lesion_contrast} sd)"),
    ]
    with ProcessPoolExecutor(max_workers=min(2, int(args.workers))) as pool:
        outcomes = list(pool.map(_demo_case, cases))
    summaries = {}
    for case, (payload, text, _) in zip(cases, outcomes):
        summaries[case["name"]] = payload
        _emit(text, args)
    total = time.perf_counter() - started
    _write_json(out_dir / "result.json", {"cases": summaries, "seconds": total})
    _emit(f"wrote {out_dir / 'result.json'}, report_normal.png and report_lesion.png"
          + ("" if args.no_certificate else " and their certificates") + f" in {total:.1f} s", args)
    if not args.no_certificate:
        _emit(f"re-check a p-value independently: dalverify verify {out_dir / 'result_lesion.certificate.json'}", args)
    if args.json:
        sys.stdout.write(json.dumps(summaries, indent=2) + "\n")
    return EXIT_OK


def _bundled_stack(size: int) -> np.ndarray:
    from dalverify.data import load_bundled_covariance_slices

    return load_bundled_covariance_slices(size=size).images


def _bundled_variances(size: int) -> np.ndarray:
    """Per-pixel variances of the bundled covariance slices (vector order), constant pixels at the median."""
    stack = _bundled_stack(size)
    variances = stack.reshape(len(stack), -1).var(axis=0, ddof=1)
    variances[variances == 0] = _median_variance(stack)
    return variances


def _median_variance(stack: np.ndarray) -> float:
    """Median of the positive per-pixel variances of a stack (for constant background pixels)."""
    variances = stack.reshape(len(stack), -1).var(axis=0, ddof=1)
    positive = variances[variances > 0]
    if positive.size == 0:
        raise InputError("every pixel is constant across the covariance images; use varied normal images")
    return float(np.median(positive))


def _covariance_from_args(args: argparse.Namespace, shape: tuple[int, int, int]):
    from dalverify.methods.covariance import Isotropic, estimate_covariance, load_covariance

    n = int(np.prod(shape))
    chosen = [opt for opt in ("sigma", "covariance", "covariance_from") if getattr(args, opt) is not None]
    if len(chosen) > 1:
        raise InputError(f"pass only one of --sigma, --covariance, --covariance-from (got {', '.join(chosen)})")
    if args.sigma is not None:
        return Isotropic(float(args.sigma), n)
    if args.covariance is not None:
        return load_covariance(args.covariance)
    if args.covariance_from is not None:
        from dalverify.diffusion.data import load_images

        stack = load_images(args.covariance_from, size=shape[1], channels=shape[0])
        return estimate_covariance(stack, constant_variance=_median_variance(stack))
    if args.model is None:
        from dalverify.methods.covariance import Diagonal

        return Diagonal(_bundled_variances(shape[1]))
    raise InputError("no noise covariance given; pass --sigma S, --covariance FILE or --covariance-from DIR")


def cmd_test(args: argparse.Namespace) -> int:
    """Test one image against a reference."""
    from dalverify.imageio import fit_to_shape, load_image, load_mask
    from dalverify.methods.dal_test import DALTest

    started = time.perf_counter()
    size = args.bundled_size
    graph = _load_reconstruction_graph(args.model, args.t_start, args.steps, args.eta, args.seed,
                                       None if args.model else (1, size, size), size=size)
    shape = graph.input_shape
    raw_image = load_image(args.image, channels=shape[0], nifti_axis=args.nifti_axis, nifti_slice=args.nifti_slice)
    raw_reference = load_image(args.reference, channels=shape[0], nifti_axis=args.nifti_axis, nifti_slice=args.nifti_slice)
    if raw_image.shape != raw_reference.shape:
        raise InputError(f"the reference has shape {raw_reference.shape} but the image has {raw_image.shape}; "
                         "pass a reference of the same size")
    image = fit_to_shape(raw_image, shape, name="image")
    reference = fit_to_shape(raw_reference, shape, name="reference")
    mask = load_mask(args.mask, shape[1:]) if args.mask else None
    if args.standardize:
        from dalverify.imageio import standardize

        anatomy = load_mask(args.standardize, shape[1:])
        image, reference = standardize(image, anatomy), standardize(reference, anatomy)
    covariance = _covariance_from_args(args, shape)
    search: Any = args.range
    if search not in ("adaptive", "whole"):
        try:
            search = float(search)
        except ValueError as error:
            raise InputError(f"--range {args.range!r} is invalid; use 'adaptive', 'whole' or a number of sd") from error
    test = DALTest(graph, threshold=args.threshold, kernel_size=args.kernel_size, covariance=covariance,
                   reference_scale=args.reference_scale, mask=mask, two_sided=args.two_sided, search=search,
                   relative_width=args.relative_width, decide_at=args.decide_at, profile=args.profile,
                   permutations=args.permutations, progress=False if args.quiet else None, workers=args.workers)
    result = test.run(image, reference)
    payload = _finish_run(result, Path(args.out), image, reference, args, title=str(args.image))
    _emit(_summary(str(args.image), result, time.perf_counter() - started), args)
    if args.json:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
    return EXIT_NO_REGION if result.status == "no_region" else EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """Export a model's reconstruction to a graph file."""
    from dalverify.graph.io import save_graph

    graph = _load_reconstruction_graph(args.model, args.t_start, args.steps, args.eta, args.seed)
    digest = save_graph(graph, args.out)
    _emit(f"wrote {args.out}: {len(graph.nodes)} nodes, {graph.count_units()} piecewise units, sha256 {digest}", args)
    return EXIT_OK


def cmd_train(args: argparse.Namespace) -> int:
    """Train a diffusion model on normal images."""
    from dalverify.diffusion.train import train_from_paths

    options = {k: v for k, v in {
        "steps": args.train_steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
        "base_width": args.width, "depth": args.depth, "checkpoint_path": args.checkpoint,
        "max_seconds": args.max_seconds,
    }.items() if v is not None}
    train_from_paths(args.data, args.size, args.out, progress=not args.quiet, **options)
    _emit(f"wrote {args.out}", args)
    return EXIT_OK


# ---------------------------------------------------------------------------

def _add_reconstruction_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("reconstruction (for a .dalv model)")
    group.add_argument("--t-start", type=int, default=300, help="start step T' of the DDIM reconstruction (default 300)")
    group.add_argument("--steps", type=int, default=5, help="number k of DDIM steps (default 5)")
    group.add_argument("--eta", type=float, default=1.0, help="DDIM eta in [0, 1] (default 1)")
    group.add_argument("--seed", type=int, default=0, help="seed of the fixed DDIM noise (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dalverify",
        description="Exact, certifiable selective p-values for anomaly regions found by diffusion-model reconstruction.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--log-level", default="WARNING", help="logging level on stderr (default WARNING)")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the bundled brain model on bundled real slices (no arguments needed)")
    demo.add_argument("--out", default="dalverify-demo", help="output folder (default ./dalverify-demo)")
    demo.add_argument("--size", type=int, choices=[32, 64], default=32,
                      help="image size of the bundled model (default 32; a 64x64 run takes many minutes)")
    demo.add_argument("--relative-width", type=float, default=1e-9,
                      help="target relative width of the p-value enclosure (default 1e-9)")
    demo.add_argument("--workers", type=int, default=2, help="worker processes, one per case (default 2)")
    demo.add_argument("--threshold", type=float, default=1.0,
                      help="threshold lambda (default 1.0: the bundled model's residuals are larger than a "
                           "well-trained model's, so 0.6 selects much normal tissue)")
    demo.add_argument("--slice", type=int, default=0, help="index of the bundled held-out slice (default 0)")
    demo.add_argument("--lesion-contrast", type=float, default=4.0, help="synthetic lesion contrast in sd (default 4)")
    demo.add_argument("--no-certificate", action="store_true", help="do not write audit certificates")
    demo.add_argument("--certify", action="store_true",
                      help="also certify every interval before writing (about 20 times the run's time); by default "
                           "the certificate records the run and 'dalverify verify' does the checking")
    demo.add_argument("--quiet", action="store_true", help="print nothing but errors")
    demo.add_argument("--json", action="store_true", help="print the results as JSON")
    demo.set_defaults(handler=cmd_demo)

    test = commands.add_parser("test", help="test one image against a reference")
    test.add_argument("image", help="test image (PNG/JPEG/TIFF, .npy, NIfTI)")
    test.add_argument("--reference", required=True, help="reference image, same formats")
    test.add_argument("--model", default=None, help="a .dalv diffusion model or an exported .dalg graph (default: bundled brain model)")
    test.add_argument("--bundled-size", type=int, choices=[32, 64], default=64,
                      help="image size of the bundled brain model used without --model (default 64)")
    test.add_argument("--threshold", type=float, default=0.6, help="threshold lambda on |filtered residual| (default 0.6)")
    test.add_argument("--kernel-size", type=int, default=3, help="odd size K of the averaging filter (default 3)")
    test.add_argument("--sigma", type=float, default=None, help="noise standard deviation: Sigma = sigma^2 I")
    test.add_argument("--covariance", default=None, help="covariance file written by dalverify (.npz)")
    test.add_argument("--covariance-from", default=None, help="estimate Sigma from a stack of normal images (folder of PNGs, .npy, .npz, NIfTI)")
    test.add_argument("--reference-scale", type=float, default=1.0, help="c_ref: reference noise is N(0, c_ref Sigma) (default 1)")
    test.add_argument("--mask", default=None, help="eligibility mask image (nonzero = eligible)")
    test.add_argument("--standardize", default=None, metavar="MASK",
                      help="standardize image and reference by the median and MAD inside this anatomy mask "
                           "(never a lesion annotation); pixels outside become 0")
    test.add_argument("--two-sided", choices=["symmetric", "equal-tailed"], default="symmetric")
    test.add_argument("--range", default="adaptive", help="'adaptive' (default), 'whole', or half-width R in sd")
    test.add_argument("--relative-width", type=float, default=1e-9, help="target relative width of the p-value enclosure (default 1e-9)")
    test.add_argument("--decide-at", type=float, default=None, metavar="ALPHA",
                      help="stop the adaptive search once the p-value enclosure decides p < ALPHA "
                           "(reports an enclosure, not a point value; default: off)")
    test.add_argument("--profile", choices=["default", "si4onnx"], default="default", help="compatibility profile")
    test.add_argument("--permutations", type=int, default=0, help="B for the permutation baseline (default 0: skip)")
    test.add_argument("--workers", type=int, default=1,
                      help="worker processes for the line walk (2 uses both cores of a 2-core machine; default 1)")
    test.add_argument("--nifti-axis", type=int, default=2, help="slice axis of a NIfTI input (default 2)")
    test.add_argument("--nifti-slice", type=int, default=None, help="slice index of a NIfTI input (default: middle)")
    test.add_argument("--certificate", default=None, help="write an audit certificate to this file")
    test.add_argument("--certify-method", choices=["auto", "exact", "enclosure", "none"], default="auto",
                      help="how the producer certifies intervals before writing the certificate (default auto)")
    test.add_argument("--out", default="dalverify-out", help="output folder (default ./dalverify-out)")
    test.add_argument("--quiet", action="store_true")
    test.add_argument("--json", action="store_true")
    _add_reconstruction_options(test)
    test.set_defaults(handler=cmd_test)

    export = commands.add_parser("export", help="export a model's reconstruction as a graph file (.dalg)")
    export.add_argument("model", nargs="?", default=None, help="a .dalv model (default: bundled brain model)")
    export.add_argument("--out", required=True, help="graph file to write")
    export.add_argument("--quiet", action="store_true")
    _add_reconstruction_options(export)
    export.set_defaults(handler=cmd_export)

    train = commands.add_parser("train", help="train a DDPM noise predictor on normal images")
    train.add_argument("--data", required=True, help="normal images: .npy/.npz, folder of PNGs, or NIfTI volume")
    train.add_argument("--size", type=int, default=64, help="image size (default 64)")
    train.add_argument("--out", required=True, help="model file to write (.dalv)")
    train.add_argument("--train-steps", type=int, default=None, help="optimizer steps")
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--lr", type=float, default=None)
    train.add_argument("--width", type=int, default=None, help="U-Net base width")
    train.add_argument("--depth", type=int, default=None, help="U-Net depth")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--checkpoint", default=None, help="resumable training state file (resumed when it exists)")
    train.add_argument("--max-seconds", type=float, default=None, help="stop after this many seconds (resume later)")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(handler=cmd_train)

    for extra in _EXTRA_COMMANDS:
        extra(commands)
    return parser


#: Functions that add further subcommands (verify, crosscheck, experiment, bench).
_EXTRA_COMMANDS: list = []


def _register_extras() -> None:
    for module_name in ("dalverify.certify.cli", "dalverify.crosscheck.cli", "dalverify.experiments.cli", "dalverify.bench"):
        try:
            module = __import__(module_name, fromlist=["add_commands"])
        except ImportError:
            continue
        if hasattr(module, "add_commands") and module.add_commands not in _EXTRA_COMMANDS:
            _EXTRA_COMMANDS.append(module.add_commands)


def main(argv: list[str] | None = None) -> int:
    _register_extras()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.handler(args))
    except NumericalError as error:
        sys.stderr.write(f"dalverify: numerical disagreement: {error}\n")
        return EXIT_NUMERICAL
    except (DalverifyError, ValueError, FileNotFoundError) as error:
        sys.stderr.write(f"dalverify: error: {error}\n")
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        sys.stderr.write("dalverify: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


