"""Tests of the image layout, the residual filter, residual scores and region selection.

Expected values come from brute-force loops in exact Fraction arithmetic,
written here independently of the vectorised code under test.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dalverify.errors import InputError
from dalverify.images import image_to_vector, validate_image, vector_to_image
from dalverify.selection.region import average_filter, residual_scores, select_region


def brute_filter(values: list[list[Fraction]], k: int, profile: str) -> list[list[Fraction]]:
    """K x K mean by explicit loops: in-image neighbours only, or zero padding over K^2."""
    height, width = len(values), len(values[0])
    half = k // 2
    out = []
    for row in range(height):
        out_row = []
        for col in range(width):
            total = Fraction(0)
            count = 0
            for dr in range(-half, half + 1):
                for dc in range(-half, half + 1):
                    r, c = row + dr, col + dc
                    if 0 <= r < height and 0 <= c < width:
                        total += values[r][c]
                        count += 1
            out_row.append(total / (k * k if profile == "si4onnx" else count))
        out.append(out_row)
    return out


def dyadic_grid(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random multiples of 1/64 in [-4, 4]: exact in float64."""
    return rng.integers(-256, 257, size=shape) / 64.0


# ---------------------------------------------------------------- image layout


def test_image_to_vector_is_pixel_major_then_channel() -> None:
    img = np.arange(2 * 3 * 3, dtype=np.float64).reshape(3, 2, 3)  # C=3, H=2, W=3
    vec = image_to_vector(img)
    for row in range(2):
        for col in range(3):
            pixel = row * 3 + col
            for channel in range(3):
                assert vec[pixel * 3 + channel] == img[channel, row, col]
    np.testing.assert_array_equal(vector_to_image(vec, img.shape), img)


def test_vector_to_image_rejects_wrong_size() -> None:
    with pytest.raises(InputError, match="needs exactly 12 entries"):
        vector_to_image(np.zeros(10), (3, 2, 2))


def test_validate_image_adds_channel_axis_and_copies() -> None:
    grey = np.ones((4, 5), dtype=np.float32)
    out = validate_image(grey, name="x")
    assert out.shape == (1, 4, 5)
    assert out.dtype == np.float64
    out[0, 0, 0] = 7.0
    assert grey[0, 0] == 1.0


def test_validate_image_reports_nan_count_and_first_index() -> None:
    img = np.zeros((1, 3, 3))
    img[0, 1, 2] = np.nan
    img[0, 2, 0] = np.inf
    with pytest.raises(InputError, match=r"x has 2 non-finite .*\(c, row, col\) = \(0, 1, 2\)"):
        validate_image(img, name="x")


@pytest.mark.parametrize(
    ("array", "pattern"),
    [
        (np.zeros((2, 4, 4)), "2 channels"),
        (np.zeros((4, 4, 3)), r"transpose\(2, 0, 1\)"),
        (np.zeros((1, 1, 4, 4)), "4 dimension"),
        (np.zeros((1, 0, 4)), "empty side"),
        (np.zeros((4, 4), dtype=bool), "dtype bool"),
    ],
)
def test_validate_image_rejects_bad_layouts(array: np.ndarray, pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        validate_image(array, name="x")


def test_validate_image_checks_expected_shape() -> None:
    with pytest.raises(InputError, match=r"shape \(1, 4, 4\) but shape \(1, 4, 5\) is required"):
        validate_image(np.zeros((4, 4)), name="ref", expected_shape=(1, 4, 5))


# ---------------------------------------------------------------- filter


@pytest.mark.parametrize("profile", ["inside", "si4onnx"])
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
@pytest.mark.parametrize("shape", [(1, 1), (1, 6), (4, 4), (5, 7), (2, 9)])
def test_filter_matches_brute_force(profile: str, kernel_size: int, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape) * 10 + kernel_size)
    img = dyadic_grid(rng, shape)
    exact = brute_filter([[Fraction(v) for v in row] for row in img], kernel_size, profile)

    # The exact (object) route agrees exactly, the float route to rounding.
    exact_out = average_filter(np.vectorize(Fraction, otypes=[object])(img), kernel_size, profile=profile)
    assert [[exact_out[r, c] for c in range(shape[1])] for r in range(shape[0])] == exact
    float_out = average_filter(img, kernel_size, profile=profile)
    expected = np.array([[float(v) for v in row] for row in exact])
    # A window sum of dyadic values with at most 25 terms is exact; only the division rounds.
    np.testing.assert_array_equal(float_out, expected)


def test_filter_border_divisors() -> None:
    img = np.ones((3, 4))
    out = average_filter(img, 3)
    np.testing.assert_array_equal(out, np.ones((3, 4)))
    si = average_filter(img, 3, profile="si4onnx")
    assert si[0, 0] == 4 / 9
    assert si[0, 1] == 6 / 9
    assert si[1, 1] == 1.0


