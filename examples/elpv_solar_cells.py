"""DAL-Test on electroluminescence images of solar cells (ELPV data set).

The script needs the optional package ``elpv-dataset`` (extra ``elpv``):
2,624 greyscale 300x300 cell images with a per-image defect probability
(0, 1/3, 2/3, 1) and the cell type (mono or poly). The images are licensed
CC BY-NC-SA 4.0 (Buerhop-Lutz et al. 2018, Deitsch et al. 2019), so this
script writes every output (model, JSON, figures) under ``--out``, outside
the repository, and nothing derived from the images is committed.

Steps:

1. keep the mono cells; a cell is normal when its defect probability is 0
   and defective when it is 1 (the uncertain 1/3 and 2/3 are unused);
2. split by rows of ``labels.csv``: rows come ordered by module and
   neighbouring cells are near-duplicates, so whole 100-row blocks go to
   training (seeded random blocks until ``--train`` normal cells are in),
   and the normal cells of the other blocks are shuffled into
   ``--covariance`` covariance cells and test cells; defective test cells
   are drawn from the other blocks too;
3. resize each cell to 32x32 (anti-aliased) and standardize it by the
   median and MAD of the whole cell;
4. train a U-Net (base width 4, depth 3, one torch thread) on the training
   cells with a fixed seed and step count, and save it under ``--out``;
5. diagonal covariance = per-pixel variances of the covariance cells;
   reference = mean of the N training cells with ``c_ref = 1 / N``;
6. threshold: unless ``--threshold`` is given, the ``--quantile`` quantile
   (default 0.995) of the filtered residual ``|r|`` over all pixels of the
   covariance cells, so a normal cell gets about 0.5 % of its pixels
   (about 5 of 1024) selected on average;
7. DAL-Test on ``--normals`` held-out normal and ``--defects`` defective
   cells: per cell ``result_<cell>.json`` and ``report_<cell>.png``, and a
   summary ``summary.json``.

The result is image-level: the labels say whether a cell is defective, not
where, so the region cannot be scored against a pixel mask.

Usage::

    python examples/elpv_solar_cells.py --out /work/work_data/elpv_out
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

SIZE = 32
BLOCK = 100
HOW_TO_INSTALL = """skipped: the optional package elpv-dataset is not installed; install it with
    pip install elpv-dataset        (or: pip install "dalverify[elpv]")
(a 91 MB wheel; images licensed CC BY-NC-SA 4.0)"""


def load_labels(package_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (file names, defect probabilities, cell types) in the row order of ``labels.csv``."""
    names, probabilities, types = [], [], []
    for line in (package_dir / "data" / "labels.csv").read_text().splitlines():
        if line.strip():
            name, probability, kind = line.split()
            names.append(name)
            probabilities.append(float(probability))
            types.append(kind)
    return np.array(names), np.array(probabilities), np.array(types)


def load_cell(path: Path) -> np.ndarray:
    """Read one cell, resize to 32x32 and standardize by median and MAD over the whole cell."""
    from PIL import Image

    from dalverify.diffusion.data import resize_image, robust_standardize

    with Image.open(path) as image:
        grey = np.asarray(image.convert("L"), dtype=np.float64)
    small = resize_image(grey, (SIZE, SIZE))
    return robust_standardize(small, np.ones(small.shape, dtype=bool))[None]


