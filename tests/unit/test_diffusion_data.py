"""Image loading, resizing and standardization, and the bundled brain files."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dalverify.diffusion.data import MAD_TO_SD, load_images, resize_image, robust_standardize
from dalverify.errors import InputError


def test_array_gains_channel_axis():
    images = load_images(np.arange(2 * 8 * 8, dtype=np.int64).reshape(2, 8, 8))
    assert images.shape == (2, 1, 8, 8)
    assert images.dtype == np.float64
    assert images[1, 0, 0, 1] == 65.0


def test_npy_and_npz_files(tmp_path):
    stack = np.random.default_rng(0).normal(size=(3, 1, 8, 8))
    np.save(tmp_path / "a.npy", stack)
    np.savez(tmp_path / "one.npz", anything=stack)
    np.savez(tmp_path / "named.npz", images=stack, masks=stack > 0)
    np.savez(tmp_path / "two.npz", first=stack, second=stack)
    assert np.array_equal(load_images(tmp_path / "a.npy"), stack)
    assert np.array_equal(load_images(tmp_path / "one.npz"), stack)
    assert np.array_equal(load_images(tmp_path / "named.npz"), stack)
    assert np.array_equal(load_images(tmp_path / "two.npz", key="second"), stack)
    with pytest.raises(InputError, match="key="):
        load_images(tmp_path / "two.npz")
    with pytest.raises(InputError, match="no array 'third'"):
        load_images(tmp_path / "two.npz", key="third")


def test_png_folder(tmp_path):
    from PIL import Image

    first = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(first).save(tmp_path / "b.png")
    Image.fromarray(255 - first).save(tmp_path / "a.png")
    images = load_images(tmp_path)
    assert images.shape == (2, 1, 8, 8)
    assert np.array_equal(images[0, 0], (255 - first) / 255.0)
    assert np.array_equal(images[1, 0], first / 255.0)
    rgb = load_images(tmp_path, channels=3)
    assert rgb.shape == (2, 3, 8, 8)
    assert np.array_equal(rgb[1, 2], first / 255.0)


def test_nifti_slices_in_ras_orientation(tmp_path):
    import nibabel as nib

    ras = np.random.default_rng(1).normal(size=(6, 5, 4))
    # Store the x axis reversed with a matching LAS affine, which loading must undo.
    las_affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    nib.save(nib.Nifti1Image(ras[::-1].copy(), las_affine), tmp_path / "vol.nii.gz")
    images = load_images(tmp_path / "vol.nii.gz")
    assert images.shape == (4, 1, 5, 6)
    for k in range(4):
        assert np.allclose(images[k, 0], np.rot90(ras[:, :, k]), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (np.zeros((2, 8)), "expected"),
        (np.zeros((0, 8, 8)), "no images"),
        (np.full((1, 8, 8), np.nan), "NaN"),
        ("/nonexistent/file.npy", "does not exist"),
    ],
)
def test_load_rejects(source, message):
    with pytest.raises(InputError, match=message):
        load_images(source)


def test_load_rejects_unknown_suffix_and_channels(tmp_path):
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(InputError, match="unsupported"):
        load_images(tmp_path / "x.txt")
    with pytest.raises(InputError, match="channel"):
        load_images(np.zeros((1, 1, 8, 8)), channels=3)


def test_resize_keeps_linear_ramp():
    rows = np.arange(64, dtype=np.float64)
    ramp = np.repeat(rows[:, None], 64, axis=1)
    small = resize_image(ramp, (32, 32))
    # Output row i is centred on input coordinate 2 i + 0.5; away from the borders
    # Gaussian smoothing and linear interpolation both keep a linear function.
    expected = 2.0 * np.arange(32) + 0.5
    np.testing.assert_allclose(small[3:-3, 5], expected[3:-3], rtol=0, atol=1e-9)


def test_resize_suppresses_aliasing():
    checker = (np.indices((64, 64)).sum(axis=0) % 2).astype(np.float64)
    small = resize_image(checker, (16, 16))
    assert np.max(np.abs(small - 0.5)) < 0.05


def test_resize_to_same_size_is_identity():
    image = np.random.default_rng(2).normal(size=(16, 16))
    np.testing.assert_allclose(resize_image(image, (16, 16)), image, rtol=0, atol=1e-12)


def test_mad_constant_matches_normal_quantile():
    assert MAD_TO_SD == pytest.approx(1.0 / stats.norm.ppf(0.75), rel=1e-15)


def test_robust_standardize_known_values():
    image = np.array([[1.0, 2.0, 3.0], [4.0, 100.0, 7.0]])
    mask = np.array([[True, True, True], [True, True, False]])
    out = robust_standardize(image, mask, outside_value=-3.0)
    # Masked values 1, 2, 3, 4, 100: median 3, absolute deviations 2, 1, 0, 1, 97, MAD 1.
    expected = (np.array([1.0, 2.0, 3.0, 4.0, 100.0]) - 3.0) / MAD_TO_SD
    np.testing.assert_allclose(out[mask], expected, rtol=1e-15)
    assert out[1, 2] == -3.0


@pytest.mark.parametrize(
    ("image", "mask", "message"),
    [
        (np.ones((2, 2)), np.zeros((2, 2), bool), "no pixel"),
        (np.ones((2, 2)), np.ones((2, 2), bool), "deviation 0"),
        (np.ones((2, 2)), np.ones((3, 2), bool), "shape"),
    ],
)
def test_robust_standardize_rejects(image, mask, message):
    with pytest.raises(InputError, match=message):
        robust_standardize(image, mask)


# Bundled files ---------------------------------------------------------------


def test_bundled_files_small():
    from dalverify import data

    names = [data.MODEL_FILE, data.TEST_FILE, data.COVARIANCE_FILE, data.REFERENCE_FILE]
    total = sum(data.bundled_path(name).stat().st_size for name in names)
    assert total < 5 * 2**20


def test_bundled_slices_standardized():
    from dalverify.data import load_bundled_reference, load_bundled_slices

    stack = load_bundled_slices()
    outside = float(np.load(_path("brain_reference.npz"))["outside_value"])
    assert stack.images.shape[1:] == (1, 64, 64)
    assert stack.masks.shape == (len(stack.images), 64, 64)
    assert set(stack.source.tolist()) <= {"mni152", "colin27"}
    for image, mask in zip(stack.images[:, 0], stack.masks):
        inside = image[mask]
        assert abs(np.median(inside)) < 1e-12
        assert MAD_TO_SD * np.median(np.abs(inside - np.median(inside))) == pytest.approx(1.0, rel=1e-12)
        assert np.all(image[~mask] == outside)
    reference = load_bundled_reference()
    assert reference.image.shape == (1, 64, 64)
    assert reference.c_ref == 1.0 / reference.count


def test_bundled_split_disjoint_per_brain():
    from dalverify.data import load_bundled_covariance_slices, load_bundled_slices

    test, covariance = load_bundled_slices(), load_bundled_covariance_slices()
    test_keys = set(zip(test.source.tolist(), test.z.tolist()))
    covariance_keys = set(zip(covariance.source.tolist(), covariance.z.tolist()))
    assert not test_keys & covariance_keys
    # Every brain with test slices has its own covariance slices.
    assert set(test.source.tolist()) <= set(covariance.source.tolist())
    # Held-out slices lie in slabs 1, 4, 7, ... of 10 slices.
    for z in list(test.z) + list(covariance.z):
        assert (z // 10) % 3 == 1


def test_bundled_model_loads():
    import torch

    from dalverify.data import load_bundled_model

    model, manifest = load_bundled_model()
    assert manifest["config"]["base_width"] == 4
    assert manifest["config"]["depth"] == 3
    assert next(model.parameters()).dtype == torch.float64
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 64, 64, dtype=torch.float64), 300)
    assert out.shape == (1, 1, 64, 64)


def _path(name):
    from dalverify.data import bundled_path

    return bundled_path(name)
