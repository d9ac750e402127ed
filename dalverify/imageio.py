"""Reading one test image, reference or mask from a file.

Supported: PNG and JPEG (8- and 16-bit, grey or RGB), ``.npy`` arrays
``(H, W)`` or ``(C, H, W)``, and NIfTI volumes (``.nii``, ``.nii.gz``) from
which one slice along a chosen axis is taken. Images are returned as float64
``(C, H, W)``; 8-bit values are scaled to ``[0, 1]`` and 16-bit values to
``[0, 1]`` by 65535.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dalverify.errors import InputError


def load_image(path: str | Path, *, channels: int | None = None, nifti_axis: int = 2, nifti_slice: int | None = None) -> np.ndarray:
    """Load one image as float64 ``(C, H, W)``.

    Parameters
    ----------
    path
        Image file.
    channels
        Convert to this many channels (1 or 3) when reading PNG/JPEG; for
        arrays the channel count must already match.
    nifti_axis, nifti_slice
        Axis and index of the slice of a NIfTI volume (default: the middle
        slice along axis 2).

    Raises
    ------
    InputError
        Missing file, unsupported format, wrong dimensionality, or NaN or
        infinite pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"image file {str(path)!r} not found")
    name = path.name.lower()
    if name.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff")):
        image = _load_raster(path, channels)
    elif name.endswith(".npy"):
        image = np.load(path, allow_pickle=False).astype(np.float64)
    elif name.endswith((".nii", ".nii.gz")):
        image = _load_nifti(path, nifti_axis, nifti_slice)
    else:
        raise InputError(f"unsupported image file {str(path)!r}; use PNG, JPEG, TIFF, .npy or NIfTI")
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise InputError(f"image {str(path)!r} has shape {image.shape}; expected (H, W) or (C, H, W)")
    if channels is not None and image.shape[0] != channels:
        raise InputError(f"image {str(path)!r} has {image.shape[0]} channel(s); the model expects {channels}")
    bad = ~np.isfinite(image)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputError(f"image {str(path)!r} has {int(bad.sum())} NaN or infinite pixel(s), first at {first}; repair them")
    return np.ascontiguousarray(image, dtype=np.float64)


def _load_raster(path: Path, channels: int | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as handle:
            mode = handle.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(handle, dtype=np.float64) / 65535.0
                array = array[None]
            else:
                target = "L" if channels == 1 else "RGB" if channels == 3 else ("L" if mode in ("L", "LA", "1", "P") else "RGB")
                array = np.asarray(handle.convert(target), dtype=np.float64) / 255.0
                array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    except OSError as error:
        raise InputError(f"image file {str(path)!r} cannot be read ({error})") from error
    if channels == 3 and array.shape[0] == 1:
        array = np.repeat(array, 3, axis=0)
    return array


def _load_nifti(path: Path, axis: int, index: int | None) -> np.ndarray:
    import nibabel

    try:
        volume = np.asarray(nibabel.load(str(path)).get_fdata(), dtype=np.float64)
    except Exception as error:  # nibabel raises several unrelated types for corrupt files
        raise InputError(f"NIfTI file {str(path)!r} cannot be read ({error})") from error
    if volume.ndim != 3:
        raise InputError(f"NIfTI file {str(path)!r} has {volume.ndim} dimensions; expected a 3-D volume")
    if not 0 <= axis <= 2:
        raise InputError(f"nifti_axis={axis} is invalid; use 0, 1 or 2")
    size = volume.shape[axis]
    index = size // 2 if index is None else index
    if not 0 <= index < size:
        raise InputError(f"nifti_slice={index} is outside 0..{size - 1} along axis {axis}")
    return np.rot90(np.take(volume, index, axis=axis)).copy()


def fit_to_shape(image: np.ndarray, shape: tuple[int, int, int], *, name: str = "image") -> np.ndarray:
    """Resize ``image`` (C, H, W) to the model's ``shape`` with anti-aliasing.

    The channel count must already match; only the height and width change.
    """
    from dalverify.diffusion.data import resize_image

    if image.shape[0] != shape[0]:
        raise InputError(f"{name} has {image.shape[0]} channel(s); the model expects {shape[0]}")
    if image.shape[1:] == tuple(shape[1:]):
        return image
    return np.stack([resize_image(channel, tuple(shape[1:])) for channel in image])


def load_mask(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """Load a boolean mask (nonzero = True) and check its shape and that it is not empty."""
    mask = load_image(path)[0] != 0
    if mask.shape != tuple(shape):
        raise InputError(f"mask {str(path)!r} has shape {mask.shape}; it must match the image, {tuple(shape)}")
    if not mask.any():
        raise InputError(f"mask {str(path)!r} selects no pixel; pass a mask with at least one nonzero pixel")
    return mask


def standardize(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Standardize each channel by the median and MAD of its pixels inside ``mask``.

    The mask is an anatomy or foreground mask, never a lesion annotation.
    Pixels outside the mask are set to 0.
    """
    from dalverify.diffusion.data import robust_standardize

    return np.stack([robust_standardize(channel, mask) for channel in image])
