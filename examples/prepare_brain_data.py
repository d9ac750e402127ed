"""Prepare real normal T1 brain slices (64x64) with an honest train / covariance / test split.

Sources (both real, normal, T1-weighted, 1 mm, RAS):

- ``mni152``: the MNI ICBM152 2009a symmetric T1 template (average of 152
  adults), shipped inside the ``nilearn`` wheel; the brain mask is
  ``gm + wm > 0.3`` (probabilities in the same wheel) with holes filled.
- ``colin27``: the Colin27 single-subject average, skull-stripped
  (``ch2bet.nii.gz``) from the Debian package ``mricron-data``; get it with
  ``apt-get download mricron-data && dpkg -x mricron-data_*.deb DIR`` and
  pass ``--colin DIR/usr/share/mricron/templates/ch2bet.nii.gz``. Without
  it, the script uses the MNI brain alone.

Split, per brain (so covariance is never estimated on one brain and used to
test another):

1. cut the volume into 10-slice axial slabs and hold out every third slab
   (slabs 1, 4, 7, ...);
2. training slices are the other slices with at least 3 slices between them
   and any held-out slice (``|z - z_held| >= 4``);
3. the held-out slices are split at random (seeded) into covariance-estimation
   and test slices.

Each slice is cropped to the square around the volume's brain mask, resized
to 64x64 with anti-aliasing (brain-only average: ``resize(img * mask) /
resize(mask)``), kept if its brain mask covers enough pixels, standardized
from the median and MAD inside the brain mask, and set to a constant outside.

Writes ``WORK/brain_t1_64.npz`` (all prepared arrays; not part of the
repository) and, with ``--bundle DIR``, the small bundled files
``brain_test_slices.npz``, ``brain_covariance_slices.npz`` and
``brain_reference.npz`` into ``DIR`` (normally ``dalverify/data``).

Usage::

    python examples/prepare_brain_data.py --colin /path/to/ch2bet.nii.gz \
        --out /work/work_data --bundle dalverify/data
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

from dalverify.diffusion.data import resize_image, robust_standardize

logger = logging.getLogger("prepare_brain_data")

SIZE = 64
SLAB = 10
MIN_GAP = 3
#: Minimum share of the 64x64 pixels inside the brain mask for a slice to be kept.
MIN_BRAIN_FRACTION = 0.2
#: Standardized value given to every pixel outside the brain (T1: darker than most CSF).
OUTSIDE_VALUE = -3.0
CROP_MARGIN = 4


def find_mni_files() -> tuple[Path, Path, Path]:
    """Return the MNI 2009a T1, grey-matter and white-matter files inside the nilearn wheel."""
    import nilearn

    base = Path(nilearn.__file__).parent / "datasets" / "data"
    names = [f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz" for kind in ("t1", "gm", "wm")]
    paths = [base / n for n in names]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise FileNotFoundError(f"nilearn does not ship {missing}; install nilearn>=0.10")
    return paths[0], paths[1], paths[2]


def load_volume(path: Path) -> np.ndarray:
    import nibabel as nib

    image = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(image.get_fdata(dtype=np.float64))


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = ndimage.sum(mask, labels, index=np.arange(1, count + 1))
    return labels == (1 + int(np.argmax(sizes)))


def mni_volume() -> tuple[np.ndarray, np.ndarray]:
    t1_path, gm_path, wm_path = find_mni_files()
    t1 = load_volume(t1_path)
    tissue = (load_volume(gm_path) + load_volume(wm_path)) / 255.0
    mask = ndimage.binary_fill_holes(largest_component(tissue > 0.3))
    return t1, mask


def colin_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    t1 = load_volume(path)
    mask = t1 > 0.15 * np.percentile(t1[t1 > 0], 99)
    mask = ndimage.binary_opening(mask, iterations=1)
    mask = ndimage.binary_fill_holes(largest_component(mask))
    return t1, mask


def slice_geometry(mask: np.ndarray) -> tuple[int, int, int]:
    """Return (row0, col0, side) of the square crop, in rot90 slice coordinates."""
    projection = np.rot90(mask.any(axis=2))
    rows = np.flatnonzero(projection.any(axis=1))
    cols = np.flatnonzero(projection.any(axis=0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    side = max(height, width) + 2 * CROP_MARGIN
    row0 = rows[0] - (side - height) // 2
    col0 = cols[0] - (side - width) // 2
    return int(row0), int(col0), int(side)


def crop_square(image: np.ndarray, row0: int, col0: int, side: int) -> np.ndarray:
    out = np.zeros((side, side), dtype=np.float64)
    r_lo, c_lo = max(row0, 0), max(col0, 0)
    r_hi, c_hi = min(row0 + side, image.shape[0]), min(col0 + side, image.shape[1])
    out[r_lo - row0 : r_hi - row0, c_lo - col0 : c_hi - col0] = image[r_lo:r_hi, c_lo:c_hi]
    return out


def prepare_slices(t1: np.ndarray, mask: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Return ``{z: (standardized 64x64 slice, 64x64 brain mask)}`` for the kept axial slices."""
    row0, col0, side = slice_geometry(mask)
    kept = {}
    for z in range(t1.shape[2]):
        image = crop_square(np.rot90(t1[:, :, z]), row0, col0, side)
        brain = crop_square(np.rot90(mask[:, :, z]).astype(np.float64), row0, col0, side)
        weight = resize_image(brain, (SIZE, SIZE))
        small_mask = weight > 0.5
        if small_mask.mean() < MIN_BRAIN_FRACTION:
            continue
        brain_mean = resize_image(image * brain, (SIZE, SIZE)) / np.where(small_mask, weight, 1.0)
        kept[z] = (robust_standardize(brain_mean, small_mask, OUTSIDE_VALUE), small_mask)
    return kept


