"""Certificates of small DAL-Test runs: writing, schema, independent verification, CLI.

Reference values come from independent routes: the exact layer-major brute
force of ``tests/reference`` (Fractions), hashlib over the files' bytes,
``float.hex`` of the run's own floats, and a fresh interpreter in which
torch cannot be imported.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dalverify.certify.certificate import read_certificate, write_certificate
from dalverify.certify.verify import verify
from dalverify.errors import CertificateError
from dalverify.numerics.intervals import IntervalUnion, endpoint_from_text
from reference.certify_cases import brute_force_partition, conv_graph, exact_region, run_case

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_certificate(tmp_path_factory):
    """A 6x6 run certified exactly, with everything the verifier needs next to it."""
    result, graph, x, ref, covariance, _ = run_case(size=6, channels=2, seed=5)
    path = tmp_path_factory.mktemp("cert") / "run.json"
    certificate = write_certificate(path, result, x, ref, graph=graph, covariance=covariance, lp=True)
    return path, certificate, result, graph, x, ref, covariance


def test_certificate_verifies_as_certified(small_certificate):
    path, certificate, *_ = small_certificate
    assert certificate["outcome"] == "certified"
    assert certificate["certification"]["method"] == "exact"
    report = verify(path)
    assert report.outcome == "certified", report.reasons
    assert report.method == "exact"
    assert report.unresolved_width == 0.0
    # The verifier's enclosure and the producer's agree to 15 digits.
    for mine, theirs in zip(report.enclosure, certificate["certification"]["certified_enclosure"]):
        assert math.isclose(float(mine), float(theirs), rel_tol=1e-15)


def test_certified_ends_equal_exact_brute_force(small_certificate):
    """Each interval end is the exact layer-major breakpoint: equal to the recorded
    exact root, or (when none is recorded) rounding to the stored float end."""
    path, certificate, result, *_ = small_certificate
    _, params = conv_graph(6, 2, 5)
    lo, hi = result.searched
    expected = brute_force_partition(params, 6, result.line.a_image, result.line.b_image, 1.0, lo, hi)
    intervals = certificate["intervals"]
    assert len(expected) == len(intervals) + 1
    recorded = 0
    for record, exact in zip(intervals[:-1], expected[1:-1]):
        roots = record.get("end_roots")
        if roots:
            recorded += 1
            assert {endpoint_from_text(text) for text in roots} == {exact}
        else:
            assert float(exact) == float.fromhex(record["hi"])
    assert 0 < recorded < len(intervals) - 1  # both branches are exercised
    # Region flags against the exact region at each interval's midpoint.
    for record, left, right in zip(intervals, expected, expected[1:]):
        region = exact_region(params, 6, result.line.a_image, result.line.b_image, 1.0, (left + right) / 2)
        assert record["in_z"] == bool(np.array_equal(region, result.region))


def test_float_enclosure_contains_exact_enclosure(small_certificate):
    path, *_ = small_certificate
    exact = verify(path)
    approximate = verify(path, exact=False, lp=True)
    assert approximate.outcome in ("certified", "enclosure_only"), approximate.reasons
    assert approximate.method == "enclosure"
    assert float(approximate.enclosure[0]) <= float(exact.enclosure[0])
    assert float(approximate.enclosure[1]) >= float(exact.enclosure[1])
    assert approximate.unresolved_width < 1e-9
    assert approximate.counts["lp_solves"] > 0
    assert approximate.counts["lp_worst_relative_disagreement"] < 1e-7


def test_certificate_numbers_are_lossless(small_certificate):
    path, certificate, result, graph, x, ref, covariance = small_certificate
    stat = certificate["statistic"]
    assert float.fromhex(stat["t_obs"]) == result.t_obs
    assert float.fromhex(stat["sd"]) == result.sd
    for record, piece in zip(certificate["intervals"], result.partition.pieces):
        assert float.fromhex(record["lo"]) == piece.lo
        assert float.fromhex(record["hi"]) == piece.hi
        assert record["pattern"] == piece.pattern
        assert record["signs"] == piece.signs
        assert record["in_z"] == piece.label
    assert IntervalUnion.from_json(certificate["truncation"]) == result.truncation
    selective = certificate["pvalues"]["selective"]
    assert selective["value"] == result.pvalues["selective"].to_json()["value"]
    assert selective["enclosure"] is not None and "log10" in selective
    for name in ("dalverify", "numpy", "mpmath", "cvxpy", "highspy"):
        assert certificate["versions"][name]
    assert "binary64" in certificate["semantics"]
    assert certificate["certification"]["lp"]["statuses"] == {"optimal": certificate["certification"]["lp"]["solves"]}


def test_hashes_match_independent_digests(small_certificate):
    path, certificate, result, graph, x, ref, covariance = small_certificate
    base = path.parent
    hashes = certificate["hashes"]
    assert hashlib.sha256((base / certificate["files"]["sidecar"]).read_bytes()).hexdigest() == hashes["sidecar"]
    image_hash = hashlib.sha256(b"dalverify-image/1\n[1, 6, 6]\n" + np.asarray(x, "<f8").tobytes()).hexdigest()
    assert hashes["image"] == image_hash
    assert hashes["graph"] == graph.digest() == result.graph_digest
    assert hashes["covariance"] == covariance.digest()
    canonical = json.dumps(certificate["settings"], sort_keys=True, separators=(",", ":")).encode()
    assert hashes["settings"] == hashlib.sha256(canonical).hexdigest()
    with np.load(base / certificate["files"]["sidecar"]) as sidecar:
        assert np.array_equal(sidecar["a"], result.line.a)
        assert np.array_equal(sidecar["b"], result.line.b)


def test_write_is_atomic_and_readable(small_certificate):
    path, *_ = small_certificate
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert read_certificate(path)["format"] == "dalverify-certificate"
    with pytest.raises(CertificateError, match="not a 'dalverify-certificate'"):
        bad = path.parent / "other.json"
        bad.write_text(json.dumps({"format": "something"}))
        read_certificate(bad)


def test_verifier_runs_with_torch_blocked(small_certificate):
    path, *_ = small_certificate
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "from dalverify.certify.verify import verify\n"
        f"report = verify({str(path)!r})\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('dalverify.line', 'dalverify.methods', "
        "'dalverify.selection', 'dalverify.certify.piece_check', 'dalverify.certify.certificate')))\n"
        "print(report.outcome, loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "certified []"


def test_verify_module_imports_only_allowed_packages():
    tree = ast.parse((REPO / "dalverify" / "certify" / "verify.py").read_text())
    allowed_roots = {"contextlib", "hashlib", "itertools", "json", "logging", "math", "os", "sys", "time", "dataclasses", "fractions",
                     "pathlib", "typing", "numpy", "mpmath", "cvxpy", "threadpoolctl", "__future__"}
    allowed_internal = ("dalverify.graph", "dalverify.numerics", "dalverify.errors", "dalverify.tolerances")
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module]
        for name in names:
            if name.startswith("dalverify"):
                assert name.startswith(allowed_internal), name
            else:
                assert name.split(".")[0] in allowed_roots, name


def test_cli_exit_codes(small_certificate, tmp_path, capsys):
    from dalverify.cli import main

    path, *_ = small_certificate
    assert main(["verify", str(path)]) == 0
    assert "certified" in capsys.readouterr().out
    exit_code = main(["verify", str(path), "--enclosure", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert exit_code == (0 if report["outcome"] == "certified" else 6)
    assert report["outcome"] in ("certified", "enclosure_only")
    broken = tmp_path / "broken.json"
    data = json.loads(path.read_text())
    data["files"] = {k: (None if v is None else str(path.parent / v)) for k, v in data["files"].items()}
    data["settings"]["threshold"] = 2.0
    broken.write_text(json.dumps(data))
    assert main(["verify", str(broken), "--quiet"]) == 5


def test_certificate_without_graph_needs_graph_option(tmp_path):
    result, graph, x, ref, covariance, _ = run_case(size=6, channels=2, seed=5)
    # A result that does not carry its graph and covariance (for example one
    # rebuilt from JSON) records the run without certifying it.
    result.graph = None
    result.covariance = None
    path = tmp_path / "bare.json"
    certificate = write_certificate(path, result, x, ref)
    assert certificate["certification"]["method"] == "none"
    assert certificate["outcome"].startswith("unchecked")
    assert certificate["files"]["graph"] is None
    assert certificate["files"]["covariance"] is None
    report = verify(path)
    assert report.rejected
    assert report.field == "files.graph"
    covariance_file = tmp_path / "sigma.npz"
    covariance.save_npz(covariance_file)
    report = verify(path, graph=graph, covariance=covariance_file, exact=True)
    assert report.outcome == "certified", report.reasons


def test_masked_si4onnx_run_is_certified(tmp_path):
    mask = np.ones((6, 6), dtype=bool)
    mask[:, 0] = False
    result, graph, x, ref, covariance, mask = run_case(size=6, channels=2, seed=5, mask=mask, profile="si4onnx")
    assert result.settings["two_sided"] == "equal-tailed"
    path = tmp_path / "masked.json"
    certificate = write_certificate(path, result, x, ref, graph=graph, covariance=covariance, mask=mask, lp=False)
    assert certificate["hashes"]["mask"] is not None
    report = verify(path)
    assert report.outcome == "certified", report.reasons
    # The mask is part of the evidence: another mask is rejected by its hash.
    other = mask.copy()
    other[1, 1] = False
    assert verify(path, mask=other).field == "mask"


def test_run_without_pvalue_has_no_certificate(tmp_path):
    result, graph, x, ref, covariance, _ = run_case(size=6, channels=2, seed=5)
    result.status = "no_region"
    with pytest.raises(CertificateError, match="no anomalous region"):
        write_certificate(tmp_path / "none.json", result, x, ref, graph=graph)


def test_graph_path_is_recorded_and_checked(tmp_path):
    from dalverify.graph.io import save_graph

    result, graph, x, ref, covariance, _ = run_case(size=6, channels=2, seed=5)
    graph_file = tmp_path / "models" / "reconstruction.dalg"
    graph_file.parent.mkdir()
    save_graph(graph, graph_file)
    path = tmp_path / "out" / "run.json"
    certificate = write_certificate(path, result, x, ref, graph_path=graph_file, covariance=covariance, lp=False)
    assert certificate["files"]["graph"] == "../models/reconstruction.dalg"
    assert not (path.parent / "run.dalg").exists()
    assert verify(path).outcome == "certified"
    other, _ = conv_graph(6, 2, seed=6)
    save_graph(other, graph_file)
    with pytest.raises(CertificateError, match="not the run's graph"):
        write_certificate(tmp_path / "again.json", result, x, ref, graph_path=graph_file)
