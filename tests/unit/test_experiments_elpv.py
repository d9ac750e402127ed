"""ELPV cells on a fake data source: split, preprocessing, synthetic defects, config rules and a tiny run."""

from __future__ import annotations

import json
import math
import sys
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from dalverify.errors import InputError
from dalverify.experiments import config as config_module
from dalverify.experiments import elpv, runner
from dalverify.experiments.report import markdown_table, summarize_cell, write_report

ROWS = 600
RAW_SIDE = 30


def fake_source():
    """Six 100-row blocks of 30x30 uint8 cells; rows 3 mod 4 are poly, 9 mod 10 defective, 5 mod 10 uncertain."""
    rng = np.random.default_rng(5)
    rows = np.arange(ROWS)
    types = np.where(rows % 4 == 3, "poly", "mono")
    probabilities = np.zeros(ROWS)
    probabilities[rows % 10 == 9] = 1.0
    probabilities[rows % 10 == 5] = 1.0 / 3.0
    level = 90.0 + 12.0 * (rows // 100)
    images = level[:, None, None] + 25.0 * rng.standard_normal((ROWS, RAW_SIDE, RAW_SIDE))
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), probabilities, types


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(elpv, "SOURCE", fake_source)
    elpv.clear_caches()
    yield fake_source()
    elpv.clear_caches()


def _cell(**extra):
    data = {"name": "e", "kind": "elpv", "side": 8, "covariance": "diagonal", "model": "unused.dalv",
            "threshold": 0.6, "t_start": 300, "images": 2, "seed": 4, "train_normals": 100,
            "covariance_normals": 20, "methods": ["selective", "naive", "baseline_selective", "baseline_naive"],
            "train": {"seed": 1}}
    data.update(extra)
    return config_module.from_mapping(data)


# ---------------------------------------------------------------------------
# Split.

