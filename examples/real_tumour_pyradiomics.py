"""Qualitative DAL-Test on a real brain tumour slice (pyradiomics sample MRI).

The pyradiomics 3.0.1 source archive contains two sample head MRIs
(``data/brain{1,2}_{image,label}.nrrd``, BSD-3-Clause). They are clinical
post-contrast T1 volumes of 256 x 256 x 25 and x 23 voxels (0.78 mm pixels,
6.5 mm slices) with the skull present, each with a tumour label. The bundled brain
model was trained on skull-stripped, non-contrast 1 mm T1 templates, so the
domain differs and the output is a picture, not evidence of power.

Steps:

1. read one axial slice and its tumour label (``pynrrd``, or SimpleITK when
   installed);
2. build a brain mask from intensities alone (the tumour label is never
   used for it): Otsu threshold, an upper cut that drops the bright scalp
   fat, erosion to cut thin bridges through the skull, the largest
   component, dilation back inside the threshold mask, closing, hole filling;
3. crop the square around the brain mask (margin 5 pixels), take the
   brain-only average at 32x32 (``resize(image * mask) / resize(mask)``),
   standardize by median and MAD inside the 32x32 mask and set -3 outside,
   as the bundled slices are;
4. run the DAL-Test of the bundled 32x32 brain model (threshold 1.0 unless
   ``--threshold`` is given, diagonal covariance from the bundled 32x32
   covariance slices, reference = bundled 32x32 mean training slice with
   ``c_ref = 1 / count``), only pixels inside the brain mask eligible;
5. write ``result.json`` under ``--out`` and the figure (default
   ``docs/figures/real_tumour_pyradiomics.png``) with the tumour label
   outlined dashed.

Without the data or without an NRRD reader the script prints how to get
them and exits 0 ("skipped").

Usage::

    python examples/real_tumour_pyradiomics.py \
        --source /work/work_data/pyradiomics-3.0.1/data --case brain1 --slice 16
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

DEFAULT_SOURCE = Path("/work/work_data/pyradiomics-3.0.1/data")
SIZE = 32
OUTSIDE_VALUE = -3.0
CROP_MARGIN = 5
THRESHOLD = 1.0

HOW_TO_GET = """skipped: the pyradiomics sample MRIs were not found under {source}.
They ship only in the pyradiomics 3.0.1 source archive (the wheels lack them):
    pip install numpy setuptools wheel versioneer
    pip download --no-deps --no-build-isolation --no-binary :all: pyradiomics==3.0.1
    tar xzf pyradiomics-3.0.1.tar.gz pyradiomics-3.0.1/data/brain1_image.nrrd \\
        pyradiomics-3.0.1/data/brain1_label.nrrd pyradiomics-3.0.1/data/brain2_image.nrrd \\
        pyradiomics-3.0.1/data/brain2_label.nrrd