def split_rows(probabilities: np.ndarray, types: np.ndarray, train_count: int, covariance_count: int,
               seed: int) -> dict[str, np.ndarray]:
    """Split the mono rows by 100-row blocks into training, covariance, test-normal and test-defective row indices."""
    rng = np.random.default_rng(seed)
    mono = types == "mono"
    normal = mono & (probabilities == 0.0)
    defective = mono & (probabilities == 1.0)
    rows = np.arange(len(types))
    blocks = rows // BLOCK
    in_training = np.zeros(len(types), dtype=bool)
    for block in rng.permutation(np.unique(blocks)):
        if np.sum(in_training & normal) >= train_count:
            break
        in_training |= blocks == block
    rest_normal = rng.permutation(rows[normal & ~in_training])
    return {
        "train": rows[normal & in_training],
        "covariance": np.sort(rest_normal[:covariance_count]),
        "test_normal": rest_normal[covariance_count:],
        "test_defective": rng.permutation(rows[defective & ~in_training]),
        "training_blocks": np.unique(blocks[in_training]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/work/work_data/elpv_out"))
    parser.add_argument("--train", type=int, default=300, help="training normal cells (whole 100-row blocks)")
    parser.add_argument("--covariance", type=int, default=100, help="held-out normal cells for the covariance")
    parser.add_argument("--normals", type=int, default=2, help="held-out normal cells to test")
    parser.add_argument("--defects", type=int, default=2, help="defective cells to test")
    parser.add_argument("--steps", type=int, default=1200, help="training steps")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="stop training after this wall time")
    parser.add_argument("--threshold", type=float, default=None, help="fixed threshold (default: from --quantile)")
    parser.add_argument("--quantile", type=float, default=0.995,
                        help="quantile of |r| over the covariance cells used as the threshold")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    try:
        import elpv_dataset
    except ImportError:
        print(HOW_TO_INSTALL)
        return 0
    import torch

    from dalverify.cli import _load_reconstruction_graph
    from dalverify.data import BRAIN_RECONSTRUCTION
    from dalverify.diffusion.checkpoint import save_model
    from dalverify.diffusion.reconstruction import Reconstruction
    from dalverify.diffusion.train import train
    from dalverify.diffusion.unet import UNet
    from dalverify.methods.covariance import Diagonal
    from dalverify.methods.dal_test import DALTest
    from dalverify.report import write_report
    from dalverify.selection.region import residual_scores

    torch.set_num_threads(1)
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    package_dir = Path(elpv_dataset.__file__).parent
    names, probabilities, types = load_labels(package_dir)
    split = split_rows(probabilities, types, args.train, args.covariance, args.seed)
    image_dir = package_dir / "data"
    train_images = np.stack([load_cell(image_dir / names[row]) for row in split["train"]])
    covariance_images = np.stack([load_cell(image_dir / names[row]) for row in split["covariance"]])
    print(f"mono cells: {len(split['train'])} training normals in blocks {split['training_blocks'].tolist()}, "
          f"{len(split['covariance'])} covariance normals, {len(split['test_normal'])} test normals, "
          f"{len(split['test_defective'])} defective cells outside the training blocks")

    # Train, unless a model trained with the same settings is already under --out.
    settings = {"steps": args.steps, "seed": args.seed, "train": args.train, "base_width": 4, "depth": 3,
                "batch_size": 32, "lr": 2e-3, "ema": 0.999, "hflip": True}
    model_path = args.out / "elpv_unet_32.dalv"
    settings_path = args.out / "elpv_unet_32.settings.json"
    if model_path.is_file() and settings_path.is_file() and json.loads(settings_path.read_text()) == settings:
        print(f"reusing {model_path}")
    else:
        torch.manual_seed(args.seed)
        trained = train(UNet(1, 4, 3), train_images, steps=args.steps, batch_size=32, lr=2e-3, seed=args.seed,
                        ema=0.999, hflip=True, max_seconds=args.max_seconds, progress=False)
        save_model(model_path, trained.model, extra={"data": "ELPV mono normal cells, 32x32, per-cell median/MAD",
                                                     "steps_done": trained.step,
                                                     "final_loss": trained.final_loss})
        settings_path.write_text(json.dumps(settings))
        print(f"trained {trained.step} steps in {trained.wall_seconds:.0f} s, loss {trained.final_loss:.4f}")

    # Estimate the covariance, the reference and the threshold.
    stack = covariance_images.reshape(len(covariance_images), -1)
    variances = stack.var(axis=0, ddof=1)
    reference = train_images.mean(axis=0)
    recon = BRAIN_RECONSTRUCTION
    if args.threshold is None:
        from dalverify.diffusion.checkpoint import load_model

        unet, _ = load_model(model_path)
        module = Reconstruction(unet, t_start=recon["t_start"], steps=recon["steps"], eta=recon["eta"],
                                seed=recon["seed"], image_shape=(1, SIZE, SIZE))
        with torch.no_grad():
            rebuilt = module(torch.as_tensor(covariance_images, dtype=torch.float64)).numpy()
        scores = np.abs([residual_scores(x, d, 3) for x, d in zip(covariance_images, rebuilt)])
        threshold = float(np.quantile(scores, args.quantile))
        print(f"threshold {threshold:.4f} = {args.quantile} quantile of |r| over the {len(scores)} covariance cells")
    else:
        threshold = float(args.threshold)

    graph = _load_reconstruction_graph(str(model_path), recon["t_start"], recon["steps"], recon["eta"], recon["seed"],
                                       (1, SIZE, SIZE))
    test = DALTest(graph, threshold=threshold, covariance=Diagonal(variances),
                   reference_scale=1.0 / len(train_images), progress=False)
    cases = [("normal", row) for row in split["test_normal"][:args.normals]]
    cases += [("defective", row) for row in split["test_defective"][:args.defects]]
    summary = {"threshold": threshold, "quantile": None if args.threshold is not None else args.quantile,
               "train": len(train_images), "covariance": len(covariance_images), "cells": []}
    for kind, row in cases:
        name = Path(names[row]).stem
        image = load_cell(image_dir / names[row])
        begun = time.perf_counter()
        result = test.run(image, reference)
        seconds = time.perf_counter() - begun
        title = (f"ELPV {name} ({kind}, mono), threshold {threshold:.3g}, diagonal covariance, "
                 f"c_ref = 1/{len(train_images)}")
        payload = result.to_dict()
        payload.update({"cell": names[row], "label": kind, "defect_probability": float(probabilities[row]),
                        "seconds": round(seconds, 1)})
        (args.out / f"result_{name}.json").write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
        write_report(args.out / f"report_{name}.png", image, result.reconstruction, reference, result, title=title)
        entry = {"cell": name, "label": kind, "status": result.status, "seconds": round(seconds, 1)}
        if result.status == "no_region":
            line = "no region (nothing to test)"
        else:
            p = result.pvalues
            entry.update({"region_size": int(result.region_size), "z": result.t_obs / result.sd,
                          "selective": p["selective"].text, "naive": p["naive"].text,
                          "network_pieces": result.network_pieces})
            line = (f"region {result.region_size} px, z = {result.t_obs / result.sd:.3g}, "
                    f"selective p = {p['selective'].text}, naive p = {p['naive'].text}")
        summary["cells"].append(entry)
        print(f"{name} ({kind}): {line}  [{seconds:.0f} s]")
    summary["seconds"] = round(time.perf_counter() - started, 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out} (summary.json, result_*.json, report_*.png) in {summary['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
