"""Report figure of one test: input, reconstruction, reference and the region.

Colours follow the Okabe-Ito palette, which stays distinguishable under the
common forms of colour blindness: the tested region is outlined in orange
(#E69F00) and a known lesion mask, when given, in sky blue (#56B4E9).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from dalverify.graph.io import atomic_write_bytes

REGION_COLOUR = "#E69F00"
LESION_COLOUR = "#56B4E9"


def _display(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, dtype=np.float64)
    return image[0] if image.shape[0] == 1 else np.clip(image.transpose(1, 2, 0), 0, 1)


def write_report(path: str | Path, image: np.ndarray, reconstruction: np.ndarray, reference: np.ndarray,
                 result, *, title: str = "", lesion_mask: np.ndarray | None = None,
                 lesion_label: str = "inserted lesion") -> None:
    """Write ``report.png``: input | reconstruction | reference | region on the input.

    The caption states the region size, the statistic and the naive and
    selective p-values (with the selective enclosure). ``lesion_mask`` is
    drawn dashed and named ``lesion_label`` in the caption.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("input", image), ("reconstruction D(x)", reconstruction), ("reference", reference), ("region on input", image)]
    low = float(np.percentile(np.concatenate([np.ravel(image), np.ravel(reference)]), 1))
    high = float(np.percentile(np.concatenate([np.ravel(image), np.ravel(reference)]), 99))
    figure, axes = plt.subplots(1, 4, figsize=(12, 3.6))
    for axis, (label, data) in zip(axes, panels):
        axis.imshow(_display(data), cmap="gray", vmin=low, vmax=high, interpolation="nearest")
        axis.set_title(label, fontsize=10)
        axis.set_xticks([])
        axis.set_yticks([])
    region = np.asarray(result.region, dtype=float)
    if region.any():
        overlay = np.zeros(region.shape + (4,))
        overlay[..., :3] = matplotlib.colors.to_rgb(REGION_COLOUR)
        overlay[..., 3] = 0.45 * region
        axes[3].imshow(overlay, interpolation="nearest")
        axes[3].contour(region, levels=[0.5], colors=[REGION_COLOUR], linewidths=1.2)
    if lesion_mask is not None and np.any(lesion_mask):
        axes[3].contour(np.asarray(lesion_mask, float), levels=[0.5], colors=[LESION_COLOUR], linewidths=1.2, linestyles="dashed")

    if result.status == "no_region":
        caption = "no anomalous region at this threshold: nothing to test"
    else:
        p = result.pvalues
        selective = p["selective"]
        enclosure = ""
        if getattr(selective, "enclosure", None):
            lo, hi = selective.enclosure
            enclosure = f" in [{_text(lo)}, {_text(hi)}]"
        caption = (
            f"region {result.region_size} px (orange)   t_obs = {result.t_obs:.4g}, sd = {result.sd:.3g}   "
            f"naive p = {p['naive'].text}   selective p = {selective.text}{enclosure}"
        )
        if lesion_mask is not None:
            caption += f"   dashed blue: {lesion_label}"
    figure.suptitle(title, fontsize=11)
    figure.text(0.5, 0.03, caption, ha="center", fontsize=9)
    figure.tight_layout(rect=(0, 0.07, 1, 0.95))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def _text(value) -> str:
    if hasattr(value, "text"):
        return value.text
    import mpmath

    return mpmath.nstr(value, 4)
