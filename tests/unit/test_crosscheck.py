"""Cross-checking another tool's result, and the si4onnx compatibility profile.

The "other tool" results are synthetic, each built to show one diagnosis.
Expected p-values come from mpmath's normal CDF at 60 digits, a route
independent of dalverify's log-space tail masses.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from mpmath import mp, mpf

from dalverify.cli import main
from dalverify.crosscheck import compare, from_sicore, normalize_their
from dalverify.errors import InputError
from dalverify.graph import GraphBuilder, save_graph
from dalverify.methods.covariance import Isotropic
from dalverify.methods.dal_test import DALTest, TestResult
from dalverify.numerics.intervals import IntervalUnion
from dalverify.selection.region import average_filter
from dalverify.tolerances import CROSSCHECK_ENDPOINT_RTOL, CROSSCHECK_PVALUE_RTOL

INF = math.inf


def mass(lo, hi):
    """N(0, 1) mass of [lo, hi] at 60 digits, from the side away from the mode."""
    with mp.workdps(60):
        lo, hi = mpf(lo), mpf(hi)
        if lo >= 0:
            return mp.ncdf(-lo) - mp.ncdf(-hi)
        return mp.ncdf(hi) - mp.ncdf(lo)


def exact_pvalues(z, intervals):
    """(symmetric, equal-tailed) selective p-values of z on a union of disjoint intervals."""
    with mp.workdps(60):
        z = mpf(z)
        total = sum(mass(lo, hi) for lo, hi in intervals)
        extreme = sum(mass(lo, min(hi, -abs(z))) for lo, hi in intervals if lo < -abs(z))
        extreme += sum(mass(max(lo, abs(z)), hi) for lo, hi in intervals if hi > abs(z))
        below = sum(mass(lo, min(hi, z)) for lo, hi in intervals if lo < z)
        above = total - below
        return extreme / total, min(1, 2 * min(below, above) / total)


def make_result(intervals_z, z_obs, sd=2.0, searched_z=(-20.0, 20.0), two_sided="equal-tailed", partition=None):
    """A TestResult whose truncation set is ``intervals_z`` (standardized) scaled by ``sd``."""
    scale = Fraction(sd)
    truncation = IntervalUnion([(lo, hi) for lo, hi in intervals_z]).scaled(scale)
    settings = {"two_sided": two_sided, "threshold": 1.0, "profile": "si4onnx"}
    return TestResult("ok", np.ones((2, 2), bool), settings, "0" * 64, t_obs=z_obs * sd, sd=sd,
                      truncation=truncation, searched=(searched_z[0] * sd, searched_z[1] * sd), partition=partition)


Z_BASE = [(-INF, -3.0), (0.5, 1.25), (1.5, 4.0)]
Z_OBS = 1.0


def their_from(intervals, p_value, **extra):
    data = {"tool": "synthetic", "scale": "standardized", "stat": Z_OBS,
            "intervals": [[lo, hi] for lo, hi in intervals], "p_value": p_value, "two_sided": "equal-tailed"}
    data.update(extra)
    return data


def test_identical_results_agree_and_values_are_exact():
    symmetric, equal_tailed = exact_pvalues(Z_OBS, Z_BASE)
    report = compare(their_from(Z_BASE, float(equal_tailed)), make_result(Z_BASE, Z_OBS))
    assert report.agree
    assert report.errors() == []
    ours = report.pvalues["ours"]
    assert abs(ours["symmetric"].value / symmetric - 1) < 1e-14
    assert abs(ours["equal-tailed"].value / equal_tailed - 1) < 1e-14
    assert abs(ours["naive"].value / (2 * mp.ncdf(-1)) - 1) < 1e-14
    assert "pvalue_definition" in report.kinds()  # the two forms differ here and are both reported


def test_statistic_scale_is_converted():
    _, equal_tailed = exact_pvalues(Z_OBS, Z_BASE)
    sd = 2.0
    their = {"scale": "statistic", "stat": Z_OBS * sd, "p_value": float(equal_tailed),
             "intervals": [[lo * sd, hi * sd] for lo, hi in Z_BASE]}
    assert compare(their, make_result(Z_BASE, Z_OBS, sd=sd)).agree
    their.pop("scale")  # decided from the statistic
    assert compare(their, make_result(Z_BASE, Z_OBS, sd=sd)).agree


def test_missing_narrow_piece_is_named():
    narrow = (2.0, 2.0 + 5e-7)  # narrower than the 1e-6 search step
    ours = [(-INF, -3.0), (0.5, 1.25), narrow, (2.5, 4.0)]
    theirs = [(-INF, -3.0), (0.5, 1.25), (2.5, 4.0)]
    _, p_theirs = exact_pvalues(Z_OBS, theirs)
    report = compare(their_from(theirs, float(p_theirs), search_step=1e-6), make_result(ours, Z_OBS))
    assert not report.agree
    missing = [d for d in report.diagnoses if d.kind == "missing_narrow_interval"]
    assert len(missing) == 1
    assert Fraction(missing[0].details["interval"][0]) == Fraction(2.0)


def test_missing_wide_interval_explains_pvalue():
    theirs = [(-INF, -3.0), (0.5, 1.25)]
    _, p_theirs = exact_pvalues(Z_OBS, theirs)
    report = compare(their_from(theirs, float(p_theirs)), make_result(Z_BASE, Z_OBS))
    kinds = report.kinds()
    assert "missing_interval" in kinds
    mismatch = next(d for d in report.diagnoses if d.kind == "pvalue_mismatch")
    assert "right for their intervals" in mismatch.message


def test_extra_interval_and_merged_gap():
    gap = 1e-11
    ours = [(-INF, -3.0), (0.5, 1.25), (1.25 + gap, 4.0)]
    theirs = [(-INF, -3.0), (0.5, 4.0), (6.0, 7.0)]
    _, p_theirs = exact_pvalues(Z_OBS, theirs)
    report = compare(their_from(theirs, float(p_theirs)), make_result(ours, Z_OBS))
    kinds = report.kinds()
    assert "merged_gap" in kinds
    assert "extra_interval" in kinds
    merged = next(d for d in report.diagnoses if d.kind == "merged_gap")
    assert Fraction(merged.details["interval"][0]) == Fraction(1.25)


def test_definition_difference_is_diagnosed():
    symmetric, _ = exact_pvalues(Z_OBS, Z_BASE)
    declared = compare(their_from(Z_BASE, float(symmetric)), make_result(Z_BASE, Z_OBS))
    assert "pvalue_definition_mismatch" in declared.kinds()
    undeclared = their_from(Z_BASE, float(symmetric))
    undeclared.pop("two_sided")
    report = compare(undeclared, make_result(Z_BASE, Z_OBS))
    assert report.agree
    info = next(d for d in report.diagnoses if d.kind == "pvalue_definition")
    assert info.details["matches"] == ["symmetric"]


def test_tail_precision_loss_is_diagnosed():
    z = 9.0
    intervals = [(-INF, -20.0), (-3.0, INF)]
    symmetric, equal_tailed = exact_pvalues(z, intervals)
    assert 0 < equal_tailed < 1e-16
    zero = their_from(intervals, 0.0, stat=z, naive_p_value=0.0)
    report = compare(zero, make_result(intervals, z, searched_z=(-40.0, 40.0)))
    assert "tail_precision_loss" in report.kinds()
    assert "naive_tail_precision_loss" in report.kinds()
    # An absolute error of 1e-16 on a value near 1e-14, as 1 - cdf leaves it.
    far = [(-INF, -40.0), (-2.0, INF)]
    _, p_far = exact_pvalues(7.9, far)
    assert p_far < 1e-12
    shifted = their_from(far, float(p_far) + 1e-16, stat=7.9)
    assert "tail_precision_loss" in compare(shifted, make_result(far, 7.9, searched_z=(-50.0, 50.0))).kinds()


def test_endpoint_rounding_is_not_an_error():
    theirs = [(-INF, np.nextafter(-3.0, 0)), (np.nextafter(0.5, 0), 1.25), (1.5, np.nextafter(4.0, 5))]
    _, p_theirs = exact_pvalues(Z_OBS, theirs)
    report = compare(their_from(theirs, float(p_theirs)), make_result(Z_BASE, Z_OBS))
    assert report.agree
    rounding = next(d for d in report.diagnoses if d.kind == "endpoint_rounding")
    assert len(rounding.details["slivers"]) == 3


def test_endpoint_tolerance_edge():
    wide = 4.0 * (1 + 2 * CROSSCHECK_ENDPOINT_RTOL)
    theirs = [(-INF, -3.0), (0.5, 1.25), (1.5, wide)]
    report = compare(their_from(theirs, None), make_result(Z_BASE, Z_OBS))
    assert "extra_interval" in report.kinds()
    inside = 4.0 * (1 + 0.5 * CROSSCHECK_ENDPOINT_RTOL)
    theirs = [(-INF, -3.0), (0.5, 1.25), (1.5, inside)]
    assert compare(their_from(theirs, None), make_result(Z_BASE, Z_OBS)).agree


def test_pvalue_tolerance_edge():
    _, equal_tailed = exact_pvalues(Z_OBS, Z_BASE)
    close = float(equal_tailed) * (1 + 0.5 * CROSSCHECK_PVALUE_RTOL)
    assert compare(their_from(Z_BASE, close), make_result(Z_BASE, Z_OBS)).agree
    far = float(equal_tailed) * (1 + 2 * CROSSCHECK_PVALUE_RTOL)
    assert "pvalue_mismatch" in compare(their_from(Z_BASE, far), make_result(Z_BASE, Z_OBS)).kinds()


def test_statistic_mismatch_and_outside():
    report = compare(their_from(Z_BASE, None, stat=2.0, scale="standardized"), make_result(Z_BASE, Z_OBS))
    assert "statistic_mismatch" in report.kinds()
    report = compare(their_from(Z_BASE, 0.5, stat=1.4, scale="standardized"), make_result(Z_BASE, Z_OBS))
    assert "statistic_outside_their_intervals" in report.kinds()


def test_sicore_adapter_reads_its_fields():
    class SicoreLike:
        def __init__(self, p):
            self.stat = Z_OBS
            self.p_value = p
            self.inf_p, self.sup_p = p, p
            self.naive_p = float(2 * mp.ncdf(-1))
            self.searched_intervals = [[-20.0, 20.0]]
            self.truncated_intervals = np.array([[-np.inf, -3.0], [0.5, 1.25], [1.5, 4.0]])
            self.search_count = 3
            self.detect_count = 3

    _, equal_tailed = exact_pvalues(Z_OBS, Z_BASE)
    data = from_sicore(SicoreLike(float(equal_tailed)))
    assert data["intervals"][0] == ["-inf", -3.0]
    json.dumps(data)  # JSON-compatible
    their = normalize_their(data)
    assert their.scale == "standardized"
    assert their.search_count == 3
    assert compare(data, make_result(Z_BASE, Z_OBS)).agree

    class Si4onnxLike(SicoreLike):
        def naive_p_value(self):
            return 0.0

    data = from_sicore(Si4onnxLike(float(equal_tailed)), tool="si4onnx")
    assert data["naive_p_value"] == 0.0
    assert "naive_tail_precision_loss" in compare(data, make_result(Z_BASE, Z_OBS)).kinds()


@pytest.mark.parametrize("bad", [
    {"p_value": 0.5},
    {"intervals": [[1.0]], "scale": "standardized"},
    {"intervals": [[0.0, 1.0]], "p_value": 1.5},
    {"intervals": [[0.0, 1.0]], "scale": "kelvin"},
    {"intervals": [[0.0, 1.0]], "two_sided": "left"},
])
def test_malformed_input_raises(bad):
    with pytest.raises(InputError):
        normalize_their(bad)


def test_missing_scale_and_stat_raises():
    with pytest.raises(InputError, match="scale"):
        compare({"intervals": [[0.0, 2.0]]}, make_result(Z_BASE, Z_OBS))


# ---------------------------------------------------------------------------
# Real runs: a small convolutional reconstruction.


def small_graph():
    rng = np.random.default_rng(0)
    builder = GraphBuilder((1, 8, 8))
    h = builder.conv2d(0, rng.normal(size=(3, 1, 3, 3)) * 0.3, rng.normal(size=3) * 0.1, padding=1)
    h = builder.relu(h)
    builder.conv2d(h, rng.normal(size=(1, 3, 3, 3)) * 0.3, None, padding=1)
    return builder.build()


def images():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 8, 8))
    x[0, 2:4, 2:4] += 4.0
    return x, np.zeros((1, 8, 8))


@pytest.fixture(scope="module")
def real_result():
    test = DALTest(small_graph(), threshold=1.0, covariance=Isotropic(1.0, 64), profile="si4onnx", backend="numpy")
    return test.run(*images())


def own_json(result, **changes):
    sd = Fraction(result.sd)
    data = {
        "tool": "si4onnx (synthetic)", "scale": "standardized", "stat": result.t_obs / result.sd,
        "intervals": [[float(Fraction(lo) / sd), float(Fraction(hi) / sd)] for lo, hi in result.truncation],
        "p_value": float(result.pvalues["selective"].value), "two_sided": "equal-tailed",
        "naive_p_value": float(result.pvalues["naive"].value), "search_count": result.pieces,
        "settings": {"threshold": 1.0, "kernel_size": 3, "sigma": 1.0, "profile": "si4onnx"},
    }
    data.update(changes)
    return data


def test_real_run_agrees_with_its_own_numbers(real_result):
    report = compare(own_json(real_result), real_result)
    assert report.agree, report.summary()
    assert report.search["our_intervals_in_range"] == real_result.pieces


def test_fewer_searches_than_pieces_warns(real_result):
    report = compare(own_json(real_result, search_count=2), real_result)
    warning = next(d for d in report.diagnoses if d.kind == "fewer_searches_than_pieces")
    assert warning.severity == "warning"


def test_cli_exit_codes(tmp_path, real_result, capsys):
    model = tmp_path / "model.dalg"
    save_graph(small_graph(), model)
    x, ref = images()
    np.save(tmp_path / "x.npy", x[0])  # (H, W) is accepted for one channel
    np.save(tmp_path / "ref.npy", ref)
    agree = tmp_path / "agree.json"
    agree.write_text(json.dumps(own_json(real_result)))
    common = ["--model", str(model), "--image", str(tmp_path / "x.npy"), "--reference", str(tmp_path / "ref.npy")]

    assert main(["crosscheck", str(agree), *common, "--out", str(tmp_path / "report.json")]) == 0
    assert "AGREE" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["verdict"] == "agree"

    wrong = own_json(real_result, p_value=float(real_result.pvalues["selective"].value) * 0.5)
    disagree = tmp_path / "disagree.json"
    disagree.write_text(json.dumps(wrong))
    assert main(["crosscheck", str(disagree), *common, "--quiet"]) == 7

    assert main(["crosscheck", str(tmp_path / "absent.json"), *common]) == 2
    no_threshold = own_json(real_result, settings={"sigma": 1.0})
    (tmp_path / "bad.json").write_text(json.dumps(no_threshold))
    assert main(["crosscheck", str(tmp_path / "bad.json"), *common]) == 2


# ---------------------------------------------------------------------------
# The si4onnx compatibility profile of DALTest.


def float32_round(value: float) -> Fraction:
    """Round to the nearest float32 (ties to even) in exact arithmetic, for 1 <= value < 2."""
    scaled = Fraction(value) * 2**23
    floor = scaled.numerator // scaled.denominator
    rest = scaled - floor
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2):
        floor += 1
    return Fraction(floor, 2**23)


def flat_graph():
    """D(x) = 0 for every x, so the residual is the image itself."""
    builder = GraphBuilder((1, 5, 5))
    builder.mul_const(0, 0.0)
    return builder.build()


def test_profile_rounds_threshold_through_float32():
    lam = 1.0100711987732127
    assert float32_round(lam) == Fraction(1.0100711584091187)
    covariance = Isotropic(1.0, 25)
    compatible = DALTest(flat_graph(), threshold=lam, covariance=covariance, profile="si4onnx", kernel_size=1)
    default = DALTest(flat_graph(), threshold=lam, covariance=covariance, kernel_size=1)
    assert compatible.threshold == 1.0100711584091187
    assert default.threshold == lam


def test_float32_threshold_changes_the_region():
    lam = 1.0100711987732127
    covariance = Isotropic(1.0, 25)
    x = np.zeros((1, 5, 5))
    x[0, 1, 1] = 1.01007118  # between the float32 and the float64 threshold
    x[0, 3, 3] = 1.0100711584091187  # equal to the float32 threshold: not above it
    x[0, 2, 4] = lam  # equal to the float64 threshold
    compatible, _ = DALTest(flat_graph(), threshold=lam, covariance=covariance, profile="si4onnx",
                            kernel_size=1).observed_region(x)
    default, _ = DALTest(flat_graph(), threshold=lam, covariance=covariance, kernel_size=1).observed_region(x)
    assert sorted(map(tuple, np.argwhere(compatible))) == [(1, 1), (2, 4)]
    assert sorted(map(tuple, np.argwhere(default))) == [(2, 4)]


def test_profile_filter_differs_at_borders():
    ones = np.ones((5, 5))
    zero_padded = average_filter(ones, 3, profile="si4onnx")
    inside = average_filter(ones, 3, profile="inside")
    assert zero_padded[0, 0] == 4 / 9
    assert zero_padded[0, 2] == 6 / 9
    assert zero_padded[2, 2] == 1.0
    assert np.all(inside == 1.0)
    # Through the test: a constant residual of 0.9 selects every pixel by default,
    # and only the interior under the profile (border means fall to 0.6 and 0.4).
    x = np.full((1, 5, 5), 0.9)
    covariance = Isotropic(1.0, 25)
    compatible, _ = DALTest(flat_graph(), threshold=0.8, covariance=covariance, profile="si4onnx").observed_region(x)
    default, _ = DALTest(flat_graph(), threshold=0.8, covariance=covariance).observed_region(x)
    assert default.all()
    expected = np.zeros((5, 5), bool)
    expected[1:4, 1:4] = True
    assert np.array_equal(compatible, expected)


def test_cli_with_onnx_model_and_sicore_fields(tmp_path, capsys):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from dalverify.graph import from_onnx

    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    initializers = [numpy_helper.from_array(rng.normal(size=(3, 1, 3, 3)) * 0.3, "w1"),
                    numpy_helper.from_array(rng.normal(size=3) * 0.1, "b1"),
                    numpy_helper.from_array(rng.normal(size=(1, 3, 3, 3)) * 0.3, "w2")]
    graph = helper.make_graph(nodes, "small", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)], initializer=initializers)
    model_path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model_path))

    x, ref = images()
    result = DALTest(from_onnx(model_path), threshold=1.0, covariance=Isotropic(1.0, 64), profile="si4onnx",
                     backend="numpy").run(x, ref)
    sd = Fraction(result.sd)
    sicore_fields = {
        "stat": result.t_obs / result.sd,
        "truncated_intervals": [[float(Fraction(lo) / sd), float(Fraction(hi) / sd)] for lo, hi in result.truncation],
        "p_value": float(result.pvalues["selective"].value),
        "naive_p": float(result.pvalues["naive"].value),
        "alternative": "two-sided",
        "search_count": result.pieces,
        "settings": {"threshold": 1.0, "variance": 1.0, "profile": "si4onnx"},
    }
    path = tmp_path / "sicore.json"
    path.write_text(json.dumps(sicore_fields))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "ref.npy", ref)
    code = main(["crosscheck", str(path), "--sicore", "--model", str(model_path), "--image", str(tmp_path / "x.npy"),
                 "--reference", str(tmp_path / "ref.npy"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["verdict"] == "agree"
    assert report["tool"] == "sicore"