def split_indices(depth: int, kept: list[int], rng: np.random.Generator, cov_share: float):
    """Return (train, covariance, test) lists of slice indices z, by the slab rule."""
    held = [z for z in range(depth) if (z // SLAB) % 3 == 1]
    held_arr = np.array(held)
    train = [z for z in kept if z not in held and np.min(np.abs(held_arr - z)) > MIN_GAP]
    pool = [z for z in kept if z in held]
    order = rng.permutation(len(pool))
    n_cov = int(round(cov_share * len(pool)))
    covariance = sorted(pool[i] for i in order[:n_cov])
    test = sorted(pool[i] for i in order[n_cov:])
    return train, covariance, test


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--colin", type=Path, default=None, help="path to Colin27 ch2bet.nii.gz")
    parser.add_argument("--out", type=Path, default=Path("/work/work_data"), help="output folder")
    parser.add_argument("--bundle", type=Path, default=None, help="write the bundled subset here")
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    parser.add_argument(
        "--cov-share", type=float, default=0.5, help="share of held-out slices used for covariance"
    )
    parser.add_argument(
        "--bundle-test", type=int, default=6, help="bundled test slices per brain"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    volumes = {"mni152": mni_volume()}
    if args.colin is None:
        found = glob.glob("/work/work_data/debs/mricron/usr/share/mricron/templates/ch2bet.nii.gz")
        args.colin = Path(found[0]) if found else None
    if args.colin is not None and args.colin.exists():
        volumes["colin27"] = colin_volume(args.colin)
    else:
        logger.warning("Colin27 not found; using the MNI brain alone")

    rng = np.random.default_rng(args.seed)
    parts: dict[str, dict[str, list]] = {
        part: {"images": [], "masks": [], "source": [], "z": []}
        for part in ("train", "covariance", "test")
    }
    for source, (t1, mask) in volumes.items():
        slices = prepare_slices(t1, mask)
        train, covariance, test = split_indices(t1.shape[2], sorted(slices), rng, args.cov_share)
        logger.info(
            "%s: %d slices kept of %d; train %d, covariance %d, test %d",
            source, len(slices), t1.shape[2], len(train), len(covariance), len(test),
        )
        for part, zs in (("train", train), ("covariance", covariance), ("test", test)):
            for z in zs:
                parts[part]["images"].append(slices[z][0])
                parts[part]["masks"].append(slices[z][1])
                parts[part]["source"].append(source)
                parts[part]["z"].append(z)

    arrays = {}
    for part, fields in parts.items():
        arrays[f"{part}_images"] = np.stack(fields["images"])[:, None].astype(np.float64)
        arrays[f"{part}_masks"] = np.stack(fields["masks"]).astype(bool)
        arrays[f"{part}_source"] = np.array(fields["source"], dtype="U16")
        arrays[f"{part}_z"] = np.array(fields["z"], dtype=np.int64)
    args.out.mkdir(parents=True, exist_ok=True)
    out_file = args.out / "brain_t1_64.npz"
    np.savez_compressed(out_file, **arrays)
    logger.info("wrote %s", out_file)

    if args.bundle is not None:
        write_bundle(args.bundle, arrays, args.bundle_test, rng)
    return 0


def write_bundle(folder: Path, arrays: dict[str, np.ndarray], per_brain: int, rng) -> None:
    """Write the small bundled subset: test slices, covariance stack, reference image."""
    folder.mkdir(parents=True, exist_ok=True)
    picks = []
    for source in np.unique(arrays["test_source"]):
        idx = np.flatnonzero(arrays["test_source"] == source)
        picks.extend(sorted(rng.choice(idx, size=min(per_brain, idx.size), replace=False)))
    picks = np.array(picks)
    np.savez_compressed(
        folder / "brain_test_slices.npz",
        images=arrays["test_images"][picks],
        masks=arrays["test_masks"][picks],
        source=arrays["test_source"][picks],
        z=arrays["test_z"][picks],
    )
    np.savez_compressed(
        folder / "brain_covariance_slices.npz",
        images=arrays["covariance_images"].astype(np.float32),
        masks=arrays["covariance_masks"],
        source=arrays["covariance_source"],
        z=arrays["covariance_z"],
    )
    train = arrays["train_images"]
    per_source = {
        str(s): train[arrays["train_source"] == s].mean(axis=0)
        for s in np.unique(arrays["train_source"])
    }
    np.savez_compressed(
        folder / "brain_reference.npz",
        reference=train.mean(axis=0),
        count=np.int64(train.shape[0]),
        sources=np.array(sorted(per_source), dtype="U16"),
        per_source=np.stack([per_source[s] for s in sorted(per_source)]),
        per_source_count=np.array(
            [int(np.sum(arrays["train_source"] == s)) for s in sorted(per_source)], dtype=np.int64
        ),
        outside_value=np.float64(OUTSIDE_VALUE),
    )
    summary = {
        "test": int(picks.size),
        "covariance": int(arrays["covariance_images"].shape[0]),
        "train": int(train.shape[0]),
    }
    logger.info("bundled subset in %s: %s", folder, json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
