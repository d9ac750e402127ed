"""Tests of the covariance models: products against explicit matrices, validation, digests, files, estimation."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dalverify.errors import CovarianceError, InputError
from dalverify.methods.covariance import (
    AR1,
    Dense,
    Diagonal,
    Isotropic,
    covariance_from_json,
    estimate_covariance,
    load_covariance,
    shrinkage_intensity,
)

U = 2.0**-53


def explicit_ar1(rho: float, n: int, sigma: float) -> list[list[Fraction]]:
    """sigma^2 rho^|i-j| in exact arithmetic, built entry by entry."""
    r, s2 = Fraction(rho), Fraction(sigma) ** 2
    return [[s2 * r ** abs(i - j) for j in range(n)] for i in range(n)]


def exact_product(matrix: list[list[Fraction]], v: np.ndarray) -> list[Fraction]:
    return [sum((m * Fraction(x) for m, x in zip(row, v)), Fraction(0)) for row in matrix]


# ---------------------------------------------------------------- products


def test_isotropic_and_diagonal_products_match_dense_numpy() -> None:
    rng = np.random.default_rng(0)
    u, v = rng.standard_normal(6), rng.standard_normal(6)
    iso = Isotropic(0.5, 6)
    np.testing.assert_array_equal(iso.to_dense(), 0.25 * np.eye(6))
    np.testing.assert_array_equal(iso.apply(v), 0.25 * v)
    variances = np.array([1.0, 2.0, 0.5, 3.0, 4.0, 0.25])
    diag = Diagonal(variances)
    np.testing.assert_array_equal(diag.apply(v), variances * v)
    block = rng.standard_normal((6, 3))
    np.testing.assert_array_equal(diag.apply(block), np.diag(variances) @ block)
    assert diag.quad(u, v) == pytest.approx(float(u @ np.diag(variances) @ v), rel=1e-14)
    assert diag.quad(u) == pytest.approx(float(u @ np.diag(variances) @ u), rel=1e-14)


@pytest.mark.parametrize("rho", [-0.9, 0.0, 0.5, 0.99])
@pytest.mark.parametrize("n", [1, 2, 17, 40])
def test_ar1_dense_and_apply_match_explicit_exact_matrix(rho: float, n: int) -> None:
    sigma = 1.5
    cov = AR1(rho, n, sigma)
    exact = explicit_ar1(rho, n, sigma)
    dense = cov.to_dense()
    for i in range(n):
        for j in range(n):
            assert abs(Fraction(dense[i, j]) - exact[i][j]) <= Fraction(4 * U) * abs(exact[i][j])
    rng = np.random.default_rng(n)
    v = rng.standard_normal(n)
    got = cov.apply(v)
    want = exact_product(exact, v)
    magnitude = exact_product([[abs(m) for m in row] for row in exact], np.abs(v))
    for g, w, mag in zip(got, want, magnitude):
        # Recursion error estimate: a few u / (1 - |rho|) relative to sum |Sigma_ij v_j|.
        assert abs(Fraction(g) - w) <= Fraction(8 * U / (1 - abs(rho))) * mag


def test_ar1_apply_large_n_matches_dense() -> None:
    n = 3000
    cov = AR1(0.5, n)
    rng = np.random.default_rng(5)
    block = rng.standard_normal((n, 2))
    dense = cov.to_dense()
    np.testing.assert_allclose(cov.apply(block), dense @ block, rtol=0, atol=1e-12)
    assert cov.quad(block[:, 0], block[:, 1]) == pytest.approx(float(block[:, 0] @ dense @ block[:, 1]), rel=1e-12)


def test_apply_rejects_wrong_shapes_and_non_finite() -> None:
    cov = Isotropic(1.0, 4)
    with pytest.raises(InputError, match=r"shape \(4,\) or \(4, k\)"):
        cov.apply(np.zeros(5))
    with pytest.raises(InputError, match="non-finite"):
        cov.apply(np.array([0.0, np.nan, 0.0, 0.0]))
    with pytest.raises(InputError, match="1-D"):
        cov.quad(np.zeros((4, 2)))


@settings(deadline=None)
@given(n=st.integers(1, 8), seed=st.integers(0, 2**32 - 1))
def test_dense_apply_and_quad_match_numpy(n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    root = rng.standard_normal((n, n))
    matrix = root @ root.T + n * np.eye(n)
    matrix = (matrix + matrix.T) / 2
    cov = Dense(matrix)
    cov.validate()
    u, v = rng.standard_normal(n), rng.standard_normal(n)
    np.testing.assert_array_equal(cov.apply(v), matrix @ v)
    exact = sum(Fraction(u[i]) * Fraction(matrix[i, j]) * Fraction(v[j]) for i in range(n) for j in range(n))
    scale = sum(abs(u[i] * matrix[i, j] * v[j]) for i in range(n) for j in range(n))
    assert abs(Fraction(cov.quad(u, v)) - exact) <= Fraction(4 * (n + 1) * U * scale)


# ---------------------------------------------------------------- validation


def test_dense_rejects_asymmetric_matrix_with_fix() -> None:
    matrix = np.eye(3)
    matrix[0, 1] = 0.1
    with pytest.raises(CovarianceError, match=r"entry \(0, 1\).*\(S \+ S.T\) / 2"):
        Dense(matrix)


def test_dense_rejects_indefinite_matrix_naming_pivot_and_eigenvalue() -> None:
    matrix = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1
    with pytest.raises(CovarianceError, match=r"pivot 2 .*smallest eigenvalue is -1\.000e\+00.*shrinkage"):
        Dense(matrix).validate()


@pytest.mark.parametrize("seed", range(5))
def test_dense_rejects_rank_deficient_matrix(seed: int) -> None:
    rng = np.random.default_rng(seed)
    root = rng.standard_normal((30, 10))
    matrix = root @ root.T
    matrix = (matrix + matrix.T) / 2
    with pytest.raises(CovarianceError, match="not positive definite"):
        Dense(matrix).validate()


def test_dense_rejects_zero_variance() -> None:
    with pytest.raises(CovarianceError, match="diagonal entry 1 is 0.0"):
        Dense(np.diag([1.0, 0.0])).validate()


def test_validation_is_remembered() -> None:
    cov = Dense(np.eye(3))
    cov.validate()
    assert cov._validated
    cov.validate()


def test_structured_models_reject_bad_parameters() -> None:
    with pytest.raises(CovarianceError, match="sigma"):
        Isotropic(0.0, 3)
    with pytest.raises(InputError, match="positive integer"):
        Isotropic(1.0, 0)
    with pytest.raises(CovarianceError, match=r"variances\[1\]"):
        Diagonal([1.0, -1.0])
    with pytest.raises(CovarianceError, match="-1 < rho < 1"):
        AR1(1.0, 4)
    with pytest.raises(InputError, match="not finite"):
        AR1(float("nan"), 4)
    # 1 - rho^2 = 2^-52 is at the rounding level for n = 100.
    with pytest.raises(CovarianceError, match="rounding level"):
        AR1(1 - 2.0**-53, 100).validate()
    with pytest.raises(CovarianceError, match="rounding level"):
        Diagonal([1.0, 1e-20]).validate()
    AR1(0.999, 100).validate()
    Diagonal([1.0, 1e-10]).validate()


def test_pivot_rule_edge_on_diagonal_matrix() -> None:
    # Threshold for n = 2: COVARIANCE_PIVOT_FACTOR * 2 * 2^-53 = 2^-50 times the largest variance.
    Diagonal([1.0, 2.0**-50 * 1.0000001]).validate()
    with pytest.raises(CovarianceError):
        Diagonal([1.0, 2.0**-50]).validate()


def test_to_dense_size_limit() -> None:
    with pytest.raises(InputError, match="to_dense"):
        Isotropic(1.0, 10_000).to_dense()


# ---------------------------------------------------------------- digests and files


def test_isotropic_digest_follows_documented_recipe() -> None:
    hasher = hashlib.sha256()
    hasher.update(b"dalverify.covariance/1\nisotropic\n")
    hasher.update(b"n:<i8:()\n" + np.array(5, dtype="<i8").tobytes())
    hasher.update(b"sigma:<f8:()\n" + np.array(0.75, dtype="<f8").tobytes())
    assert Isotropic(0.75, 5).digest() == hasher.hexdigest()


def test_digest_sees_every_bit_and_the_kind() -> None:
    base = Dense(np.eye(3))
    bumped = np.eye(3)
    bumped[2, 2] = np.nextafter(1.0, 2.0)
    assert Dense(bumped).digest() != base.digest()
    assert Diagonal(np.ones(3)).digest() != base.digest()
    assert Isotropic(1.0, 3).digest() != Diagonal(np.ones(3)).digest()
    assert AR1(0.5, 3).digest() == AR1(0.5, 3).digest()
    assert AR1(0.5, 3).digest() != AR1(0.5, 4).digest()


@pytest.mark.parametrize(
    "cov",
    [Isotropic(0.1, 4), Diagonal([0.1, 0.2, 1 / 3]), AR1(-0.3, 6, 0.7), Dense([[2.0, 0.1], [0.1, 1 / 3]])],
    ids=["isotropic", "diagonal", "ar1", "dense"],
)
def test_json_and_npz_round_trips_are_lossless(cov, tmp_path) -> None:
    record = json.loads(json.dumps(cov.to_json()))
    again = covariance_from_json(record)
    assert type(again) is type(cov)
    assert again.digest() == cov.digest()
    np.testing.assert_array_equal(again.to_dense(), cov.to_dense())
    path = tmp_path / "cov.npz"
    cov.save_npz(path)
    loaded = load_covariance(path)
    assert type(loaded) is type(cov)
    assert loaded.digest() == cov.digest()
    np.testing.assert_array_equal(loaded.to_dense(), cov.to_dense())
    assert [p.name for p in tmp_path.iterdir()] == ["cov.npz"]


def test_altered_records_are_rejected(tmp_path) -> None:
    record = Diagonal([0.5, 0.25]).to_json()
    record["parameters"]["variances"]["data"][0] = (0.5000001).hex()
    with pytest.raises(InputError, match="altered"):
        covariance_from_json(record)
    with pytest.raises(InputError, match="unknown"):
        covariance_from_json({**Isotropic(1.0, 2).to_json(), "kind": "toeplitz"})
    path = tmp_path / "cov.npz"
    Diagonal([0.5, 0.25]).save_npz(path)
    with np.load(path) as npz:
        header, variances = npz["header"], npz["param_variances"].copy()
    variances[1] = 0.3
    np.savez(path, header=header, param_variances=variances)
    with pytest.raises(InputError, match="altered"):
        load_covariance(path)
    with pytest.raises(InputError, match="cannot read"):
        load_covariance(tmp_path / "missing.npz")


# ---------------------------------------------------------------- estimation


def test_estimate_unshrunk_is_sample_covariance() -> None:
    rng = np.random.default_rng(1)
    stack = rng.standard_normal((40, 3, 2, 2))  # n = 12 < 40
    cov = estimate_covariance(stack, shrinkage=0.0)
    vectors = np.stack([img.transpose(1, 2, 0).reshape(-1) for img in stack])
    np.testing.assert_allclose(cov.to_dense(), np.cov(vectors, rowvar=False), rtol=1e-12, atol=1e-14)


def test_estimate_with_fixed_shrinkage_scales_off_diagonal_only() -> None:
    rng = np.random.default_rng(2)
    stack = rng.standard_normal((30, 1, 2, 3))
    sample = np.cov(stack.reshape(30, -1), rowvar=False)
    shrunk = estimate_covariance(stack, shrinkage=0.25).to_dense()
    expected = 0.75 * sample
    np.fill_diagonal(expected, np.diag(sample))
    np.testing.assert_allclose(shrunk, expected, rtol=1e-12, atol=1e-14)


def test_automatic_shrinkage_matches_brute_force_formula() -> None:
    rng = np.random.default_rng(3)
    mixing = rng.standard_normal((5, 5))
    vectors = rng.standard_normal((12, 5)) @ mixing
    count = vectors.shape[0]
    # Brute force with the explicit N x n x n array of products w_kij.
    centred = vectors - vectors.mean(axis=0)
    w = np.einsum("ki,kj->kij", centred, centred)
    sample = w.sum(axis=0) / (count - 1)
    var_s = count / (count - 1) ** 3 * ((w - w.mean(axis=0)) ** 2).sum(axis=0)
    off = ~np.eye(5, dtype=bool)
    expected = min(1.0, max(0.0, var_s[off].sum() / (sample[off] ** 2).sum()))
    assert 0.0 < expected < 1.0
    assert shrinkage_intensity(vectors) == pytest.approx(expected, rel=1e-12)
    result = estimate_covariance(vectors.reshape(count, 1, 1, 5), shrinkage=None).to_dense()
    target = (1 - expected) * sample
    np.fill_diagonal(target, np.diag(sample))
    np.testing.assert_allclose(result, target, rtol=1e-10, atol=1e-12)


def test_estimate_rejects_fewer_images_than_pixels_without_shrinkage() -> None:
    stack = np.random.default_rng(4).standard_normal((5, 1, 3, 3))  # n = 9, rank <= 4
    with pytest.raises(CovarianceError, match=r"rank at most 4 < n = 9.*shrinkage"):
        estimate_covariance(stack, shrinkage=0.0)
    # Automatic shrinkage toward the diagonal makes it positive definite.
    cov = estimate_covariance(stack)
    assert np.linalg.eigvalsh(cov.to_dense()).min() > 0


def test_estimate_rejects_constant_pixel_and_bad_input() -> None:
    stack = np.random.default_rng(6).standard_normal((20, 1, 2, 2))
    stack[:, 0, 1, 0] = 3.0
    with pytest.raises(CovarianceError, match=r"pixel 2, channel 0\) is constant"):
        estimate_covariance(stack)
    with pytest.raises(InputError, match="at least 2"):
        estimate_covariance(np.zeros((1, 1, 2, 2)))
    with pytest.raises(InputError, match="non-finite"):
        estimate_covariance(np.full((3, 1, 2, 2), np.nan))
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        estimate_covariance(np.random.default_rng(0).standard_normal((5, 1, 2, 2)), shrinkage=1.5)
    with pytest.raises(InputError, match="N, C, H, W"):
        estimate_covariance(np.zeros((5, 2, 2, 2)))
