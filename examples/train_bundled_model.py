"""Train the small bundled brain model ``dalverify/data/brain_t1_64.dalv``.

Reads the training slices written by ``examples/prepare_brain_data.py``
(``/work/work_data/brain_t1_64.npz`` by default), trains a U-Net of base
width 4 and depth 3 (one float64 forward of the 5-step reconstruction at
64x64 costs about 11 ms on one CPU thread) with one torch thread, a fixed
seed and a fixed number of steps, and writes the model file. Training
state is checkpointed, so an interrupted run continues where it stopped
when started again with the same arguments.

Usage::

    python examples/train_bundled_model.py --data /work/work_data/brain_t1_64.npz \
        --out dalverify/data/brain_t1_64.dalv --steps 6000
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dalverify.diffusion.checkpoint import save_model
from dalverify.diffusion.train import train
from dalverify.diffusion.unet import UNet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/work_data/brain_t1_64.npz"))
    parser.add_argument("--out", type=Path, default=Path("dalverify/data/brain_t1_64.dalv"))
    parser.add_argument(
        "--checkpoint", type=Path, default=Path("/work/work_data/bundled_training_state.dalv")
    )
    parser.add_argument("--steps", type=int, default=6000, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate")
    parser.add_argument("--base-width", type=int, default=4)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--max-seconds", type=float, default=None, help="stop early after this wall time"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)

    with np.load(args.data, allow_pickle=False) as archive:
        images = archive["train_images"]
        sources = archive["train_source"]
    counts = {str(s): int(np.sum(sources == s)) for s in np.unique(sources)}
    logging.info("training images: %s, per source %s", images.shape, counts)

    torch.manual_seed(args.seed)
    model = UNet(1, args.base_width, args.depth)
    started = time.perf_counter()
    result = train(
        model,
        images,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        ema=0.999,
        hflip=True,
        checkpoint_path=args.checkpoint,
        max_seconds=args.max_seconds,
        progress=True,
    )
    wall = time.perf_counter() - started
    extra = {
        "description": f"DDPM noise predictor for standardized {images.shape[-1]}x{images.shape[-1]} axial T1 brain slices",
        "training": {
            "steps": result.step,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "ema": 0.999,
            "hflip": True,
            "threads": args.threads,
            "final_loss_mean_last_200": result.final_loss,
            "wall_seconds_last_run": round(wall, 1),
            "stopped_early": result.stopped_early,
        },
        "data": {
            "train_images": int(images.shape[0]),
            "per_source": counts,
            "sources": "MNI ICBM152 2009a symmetric T1 (nilearn); Colin27 ch2bet (Debian mricron-data)",
            "preprocessing": "examples/prepare_brain_data.py",
        },
    }
    save_model(args.out, result.model, extra=extra)
    logging.info("wrote %s: %s", args.out, json.dumps(extra["training"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
