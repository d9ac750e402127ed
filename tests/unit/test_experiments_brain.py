"""Brain cells: the intensity-threshold baseline's exact truncation set, the brain image rules, and a tiny run."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from dalverify.errors import InputError
from dalverify.experiments import config as config_module
from dalverify.experiments import runner
from dalverify.experiments.brain import brain_case, overlap_facts, slice_count, threshold_baseline
from dalverify.experiments.report import markdown_table, summarize_cell
from dalverify.methods.covariance import Diagonal


# ---------------------------------------------------------------------------
# Independent route for the baseline: closed-form line, explicit window sums,
# and the truncation set found by sorting every crossing of +-lambda and
# testing the region between consecutive crossings.

def _window_mean(values: np.ndarray, k: int) -> np.ndarray:
    """Mean over the K x K window clipped to the image, by explicit loops."""
    h, w = values.shape
    half = k // 2
    out = np.empty_like(values)
    for i in range(h):
        for j in range(w):
            window = values[max(0, i - half):i + half + 1, max(0, j - half):j + half + 1]
            out[i, j] = window.sum() / window.size
    return out


def _reference_truncation(x, ref, variances, c_ref, lam, k, mask):
    d = x[0] - ref[0]
    region = (np.abs(_window_mean(d, k)) >= lam) & mask
    size = int(region.sum())
    w = np.where(region, variances.reshape(d.shape), 0.0)
    q = w.sum()
    t_obs = d[region].sum() / size
    sd = math.sqrt((1 + c_ref) * q / size**2)
    # d(z) = x(z) - ref(z) = d + (b_x - b_ref)(z - t_obs), b_x - b_ref = |M| w / q.
    slope = size * w / q
    r_alpha = _window_mean(d - slope * t_obs, k)[mask]
    r_beta = _window_mean(slope, k)[mask]
    wanted = region[mask]

    roots = []
    for a, b in zip(r_alpha, r_beta):
        if b != 0:
            roots += [(lam - a) / b, (-lam - a) / b]
    roots = sorted(roots)
    edges = [-math.inf] + roots + [math.inf]
    pieces = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        if not hi > lo:
            continue
        if math.isinf(lo) and math.isinf(hi):
            probe = 0.0
        elif math.isinf(lo):
            probe = hi - 1.0
        elif math.isinf(hi):
            probe = lo + 1.0
        else:
            probe = (lo + hi) / 2
        inside = np.abs(r_alpha + r_beta * probe) >= lam
        if np.array_equal(inside, wanted):
            if pieces and pieces[-1][1] == lo:
                pieces[-1] = (pieces[-1][0], hi)
            else:
                pieces.append((lo, hi))
    return region, t_obs, sd, pieces


def _mpmath_selective(t_obs, sd, pieces):
    mpmath.mp.dps = 40
    cut = abs(mpmath.mpf(t_obs)) / sd

    def mass(lo, hi):
        lo = -mpmath.inf if math.isinf(lo) and lo < 0 else mpmath.mpf(lo) / sd
        hi = mpmath.inf if math.isinf(hi) and hi > 0 else mpmath.mpf(hi) / sd
        return mpmath.quad(mpmath.npdf, [lo, hi]) if lo < hi else mpmath.mpf(0)

    total = sum(mass(lo, hi) for lo, hi in pieces)
    tails = sum(mass(max(lo, float(cut * sd)), hi) + mass(lo, min(hi, -float(cut * sd))) for lo, hi in pieces)
    return float(tails / total)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_baseline_truncation_and_pvalue_match_independent_route(seed):
    rng = np.random.default_rng(seed)
    side, lam, k, c_ref = 7, 0.45, 3, 0.5
    variances = rng.uniform(0.5, 2.0, side * side)
    x = rng.standard_normal((1, side, side)) * np.sqrt(variances).reshape(1, side, side)
    x[0, 2:4, 2:5] += 1.5
    ref = rng.standard_normal((1, side, side)) * np.sqrt(c_ref * variances).reshape(1, side, side)
    mask = np.ones((side, side), dtype=bool)
    mask[0, :] = False
    result = threshold_baseline(x, ref, Diagonal(variances), c_ref, threshold=lam, kernel_size=k, mask=mask)
    region, t_obs, sd, pieces = _reference_truncation(x, ref, variances, c_ref, lam, k, mask)
    assert result["status"] == "ok"
    assert np.array_equal(result["region"], region)
    assert result["t_obs"] == pytest.approx(t_obs, rel=1e-13)
    assert result["sd"] == pytest.approx(sd, rel=1e-13)
    got = [(float(lo), float(hi)) for lo, hi in result["truncation"].intervals]
    assert len(got) == len(pieces)
    for (lo, hi), (rlo, rhi) in zip(got, pieces):
        for value, expected in ((lo, rlo), (hi, rhi)):
            if math.isinf(expected):
                assert value == expected
            else:
                assert value == pytest.approx(expected, rel=1e-9, abs=1e-12)
    expected_p = _mpmath_selective(t_obs, sd, pieces)
    assert float(result["pvalues"]["baseline_selective"]) == pytest.approx(expected_p, rel=1e-8)
    naive = float(2 * mpmath.ncdf(-abs(mpmath.mpf(t_obs) / sd)))
    assert float(result["pvalues"]["baseline_naive"]) == pytest.approx(naive, rel=1e-10)


def test_baseline_reports_no_region_below_threshold():
    x = np.zeros((1, 5, 5))
    result = threshold_baseline(x, x + 0.1, Diagonal(np.ones(25)), 1.0, threshold=0.5, kernel_size=3, mask=None)
    assert result["status"] == "no_region"
    assert not result["region"].any()


def test_overlap_and_dice_by_counting():
    lesion = np.zeros((4, 4), dtype=bool)
    lesion[1:3, 1:3] = True
    region = np.zeros((4, 4), dtype=bool)
    region[1, 0:4] = True
    facts = overlap_facts(region, lesion, prefix="b_")
    assert facts == {"b_overlap": 2, "b_dice": float(Fraction(2 * 2, 4 + 4))}
    assert overlap_facts(region, None) == {}


# ---------------------------------------------------------------------------
# Brain cells.

def _brain(**extra):
    data = {"name": "b", "kind": "brain", "side": 32, "covariance": "diagonal", "model": "bundled",
            "threshold": 1.0, "t_start": 300, "images": 2, "seed": 3,
            "methods": ["selective", "naive", "baseline_selective", "baseline_naive"]}
    data.update(extra)
    return config_module.from_mapping(data)


def test_brain_config_rules():
    total = slice_count(32)
    assert total >= 1
    with pytest.raises(InputError, match="normal test slices"):
        _brain(images=total + 1)
    assert _brain(images=total + 1, lesion_contrast=3.0).images == total + 1
    with pytest.raises(InputError, match="diagonal"):
        _brain(covariance="identity")
    with pytest.raises(InputError, match="brain"):
        config_module.from_mapping({"name": "t", "model": "m.dalv", "methods": ["baseline_naive"]})
    with pytest.raises(InputError, match="nothing to train"):
        runner.train_model(_brain())


def test_brain_case_slices_and_lesion():
    from dalverify.data import load_bundled_slice_references, load_bundled_slices

    stack = load_bundled_slices(size=32)
    references, counts = load_bundled_slice_references(size=32)
    normal = brain_case(_brain(), 1)
    assert np.array_equal(normal.image, stack.images[1])
    assert np.array_equal(normal.reference, references[1])
    assert normal.reference_scale == 1.0 / counts[1]
    assert normal.lesion is None
    total = slice_count(32)
    lesioned = brain_case(_brain(lesion_contrast=4.0, images=total + 2), total + 1)
    assert lesioned.facts["slice"] == 1
    added = lesioned.image - stack.images[1]
    assert lesioned.lesion.sum() == lesioned.facts["lesion_pixels"] > 0
    assert not (lesioned.lesion & ~stack.masks[1]).any()
    assert 0 < added.max() <= 4.0 + 1e-12  # the profile is at most the contrast
    assert (added[0][~stack.masks[1]] == 0).all()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("brain") / "tiny32.dalv"
    cell = config_module.from_mapping({
        "name": "t", "side": 32, "model": str(path),
        "train": {"images": 8, "steps": 1, "batch_size": 4, "base_width": 2, "depth": 1},
    })
    runner.train_model(cell, progress=False)
    return path


def test_tiny_brain_sweep_end_to_end(tiny_model, tmp_path):
    cell = _brain(model=str(tiny_model), search=0.2, lesion_contrast=6.0, lesion_radius=2.0, images=2,
                  methods=["selective", "naive", "baseline_selective", "baseline_naive"])
    results = runner.run_sweep(cell, tmp_path, progress=False)
    records = runner.read_results(results)
    assert sorted(r["index"] for r in records) == [0, 1]
    for record in records:
        assert record["status"] in ("ok", "no_region"), record.get("error")
        assert record["baseline_status"] in ("ok", "no_region")
        if record["baseline_status"] == "ok":
            z = record["baseline_t_obs"] / record["baseline_sd"]
            naive = float(2 * mpmath.ncdf(-abs(mpmath.mpf(z))))
            assert record["pvalues"]["baseline_naive"] == pytest.approx(naive, rel=1e-10)
            expected = 2 * record["baseline_overlap"] / (record["baseline_region_size"] + record["lesion_pixels"])
            assert record["baseline_dice"] == pytest.approx(expected, rel=1e-15)

    summary = summarize_cell(results.parent)
    for method, rate in summary["methods"].items():
        values = [r["pvalues"][method] for r in records if method in r["pvalues"]]
        k, n = sum(p <= 0.05 for p in values), len(values)
        assert (rate["rejected"], rate["tested"]) == (k, n)
        if n:
            # Wilson bounds as roots of (n + z^2) p^2 - (2k + z^2) p + k^2/n = 0.
            mpmath.mp.dps = 40
            zq = mpmath.sqrt(2) * mpmath.erfinv(mpmath.mpf("0.95"))
            a, b, c = n + zq**2, -(2 * k + zq**2), mpmath.mpf(k) ** 2 / n
            root = mpmath.sqrt(b * b - 4 * a * c)
            assert rate["wilson95"][0] == pytest.approx(float((-b - root) / (2 * a)), abs=1e-12)
            assert rate["wilson95"][1] == pytest.approx(float((-b + root) / (2 * a)), abs=1e-12)
    dice = [r.get("dice", 0.0) for r in records]
    assert summary["mean_dice"]["dal"] == pytest.approx(sum(dice) / len(dice), rel=1e-15)
    table = markdown_table([summary])
    assert "synthetic lesion, +6 sd" in table
    assert "threshold baseline, selective" in table
    assert json.loads((results.parent / "config.json").read_text())["kind"] == "brain"
