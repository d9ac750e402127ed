"""The side-by-side benchmark script: its ONNX export, dalverify side, comparison and tables.

A tiny reconstruction (8x8 images, U-Net base width 2, depth 3, one DDIM
step) is exported, imported and tested in-process. The other tool's
results are synthetic: their p-values come from mpmath's normal CDF at 60
digits on their own intervals, a route independent of dalverify's log-space
masses. si4onnx itself is not needed.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from mpmath import mp, mpf
from onnx import TensorProto, helper

from dalverify.graph import evaluate, from_onnx
from dalverify.numerics.intervals import IntervalUnion
from dalverify.tolerances import EVALUATOR_ATOL_SCALE, EVALUATOR_RTOL

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "si4onnx_side_by_side.py"
SIZE = 8


def _load_script():
    spec = importlib.util.spec_from_file_location("si4onnx_side_by_side", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sbs = _load_script()


def _exact(end) -> mpf:
    """An interval end (Fraction, float or infinity) as an mpf at the current precision."""
    if isinstance(end, Fraction):
        return mpf(end.numerator) / mpf(end.denominator)
    return mpf(end)


def _mass(lo, hi) -> mpf:
    """N(0, 1) mass of [lo, hi], taken from the side away from the mode."""
    if lo >= 0:
        return mp.ncdf(-lo) - mp.ncdf(-hi)
    return mp.ncdf(hi) - mp.ncdf(lo)


def equal_tailed(z_obs, intervals_z) -> float:
    """2 min(F, 1 - F) of z_obs for N(0, 1) truncated to a union of disjoint standardized intervals."""
    with mp.workdps(60):
        z = _exact(z_obs)
        pairs = [(_exact(lo), _exact(hi)) for lo, hi in intervals_z]
        total = sum(_mass(lo, hi) for lo, hi in pairs)
        below = sum(_mass(lo, min(hi, z)) for lo, hi in pairs if lo < z)
        return float(2 * min(below, total - below) / total)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("case")
    spec = sbs.prepare_case(folder, SIZE, 0, 0.8, base_width=2, steps=1)
    graph = from_onnx(folder / "model.onnx")
    image, reference = np.load(folder / "image.npy"), np.load(folder / "reference.npy")
    result, seconds = sbs.run_dalverify(graph, image, reference, spec["threshold"])
    assert result.status == "ok"
    return {"folder": folder, "spec": spec, "graph": graph, "result": result, "seconds": seconds}


def _standardized_truncation(result) -> list[tuple[Fraction | float, Fraction | float]]:
    sd = Fraction(result.sd)
    return [(lo if isinstance(lo, float) else lo / sd, hi if isinstance(hi, float) else hi / sd)
            for lo, hi in result.truncation.intervals]


def _peer(result, intervals_z, p_value, *, step_bounds=1e-3) -> dict:
    """A si4onnx-like result in standardized units over the range dalverify searched."""
    lo, hi = (v / result.sd for v in result.searched)
    return {
        "tool": "fake si4onnx", "scale": "standardized", "stat": result.t_obs / result.sd,
        "intervals": [[float(a), float(b)] for a, b in intervals_z], "searched_intervals": [[lo, hi]],
        "p_value": p_value, "two_sided": "equal-tailed", "search_count": result.network_pieces,
        "inf_p": p_value - step_bounds, "sup_p": p_value + step_bounds, "sd": result.sd,
    }


# ---------------------------------------------------------------------------
# Export.


def test_onnx_round_trip_matches_torch(case):
    reconstruction = sbs.build_reconstruction(SIZE, 0, base_width=2, steps=1)
    points = np.random.default_rng(11).normal(size=(3, 1, SIZE, SIZE)) * np.array([1.0, 3.0, 0.2])[:, None, None, None]
    with torch.no_grad():
        expected = np.stack([reconstruction(torch.from_numpy(p[None])).numpy()[0] for p in points])
    got = evaluate(case["graph"], points)
    atol = EVALUATOR_ATOL_SCALE * np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=EVALUATOR_RTOL, atol=atol)
    # The outputs move with the input: the check is not trivially passed by a constant map.
    assert np.abs(got[1] - got[2]).max() > 1e-3


def test_export_node_types_and_dtypes(case):
    model = onnx.load(str(case["folder"] / "model.onnx"))
    op_types = {node.op_type for node in model.graph.node}
    assert "Identity" not in op_types
    assert "Constant" not in op_types
    assert {"Conv", "ConvTranspose", "MaxPool", "Relu", "Concat", "Mul", "Add"} <= op_types
    float_types = {init.data_type for init in model.graph.initializer if init.data_type in (1, 10, 11, 16)}
    assert float_types == {TensorProto.DOUBLE}
    assert sbs.mul_order_violations(model) == []
    # The input scaling sqrt(abar_T') * x, then c1 * x_t and c2 * eps for the one DDIM step.
    assert sum(node.op_type == "Mul" for node in model.graph.node) == 3


def _two_consumer_model(mul_first: bool):
    relu = helper.make_node("Relu", ["x"], ["r"])
    mul = helper.make_node("Mul", ["x", "c"], ["m"])
    add = helper.make_node("Add", ["r", "m"], ["y"])
    nodes = [mul, relu, add] if mul_first else [relu, mul, add]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [1, 2])],
        initializer=[helper.make_tensor("c", TensorProto.DOUBLE, [], [2.0])],
    )
    return helper.make_model(graph)


def test_mul_order_finds_late_mul():
    assert sbs.mul_order_violations(_two_consumer_model(mul_first=False)) == [(1, 0)]
    assert sbs.mul_order_violations(_two_consumer_model(mul_first=True)) == []


# ---------------------------------------------------------------------------
# dalverify side.


def test_dalverify_pvalue_matches_mpmath(case):
    result = case["result"]
    summary = sbs.dalverify_summary(result, case["seconds"])
    expected = equal_tailed(Fraction(result.t_obs) / Fraction(result.sd), _standardized_truncation(result))
    assert float(summary["p_equal_tailed"]) == pytest.approx(expected, rel=1e-13)
    # The range is [-(10 + |z|), 10 + |z|] sd, as si4onnx's exhaustive search.
    lo, hi = summary["searched_sd"]
    assert hi == pytest.approx(10 + abs(summary["z_obs"]), rel=1e-12)
    assert lo == pytest.approx(-hi, rel=1e-12)
    assert summary["pieces_per_second"] == pytest.approx(result.network_pieces / case["seconds"])


def test_faithful_peer_agrees(case):
    result = case["result"]
    intervals = _standardized_truncation(result)
    p = equal_tailed(Fraction(result.t_obs) / Fraction(result.sd), intervals)
    out = sbs.compare_with_peer(_peer(result, intervals, p), result)
    assert out["verdict"] == "agree"
    assert out["truncation_agree"]
    assert out["pvalue_agree"]
    assert out["statistic_agree"]
    assert out["ours_within_their_bounds"]


def test_peer_missing_interval_flagged(case):
    result = case["result"]
    z_obs = result.t_obs / result.sd
    hole = (z_obs - 2.0, z_obs - 1.5)
    kept = []
    for lo, hi in _standardized_truncation(result):
        for a, b in ((lo, min(hi, Fraction(hole[0]))), (max(lo, Fraction(hole[1])), hi)):
            if a < b:
                kept.append((a, b))
    assert kept != _standardized_truncation(result), "the hole must overlap Z"
    p = equal_tailed(Fraction(result.t_obs) / Fraction(result.sd), kept)
    out = sbs.compare_with_peer(_peer(result, kept, p), result)
    kinds = {d["kind"] for d in out["diagnoses"] if d["severity"] == "error"}
    assert not out["truncation_agree"]
    assert "missing_interval" in kinds
    assert not out["pvalue_agree"]
    assert "pvalue_mismatch" in kinds
    assert out["p_exact_on_their_intervals"] is not None
    assert float(out["p_exact_on_their_intervals"]) == pytest.approx(p, rel=1e-12)


def test_peer_wrong_pvalue_flagged(case):
    result = case["result"]
    intervals = _standardized_truncation(result)
    p = equal_tailed(Fraction(result.t_obs) / Fraction(result.sd), intervals)
    out = sbs.compare_with_peer(_peer(result, intervals, min(1.0, 1.5 * p), step_bounds=1e-9), result)
    assert out["truncation_agree"]
    assert not out["pvalue_agree"]
    assert not out["ours_within_their_bounds"]


def _network_pieces_z(result):
    spans = {}
    for piece in result.partition.pieces:
        lo, hi, units = spans.get(piece.network_piece, (piece.lo, piece.hi, piece.end_units))
        spans[piece.network_piece] = (min(lo, piece.lo), max(hi, piece.hi),
                                      piece.end_units if piece.hi >= hi else units)
    return [(lo / result.sd, hi / result.sd, units) for _, (lo, hi, units) in sorted(spans.items())]


def test_search_coverage_counts_pieces(case):
    result = case["result"]
    pieces = _network_pieces_z(result)
    assert len(pieces) >= 3
    one_per_piece = [[(lo + hi) / 2, lo, hi] for lo, hi, _ in pieces]
    full = sbs.search_coverage(one_per_piece, result)
    assert (full["network_pieces"], full["searches"]) == (len(pieces), len(pieces))
    assert (full["unvisited_pieces"], full["spanning_searches"], full["breakpoints_inside_searches"]) == (0, 0, 0)

    # One search covering pieces 1 and 2 (and none inside piece 2) spans the breakpoint between them.
    merged = one_per_piece[:1] + [[pieces[1][0], pieces[1][0], pieces[2][1]]] + one_per_piece[3:]
    coarse = sbs.search_coverage(merged, result)
    assert coarse["searches"] == len(pieces) - 1
    assert (coarse["unvisited_pieces"], coarse["spanning_searches"], coarse["breakpoints_inside_searches"]) == (1, 1, 1)
    end_node = pieces[1][2][0][0]
    kind = "cut" if end_node < 0 else case["graph"].nodes[end_node].kind
    assert coarse["breakpoint_kinds_inside_searches"] == {kind: 1}


# ---------------------------------------------------------------------------
# Ratio and tables.


def test_speed_ratio():
    assert sbs.speed_ratio(6.0, 2.0) == 3.0
    assert sbs.speed_ratio(1.0, 4.0) == 0.25
    assert sbs.speed_ratio(None, 2.0) is None
    assert sbs.speed_ratio(1.0, 0.0) is None


def _record(seed, our_seconds, peer_seconds, truncation_agree, pvalue_agree):
    return {
        "size": 16, "seed": seed, "threshold": 0.8,
        "dalverify": {"status": "ok", "seconds": our_seconds, "region_size": 10, "z_obs": 1.5,
                      "network_pieces": 100, "pieces_per_second": 100 / our_seconds, "p_equal_tailed": "0.25"},
        "si4onnx": {"exhaustive": {
            "status": "ok", "seconds": peer_seconds, "search_count": 90, "searches_per_second": 90 / peer_seconds,
            "ratio": sbs.speed_ratio(peer_seconds, our_seconds), "p_value": 0.25,
            "comparison": {"truncation_agree": truncation_agree, "pvalue_agree": pvalue_agree,
                           "ours_within_their_bounds": True},
        }},
    }


def test_markdown_table_rows_medians():
    records = [_record(0, 2.0, 6.0, True, True), _record(1, 4.0, 4.0, False, False), _record(2, 9.0, 27.0, True, False)]
    table = sbs.markdown_table(records)
    assert "| 16 | 0 | 0.8 | 10 | 1.5 | dalverify | ok | 2 | 100 | 50 | 1 | - | - | - | 0.25 |" in table
    assert "| 16 | 0 | 0.8 | 10 | 1.5 | si4onnx exhaustive | ok | 6 | 90 | 15 | 3 | yes | yes | yes | 0.25 |" in table
    assert "| 16 | 1 | 0.8 | 10 | 1.5 | si4onnx exhaustive | ok | 4 | 90 | 22.5 | 1 | no | no | yes | 0.25 |" in table
    # Medians: dalverify 4 s and 25 pieces/s (100/4); si4onnx 6 s, 15 searches/s, ratio 3.
    assert "| 16 | dalverify | 3/3 | 4 | 100 | 25 | 1 | - | - |" in table
    assert "| 16 | si4onnx exhaustive | 3/3 | 6 | 90 | 15 | 3 | 2/3 | 1/3 |" in table


@given(st.lists(st.tuples(st.floats(0.1, 100), st.floats(0.1, 100), st.booleans(), st.booleans()),
                min_size=1, max_size=7))
def test_summary_counts_median_ratio(runs):
    records = [_record(seed, ours, theirs, z_ok, p_ok) for seed, (ours, theirs, z_ok, p_ok) in enumerate(runs)]
    row = [r for r in sbs.summary_rows(records) if r[1] == "si4onnx exhaustive"][0]
    ratios = sorted(theirs / ours for ours, theirs, _, _ in runs)
    middle = len(ratios) // 2
    median = ratios[middle] if len(ratios) % 2 else (ratios[middle - 1] + ratios[middle]) / 2
    assert row[6] == sbs._number(median)
    assert row[7] == f"{sum(z for _, _, z, _ in runs)}/{len(runs)}"
    assert row[8] == f"{sum(p for _, _, _, p in runs)}/{len(runs)}"


def test_main_skips_then_reuses_peer(tmp_path, capsys):
    out = tmp_path / "runs.jsonl"
    options = ["--sizes", str(SIZE), "--seeds", "0", "--base-width", "2", "--ddim-steps", "1",
               "--workdir", str(tmp_path / "cases"), "--out", str(out)]
    assert sbs.main(options + ["--si4onnx-python", str(tmp_path / "missing-python")]) == 0
    record = json.loads(out.read_text().splitlines()[0])
    assert record["si4onnx_skipped"].endswith("does not exist")
    assert record["si4onnx"] == {}
    assert record["dalverify"]["status"] == "ok"
    assert math.isfinite(record["dalverify"]["seconds"])
    assert record["dalverify"]["network_pieces"] > 0
    printed = capsys.readouterr()
    assert "| si4onnx | skipped |" in printed.out
    assert "si4onnx skipped" in printed.err

    # A stored si4onnx result for the same inputs is reused and compared by the dalverify process.
    folder = tmp_path / "cases" / f"n{SIZE}_s0"
    spec = json.loads((folder / "case.json").read_text())
    ours = record["dalverify"]
    sd = Fraction(ours["sd"])
    intervals_z = [(lo / sd, hi / sd) for lo, hi in IntervalUnion.from_json(ours["truncation"]).intervals]
    z_obs = Fraction(ours["t_obs"]) / sd
    p = equal_tailed(z_obs, intervals_z)
    for mode, seconds in (("exhaustive", 3.0), ("default", 0.5)):
        fake = {"status": "ok", "tool": "fake si4onnx", "mode": mode, "scale": "standardized", "stat": float(z_obs),
                "intervals": [[float(lo), float(hi)] for lo, hi in intervals_z], "p_value": p,
                "two_sided": "equal-tailed", "search_count": 7, "seconds": seconds,
                "inputs_sha256": spec["inputs_sha256"]}
        (folder / f"si4onnx_{mode}.json").write_text(json.dumps(fake))
    out.unlink()
    assert sbs.main(options + ["--si4onnx-python", sys.executable, "--reuse-si4onnx"]) == 0
    record = json.loads(out.read_text().splitlines()[0])
    exhaustive = record["si4onnx"]["exhaustive"]
    assert exhaustive["reused"] is True
    assert exhaustive["comparison"]["verdict"] == "agree"
    assert exhaustive["ratio"] == pytest.approx(3.0 / record["dalverify"]["seconds"])
    assert record["si4onnx"]["default"]["ratio"] == pytest.approx(0.5 / record["dalverify"]["seconds"])
