"""Line-walk speed through an unrolled DDIM reconstruction (ReLU U-Net).

For each image size, a U-Net (base width 8, depth 3, max-pool down,
transposed-convolution up, concatenation skips; seeded random weights) is
unrolled into a 5-step DDIM reconstruction (T' = 460, eta = 1), exported, and
the line of a DAL-Test on a seeded N(0, I) image pair is walked over a fixed
range around t_obs. Prints one JSON line per size and engine with the median
over ``--repeats`` runs of the seconds, the network pieces and pieces per
second. With ``--range-sd R`` the walk covers ``[t_obs, t_obs + R sd]``
exactly (the same range for every engine, which is what a comparison
needs); otherwise it stops after ``--max-pieces`` network pieces.

    python benchmarks/walk_speed.py --sizes 16 32 64 --max-pieces 400 --repeats 3
    python benchmarks/walk_speed.py --sizes 32 --range-sd 0.5 --backends torch numpy layer

With ``--profile`` (and ``--range-sd``) one more layer-major sweep prints
where its time goes: seconds and segments per node kind.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch

from dalverify.diffusion.reconstruction import Reconstruction
from dalverify.diffusion.unet import UNet
from dalverify.export import export
from dalverify.line import walk_line
from dalverify.line.layer_major import walk_layer_major
from dalverify.methods.covariance import Isotropic
from dalverify.methods.dal_test import DALTest, RegionCuts
from dalverify.methods.statistic import line_from_images
from dalverify.selection.event import LambdaCuts


def build_graph(size: int, seed: int):
    torch.manual_seed(seed)
    unet = UNet(1, 8, 3)
    reconstruction = Reconstruction(unet, t_start=460, steps=5, eta=1.0, seed=seed, image_shape=(1, size, size))
    return export(reconstruction, torch.zeros(1, 1, size, size, dtype=torch.float64))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--max-pieces", type=int, default=400, help="network pieces walked per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--range-sd", type=float, default=None, help="walk exactly [t_obs, t_obs + R sd]")
    parser.add_argument("--backends", nargs="+", default=["auto"], help="walk engines: auto, torch, numpy, layer")
    parser.add_argument("--profile", action="store_true",
                        help="also time the layer-major sweep per node kind (needs --range-sd)")
    args = parser.parse_args()

    if args.profile and args.range_sd is None:
        parser.error("--profile needs --range-sd")
    for size in args.sizes:
        graph = build_graph(size, args.seed)
        rng = np.random.default_rng(args.seed)
        image, reference = rng.normal(size=(2, 1, size, size))
        n = size * size
        test = DALTest(graph, threshold=args.threshold, covariance=Isotropic(1.0, n), progress=False)
        region, _ = test.observed_region(image)
        line = line_from_images(image, reference, region, Isotropic(1.0, n), 1.0)
        cuts = RegionCuts(line.a_image, line.b_image, LambdaCuts(args.threshold, (size, size)), 3, "default", region)
        for backend in args.backends:
            seconds, pieces = [], []
            for _ in range(args.repeats):
                started = time.perf_counter()
                if args.range_sd is not None:
                    partition = walk_line(graph, line.a_image, line.b_image, line.t_obs, line.t_obs + args.range_sd * line.sd,
                                          cuts=cuts, backend=backend, progress=False)
                    count = partition.network_pieces
                else:
                    # Walk from t_obs towards +inf until max_pieces network pieces.
                    try:
                        partition = walk_line(graph, line.a_image, line.b_image, line.t_obs, line.t_obs + 50 * line.sd,
                                              cuts=cuts, max_pieces=args.max_pieces, backend=backend, progress=False)
                        count = partition.network_pieces
                    except Exception:  # max_pieces reached: the count is max_pieces
                        count = args.max_pieces
                seconds.append(time.perf_counter() - started)
                pieces.append(count)
            median = statistics.median(seconds)
            print(json.dumps({
                "size": size, "backend": backend, "units": graph.count_units(), "nodes": len(graph.nodes),
                "region": int(region.sum()), "range_sd": args.range_sd,
                "network_pieces": int(statistics.median(pieces)), "seconds_median": round(median, 3),
                "seconds_all": [round(s, 3) for s in seconds],
                "pieces_per_second": round(statistics.median(pieces) / median, 1),
                "ms_per_piece": round(1e3 * median / statistics.median(pieces), 2),
                "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
                "machine": f"{platform.machine()} {torch.get_num_threads()} torch threads available",
            }), flush=True)
        if args.profile:
            timings: dict[str, list[float]] = {}
            started = time.perf_counter()
            partition = walk_layer_major(graph, line.a_image, line.b_image, line.t_obs,
                                         line.t_obs + args.range_sd * line.sd, cuts=cuts, progress=False,
                                         timings=timings)
            total = time.perf_counter() - started
            kinds = sorted(timings.items(), key=lambda item: -item[1][0])
            print(json.dumps({
                "size": size, "profile": "layer", "network_pieces": partition.network_pieces,
                "seconds": round(total, 3),
                "by_kind": {kind: {"seconds": round(seconds, 3), "share": round(seconds / total, 3),
                                   "segments": int(segments)} for kind, (seconds, segments) in kinds},
            }), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
