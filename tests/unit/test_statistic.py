"""Tests of the test direction, the statistic and the line through the data.

Reference values come from an independent exact computation with Fractions
(dense SigmaTilde, nu, s^2, b, a) and from dense numpy products.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from dalverify.errors import CovarianceError, InputError, NumericalError
from dalverify.methods import statistic
from dalverify.methods.covariance import AR1, Dense, Diagonal, Isotropic

U = 2.0**-53


def to_vector(img: np.ndarray) -> np.ndarray:
    return img.transpose(1, 2, 0).reshape(-1)


def exact_line(x: np.ndarray, ref: np.ndarray, region: np.ndarray, sigma: np.ndarray, c_ref: Fraction) -> dict:
    """All quantities of the line in exact arithmetic, from dense matrices."""
    channels = x.shape[0]
    n = x.size
    ind = [Fraction(1) if v else Fraction(0) for v in np.repeat(region.reshape(-1), channels)]
    size = int(region.sum())
    nu = [v / size for v in ind] + [-v / size for v in ind]
    data = [Fraction(v) for v in to_vector(x)] + [Fraction(v) for v in to_vector(ref)]
    big = [[Fraction(0)] * (2 * n) for _ in range(2 * n)]
    for i in range(n):
        for j in range(n):
            big[i][j] = Fraction(sigma[i, j])
            big[n + i][n + j] = c_ref * Fraction(sigma[i, j])
    st_nu = [sum((big[i][j] * nu[j] for j in range(2 * n)), Fraction(0)) for i in range(2 * n)]
    s2 = sum((nu[i] * st_nu[i] for i in range(2 * n)), Fraction(0))
    t = sum((nu[i] * data[i] for i in range(2 * n)), Fraction(0))
    b = [v / s2 for v in st_nu]
    a = [data[i] - b[i] * t for i in range(2 * n)]
    return {"nu": nu, "s2": s2, "t": t, "a": a, "b": b, "data": data, "st_nu": st_nu}


def close(got: float, want: Fraction, scale: Fraction, ulps: float = 8) -> bool:
    return abs(Fraction(got) - want) <= Fraction(ulps * U) * scale


# ---------------------------------------------------------------- test direction


def test_direction_layout_for_rgb() -> None:
    region = np.array([[True, False], [False, True]])
    nu = statistic.test_direction(region, 3)
    assert nu.shape == (24,)
    expected_top = np.repeat([1.0, 0.0, 0.0, 1.0], 3) / 2
    np.testing.assert_array_equal(nu[:12], expected_top)
    np.testing.assert_array_equal(nu[12:], -expected_top)


def test_direction_rejects_bad_input() -> None:
    with pytest.raises(InputError, match="empty"):
        statistic.test_direction(np.zeros((2, 2), dtype=bool), 1)
    with pytest.raises(InputError, match="n_channels"):
        statistic.test_direction(np.ones((2, 2), dtype=bool), 2)
    with pytest.raises(InputError, match="boolean"):
        statistic.test_direction(np.ones((2, 2)), 1)


# ---------------------------------------------------------------- line, exact reference


def spd_dyadic(n: int, rng: np.random.Generator) -> np.ndarray:
    root = rng.integers(-4, 5, size=(n, n)) / 4.0
    return root @ root.T + np.eye(n)  # dyadic, exactly symmetric, eigenvalues >= 1


@pytest.mark.parametrize("c_ref", [Fraction(0), Fraction(1, 4), Fraction(1), Fraction(1, 3)])
@pytest.mark.parametrize("channels", [1, 3])
def test_line_matches_exact_computation(channels: int, c_ref: Fraction) -> None:
    rng = np.random.default_rng(channels * 10 + c_ref.denominator)
    shape = (channels, 2, 2)
    x = rng.integers(-32, 33, size=shape) / 8.0
    ref = rng.integers(-32, 33, size=shape) / 8.0
    region = np.array([[True, False], [True, True]])
    sigma = spd_dyadic(x.size, rng)
    line = statistic.line_from_images(x, ref, region, Dense(sigma), float(c_ref))
    exact = exact_line(x, ref, region, sigma, Fraction(float(c_ref)))

    # The identities the line is built on hold exactly for the exact line.
    assert all(exact["a"][i] + exact["b"][i] * exact["t"] == exact["data"][i] for i in range(len(exact["a"])))
    assert sum(n * b for n, b in zip(exact["nu"], exact["b"])) == 1
    assert sum(n * a for n, a in zip(exact["nu"], exact["a"])) == 0

    assert close(line.t_obs, exact["t"], abs(exact["t"]) + 1, 4)
    assert close(line.sd**2, exact["s2"], exact["s2"], 8)
    b_scale = max(abs(v) for v in exact["b"])
    for got, want in zip(line.b, exact["b"]):
        assert close(got, want, b_scale, 16)
    a_scale = max(abs(v) for v in exact["data"]) + b_scale * abs(exact["t"])
    for got, want in zip(line.a, exact["a"]):
        assert close(got, want, a_scale, 16)
    np.testing.assert_array_equal(line.nu, statistic.test_direction(region, channels))
    np.testing.assert_array_equal(line.a_image, line.a[: x.size].reshape(2, 2, channels).transpose(2, 0, 1))
    np.testing.assert_array_equal(line.b_image, line.b[: x.size].reshape(2, 2, channels).transpose(2, 0, 1))


def test_line_reconstruction_error_is_reported_and_within_bound() -> None:
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 4, 4)) * 100
    ref = rng.standard_normal((3, 4, 4)) * 100
    region = rng.random((4, 4)) < 0.4
    region[0, 0] = True
    line = statistic.line_from_images(x, ref, region, AR1(0.5, 48), 1.0)
    data = np.concatenate([to_vector(x), to_vector(ref)])
    recomputed = float(np.max(np.abs(line.a + line.b * line.t_obs - data)))
    assert line.reconstruction_error == recomputed
    # Proven float64 bound: 3 units of 2^-53 (|d| + |b t_obs|).
    assert line.reconstruction_error_ulps <= 3
    bound = 3 * U * (np.abs(data) + np.abs(line.b * line.t_obs))
    assert (np.abs(line.a + line.b * line.t_obs - data) <= bound).all()


def test_line_raises_when_reconstruction_exceeds_the_tolerance(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(12)
    x = rng.standard_normal((1, 3, 3)) / 3
    ref = rng.standard_normal((1, 3, 3)) / 3
    region = np.ones((3, 3), dtype=bool)
    line = statistic.line_from_images(x, ref, region, Isotropic(0.3, 9), 1.0)
    assert line.reconstruction_error_ulps > 0
    # A tolerance just below the observed error must trigger the check.
    monkeypatch.setattr(statistic, "LINE_RECONSTRUCTION_ULPS", line.reconstruction_error_ulps * 0.999)
    with pytest.raises(NumericalError, match="misses the data"):
        statistic.line_from_images(x, ref, region, Isotropic(0.3, 9), 1.0)
    monkeypatch.setattr(statistic, "LINE_RECONSTRUCTION_ULPS", line.reconstruction_error_ulps)
    statistic.line_from_images(x, ref, region, Isotropic(0.3, 9), 1.0)


@pytest.mark.parametrize("c_ref", [0.0, 0.25, 1.0])
def test_sd_and_direction_match_dense_numpy(c_ref: float) -> None:
    rng = np.random.default_rng(21)
    x = rng.standard_normal((3, 4, 4))
    ref = rng.standard_normal((3, 4, 4))
    region = rng.random((4, 4)) < 0.5
    region[1, 2] = True
    for cov in (AR1(-0.4, 48, 1.3), Diagonal(rng.random(48) + 0.5), Isotropic(0.7, 48)):
        sigma = cov.to_dense()
        big = scipy.linalg.block_diag(sigma, c_ref * sigma)
        line = statistic.line_from_images(x, ref, region, cov, c_ref)
        nu = line.nu
        s2 = float(nu @ big @ nu)
        assert line.sd == pytest.approx(math.sqrt(s2), rel=1e-13)
        np.testing.assert_allclose(line.b, big @ nu / s2, rtol=1e-12, atol=1e-14)
        # nu^T b = 1 and Cov(a, T) = SigmaTilde nu - b s^2 = 0, up to rounding.
        assert float(nu @ line.b) == pytest.approx(1.0, rel=1e-13)
        np.testing.assert_allclose(big @ nu - line.b * line.sd**2, 0.0, atol=1e-13)
        dense_line = statistic.line_from_images(x, ref, region, Dense(sigma), c_ref)
        np.testing.assert_allclose(dense_line.b, line.b, rtol=1e-12, atol=1e-15)


def test_fixed_template_keeps_reference_on_the_line() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 3, 3))
    ref = rng.standard_normal((1, 3, 3))
    region = np.zeros((3, 3), dtype=bool)
    region[1, 1] = True
    line = statistic.line_from_images(x, ref, region, Isotropic(1.0, 9), 0.0)
    assert not line.b[9:].any()
    np.testing.assert_array_equal(line.a[9:], to_vector(ref))
    # With Sigma = I and one pixel, s = 1 and b is the unit vector of that pixel.
    assert line.sd == 1.0
    np.testing.assert_array_equal(line.b[:9], np.eye(9)[4])
    assert line.t_obs == x[0, 1, 1] - ref[0, 1, 1]


@settings(deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    channels=st.sampled_from([1, 3]),
    c_ref=st.sampled_from([Fraction(0), Fraction(1, 8), Fraction(1), Fraction(3, 2)]),
    bits=st.lists(st.booleans(), min_size=4, max_size=4).filter(any),
)
def test_line_property_against_exact(seed: int, channels: int, c_ref: Fraction, bits: list) -> None:
    rng = np.random.default_rng(seed)
    shape = (channels, 2, 2)
    x = rng.integers(-1000, 1001, size=shape) / 64.0
    ref = rng.integers(-1000, 1001, size=shape) / 64.0
    region = np.array(bits).reshape(2, 2)
    sigma = spd_dyadic(x.size, rng)
    line = statistic.line_from_images(x, ref, region, Dense(sigma), float(c_ref))
    exact = exact_line(x, ref, region, sigma, c_ref)
    assert close(line.t_obs, exact["t"], abs(exact["t"]) + 1, 4)
    assert close(line.sd**2, exact["s2"], exact["s2"], 8)
    b_scale = max(abs(v) for v in exact["b"])
    assert all(close(g, w, b_scale, 16) for g, w in zip(line.b, exact["b"]))


# ---------------------------------------------------------------- input checks


def test_line_rejects_bad_input() -> None:
    x = np.zeros((1, 2, 2))
    region = np.ones((2, 2), dtype=bool)
    cov = Isotropic(1.0, 4)
    with pytest.raises(InputError, match="empty"):
        statistic.line_from_images(x, x, np.zeros((2, 2), dtype=bool), cov, 1.0)
    with pytest.raises(InputError, match=r"shape \(2, 2\)"):
        statistic.line_from_images(x, x, np.ones((3, 2), dtype=bool), cov, 1.0)
    for bad in (-0.5, float("nan"), float("inf"), True, "1"):
        with pytest.raises(InputError, match="reference_scale"):
            statistic.line_from_images(x, x, region, cov, bad)
    with pytest.raises(InputError, match="dimension 9"):
        statistic.line_from_images(x, x, region, Isotropic(1.0, 9), 1.0)
    with pytest.raises(InputError, match="Covariance object"):
        statistic.line_from_images(x, x, region, np.eye(4), 1.0)
    with pytest.raises(InputError, match="ref_img has shape"):
        statistic.line_from_images(x, np.zeros((1, 2, 3)), region, cov, 1.0)
    with pytest.raises(CovarianceError, match="not positive definite"):
        statistic.line_from_images(x, x, region, Dense([[1.0, 2, 0, 0], [2, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), 1.0)


def test_line_arrays_are_read_only() -> None:
    line = statistic.line_from_images(np.ones((1, 2, 2)), np.zeros((1, 2, 2)), np.ones((2, 2), dtype=bool), Isotropic(1.0, 4), 1.0)
    with pytest.raises(ValueError):
        line.a[0] = 1.0
