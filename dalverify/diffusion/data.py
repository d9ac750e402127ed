"""Loading stacks of normal images for training, and slice preparation helpers.

:func:`load_images` accepts a numpy array, a ``.npy`` or ``.npz`` file, a
folder of PNG files or a NIfTI volume (``.nii`` / ``.nii.gz``, cut into
axial slices) and returns a float64 array of shape ``(N, C, H, W)``.
:func:`resize_image` and :func:`robust_standardize` are the two steps used to
prepare MRI slices: anti-aliased resizing and per-slice standardization from
the median and the median absolute deviation inside a mask.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from dalverify.errors import InputError

logger = logging.getLogger(__name__)

#: ``1 / Phi^-1(3/4)``: scales the median absolute deviation of normal data to its standard deviation.
MAD_TO_SD = 1.482602218505602


def load_images(
    source: Any,
    *,
    size: int | None = None,
    channels: int | None = None,
    key: str | None = None,
) -> np.ndarray:
    """Load a stack of images as float64 ``(N, C, H, W)``.

    Parameters
    ----------
    source
        One of: a numpy array ``(N, H, W)`` or ``(N, C, H, W)``; a path to a
        ``.npy`` file or ``.npz`` archive holding such an array; a folder of
        ``.png`` files (read in sorted name order, 8-bit values scaled to
        ``[0, 1]``); a NIfTI volume (``.nii``/``.nii.gz``), reoriented to
        the closest RAS orientation and cut into axial slices (third axis),
        each rotated so that anterior is up.
    size
        If given, every image is resized to ``size x size`` with
        anti-aliasing (:func:`resize_image`).
    channels
        Required channel count (1 or 3). PNG folders are read as greyscale
        when it is 1 and as RGB when it is 3. ``None`` keeps what the source has.
    key
        Array name inside a ``.npz`` archive; default ``"images"``, or the
        only array of the archive.

    Returns
    -------
    numpy.ndarray
        Float64, C-contiguous, shape ``(N, C, H, W)``, all values finite.

    Raises
    ------
    InputError
        If the source does not exist, has an unsupported type or shape, is
        empty, or contains NaN or infinite values.
    """
    if isinstance(source, np.ndarray):
        images = _as_nchw(np.asarray(source, dtype=np.float64), "the array")
    else:
        path = Path(source)
        if not path.exists():
            raise InputError(f"image source {str(path)!r} does not exist")
        name = path.name.lower()
        if path.is_dir():
            images = _load_png_folder(path, channels)
        elif name.endswith(".npy"):
            images = _as_nchw(np.load(path, allow_pickle=False).astype(np.float64), str(path))
        elif name.endswith(".npz"):
            images = _as_nchw(_load_npz_array(path, key).astype(np.float64), str(path))
        elif name.endswith(".nii") or name.endswith(".nii.gz"):
            images = _load_nifti_slices(path)
        else:
            raise InputError(
                f"unsupported image source {str(path)!r}; use a .npy, .npz, .nii or .nii.gz "
                "file or a folder of .png files"
            )

    if images.shape[0] == 0:
        raise InputError(f"image source {source!r} contains no images")
    if channels is not None and images.shape[1] != channels:
        raise InputError(
            f"images have {images.shape[1]} channel(s), expected {channels}; convert them first"
        )
    if not np.all(np.isfinite(images)):
        raise InputError("the images contain NaN or infinite values; remove or repair them")
    if size is not None:
        images = np.stack(
            [np.stack([resize_image(ch, (size, size)) for ch in img]) for img in images]
        )
    return np.ascontiguousarray(images, dtype=np.float64)


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a 2-D image to ``shape`` with anti-aliasing, in float64.

    When shrinking by a factor ``f`` along an axis, the image is first
    smoothed with a Gaussian of standard deviation ``(f - 1) / 2`` pixels
    along that axis (no smoothing when enlarging), then resampled by linear
    interpolation on a grid whose pixel centres span the input evenly.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2:
        raise InputError(f"resize_image expects a 2-D image, got shape {image.shape}")
    out_h, out_w = (int(s) for s in shape)
    if out_h < 1 or out_w < 1:
        raise InputError(f"target shape must be positive, got {shape}")
    factors = (image.shape[0] / out_h, image.shape[1] / out_w)
    sigmas = tuple(max(0.0, (f - 1.0) / 2.0) for f in factors)
    smoothed = ndimage.gaussian_filter(image, sigmas, mode="nearest") if any(sigmas) else image
    # Pixel centres of the output mapped to input coordinates (centre-aligned grid).
    rows = (np.arange(out_h) + 0.5) * factors[0] - 0.5
    cols = (np.arange(out_w) + 0.5) * factors[1] - 0.5
    grid = np.meshgrid(rows, cols, indexing="ij")
    return ndimage.map_coordinates(smoothed, grid, order=1, mode="nearest")


def robust_standardize(
    image: np.ndarray, mask: np.ndarray, outside_value: float = 0.0
) -> np.ndarray:
    """Standardize an image from the median and MAD of its pixels inside ``mask``.

    Returns ``(image - median) / (MAD_TO_SD * MAD)`` inside the mask and
    ``outside_value`` elsewhere, where median and MAD (median absolute
    deviation) are taken over the masked pixels only, so that the result has
    median 0 and a robust standard deviation of 1 inside the mask.

    Raises
    ------
    InputError
        If the mask is empty, has another shape, or the masked pixels have MAD 0.
    """
    image = np.asarray(image, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape:
        raise InputError(f"mask shape {mask.shape} differs from image shape {image.shape}")
    values = image[mask]
    if values.size == 0:
        raise InputError("the mask selects no pixel; cannot standardize")
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median)))
    if mad == 0.0:
        raise InputError("the masked pixels have median absolute deviation 0; cannot standardize")
    out = np.full(image.shape, float(outside_value), dtype=np.float64)
    out[mask] = (values - median) / (MAD_TO_SD * mad)
    return out


def _as_nchw(array: np.ndarray, where: str) -> np.ndarray:
    if array.ndim == 3:
        return array[:, None, :, :]
    if array.ndim == 4:
        return array
    raise InputError(
        f"{where} has shape {array.shape}; expected (N, H, W) or (N, C, H, W)"
    )


def _load_npz_array(path: Path, key: str | None) -> np.ndarray:
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        if key is None:
            if "images" in names:
                key = "images"
            elif len(names) == 1:
                key = names[0]
            else:
                raise InputError(
                    f"{str(path)!r} contains arrays {names}; pass key=... to choose one"
                )
        if key not in names:
            raise InputError(f"{str(path)!r} has no array {key!r}; it contains {names}")
        return archive[key]


def _load_png_folder(path: Path, channels: int | None) -> np.ndarray:
    from PIL import Image

    files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise InputError(f"folder {str(path)!r} contains no .png files")
    mode = "RGB" if channels == 3 else "L"
    images = []
    for file in files:
        with Image.open(file) as img:
            array = np.asarray(img.convert(mode), dtype=np.float64) / 255.0
        images.append(array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0))
    shapes = {img.shape for img in images}
    if len(shapes) > 1:
        raise InputError(
            f"PNG files in {str(path)!r} have different sizes {sorted(shapes)}; "
            "resize them to one size first"
        )
    return np.stack(images)


def _load_nifti_slices(path: Path) -> np.ndarray:
    import nibabel as nib

    volume = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(volume.get_fdata(dtype=np.float64))
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(f"NIfTI file {str(path)!r} has shape {data.shape}; expected a 3-D volume")
    # RAS axes: slice k of the third axis is axial; rot90 puts anterior at the top.
    return np.stack([np.rot90(data[:, :, k]) for k in range(data.shape[2])])[:, None]
