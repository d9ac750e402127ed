"""Cost of the adaptive certified range against the fixed peer range, with peak memory.

Builds the width-8 ReLU U-Net (max-pool down, transposed-convolution up,
concatenation skips; seeded random weights) unrolled over 5 DDIM steps
(T' = 460, eta = 1), draws a seeded N(0, I) test image with a planted bright
block and an N(0, I) reference, and runs one DAL-Test per search mode, each in
a fresh process so that its peak resident memory is its own:

- ``fixed``: the range ``[-(10 + |z|), 10 + |z|]`` in sd units, the
  exhaustive range of the si4onnx package;
- ``adaptive``: the range grown until the selective p-value's certified
  enclosure has a relative width of at most ``--relative-width``.

Prints one JSON line per mode with the seconds, the pieces, the searched
half-width, the enclosure width and the peak resident set size, then one line
with the ratio of the two times.

    python benchmarks/search_cost.py --size 64
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time


def run_one(mode: str, size: int, seed: int, threshold: float, relative_width: float, workers: int) -> dict:
    import numpy as np
    import torch

    from dalverify.diffusion.reconstruction import Reconstruction
    from dalverify.diffusion.unet import UNet
    from dalverify.export import export
    from dalverify.methods.covariance import Isotropic
    from dalverify.methods.dal_test import DALTest

    torch.manual_seed(seed)
    reconstruction = Reconstruction(UNet(1, 8, 3), t_start=460, steps=5, eta=1.0, seed=seed, image_shape=(1, size, size))
    graph = export(reconstruction, torch.zeros(1, 1, size, size, dtype=torch.float64))
    rng = np.random.default_rng(seed)
    image, reference = rng.normal(size=(2, 1, size, size))
    block = slice(size // 3, size // 3 + max(2, size // 8))
    image[0, block, block] += 3.0
    search = "si4onnx" if mode == "fixed" else "adaptive"
    test = DALTest(graph, threshold=threshold, covariance=Isotropic(1.0, size * size), search=search,
                   relative_width=relative_width, progress=False, workers=workers)
    started = time.perf_counter()
    result = test.run(image, reference)
    seconds = time.perf_counter() - started
    out = {"mode": mode, "size": size, "seed": seed, "status": result.status, "seconds": round(seconds, 2)}
    if result.status == "ok":
        out.update(pieces=result.pieces, network_pieces=result.network_pieces,
                   half_width_sd=round(-result.searched[0] / result.sd, 3), z_obs=round(result.t_obs / result.sd, 4),
                   selective=result.pvalues["selective"].text, enclosure_relative_width=result.enclosure_width)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if workers > 1:
        out["peak_rss_children_mb"] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--relative-width", type=float, default=1e-9)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["fixed", "adaptive"], choices=["fixed", "adaptive"])
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.one is not None:
        line = run_one(args.one, args.size, args.seed, args.threshold, args.relative_width, args.workers)
        sys.stdout.write(json.dumps(line) + "\n")
        return 0

    results = {}
    for mode in args.modes:
        command = [sys.executable, __file__, "--one", mode, "--size", str(args.size), "--seed", str(args.seed),
                   "--threshold", str(args.threshold), "--relative-width", str(args.relative_width),
                   "--workers", str(args.workers)]
        completed = subprocess.run(command, capture_output=True, text=True, check=True)
        results[mode] = json.loads(completed.stdout.strip().splitlines()[-1])
        results[mode]["machine"] = f"{platform.machine()}, Python {platform.python_version()}"
        sys.stdout.write(json.dumps(results[mode]) + "\n")
        sys.stdout.flush()
    if "fixed" in results and "adaptive" in results and results["fixed"]["seconds"] > 0:
        ratio = results["adaptive"]["seconds"] / results["fixed"]["seconds"]
        sys.stdout.write(json.dumps({"adaptive_over_fixed": round(ratio, 3)}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
