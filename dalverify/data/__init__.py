"""Bundled data: a small brain diffusion model and real normal T1 slices (64x64).

Files in this folder (licences in ``NOTICE.md``):

- ``brain_t1_32.dalv``, ``*_32.npz``: the same at 32x32 (each 64x64
  slice averaged over 2x2 blocks and standardized again, by
  ``examples/downsample_brain_data.py``), used by ``dalverify demo`` so that
  the exact walk fits in two minutes on two CPU cores.
- ``brain_t1_64.dalv``: U-Net noise predictor (base width 4, depth 3,
  ``T = 1000``) trained on standardized axial slices by
  ``examples/train_bundled_model.py``.
- ``brain_test_slices.npz``: held-out normal test slices (``images``
  ``(N, 1, 64, 64)``, ``masks`` ``(N, 64, 64)``, ``source``, ``z``).
- ``brain_covariance_slices.npz``: held-out normal slices for covariance
  estimation, float32, same fields. They come from the same brains as the
  test slices (each brain's held-out slabs are split between the two) and
  never from the training slices.
- ``brain_reference.npz``: pixel-wise mean of the ``count`` training slices
  (``c_ref = 1 / count`` for independent slices), also per source.

Slices are standardized per slice: median 0 and MAD-based standard
deviation 1 inside the brain mask, and the constant ``outside_value``
outside it. ``examples/prepare_brain_data.py`` documents the sources and
the split (10-slice slabs, every third held out, a gap of at least 3 slices
to the training slices).

Only :func:`load_bundled_model` imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dalverify.errors import InputError

#: Reconstruction settings used with the bundled brain model (``T' = 300``, ``k = 5``, ``eta = 1``).
BRAIN_RECONSTRUCTION = {"t_start": 300, "steps": 5, "eta": 1.0, "seed": 0, "image_shape": (1, 64, 64)}
#: Region threshold used for brain MRI.
BRAIN_THRESHOLD = 0.6

MODEL_FILE = "brain_t1_64.dalv"
TEST_FILE = "brain_test_slices.npz"
COVARIANCE_FILE = "brain_covariance_slices.npz"
REFERENCE_FILE = "brain_reference.npz"
#: Image sizes of the bundled data sets.
SIZES = (32, 64)


def _sized(name: str, size: int) -> str:
    """File name of the bundled data set of the given image size."""
    if size not in SIZES:
        raise InputError(f"size={size} has no bundled data; use one of {SIZES}")
    if size == 64:
        return name
    if name.endswith("_64.dalv"):
        return name.replace("_64.dalv", f"_{size}.dalv")
    stem, suffix = name.rsplit(".", 1)
    return f"{stem}_{size}.{suffix}"


def bundled_path(name: str) -> Path:
    """Return the path of a bundled file."""
    path = Path(str(resources.files(__name__).joinpath(name)))
    if not path.is_file():
        raise InputError(f"bundled file {name!r} is missing from {path.parent}; reinstall dalverify")
    return path


@dataclass(frozen=True)
class SliceStack:
    """Stack of standardized slices with their brain masks.

    Attributes
    ----------
    images
        Float64 ``(N, 1, H, W)``.
    masks
        Bool ``(N, H, W)``, True inside the brain.
    source
        Name of the brain each slice comes from (``"mni152"`` or ``"colin27"``).
    z
        Axial index of each slice in its volume.
    """

    images: np.ndarray
    masks: np.ndarray
    source: np.ndarray
    z: np.ndarray

    def select(self, source: str) -> "SliceStack":
        """Return the slices of one brain."""
        keep = self.source == source
        if not keep.any():
            raise InputError(
                f"no slice comes from {source!r}; sources are {sorted(set(self.source.tolist()))}"
            )
        return SliceStack(self.images[keep], self.masks[keep], self.source[keep], self.z[keep])


@dataclass(frozen=True)
class Reference:
    """Reference image: pixel-wise mean of ``count`` training slices.

    ``c_ref = 1 / count`` is the variance factor of such a mean when the
    slices are independent with covariance ``Sigma``.
    """

    image: np.ndarray
    count: int
    source: str | None

    @property
    def c_ref(self) -> float:
        """Variance factor ``1 / count``."""
        return 1.0 / self.count


def _load_stack(name: str) -> SliceStack:
    with np.load(bundled_path(name), allow_pickle=False) as archive:
        return SliceStack(
            images=archive["images"].astype(np.float64),
            masks=archive["masks"].astype(bool),
            source=archive["source"].astype(str),
            z=archive["z"].astype(np.int64),
        )


def load_bundled_slices(source: str | None = None, size: int = 64) -> SliceStack:
    """Load the bundled held-out normal test slices (optionally of one brain)."""
    stack = _load_stack(_sized(TEST_FILE, size))
    return stack if source is None else stack.select(source)


def load_bundled_slice_references(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per-test-slice references: for each bundled test slice, the mean of the
    training slices of the same brain within 8 axial slices, and their count.

    Returns ``(references, counts)`` with shapes ``(N, 1, H, W)`` and ``(N,)``;
    ``c_ref = 1 / count`` for a mean of independent slices.
    """
    with np.load(bundled_path(_sized(TEST_FILE, size)), allow_pickle=False) as archive:
        return archive["reference"].astype(np.float64), archive["reference_count"].astype(np.int64)


def load_bundled_covariance_slices(source: str | None = None, size: int = 64) -> SliceStack:
    """Load the bundled covariance-estimation slices (optionally of one brain), as float64."""
    stack = _load_stack(_sized(COVARIANCE_FILE, size))
    return stack if source is None else stack.select(source)


def load_bundled_reference(source: str | None = None, size: int = 64) -> Reference:
    """Load the mean training slice (all brains, or one brain's) and its count."""
    with np.load(bundled_path(_sized(REFERENCE_FILE, size)), allow_pickle=False) as archive:
        if source is None:
            return Reference(archive["reference"].astype(np.float64), int(archive["count"]), None)
        sources = archive["sources"].astype(str).tolist()
        if source not in sources:
            raise InputError(f"no reference for {source!r}; sources are {sources}")
        index = sources.index(source)
        return Reference(
            archive["per_source"][index].astype(np.float64),
            int(archive["per_source_count"][index]),
            source,
        )


def load_bundled_model(size: int = 64, **kwargs: Any):
    """Load the bundled brain model for ``size x size`` slices as ``(UNet, manifest)``, float64 by default.

    Keyword arguments go to :func:`dalverify.diffusion.checkpoint.load_model`.
    """
    from dalverify.diffusion.checkpoint import load_model

    return load_model(bundled_path(_sized(MODEL_FILE, size)), **kwargs)


__all__ = [
    "BRAIN_RECONSTRUCTION",
    "BRAIN_THRESHOLD",
    "Reference",
    "SliceStack",
    "bundled_path",
    "load_bundled_covariance_slices",
    "load_bundled_model",
    "load_bundled_reference",
    "load_bundled_slice_references",
    "load_bundled_slices",
]