then pass --source pyradiomics-3.0.1/data"""

NO_READER = """skipped: no NRRD reader is installed; install one of
    pip install pynrrd
    pip install SimpleITK"""


def read_nrrd(path: Path) -> np.ndarray | None:
    """Return the volume as a float64 ``(x, y, z)`` array, or None without a reader."""
    try:
        import nrrd
    except ImportError:
        nrrd = None
    if nrrd is not None:
        data, _ = nrrd.read(str(path))
        return np.asarray(data, dtype=np.float64)
    try:
        import SimpleITK as sitk
    except ImportError:
        return None
    # SimpleITK returns (z, y, x); transpose to the (x, y, z) order of pynrrd.
    return np.asarray(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), dtype=np.float64).transpose(2, 1, 0)


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Threshold that maximises the between-class variance of a 1-D sample."""
    counts, edges = np.histogram(values, bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(counts)
    mass = np.cumsum(counts * centres)
    total_weight, total_mass = weight[-1], mass[-1]
    between = (total_mass * weight / total_weight - mass) ** 2 / np.maximum(weight * (total_weight - weight), 1)
    return float(centres[np.argmax(between)])


def brain_mask(image: np.ndarray) -> np.ndarray:
    """Return an intensity-only brain mask of one head slice with skull (steps in the module docstring)."""
    threshold = otsu_threshold(image[image > 0])
    tissue = image[image > 0.5 * threshold]
    median = float(np.median(tissue))
    robust_sd = 1.4826 * float(np.median(np.abs(tissue - median)))
    candidate = (image > 0.5 * threshold) & (image < median + 6.0 * robust_sd)
    core = ndimage.binary_erosion(candidate, iterations=7)
    labels, count = ndimage.label(core)
    if count == 0:
        raise SystemExit("the intensity-based brain mask is empty on this slice; choose another --slice")
    sizes = ndimage.sum(core, labels, range(1, count + 1))
    mask = labels == 1 + int(np.argmax(sizes))
    mask = ndimage.binary_dilation(mask, iterations=7) & candidate
    return ndimage.binary_fill_holes(ndimage.binary_closing(mask, iterations=3))


def crop_square(mask: np.ndarray, margin: int) -> tuple[int, int, int]:
    """Return ``(row0, col0, side)`` of the square around ``mask`` with ``margin`` pixels on each side."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    height, width = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    side = int(max(height, width) + 2 * margin)
    row0 = int(rows[0] - (side - height) // 2)
    col0 = int(cols[0] - (side - width) // 2)
    return row0, col0, side


def cut(image: np.ndarray, row0: int, col0: int, side: int) -> np.ndarray:
    """Return the ``side x side`` window at ``(row0, col0)``, zero where it leaves the image."""
    out = np.zeros((side, side), dtype=np.float64)
    r_lo, c_lo = max(row0, 0), max(col0, 0)
    r_hi, c_hi = min(row0 + side, image.shape[0]), min(col0 + side, image.shape[1])
    out[r_lo - row0:r_hi - row0, c_lo - col0:c_hi - col0] = image[r_lo:r_hi, c_lo:c_hi]
    return out


def prepare(image: np.ndarray, label: np.ndarray) -> dict:
    """Return the 32x32 standardized input, its brain mask and tumour mask, and the full-size pieces."""
    from dalverify.diffusion.data import resize_image, robust_standardize

    brain = brain_mask(image)
    row0, col0, side = crop_square(brain, CROP_MARGIN)
    crop, crop_brain = cut(image, row0, col0, side), cut(brain.astype(float), row0, col0, side)
    weight = resize_image(crop_brain, (SIZE, SIZE))
    small_brain = weight > 0.5
    brain_mean = resize_image(crop * crop_brain, (SIZE, SIZE)) / np.where(small_brain, weight, 1.0)
    small = robust_standardize(brain_mean, small_brain, OUTSIDE_VALUE)
    tumour = resize_image(cut(label, row0, col0, side), (SIZE, SIZE)) > 0.5
    return {"image": small[None], "brain": small_brain, "tumour": tumour, "full": image, "full_brain": brain,
            "full_tumour": label > 0, "crop": (row0, col0, side)}


def write_figure(path: Path, case: dict, result, reference: np.ndarray, title: str, threshold: float) -> None:
    """Write five panels: full slice, 32x32 input, reconstruction, reference, region with the tumour label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dalverify.graph.io import atomic_write_bytes
    from dalverify.report import LESION_COLOUR, REGION_COLOUR

    image = case["image"][0]
    low, high = np.percentile(np.concatenate([image.ravel(), reference.ravel()]), [1, 99])
    figure, axes = plt.subplots(1, 5, figsize=(15, 3.9))
    axes[0].imshow(case["full"], cmap="gray", interpolation="nearest")
    axes[0].contour(case["full_brain"].astype(float), levels=[0.5], colors=["#F0E442"], linewidths=0.8)
    axes[0].contour(case["full_tumour"].astype(float), levels=[0.5], colors=[LESION_COLOUR], linewidths=1.0,
                    linestyles="dashed")
    row0, col0, side = case["crop"]
    axes[0].add_patch(matplotlib.patches.Rectangle((col0 - 0.5, row0 - 0.5), side, side, fill=False,
                                                   edgecolor="white", linewidth=0.6, linestyle=":"))
    axes[0].set_title("slice 256x256: brain mask (yellow)", fontsize=9)
    panels = [("input 32x32 (standardized)", image), ("reconstruction D(x)", result.reconstruction[0]),
              ("reference (bundled mean)", reference), ("region (orange), tumour (dashed)", image)]
    for axis, (label, data) in zip(axes[1:], panels):
        axis.imshow(data, cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        axis.set_title(label, fontsize=9)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    region = np.asarray(result.region, dtype=float)
    if region.any():
        overlay = np.zeros(region.shape + (4,))
        overlay[..., :3] = matplotlib.colors.to_rgb(REGION_COLOUR)
        overlay[..., 3] = 0.45 * region
        axes[4].imshow(overlay, interpolation="nearest")
        axes[4].contour(region, levels=[0.5], colors=[REGION_COLOUR], linewidths=1.2)
    axes[4].contour(case["tumour"].astype(float), levels=[0.5], colors=[LESION_COLOUR], linewidths=1.4,
                    linestyles="dashed")
    if result.status == "no_region":
        caption = f"no pixel reaches the threshold {threshold}: nothing to test"
    else:
        p = result.pvalues
        overlap = int(np.sum(result.region & case["tumour"]))
        tumour_size = int(case["tumour"].sum())
        caption = (f"region {result.region_size} px ({overlap} inside the tumour label of {tumour_size} px)"
                   f"   z = {result.t_obs / result.sd:.3g}   naive p = {p['naive'].text}"
                   f"   selective p = {p['selective'].text}"
                   "   dashed blue: tumour label (annotation, not used by the test)")
    figure.suptitle(title, fontsize=10)
    figure.text(0.5, 0.03, caption, ha="center", fontsize=8.5)
    figure.tight_layout(rect=(0, 0.07, 1, 0.92))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="folder holding brain{1,2}_{image,label}.nrrd")
    parser.add_argument("--case", choices=("brain1", "brain2"), default="brain1")
    parser.add_argument("--slice", type=int, default=None,
                        help="axial index (default: the slice with the largest tumour label)")
    parser.add_argument("--out", type=Path, default=Path("/work/work_data/real_tumour_out"),
                        help="folder for result.json")
    parser.add_argument("--figure", type=Path, default=Path("docs/figures/real_tumour_pyradiomics.png"))
    parser.add_argument("--threshold", type=float, default=THRESHOLD,
                        help="region threshold on the filtered residual (larger: smaller region, faster walk)")
    args = parser.parse_args(argv)

    image_path = args.source / f"{args.case}_image.nrrd"
    label_path = args.source / f"{args.case}_label.nrrd"
    if not (image_path.is_file() and label_path.is_file()):
        print(HOW_TO_GET.format(source=args.source))
        return 0
    volume = read_nrrd(image_path)
    if volume is None:
        print(NO_READER)
        return 0
    labels = read_nrrd(label_path)
    areas = labels.sum(axis=(0, 1))
    index = int(np.argmax(areas)) if args.slice is None else int(args.slice)
    if not 0 <= index < volume.shape[2] or areas[index] == 0:
        tumour_slices = np.flatnonzero(areas).tolist()
        raise SystemExit(f"--slice {index} is invalid: it has no tumour label; "
                         f"tumour slices of {args.case} are {tumour_slices}")

    import torch

    from dalverify.cli import _bundled_variances, _load_reconstruction_graph
    from dalverify.data import BRAIN_RECONSTRUCTION, load_bundled_reference
    from dalverify.methods.covariance import Diagonal
    from dalverify.methods.dal_test import DALTest

    torch.set_num_threads(1)
    # Transposed so that rows run anterior to posterior, as in the bundled slices.
    case = prepare(volume[:, :, index].T, labels[:, :, index].T)
    reference = load_bundled_reference(size=SIZE)
    settings = BRAIN_RECONSTRUCTION
    graph = _load_reconstruction_graph(None, settings["t_start"], settings["steps"], settings["eta"], settings["seed"],
                                       (1, SIZE, SIZE), size=SIZE)
    test = DALTest(graph, threshold=args.threshold, covariance=Diagonal(_bundled_variances(SIZE)),
                   reference_scale=1.0 / reference.count, mask=case["brain"], progress=False)
    started = time.perf_counter()
    result = test.run(case["image"], reference.image)
    seconds = time.perf_counter() - started

    title = (f"pyradiomics {args.case}, axial slice {index}: REAL tumour, QUALITATIVE only - domain differs from the "
             "training brains\n(post-contrast T1 with skull, 6.5 mm slices; model: bundled 32x32 skull-stripped T1 "
             f"templates), threshold {args.threshold}, diagonal covariance")
    write_figure(args.figure, case, result, reference.image[0], title, args.threshold)
    payload = result.to_dict()
    payload.update({"case": args.case, "slice": index, "seconds": round(seconds, 1),
                    "tumour_pixels_32": int(case["tumour"].sum()), "brain_pixels_32": int(case["brain"].sum()),
                    "region_pixels_in_tumour": int(np.sum(np.asarray(result.region, bool) & case["tumour"])),
                    "reference_count": reference.count, "figure": str(args.figure)})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "result.json").write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    print(f"{args.case} slice {index}: tumour label {payload['tumour_pixels_32']} px of {payload['brain_pixels_32']} "
          f"brain px at {SIZE}x{SIZE}")
    if result.status == "no_region":
        print(f"no pixel reaches the threshold {args.threshold}: nothing to test")
    else:
        p = result.pvalues
        print(f"region {result.region_size} px ({payload['region_pixels_in_tumour']} inside the tumour label), "
              f"z = {result.t_obs / result.sd:.4g}, naive p = {p['naive'].text}, selective p = {p['selective'].text}, "
              f"{result.network_pieces} network pieces, {seconds:.1f} s")
    print(f"wrote {args.out / 'result.json'} and {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
