"""Time of one selective p-value (adaptive range) on a fixed-seed reconstruction.

A U-Net (base width 8, depth 3, seeded random weights) inside a 5-step DDIM
reconstruction (T' = 460, eta = 1) reconstructs a seeded N(0, I) image with a
bright 3x3 spot; the reference is a second N(0, I) image; Sigma = I,
lambda = 0.8 (or ``--threshold``), relative enclosure width 1e-9. Prints one
JSON line per size with the run time, pieces walked and the p-values.

    python benchmarks/pvalue_time.py --sizes 16
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import torch

from dalverify.diffusion.reconstruction import Reconstruction
from dalverify.diffusion.unet import UNet
from dalverify.export import export
from dalverify.methods.covariance import Isotropic
from dalverify.methods.dal_test import DALTest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16])
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for size in args.sizes:
        torch.manual_seed(args.seed)
        reconstruction = Reconstruction(UNet(1, 8, 3), t_start=460, steps=5, eta=1.0, seed=args.seed,
                                        image_shape=(1, size, size))
        graph = export(reconstruction, torch.zeros(1, 1, size, size, dtype=torch.float64))
        rng = np.random.default_rng(args.seed)
        image, reference = rng.normal(size=(2, 1, size, size))
        image[0, size // 2 - 1 : size // 2 + 2, size // 2 - 1 : size // 2 + 2] += 3.0
        test = DALTest(graph, threshold=args.threshold, covariance=Isotropic(1.0, size * size), progress=False)
        started = time.perf_counter()
        result = test.run(image, reference)
        seconds = time.perf_counter() - started
        print(json.dumps({
            "size": size, "status": result.status, "region": result.region_size, "seconds": round(seconds, 2),
            "network_pieces": result.network_pieces, "intervals": result.pieces,
            "z_obs": None if result.t_obs is None else round(result.t_obs / result.sd, 4),
            "searched_sd": None if result.searched is None else round(result.searched[1] / result.sd, 3),
            "selective": result.pvalues["selective"].text if result.pvalues else None,
            "naive": result.pvalues["naive"].text if result.pvalues else None,
            "timings": {k: round(v, 2) for k, v in result.timings.items()},
            "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
