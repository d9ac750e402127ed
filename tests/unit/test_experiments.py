"""Experiment sweeps: noise families, seeded images, resumable results, Wilson intervals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mpmath
import numpy as np
import pytest
from scipy import integrate, stats

from dalverify.errors import InputError
from dalverify.experiments import config as config_module
from dalverify.experiments import runner
from dalverify.experiments.noise import FAMILIES, StandardizedNoise, parameter_for_distance
from dalverify.experiments.report import markdown_table, summarize_cell, wilson_interval, write_report

SCIPY_BASE = {"skewnorm": stats.skewnorm, "emg": stats.exponnorm, "gennorm": stats.gennorm, "t": stats.t}


def scipy_standardized(family: str, parameter: float):
    """The standardized member built from scipy's own moments (not the module's closed forms)."""
    base = SCIPY_BASE[family](parameter)
    mean, var = (float(v) for v in base.stats(moments="mv"))
    return SCIPY_BASE[family](parameter, loc=-mean / math.sqrt(var), scale=1 / math.sqrt(var))


def w1_by_quadrature(family: str, parameter: float) -> float:
    """W1 to N(0, 1) by adaptive quadrature of |F - Phi| on [-15, 15] (an estimate: the tails beyond add below 1e-6 for the members tested)."""
    dist = scipy_standardized(family, parameter)
    value, _ = integrate.quad(lambda x: abs(dist.cdf(x) - stats.norm.cdf(x)), -15, 15, limit=400, epsabs=1e-10)
    return value


@pytest.mark.parametrize("family", FAMILIES)
def test_distance_search_hits_target(family):
    for distance in (0.01, 0.02, 0.03, 0.04):
        parameter = parameter_for_distance(family, distance)
        assert abs(w1_by_quadrature(family, parameter) - distance) < 1e-4, (family, distance, parameter)


@pytest.mark.parametrize("family", FAMILIES)
def test_families_are_standardized(family):
    noise = StandardizedNoise(family, parameter_for_distance(family, 0.03))
    pdf = noise.distribution.pdf
    mean, _ = integrate.quad(lambda x: x * pdf(x), -np.inf, np.inf, limit=400)
    second, _ = integrate.quad(lambda x: x * x * pdf(x), -np.inf, np.inf, limit=400)
    assert abs(mean) < 1e-7
    assert abs(second - 1.0) < 1e-6
    # The module's skew-normal CDF (Owen's T) agrees with scipy's numerical CDF.
    x = np.linspace(-4, 4, 9)
    assert np.allclose(noise.cdf(x), noise.distribution.cdf(x), atol=1e-12)


def test_distance_outside_family_range_is_rejected():
    with pytest.raises(InputError, match="outside the range"):
        parameter_for_distance("gennorm", 0.5)
    with pytest.raises(InputError, match="unknown"):
        parameter_for_distance("cauchy", 0.01)


# ---------------------------------------------------------------------------
# Wilson intervals.

# Score-interval values to 4 decimals for the four examples of Newcombe,
# Statistics in Medicine 17 (1998) 857-872, Table I (score method without
# continuity correction). NOTE: these are quoted from that table as commonly
# reproduced, not re-read from the paper; the exact check is the next test.
PUBLISHED = [((81, 263), (0.2553, 0.3662)), ((15, 148), (0.0624, 0.1605)),
             ((0, 20), (0.0, 0.1611)), ((1, 29), (0.0061, 0.1718))]


@pytest.mark.parametrize(("counts", "interval"), PUBLISHED)
def test_wilson_matches_published_values(counts, interval):
    lo, hi = wilson_interval(*counts)
    assert abs(lo - interval[0]) <= 5e-5
    assert abs(hi - interval[1]) <= 5e-5


@pytest.mark.parametrize("counts", [(0, 1), (3, 10), (15, 300), (300, 300), (1, 2), (49, 50)])
def test_wilson_solves_the_score_quadratic(counts):
    k, n = counts
    mpmath.mp.dps = 40
    z = mpmath.sqrt(2) * mpmath.erfinv(mpmath.mpf("0.95"))
    # (k/n - p)^2 = z^2 p (1 - p) / n  <=>  (n + z^2) p^2 - (2k + z^2) p + k^2 / n = 0.
    a, b, c = n + z**2, -(2 * k + z**2), mpmath.mpf(k) ** 2 / n
    root = mpmath.sqrt(b * b - 4 * a * c)
    lo, hi = wilson_interval(k, n)
    assert abs(lo - float((-b - root) / (2 * a))) < 1e-12
    assert abs(hi - float((-b + root) / (2 * a))) < 1e-12


def test_wilson_rejects_bad_counts():
    with pytest.raises(InputError):
        wilson_interval(5, 3)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


# ---------------------------------------------------------------------------
# Simulated data and sweeps.

def test_ar1_recursion_has_the_ar1_covariance():
    cell = config_module.from_mapping({"name": "c", "side": 3, "covariance": "ar1", "rho": 0.5, "model": "m.dalv"})
    factor = runner.correlate(cell, np.eye(9))  # rows: images of the unit vectors
    lag = np.abs(np.subtract.outer(np.arange(9), np.arange(9)))
    assert np.allclose(factor.T @ factor, 0.5**lag, atol=1e-14, rtol=0)


def test_config_expands_sweep_lists(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\nkind = "power"\nside = 4\ndelta = [1.0, 2.0]\n'
                    'model = "/x/ddpm_{side}_{covariance}.dalv"\n')
    cells = config_module.load_config(path)
    assert [c.name for c in cells] == ["p_delta1.0", "p_delta2.0"]
    assert [c.delta for c in cells] == [1.0, 2.0]
    assert cells[0].model == "/x/ddpm_4_identity.dalv"
    path.write_text('name = "p"\nkind = "typo"\nmodel = "m"\n')
    with pytest.raises(InputError, match="kind"):
        config_module.load_config(path)


@pytest.fixture(scope="module")
def tiny_cell(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    cell = config_module.from_mapping({
        "name": "tiny", "kind": "power", "side": 8, "delta": 2.0, "images": 3, "seed": 11,
        "model": str(folder / "ddpm.dalv"), "search": 6.0, "threshold": 1.2,
        "methods": ["selective", "overconditioned", "naive", "bonferroni"],
        "train": {"images": 16, "steps": 2, "batch_size": 4, "base_width": 2, "depth": 1},
    })
    runner.train_model(cell, progress=False)
    return cell


def _stable(record):
    return {k: v for k, v in record.items() if k != "seconds"}


def test_tiny_sweep_end_to_end(tiny_cell, tmp_path):
    results = runner.run_sweep(tiny_cell, tmp_path / "a", progress=False)
    records = runner.read_results(results)
    assert sorted(r["index"] for r in records) == [0, 1, 2]
    for record in records:
        assert record["status"] in ("ok", "no_region"), record.get("error")
        if record["status"] == "ok":
            z = record["t_obs"] / record["sd"]
            naive = 2 * mpmath.ncdf(-abs(mpmath.mpf(z)))
            assert abs(record["pvalues"]["naive"] - float(naive)) <= 1e-12 * float(naive) + 1e-300
            assert abs(record["log10_pvalues"]["naive"] - float(mpmath.log10(naive))) < 1e-9
            assert 0 <= record["pvalues"]["selective"] <= 1
    stored = json.loads((results.parent / "config.json").read_text())
    assert stored["seed"] == 11
    assert stored["delta"] == 2.0
    assert "numpy" in json.loads((results.parent / "environment.json").read_text())["packages"]
    # Same seed, other folder: the same record for image 0.
    again = runner.read_results(runner.run_sweep(tiny_cell, tmp_path / "b", progress=False, limit=1))
    assert [_stable(r) for r in again] == [_stable(r) for r in records if r["index"] == 0]
    # Report: counts add up, table and a figure are written.
    outputs = write_report([results.parent], tmp_path / "report")
    summary = summarize_cell(results.parent)
    assert summary["ok"] + summary["no_region"] + summary["errors"] == 3
    assert any(p.suffix == ".png" for p in outputs)
    assert "tiny" in markdown_table([summary])


def _score_interval(k: int, n: int) -> tuple[float, float]:
    """Return the 95% Wilson interval as the roots of the score quadratic (40-digit mpmath, not the report's formula)."""
    mpmath.mp.dps = 40
    z = mpmath.sqrt(2) * mpmath.erfinv(mpmath.mpf("0.95"))
    a, b, c = n + z**2, -(2 * k + z**2), mpmath.mpf(k) ** 2 / n
    root = mpmath.sqrt(b * b - 4 * a * c)
    return float((-b - root) / (2 * a)), float((-b + root) / (2 * a))


def test_report_rates_at_another_alpha(tmp_path):
    from dalverify.cli import main

    cell = tmp_path / "robust"
    cell.mkdir()
    config = {"name": "robust", "kind": "robustness", "side": 16, "covariance": "identity", "family": "t",
              "distance": 0.02, "alpha": 0.05, "images": 9, "methods": ["selective", "naive"]}
    (cell / "config.json").write_text(json.dumps(config))
    selective = [0.01, 0.04, 0.05, 0.07, 0.10, 0.30, 0.9]
    naive = [0.001, 0.02, 0.2, 0.06, 0.08, 0.11, 0.5]
    records = [{"index": i, "status": "ok", "pvalues": {"selective": s, "naive": v}, "seconds": 1.0}
               for i, (s, v) in enumerate(zip(selective, naive))]
    records.append({"index": 7, "status": "no_region", "pvalues": {}, "seconds": 1.0})
    records.append({"index": 8, "status": "error", "error": "RuntimeError: simulated failure", "seconds": 1.0})
    (cell / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    summary_at_005 = summarize_cell(cell)
    assert summary_at_005["alpha"] == 0.05
    assert summary_at_005["methods"]["selective"]["rejected"] == 3  # a p-value equal to alpha is a rejection
    assert summary_at_005["methods"]["naive"]["rejected"] == 2

    summary_at_010 = summarize_cell(cell, alpha=0.10)
    assert summary_at_010["alpha"] == 0.10
    assert summary_at_010["images"] == 9
    assert summary_at_010["ok"] == 7
    assert summary_at_010["no_region"] == 1
    assert summary_at_010["errors"] == 1
    selective_rate = summary_at_010["methods"]["selective"]
    assert (selective_rate["rejected"], selective_rate["tested"]) == (5, 7)
    assert selective_rate["rate"] == pytest.approx(5 / 7, abs=1e-15)
    expected = _score_interval(5, 7)
    assert selective_rate["wilson95"][0] == pytest.approx(expected[0], abs=1e-12)
    assert selective_rate["wilson95"][1] == pytest.approx(expected[1], abs=1e-12)
    assert summary_at_010["methods"]["naive"]["rejected"] == 4

    # The same override through the command line, read back from summary.json.
    assert main(["experiment", "report", str(cell), "--alpha", "0.10", "--out", str(tmp_path / "rep"),
                 "--quiet"]) == 0
    (written,) = json.loads((tmp_path / "rep" / "summary.json").read_text())
    assert written["alpha"] == 0.10
    assert written["methods"]["selective"]["rejected"] == 5
    assert written["methods"]["selective"]["wilson95"][0] == pytest.approx(expected[0], abs=1e-12)
    assert "0.714 [" in (tmp_path / "rep" / "table.md").read_text()


def fake_task(data, index):
    """A stand-in for the per-image task (the resume logic does not depend on the test itself)."""
    return {"index": index, "seed": 0, "status": "ok", "pvalues": {"naive": 0.5}, "seconds": 0.0,
            "padding": "x" * 40}


def test_resume_after_crash_skips_finished_images(tiny_cell, tmp_path, monkeypatch):
    calls = []

    def counting(data, index):
        calls.append(index)
        return fake_task(data, index)

    monkeypatch.setattr(runner, "_task", counting)
    results = runner.run_sweep(tiny_cell, tmp_path, progress=False)
    assert calls == [0, 1, 2]
    lines = results.read_bytes().split(b"\n")
    # Simulated crash: the third record was cut off in the middle of its line.
    results.write_bytes(lines[0] + b"\n" + lines[1] + b"\n" + lines[2][: len(lines[2]) // 2])
    assert [r["index"] for r in runner.read_results(results)] == [0, 1]
    calls.clear()
    runner.run_sweep(tiny_cell, tmp_path, progress=False)
    assert calls == [2]
    records = runner.read_results(results)
    assert sorted(r["index"] for r in records) == [0, 1, 2]
    assert results.read_bytes().count(b"\n") == 3
    assert all(json.loads(line) for line in results.read_bytes().split(b"\n")[:3])
    # Nothing left to do: no call at all.
    calls.clear()
    runner.run_sweep(tiny_cell, tmp_path, progress=False)
    assert calls == []


def test_failed_image_is_recorded_and_sweep_goes_on(tiny_cell, tmp_path, monkeypatch):
    def failing(config, index):
        raise RuntimeError(f"simulated failure of image {index}")

    monkeypatch.setattr(runner, "simulate", failing)
    records = {r["index"]: r for r in runner.read_results(runner.run_sweep(tiny_cell, tmp_path, progress=False))}
    assert sorted(records) == [0, 1, 2]
    assert all(r["status"] == "error" for r in records.values())
    assert "simulated failure of image 1" in records[1]["error"]
    assert summarize_cell(tmp_path / "tiny")["errors"] == 3


def test_changed_config_refuses_to_mix_results(tiny_cell, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_task", fake_task)
    runner.run_sweep(tiny_cell, tmp_path, progress=False, limit=1)
    more = config_module.from_mapping({**tiny_cell.to_dict(), "images": 5})
    runner.run_sweep(more, tmp_path, progress=False)  # more images of the same cell: allowed
    other = config_module.from_mapping({**tiny_cell.to_dict(), "seed": 12})
    with pytest.raises(InputError, match="different configuration"):
        runner.run_sweep(other, tmp_path, progress=False)


def test_resume_accepts_settings_added_later(tiny_cell, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "_task", fake_task)
    results = runner.run_sweep(tiny_cell, tmp_path, progress=False, limit=1)
    # Results written before the lesion settings existed: their config.json lacks those keys.
    stored = json.loads((results.parent / "config.json").read_text())
    del stored["lesion_contrast"], stored["lesion_radius"]
    (results.parent / "config.json").write_text(json.dumps(stored))
    runner.run_sweep(tiny_cell, tmp_path, progress=False)
    assert sorted(r["index"] for r in runner.read_results(results)) == [0, 1, 2]
    (results.parent / "config.json").write_text(json.dumps(stored))
    changed = config_module.from_mapping({**tiny_cell.to_dict(), "lesion_radius": 3.0})
    with pytest.raises(InputError, match="different configuration"):
        runner.run_sweep(changed, tmp_path, progress=False)


def test_cli_runs_and_reports(tiny_cell, tmp_path):
    from dalverify.cli import main

    text = "\n".join(f"{k} = {json.dumps(v)}" for k, v in tiny_cell.to_dict().items() if k != "train")
    path = tmp_path / "tiny.toml"
    path.write_text(text + "\n")
    assert main(["experiment", "run", str(path), "--out", str(tmp_path / "out"), "--images", "1", "--quiet"]) == 0
    assert main(["experiment", "report", str(tmp_path / "out" / "tiny"), "--out", str(tmp_path / "rep"),
                 "--quiet"]) == 0
    assert (tmp_path / "rep" / "table.md").is_file()


def test_missing_model_is_reported_before_any_image(tiny_cell, tmp_path):
    cell = config_module.from_mapping({**tiny_cell.to_dict(), "model": str(tmp_path / "absent.dalv")})
    with pytest.raises(InputError, match="train-model"):
        runner.run_sweep(cell, tmp_path, progress=False)
    assert not (tmp_path / "tiny" / "results.jsonl").exists()


@pytest.mark.slow
def test_dask_sweep_matches_serial(tiny_cell, tmp_path):
    pytest.importorskip("dask.distributed")
    serial = runner.read_results(runner.run_sweep(tiny_cell, tmp_path / "serial", progress=False))
    parallel = runner.read_results(runner.run_sweep(tiny_cell, tmp_path / "dask", workers=2, progress=False))
    assert sorted(map(str, map(_stable, serial))) == sorted(map(str, map(_stable, parallel)))
