"""Make the 32x32 brain data set from the prepared 64x64 one.

Each slice is averaged over 2x2 blocks (exact anti-aliasing for a factor of
2), the brain mask keeps blocks that are at least half brain, and each slice
is standardized again from the median and MAD inside its mask, so that the
32x32 slices follow the same convention as the 64x64 ones. The split into
training, covariance and test slices is kept as it is.

    python examples/downsample_brain_data.py \
        --data /work/work_data/brain_t1_64.npz --out /work/work_data/brain_t1_32.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dalverify.diffusion.data import robust_standardize


def downsample(images: np.ndarray, masks: np.ndarray, outside_value: float) -> tuple[np.ndarray, np.ndarray]:
    count, channels, height, width = images.shape
    pooled = images.reshape(count, channels, height // 2, 2, width // 2, 2).mean(axis=(3, 5))
    pooled_masks = masks.reshape(count, height // 2, 2, width // 2, 2).mean(axis=(2, 4)) >= 0.5
    out = np.stack([[robust_standardize(image[c], mask, outside_value) for c in range(channels)]
                    for image, mask in zip(pooled, pooled_masks)])
    return out, pooled_masks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/work_data/brain_t1_64.npz"))
    parser.add_argument("--out", type=Path, default=Path("/work/work_data/brain_t1_32.npz"))
    args = parser.parse_args(argv)
    with np.load(args.data, allow_pickle=False) as archive:
        data = {name: archive[name] for name in archive.files}
    result = dict(data)
    for part in ("train", "covariance", "test"):
        images, masks = data[f"{part}_images"], data[f"{part}_masks"]
        outside = float(np.median(images[:, 0][~masks]))
        result[f"{part}_images"], result[f"{part}_masks"] = downsample(images, masks, outside)
    np.savez_compressed(args.out, **result)
    print(f"wrote {args.out}: " + ", ".join(f"{k} {v.shape}" for k, v in result.items() if k.endswith("images")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
