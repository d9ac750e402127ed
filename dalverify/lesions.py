"""Synthetic lesions of known mask, for power studies and the demo.

A lesion is an irregular, soft-edged blob: a sum of a few Gaussian bumps
with random centres near a seed point, thresholded to a mask, and added to
the image with a smooth profile that reaches ``contrast`` (in the image's
units, standardized images: standard deviations) at the blob's core. It is
placed inside the anatomy mask only.
"""

from __future__ import annotations

import numpy as np

from dalverify.errors import InputError


def insert_lesion(image: np.ndarray, anatomy: np.ndarray, *, radius: float = 4.0, contrast: float = 2.0,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(image_with_lesion, lesion_mask)``.

    Parameters
    ----------
    image
        ``(C, H, W)`` float image.
    anatomy
        Boolean ``(H, W)`` mask of where a lesion may lie (for MRI, the brain).
    radius
        Typical radius of the blob in pixels.
    contrast
        Added intensity at the core; negative values make a hypo-intense lesion.
    seed
        Seed of the blob's shape and position.
    """
    image = np.asarray(image, dtype=np.float64)
    anatomy = np.asarray(anatomy, dtype=bool)
    if anatomy.shape != image.shape[1:]:
        raise InputError(f"anatomy mask has shape {anatomy.shape}; the image is {image.shape[1:]}")
    if radius <= 0:
        raise InputError(f"radius={radius} must be positive")
    rng = np.random.default_rng(seed)

    # Seed point well inside the anatomy (far from its border when possible).
    from scipy import ndimage

    depth = ndimage.distance_transform_edt(anatomy)
    candidates = np.argwhere(depth >= min(radius + 1.0, depth.max()))
    if candidates.size == 0:
        raise InputError("the anatomy mask is empty; a lesion cannot be placed")
    centre = candidates[rng.integers(len(candidates))].astype(float)

    rows, cols = np.mgrid[: image.shape[1], : image.shape[2]].astype(float)
    field = np.zeros(anatomy.shape)
    for _ in range(4):
        offset = rng.normal(scale=radius / 2.0, size=2)
        width = radius * rng.uniform(0.5, 0.9)
        field += np.exp(-((rows - centre[0] - offset[0]) ** 2 + (cols - centre[1] - offset[1]) ** 2) / (2 * width**2))
    field /= field.max()
    mask = (field >= 0.35) & anatomy
    profile = np.clip((field - 0.2) / 0.5, 0.0, 1.0) * anatomy
    return image + contrast * profile[None], mask
