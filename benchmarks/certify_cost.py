"""Cost of certification and independent verification relative to the DAL-Test run.

Runs one DAL-Test on a 64x64 image (a randomly initialised piecewise-linear
U-Net unrolled over DDIM steps, or the bundled brain model), writes its
certificate and verifies it, and prints one JSON line with the times and
their ratios to the run. The searched range is kept small (``--range`` in
standard deviations) so that the measurement is short.

    python benchmarks/certify_cost.py --range 0.3
    python benchmarks/certify_cost.py --model bundled --range 0.05
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np


def build_graph(model: str, width: int, depth: int, steps: int, size: int):
    import torch

    from dalverify.diffusion.reconstruction import Reconstruction
    from dalverify.export import export

    if model == "bundled":
        from dalverify.data import load_bundled_model

        unet, _ = load_bundled_model()
    else:
        from dalverify.diffusion.unet import UNet

        torch.manual_seed(0)
        unet = UNet(channels=1, base_width=width, depth=depth)
    reconstruction = Reconstruction(unet, t_start=300, steps=steps, eta=1.0, seed=0, image_shape=(1, size, size))
    return export(reconstruction, torch.zeros((1, 1, size, size), dtype=torch.float64))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["random", "bundled"], default="random")
    parser.add_argument("--width", type=int, default=4, help="base width of the random U-Net")
    parser.add_argument("--depth", type=int, default=2, help="depth of the random U-Net")
    parser.add_argument("--steps", type=int, default=2, help="DDIM steps")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--range", type=float, default=0.3, help="searched half-width in standard deviations")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--method", default="auto", choices=["auto", "exact", "enclosure"])
    parser.add_argument("--lp", action="store_true", help="include the LP cross-check")
    args = parser.parse_args(argv)

    from dalverify.certify.certificate import package_versions, write_certificate
    from dalverify.certify.verify import verify
    from dalverify.methods.covariance import Isotropic
    from dalverify.methods.dal_test import DALTest

    started = time.perf_counter()
    graph = build_graph(args.model, args.width, args.depth, args.steps, args.size)
    export_s = time.perf_counter() - started

    rng = np.random.default_rng(0)
    image = rng.normal(size=(1, args.size, args.size))
    image[0, 20:28, 30:38] += 3.0
    reference = rng.normal(size=(1, args.size, args.size)) * 0.2
    covariance = Isotropic(1.0, args.size * args.size)
    test = DALTest(graph, threshold=args.threshold, covariance=covariance, search=args.range, progress=False)
    started = time.perf_counter()
    result = test.run(image, reference)
    run_s = time.perf_counter() - started
    if result.status != "ok":
        sys.stdout.write(json.dumps({"error": "no anomalous region; lower --threshold"}) + "\n")
        return 1

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bench.json")
        started = time.perf_counter()
        certificate = write_certificate(path, result, image, reference, graph=graph, covariance=covariance,
                                        method=args.method, lp=args.lp, progress=False)
        certify_s = time.perf_counter() - started
        started = time.perf_counter()
        report = verify(path)
        verify_s = time.perf_counter() - started

    line = {
        "benchmark": "certify_cost",
        "model": args.model if args.model == "bundled" else f"random U-Net width {args.width} depth {args.depth}",
        "image": f"1x{args.size}x{args.size}",
        "ddim_steps": args.steps,
        "piecewise_units": graph.count_units(),
        "range_sd": args.range,
        "intervals": result.pieces,
        "network_pieces": result.network_pieces,
        "export_s": round(export_s, 3),
        "run_s": round(run_s, 3),
        "walk_s": round(result.timings.get("walk", 0.0), 3),
        "certify_s": round(certify_s, 3),
        "verify_s": round(verify_s, 3),
        "certify_over_run": round(certify_s / run_s, 2),
        "verify_over_run": round(verify_s / run_s, 2),
        "method": certificate["certification"]["method"],
        "producer_outcome": certificate["outcome"],
        "verifier_outcome": report.outcome,
        "verifier_method": report.method,
        "unresolved_width": report.unresolved_width,
        "enclosure_relative_width": report.relative_width,
        "lp": args.lp,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "versions": package_versions(),
    }
    sys.stdout.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
