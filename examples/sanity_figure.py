"""Draw input, DDIM reconstruction and absolute residual for bundled held-out brain slices.

Uses the bundled model and test slices unless ``--model`` / ``--slices``
name other files, reconstructs with ``T' = 300``, ``k = 5``, ``eta = 1``
(float64, fixed seed) and writes one PNG with a row per slice. Prints the
mean absolute residual inside the brain for each slice.

Usage::

    python examples/sanity_figure.py [OUT.png] [--model FILE.dalv] [--count 4]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from dalverify.data import (  # noqa: E402
    BRAIN_RECONSTRUCTION,
    SliceStack,
    load_bundled_model,
    load_bundled_slices,
)
from dalverify.diffusion.checkpoint import load_model  # noqa: E402
from dalverify.diffusion.reconstruction import Reconstruction  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=Path("docs/figures/sanity_brain.png"))
    parser.add_argument("--model", type=Path, default=None, help="model file (default: bundled)")
    parser.add_argument("--slices", type=Path, default=None, help=".npz with images, masks, source, z")
    parser.add_argument("--count", type=int, default=4, help="number of slices to draw")
    parser.add_argument("--seed", type=int, default=BRAIN_RECONSTRUCTION["seed"], help="noise seed")
    args = parser.parse_args(argv)

    model, _ = load_model(args.model) if args.model else load_bundled_model()
    if args.slices:
        with np.load(args.slices, allow_pickle=False) as a:
            stack = SliceStack(a["images"].astype(np.float64), a["masks"], a["source"], a["z"])
    else:
        stack = load_bundled_slices()
    # Spread the drawn slices over the stack (both brains when both are present).
    picks = np.linspace(0, len(stack.images) - 1, min(args.count, len(stack.images))).round().astype(int)

    settings = dict(BRAIN_RECONSTRUCTION, seed=args.seed)
    recon = Reconstruction(model, **settings)
    x = torch.as_tensor(stack.images[picks])
    with torch.no_grad():
        rec = recon(x).numpy()

    fig, axes = plt.subplots(len(picks), 3, figsize=(7.5, 2.5 * len(picks)), squeeze=False)
    for row, index in enumerate(picks):
        image, out = stack.images[index, 0], rec[row, 0]
        residual = np.abs(image - out)
        mask = stack.masks[index]
        inside = float(residual[mask].mean())
        print(f"{stack.source[index]} z={stack.z[index]}: mean |x - D(x)| inside brain {inside:.3f}")
        panels = (
            (image, f"input ({stack.source[index]}, z={stack.z[index]})", "gray", (-3.5, 3.5)),
            (out, f"D(x), T'={settings['t_start']}, k={settings['steps']}", "gray", (-3.5, 3.5)),
            (residual, f"|x - D(x)|, brain mean {inside:.2f}", "magma", (0.0, 2.0)),
        )
        for col, (data, title, cmap, (lo, hi)) in enumerate(panels):
            ax = axes[row, col]
            shown = ax.imshow(data, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
            if col == 2:
                fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