def test_filter_is_linear_in_exact_arithmetic() -> None:
    rng = np.random.default_rng(3)
    u = np.vectorize(Fraction, otypes=[object])(dyadic_grid(rng, (4, 5)))
    v = np.vectorize(Fraction, otypes=[object])(dyadic_grid(rng, (4, 5)))
    s, t = Fraction(3, 7), Fraction(-5, 2)
    for profile in ("inside", "si4onnx"):
        lhs = average_filter(s * u + t * v, 3, profile=profile)
        rhs = s * average_filter(u, 3, profile=profile) + t * average_filter(v, 3, profile=profile)
        assert (lhs == rhs).all()


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"kernel_size": 2}, "must be odd"),
        ({"kernel_size": 0}, "must be odd"),
        ({"kernel_size": True}, "not an integer"),
        ({"kernel_size": 3.0}, "not an integer"),
        ({"kernel_size": 3, "profile": "reflect"}, "unknown"),
    ],
)
def test_filter_rejects_bad_settings(kwargs: dict, pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        average_filter(np.zeros((3, 3)), **kwargs)


def test_filter_rejects_non_finite_and_wrong_ndim() -> None:
    with pytest.raises(InputError, match="non-finite"):
        average_filter(np.array([[0.0, np.nan]]), 3)
    with pytest.raises(InputError, match="2-D"):
        average_filter(np.zeros((1, 3, 3)), 3)


# ---------------------------------------------------------------- residual scores


@pytest.mark.parametrize("channels", [1, 3])
def test_residual_scores_match_brute_force(channels: int) -> None:
    rng = np.random.default_rng(11 + channels)
    x = dyadic_grid(rng, (channels, 4, 5))
    recon = dyadic_grid(rng, (channels, 4, 5))
    mean_diff = [
        [sum(Fraction(x[c, r, k]) - Fraction(recon[c, r, k]) for c in range(channels)) / channels for k in range(5)]
        for r in range(4)
    ]
    expected = brute_filter(mean_diff, 3, "inside")
    out = residual_scores(x, recon, 3)
    assert out.shape == (4, 5)
    for r in range(4):
        for k in range(5):
            # Inputs are at most 8 in magnitude. The channel mean, window sum and
            # division round a few times, each by at most 2^-53 * 8 * 9.
            assert abs(Fraction(out[r, k]) - expected[r][k]) <= Fraction(1, 2**44)


def test_residual_scores_reject_mismatched_shapes() -> None:
    with pytest.raises(InputError, match="reconstruction has shape"):
        residual_scores(np.zeros((1, 4, 4)), np.zeros((1, 4, 5)), 3)


# ---------------------------------------------------------------- region selection


def test_select_region_threshold_mask_and_strict() -> None:
    r = np.array([[0.5, -0.8, 0.81], [-1.0, 0.79, 0.0]])
    np.testing.assert_array_equal(select_region(r, 0.8), [[False, True, True], [True, False, False]])
    np.testing.assert_array_equal(select_region(r, 0.8, strict=True), [[False, False, True], [True, False, False]])
    mask = np.array([[True, False, True], [False, True, True]])
    np.testing.assert_array_equal(select_region(r, 0.8, mask=mask), [[False, False, True], [False, False, False]])


def test_select_region_empty_result_is_not_an_error() -> None:
    region = select_region(np.zeros((3, 3)), 0.5)
    assert region.dtype == bool
    assert not region.any()


@pytest.mark.parametrize("threshold", [0.0, -1.0, float("nan"), float("inf"), True, "0.8"])
def test_select_region_rejects_bad_threshold(threshold: object) -> None:
    with pytest.raises(InputError, match="threshold"):
        select_region(np.zeros((2, 2)), threshold)


def test_select_region_rejects_bad_masks_and_residuals() -> None:
    r = np.zeros((2, 2))
    with pytest.raises(InputError, match="mask has shape"):
        select_region(r, 1.0, mask=np.ones((2, 3), dtype=bool))
    with pytest.raises(InputError, match="no eligible pixel"):
        select_region(r, 1.0, mask=np.zeros((2, 2), dtype=bool))
    with pytest.raises(InputError, match="values other than 0 and 1"):
        select_region(r, 1.0, mask=np.full((2, 2), 2))
    with pytest.raises(InputError, match="non-finite"):
        select_region(np.array([[np.nan, 0.0]]), 1.0)
    np.testing.assert_array_equal(select_region(np.ones((2, 2)), 1.0, mask=np.array([[1, 0], [0, 1]])), np.eye(2, dtype=bool))


@settings(deadline=None)
@given(
    values=st.lists(st.floats(-5, 5, allow_nan=False), min_size=6, max_size=6),
    mask_bits=st.lists(st.booleans(), min_size=6, max_size=6).filter(any),
    lam=st.floats(0.01, 4.0),
    strict=st.booleans(),
)
def test_select_region_is_the_set_definition(values: list, mask_bits: list, lam: float, strict: bool) -> None:
    r = np.array(values).reshape(2, 3)
    mask = np.array(mask_bits).reshape(2, 3)
    out = select_region(r, lam, mask=mask, strict=strict)
    for i in range(2):
        for j in range(3):
            score = abs(Fraction(values[i * 3 + j]))
            chosen = score > Fraction(lam) if strict else score >= Fraction(lam)
            assert out[i, j] == (chosen and mask_bits[i * 3 + j])
