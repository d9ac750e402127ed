"""Cross-check si4onnx against dalverify on a small ONNX reconstruction model.

When the ``si4onnx`` package is importable, this script

1. builds a small piecewise-linear convolutional autoencoder in torch and
   exports it to ONNX (legacy exporter, ``dynamo=False``);
2. runs si4onnx's parametric selective test on a test image with a planted
   bright block and a reference image (``var = 1``);
3. runs dalverify on the same ONNX model (imported with
   ``dalverify.graph.from_onnx``) with ``profile="si4onnx"``;
4. prints the cross-check summary: both z statistics, the p-values in both
   two-sided forms, intervals one tool has and the other lacks, and
   tail-precision findings.

Without si4onnx it prints that it skips and exits with status 0.

Usage::

    python examples/crosscheck_si4onnx.py [--threshold 0.8] [--size 16] [--out report.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import sys
import warnings


def build_onnx_model(size: int):
    """Build a float32 ReLU autoencoder (conv, max pool, transposed conv) and export it to an onnx.ModelProto."""
    import onnx
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
        nn.ConvTranspose2d(4, 4, 2, stride=2), nn.ReLU(),
        nn.Conv2d(4, 1, 3, padding=1),
    ).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros((1, 1, size, size)), buffer, dynamo=False)
    return onnx.load_from_string(buffer.getvalue())


def run_si4onnx(onnx_model, x, x_ref, threshold: float):
    """Run si4onnx's parametric test, called as in its tests/sample_reference.py."""
    import si4onnx
    import torch
    from si4onnx.hypothesis import ReferenceMeanDiff

    # NOTE: the other options of ReferenceMeanDiff (filter, normalization) are
    # left at si4onnx's defaults, which this script does not inspect.
    si_model = si4onnx.load(onnx_model, hypothesis=ReferenceMeanDiff(threshold=threshold, i_idx=0, o_idx=0))
    return si_model.inference((torch.from_numpy(x), torch.from_numpy(x_ref)), var=1.0, inference_mode="parametric")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threshold", type=float, default=0.8, help="threshold lambda (default 0.8)")
    parser.add_argument("--size", type=int, default=16, help="image side in pixels (default 16)")
    parser.add_argument("--out", default=None, help="write the JSON report to this file")
    args = parser.parse_args(argv)

    if importlib.util.find_spec("si4onnx") is None:
        print("si4onnx is not installed; skipping the cross-check (install si4onnx to run it)")
        return 0

    import numpy as np

    from dalverify.crosscheck import compare, from_sicore
    from dalverify.graph import from_onnx
    from dalverify.methods.covariance import Isotropic
    from dalverify.methods.dal_test import DALTest

    rng = np.random.default_rng(0)
    size = args.size
    x = rng.normal(size=(1, 1, size, size))
    x[0, 0, 4:8, 4:8] += 3.0
    x_ref = rng.normal(size=(1, 1, size, size))
    onnx_model = build_onnx_model(size)

    theirs = from_sicore(run_si4onnx(onnx_model, x, x_ref, args.threshold), tool="si4onnx")
    print(f"si4onnx: p = {theirs.get('p_value')}, {len(theirs.get('intervals', []))} truncation interval(s), "
          f"{theirs.get('search_count')} searches")

    graph = from_onnx(onnx_model)
    test = DALTest(graph, threshold=args.threshold, covariance=Isotropic(1.0, size * size), profile="si4onnx")
    result = test.run(x[0], x_ref[0])
    if result.status != "ok":
        print(f"dalverify finds no region at threshold {test.threshold}; nothing to compare")
        return 0
    report = compare(theirs, result)
    print(report.summary())
    if args.out:
        with open(args.out, "w") as stream:
            json.dump(report.to_dict(), stream, indent=2)
        print(f"wrote {args.out}")
    return 0 if report.agree else 7


if __name__ == "__main__":
    sys.exit(main())