def test_split_uses_whole_blocks_and_disjoint_parts(fake):
    _, probabilities, types = fake
    split = elpv.split_rows(probabilities, types, train_normals=100, covariance_normals=20, seed=1)
    rows = np.arange(ROWS)
    mono_normal = (types == "mono") & (probabilities == 0)
    mono_defective = (types == "mono") & (probabilities == 1)
    in_blocks = np.isin(rows // 100, split.training_blocks)

    # Training: every mono normal row of the chosen blocks and nothing else.
    assert np.array_equal(np.sort(split.train), rows[mono_normal & in_blocks])
    assert len(split.train) >= 100
    assert len(split.covariance) == 20
    # The other parts: mono rows outside the training blocks, split without overlap.
    held_out = np.concatenate([split.covariance, split.test_normal])
    assert np.array_equal(np.sort(held_out), rows[mono_normal & ~in_blocks])
    assert len(np.unique(held_out)) == len(held_out)
    assert np.array_equal(np.sort(split.defective), rows[mono_defective & ~in_blocks])
    parts = [set(split.train), set(split.covariance), set(split.test_normal), set(split.defective)]
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            assert not parts[i] & parts[j]


def test_split_takes_blocks_until_enough_normals(fake):
    _, probabilities, types = fake
    normals_per_block = [int(((types == "mono") & (probabilities == 0))[b * 100:(b + 1) * 100].sum())
                         for b in range(ROWS // 100)]
    assert normals_per_block == [65] * 6  # 75 mono rows per block, 10 of them labelled 1/3 or 1
    split = elpv.split_rows(probabilities, types, train_normals=100, covariance_normals=20, seed=1)
    assert len(split.training_blocks) == 2
    assert len(split.train) == 130
    assert len(split.test_normal) == 4 * 65 - 20
    assert len(split.defective) == 4 * 5  # rows 9 mod 10 that are not 3 mod 4: 5 per block


def test_split_is_seeded(fake):
    _, probabilities, types = fake
    first = elpv.split_rows(probabilities, types, train_normals=100, covariance_normals=20, seed=1)
    again = elpv.split_rows(probabilities, types, train_normals=100, covariance_normals=20, seed=1)
    other = elpv.split_rows(probabilities, types, train_normals=100, covariance_normals=20, seed=2)
    assert np.array_equal(first.test_normal, again.test_normal)
    assert not np.array_equal(first.test_normal, other.test_normal)


def test_split_rejects_impossible_sizes(fake):
    _, probabilities, types = fake
    with pytest.raises(InputError, match="lower train_normals"):
        elpv.split_rows(probabilities, types, train_normals=391, covariance_normals=20, seed=1)
    with pytest.raises(InputError, match="no test normal would remain"):
        elpv.split_rows(probabilities, types, train_normals=100, covariance_normals=260, seed=1)


# ---------------------------------------------------------------------------
# Preprocessing.

def test_area_downsample_hand_values():
    image = np.arange(1, 10, dtype=np.float64).reshape(3, 3)
    # Output pixel (0, 0) covers [0, 1.5) x [0, 1.5): weights 2/3 and 1/3 along each axis.
    expected = np.array([[Fraction(7, 3), Fraction(11, 3)], [Fraction(19, 3), Fraction(23, 3)]], dtype=object)
    got = elpv.area_downsample(image, 2)
    for (i, j), value in np.ndenumerate(expected):
        assert got[i, j] == pytest.approx(float(value), rel=1e-15)


def test_area_downsample_matches_supersampled_block_means():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (RAW_SIDE, RAW_SIDE))
    for side in (8, 7, 15):
        # Repeating each pixel `side` times makes every output area a whole block of RAW_SIDE x RAW_SIDE.
        fine = np.repeat(np.repeat(image, side, axis=0), side, axis=1)
        blocks = fine.reshape(side, RAW_SIDE, side, RAW_SIDE).mean(axis=(1, 3))
        assert np.allclose(elpv.area_downsample(image, side), blocks, rtol=1e-13, atol=0)
    with pytest.raises(InputError, match="only reduces"):
        elpv.area_downsample(image, RAW_SIDE + 1)


def test_data_standardized_by_training_mean_and_sd(fake):
    images, _, _ = fake
    cell = _cell()
    data = elpv.data_of(cell)
    split = data.split
    small = {row: elpv.area_downsample(images[row], 8) for row in np.concatenate(
        [split.train, split.covariance, split.test_normal[:3], split.defective[:3]])}
    pixels = np.concatenate([small[row].ravel() for row in split.train])
    mean = math.fsum(pixels) / pixels.size
    sd = math.sqrt(math.fsum((pixels - mean) ** 2) / pixels.size)
    assert data.mean == pytest.approx(mean, rel=1e-12)
    assert data.sd == pytest.approx(sd, rel=1e-12)
    for stack, rows in ((data.train, split.train), (data.test_normal, split.test_normal[:3]),
                        (data.defective, split.defective[:3])):
        for k, row in enumerate(rows):
            assert np.allclose(stack[k, 0], (small[row] - mean) / sd, rtol=1e-12, atol=1e-12)
    covariance = np.stack([(small[row] - mean) / sd for row in split.covariance]).reshape(20, -1)
    assert np.allclose(data.reference.ravel(), covariance.mean(axis=0), rtol=1e-12, atol=1e-12)
    assert np.allclose(data.variances, covariance.var(axis=0, ddof=1), rtol=1e-12, atol=0)
    assert elpv.training_images(cell).shape == (130, 1, 8, 8)


# ---------------------------------------------------------------------------
# Synthetic defects.

def test_crack_mask_horizontal_and_diagonal():
    horizontal = elpv.crack_mask(12, (5.0, 2.0), (5.0, 9.0))
    assert sorted(map(tuple, np.argwhere(horizontal))) == [(5, c) for c in range(2, 10)]
    # On the diagonal the neighbours (r, r + 1) lie 1/sqrt(2) > 0.5 away, so only the diagonal is marked.
    diagonal = elpv.crack_mask(6, (0.0, 0.0), (3.0, 3.0))
    assert sorted(map(tuple, np.argwhere(diagonal))) == [(0, 0), (1, 1), (2, 2), (3, 3)]


def test_drawn_defects_lie_inside_with_expected_size():
    for seed in range(20):
        crack, geometry = elpv.draw_defect(16, "crack", 8.0, np.random.default_rng(seed))
        start, end = np.array(geometry["start"]), np.array(geometry["end"])
        assert np.hypot(*(end - start)) == pytest.approx(8.0, rel=1e-12)
        assert ((0 <= np.concatenate([start, end])) & (np.concatenate([start, end]) <= 15)).all()
        # Every integer row or column crossed along the longer axis contains a
        # point of the segment at most 0.5 pixel (measured along the other
        # axis) from a pixel centre, so that pixel is marked.
        axis = int(np.argmax(np.abs(end - start)))
        low, high = sorted((start[axis], end[axis]))
        crossed = math.floor(high) - math.ceil(low) + 1
        # The round caps may add one line at each end, no more.
        lines = len(np.unique(np.nonzero(crack)[axis]))
        assert crossed <= lines <= crossed + 2
        assert crack.sum() >= crossed
        assert np.array_equal(crack, elpv.crack_mask(16, tuple(start), tuple(end)))

        box, geometry = elpv.draw_defect(16, "inactive", 8.0, np.random.default_rng(seed))
        assert 4 <= geometry["height"] <= 8
        assert 4 <= geometry["width"] <= 8
        assert geometry["top"] + geometry["height"] <= 16
        assert geometry["left"] + geometry["width"] <= 16
        rows, cols = np.nonzero(box)
        assert box.sum() == geometry["height"] * geometry["width"]
        assert (rows.min(), cols.min()) == (geometry["top"], geometry["left"])


def test_synthetic_case_adds_contrast_on_the_mask_only(fake):
    cell = _cell(defect="synthetic", defect_shape="inactive", defect_contrast=-3.0, defect_size=4, images=500)
    data = elpv.data_of(cell)
    total = len(data.test_normal)
    case = elpv.elpv_case(cell, total + 2)  # wraps around to test normal 2
    added = case.image[0] - data.test_normal[2, 0]
    assert case.facts["row"] == int(data.split.test_normal[2])
    assert case.facts["defect_pixels"] == int(case.defect.sum()) > 0
    assert np.allclose(added[case.defect], -3.0, rtol=0, atol=1e-12)
    assert (added[~case.defect] == 0).all()
    assert case.reference_scale == 1.0 / 20
    assert np.array_equal(case.reference, data.reference)
    again = elpv.elpv_case(cell, total + 2)
    assert np.array_equal(again.defect, case.defect)


def test_real_and_normal_cases_are_unchanged_cells(fake):
    data = elpv.data_of(_cell())
    normal = elpv.elpv_case(_cell(), 1)
    assert np.array_equal(normal.image, data.test_normal[1])
    assert normal.defect is None
    real = elpv.elpv_case(_cell(defect="real"), 3)
    assert np.array_equal(real.image, data.defective[3])
    assert real.facts["cell"] == f"cell{int(data.split.defective[3]):04d}"
    with pytest.raises(InputError, match="use an index below"):
        elpv.elpv_case(_cell(defect="real"), len(data.defective))


# ---------------------------------------------------------------------------
# Config rules.

def test_elpv_config_rules(fake):
    with pytest.raises(InputError, match="diagonal"):
        _cell(covariance="identity")
    with pytest.raises(InputError, match="defect='broken' is unknown"):
        _cell(defect="broken")
    with pytest.raises(InputError, match="non-zero contrast"):
        _cell(defect="synthetic", defect_contrast=0.0)
    with pytest.raises(InputError, match="defect_shape"):
        _cell(defect="synthetic", defect_contrast=-2.0, defect_shape="stain")
    with pytest.raises(InputError, match="defect_size"):
        _cell(defect="synthetic", defect_contrast=-2.0, defect_size=8)
    with pytest.raises(InputError, match="synthetic' only"):
        _cell(defect="real", defect_contrast=-2.0)
    with pytest.raises(InputError, match="20 real defective"):
        _cell(defect="real", images=21)
    assert _cell(defect="real", images=20).images == 20
    with pytest.raises(InputError, match="240 test normal"):
        _cell(images=241)
    with pytest.raises(InputError, match="permutation"):
        _cell(methods=["selective", "permutation"], permutations=10)
    with pytest.raises(InputError, match="bundled"):
        _cell(model="bundled")
    with pytest.raises(InputError, match="covariance_normals"):
        _cell(covariance_normals=1)


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setattr(elpv, "SOURCE", elpv.load_source)
    monkeypatch.setitem(sys.modules, "elpv_dataset", None)  # makes the import raise ImportError
    monkeypatch.setitem(sys.modules, "elpv_dataset.utils", None)
    elpv.clear_caches()
    try:
        for defect in ("none", "real"):
            with pytest.raises(InputError, match=r"pip install 'dalverify\[elpv\]'"):
                _cell(defect=defect)
        with pytest.raises(InputError, match=r"pip install 'dalverify\[elpv\]'"):
            _cell(defect="synthetic", defect_contrast=-2.0, defect_size=4)
    finally:
        elpv.clear_caches()


def test_sweep_lists_multiply_only_synthetic_cells(fake):
    data = {"name": "s", "kind": "elpv", "side": 8, "covariance": "diagonal", "model": "m.dalv",
            "train_normals": 100, "covariance_normals": 20, "images": 2, "train": {"seed": 1},
            "defect": ["none", "synthetic", "real"], "defect_shape": ["crack", "inactive"],
            "defect_contrast": [-2.0, -4.0], "defect_size": 4}
    cells = config_module.expand(data)
    assert [c.name for c in cells] == [
        "s_defectnone",
        "s_defectsynthetic_defect_shapecrack_defect_contrast-2.0",
        "s_defectsynthetic_defect_shapecrack_defect_contrast-4.0",
        "s_defectsynthetic_defect_shapeinactive_defect_contrast-2.0",
        "s_defectsynthetic_defect_shapeinactive_defect_contrast-4.0",
        "s_defectreal",
    ]
    assert (cells[0].defect_contrast, cells[-1].defect_contrast) == (0.0, 0.0)
    assert (cells[2].defect_shape, cells[2].defect_contrast) == ("crack", -4.0)


# ---------------------------------------------------------------------------
# A tiny run.

@pytest.fixture
def tiny_elpv_model(fake, tmp_path):
    path = tmp_path / "tiny_elpv8.dalv"
    cell = _cell(model=str(path), train={"seed": 1, "steps": 1, "batch_size": 4, "base_width": 2, "depth": 1})
    runner.train_model(cell, progress=False)
    return path


def test_tiny_elpv_sweep_end_to_end(tiny_elpv_model, tmp_path):
    from dalverify.diffusion.checkpoint import load_model

    _, manifest = load_model(tiny_elpv_model)
    assert manifest["extra"]["data"].startswith("ELPV mono normal cells, 130 training normals")

    cell = _cell(model=str(tiny_elpv_model), search=0.2, defect="synthetic", defect_shape="inactive",
                 defect_contrast=-6.0, defect_size=4, images=2, train={"seed": 1, "steps": 1, "batch_size": 4,
                                                                       "base_width": 2, "depth": 1})
    results = runner.run_sweep(cell, tmp_path, progress=False)
    records = runner.read_results(results)
    assert sorted(r["index"] for r in records) == [0, 1]
    for record in records:
        assert record["status"] in ("ok", "no_region"), record.get("error")
        assert record["reference_count"] == 20
        assert record["baseline_status"] in ("ok", "no_region")
        if record["status"] == "ok":
            expected = 2 * record["overlap"] / (record["region_size"] + record["defect_pixels"])
            assert record["dice"] == pytest.approx(expected, rel=1e-15)
        if record["baseline_status"] == "ok":
            z = record["baseline_t_obs"] / record["baseline_sd"]
            naive = float(2 * mpmath.ncdf(-abs(mpmath.mpf(z))))
            assert record["pvalues"]["baseline_naive"] == pytest.approx(naive, rel=1e-10)
            expected = 2 * record["baseline_overlap"] / (record["baseline_region_size"] + record["defect_pixels"])
            assert record["baseline_dice"] == pytest.approx(expected, rel=1e-15)

    summary = summarize_cell(results.parent)
    for method, rate in summary["methods"].items():
        values = [r["pvalues"][method] for r in records if method in r["pvalues"]]
        assert (rate["rejected"], rate["tested"]) == (sum(p <= 0.05 for p in values), len(values))
    dice = [r.get("dice", 0.0) for r in records]
    assert summary["mean_dice"]["dal"] == pytest.approx(sum(dice) / len(dice), rel=1e-15)
    table = markdown_table([summary])
    assert "synthetic inactive, -6 sd" in table
    assert json.loads((results.parent / "config.json").read_text())["defect"] == "synthetic"

    real = _cell(name="r", model=str(tiny_elpv_model), search=0.2, defect="real", images=1,
                 train={"seed": 1, "steps": 1, "batch_size": 4, "base_width": 2, "depth": 1})
    record = runner.read_results(runner.run_sweep(real, tmp_path, progress=False))[0]
    assert record["status"] in ("ok", "no_region"), record.get("error")
    assert "dice" not in record
    assert "baseline_dice" not in record
    real_summary = summarize_cell(tmp_path / "r")
    assert real_summary["mean_dice"] is None
    assert "real defective cells" in markdown_table([real_summary])

    # A second shape at the same contrast gets its own figure; the real-defect cell gets none.
    crack = _cell(name="c", model=str(tiny_elpv_model), search=0.2, defect="synthetic", defect_shape="crack",
                  defect_contrast=-6.0, defect_size=4, images=1,
                  train={"seed": 1, "steps": 1, "batch_size": 4, "base_width": 2, "depth": 1})
    runner.run_sweep(crack, tmp_path, progress=False)
    written = write_report([tmp_path / "e", tmp_path / "c", tmp_path / "r"], tmp_path / "report")
    assert sorted(path.name for path in written) == ["elpv_64_crack.png", "elpv_64_inactive.png", "summary.json",
                                                     "table.md"]
    assert len(json.loads((tmp_path / "report" / "summary.json").read_text())) == 3


# ---------------------------------------------------------------------------
# The installed package (skipped without it).

def test_real_package_counts_and_split():
    pytest.importorskip("elpv_dataset")
    elpv.clear_caches()
    images, probabilities, types = elpv.load_source()
    assert images.shape == (2624, 300, 300)
    mono = types == "mono"
    assert int((mono & (probabilities == 0)).sum()) == 588
    assert int((mono & (probabilities == 1)).sum()) == 313
    split = elpv.split_rows(probabilities, types, train_normals=300, covariance_normals=100, seed=0)
    assert len(split.train) >= 300
    assert len(split.covariance) == 100
    assert len(split.train) + len(split.covariance) + len(split.test_normal) == 588
    assert not set(split.test_normal) & set(split.train)
