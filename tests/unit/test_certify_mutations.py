"""Every single edit of a certificate, its sidecar or the files it names is rejected,
with a message that names the edited field.

Edits that a careless or malicious editor could make consistently (for
example moving an interval end together with the next interval's start and
the stored truncation set) are made consistently, so that the check that
catches them is the semantic one and not a neighbouring structural one.
"""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from dalverify.certify.certificate import settings_sha256, write_certificate
from dalverify.certify.piece_check import float_pass, interior_point, pattern_digest
from dalverify.certify.verify import _Verifier, verify
from dalverify.errors import CertificateError, TamperedError
from dalverify.numerics.intervals import IntervalUnion
from dalverify.tolerances import LINE_RECOMPUTE_RTOL
from reference.certify_cases import run_case


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    result, graph, x, ref, covariance, _ = run_case(size=6, channels=2, seed=5)
    path = tmp_path_factory.mktemp("original") / "c.json"
    write_certificate(path, result, x, ref, graph=graph, covariance=covariance, lp=False)
    assert verify(path).outcome == "certified"
    return path, result, graph


@pytest.fixture
def copy(original, tmp_path):
    source = original[0]
    for item in source.parent.iterdir():
        shutil.copy(item, tmp_path / item.name)
    return tmp_path / source.name


def edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def restore_truncation(data) -> None:
    pairs = [(float.fromhex(r["lo"]) if "0x" in r["lo"] else float(r["lo"]),
              float.fromhex(r["hi"]) if "0x" in r["hi"] else float(r["hi"])) for r in data["intervals"] if r["in_z"]]
    data["truncation"] = IntervalUnion(pairs).to_json()


def rejected(path: Path, field: str, **kwargs) -> str:
    report = verify(path, **kwargs)
    assert report.rejected, report.outcome
    assert report.field == field, report.outcome
    assert field in report.outcome
    return report.outcome


def first_interval(data, condition) -> int:
    return next(k for k, record in enumerate(data["intervals"][:-1]) if condition(record))


def test_flipped_pattern_bit_is_rejected(copy, original):
    _, result, graph = original
    data = json.loads(copy.read_text())
    k = 1
    piece = result.partition.pieces[k]
    z = interior_point(piece.lo, piece.hi)
    bits = float_pass(graph, result.line.a_image, result.line.b_image, z=z).bits
    assert pattern_digest(bits) == piece.pattern
    # Flip the unit farthest from zero at z, so that no rounding can explain it.
    groups = float_pass(graph, result.line.a_image, result.line.b_image, z=z).groups
    node, index = max(((g.key, int(i)) for g in groups for i in range(g.alpha.size)),
                      key=lambda u: abs(next(g for g in groups if g.key == u[0]).alpha[u[1]]))
    bits[node] = bits[node].copy()
    bits[node][index] = ~bits[node][index]
    data["intervals"][k]["pattern"] = pattern_digest(bits)
    copy.write_text(json.dumps(data))
    rejected(copy, f"intervals[{k}].pattern")


def test_end_moved_by_one_ulp_is_rejected(copy):
    data = json.loads(copy.read_text())
    k = first_interval(data, lambda r: r["end_units"] and "end_roots" not in r)

    def move(d):
        hi = math.nextafter(float.fromhex(d["intervals"][k]["hi"]), math.inf).hex()
        d["intervals"][k]["hi"] = d["intervals"][k + 1]["lo"] = hi
        restore_truncation(d)

    edit(copy, move)
    outcome = rejected(copy, f"intervals[{k}].hi")
    assert "correctly rounded root" in outcome


def test_changed_exact_root_is_rejected(copy):
    data = json.loads(copy.read_text())
    k = first_interval(data, lambda r: "end_roots" in r)

    def change(d):
        p, q = d["intervals"][k]["end_roots"][0].split("/") if "/" in d["intervals"][k]["end_roots"][0] else (None, None)
        d["intervals"][k]["end_roots"][0] = f"{int(p) + 1}/{q}" if p else "1/3"

    edit(copy, change)
    rejected(copy, f"intervals[{k}].end_roots")


def test_dropped_interval_is_rejected(copy):
    edit(copy, lambda d: d["intervals"].pop(3))
    assert "gap" in rejected(copy, "intervals[3].lo")


def test_duplicated_interval_is_rejected(copy):
    edit(copy, lambda d: d["intervals"].insert(3, dict(d["intervals"][3])))
    assert "overlap" in rejected(copy, "intervals[4].lo")


def test_flipped_region_flag_is_rejected(copy):
    data = json.loads(copy.read_text())
    k = next(i for i, r in enumerate(data["intervals"]) if not r["in_z"])

    def flip(d):
        d["intervals"][k]["in_z"] = True
        restore_truncation(d)

    edit(copy, flip)
    with_pvalue = verify(copy)
    assert with_pvalue.rejected
    # The p-value of the edited truncation set no longer matches the stored string,
    # or (if the mass moved is negligible) the interval's own check names it.
    assert with_pvalue.field in ("pvalues.selective.value", "pvalues.selective.enclosure.lo",
                                 "pvalues.selective.enclosure.hi", f"intervals[{k}].in_z")


def test_changed_named_unit_is_rejected(copy):
    data = json.loads(copy.read_text())
    k = first_interval(data, lambda r: r["end_units"] and r["end_units"][0][0] >= 0)

    def change(d):
        node, index = d["intervals"][k]["end_units"][0]
        d["intervals"][k]["end_units"][0] = [node, (index + 1) % 72]

    edit(copy, change)
    report = verify(copy)
    assert report.rejected
    assert report.field in (f"intervals[{k}].hi", f"intervals[{k}].end_units",
                                                f"intervals[{k}].end_roots"), report.outcome


@pytest.mark.parametrize("where", ["value", "enclosure"])
def test_changed_pvalue_digit_is_rejected(copy, where):
    def change(d):
        selective = d["pvalues"]["selective"]
        if where == "value":
            text = selective["value"]
            selective["value"] = text[:4] + str((int(text[4]) + 1) % 10) + text[5:]
        else:
            text = selective["enclosure"][0]
            selective["enclosure"][0] = text[:3] + str((int(text[3]) + 1) % 10) + text[4:]

    edit(copy, change)
    rejected(copy, "pvalues.selective.value" if where == "value" else "pvalues.selective.enclosure.lo")


def test_changed_naive_and_log10_are_rejected(copy, tmp_path):
    edit(copy, lambda d: d["pvalues"]["naive"].update(value="0.5"))
    rejected(copy, "pvalues.naive.value")


def test_changed_weight_byte_is_rejected(copy):
    graph_file = copy.parent / "c.dalg"
    with np.load(graph_file) as archive:
        arrays = {name: archive[name] for name in archive.files}
    name = next(n for n in arrays if n.endswith(".weight"))
    raw = bytearray(arrays[name].tobytes())
    raw[5] ^= 0x01
    arrays[name] = np.frombuffer(bytes(raw), dtype=arrays[name].dtype).reshape(arrays[name].shape)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    graph_file.write_bytes(buffer.getvalue())
    assert "altered" in rejected(copy, "graph")


def test_changed_pixel_is_rejected(copy):
    with np.load(copy.parent / "c.npz") as sidecar:
        image = sidecar["image"].copy()
    image[0, 2, 3] += 2.0**-40
    assert verify(copy, image=image).field == "image"
    # The same change made in the sidecar file breaks the sidecar's hash.
    with np.load(copy.parent / "c.npz") as sidecar:
        arrays = {name: sidecar[name] for name in sidecar.files}
    arrays["image"] = image
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (copy.parent / "c.npz").write_bytes(buffer.getvalue())
    rejected(copy, "sidecar")


def test_changed_threshold_is_rejected(copy):
    edit(copy, lambda d: d["settings"].update(threshold=1.05))
    rejected(copy, "settings")
    # With the settings hash recomputed, the observed region no longer matches.
    edit(copy, lambda d: d["hashes"].update(settings=settings_sha256(d["settings"])))
    report = verify(copy)
    assert report.rejected
    assert report.field in ("statistic.region", "intervals[0].in_z"), report.outcome


def test_changed_covariance_is_rejected(copy):
    covariance_file = copy.parent / "c.covariance.npz"
    with np.load(covariance_file) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["param_rho"] = np.array(0.31)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    covariance_file.write_bytes(buffer.getvalue())
    assert isinstance(verify(copy).error, TamperedError)
    rejected(copy, "covariance")


def test_changed_statistic_is_rejected(copy):
    edit(copy, lambda d: d["statistic"].update(t_obs=math.nextafter(float.fromhex(d["statistic"]["t_obs"]), 0).hex()))
    rejected(copy, "statistic.t_obs")


def test_changed_range_end_is_rejected(copy):
    edit(copy, lambda d: d["search"].update(hi=(2 * float.fromhex(d["search"]["hi"])).hex()))
    report = verify(copy)
    assert report.rejected
    assert report.field.startswith("intervals[")
    assert report.field.endswith(".hi")


def test_garbage_is_rejected_not_raised(copy):
    edit(copy, lambda d: d["intervals"][2].update(lo="not-a-number"))
    rejected(copy, "intervals[2].lo")
    copy.write_text("{")
    rejected(copy, "certificate")


def _line_case(copy, relative: float):
    """Move one entry of b by ``relative`` times LINE_RECOMPUTE_RTOL * scale * (|Sigma| 1_M)_i,
    keeping a = d - b t_obs, and re-hash the sidecar."""
    data = json.loads(copy.read_text())
    sidecar = copy.parent / "c.npz"
    with np.load(sidecar) as archive:
        arrays = {name: archive[name].copy() for name in archive.files}
    region = arrays["region"].ravel()
    size = int(region.sum())
    n = region.size
    rho = 0.3
    lag = np.abs(np.subtract.outer(np.arange(n), np.arange(n)))
    absolute = (np.abs(rho) ** lag) @ region.astype(float)  # |Sigma| 1_M for sigma = 1
    q = float(region @ ((rho**lag) @ region.astype(float)))
    scale = size / (2.0 * q)
    i = int(np.argmax(region))
    arrays["b"][i] += relative * LINE_RECOMPUTE_RTOL * scale * absolute[i]
    t_obs = float.fromhex(data["statistic"]["t_obs"])
    images = np.concatenate([arrays["image"].transpose(1, 2, 0).ravel(), arrays["reference"].transpose(1, 2, 0).ravel()])
    arrays["a"] = images - arrays["b"] * t_obs
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    sidecar.write_bytes(buffer.getvalue())
    data["hashes"]["sidecar"] = __import__("hashlib").sha256(buffer.getvalue()).hexdigest()
    copy.write_text(json.dumps(data))
    checker = _Verifier(copy, None, None, None, None, None, None, False, 60)
    checker.read()
    return checker


def test_line_direction_tolerance_edge(original, tmp_path):
    # With rho > 0, |Sigma| 1_M = Sigma 1_M and the bound is twice this unit.
    for relative in (1.5, 2.5):
        folder = tmp_path / str(relative)
        folder.mkdir()
        for item in original[0].parent.iterdir():
            shutil.copy(item, folder / item.name)
        checker = _line_case(folder / original[0].name, relative)
        if relative < 2:
            checker.statistic()  # inside the bound: accepted
        else:
            with pytest.raises(CertificateError, match="line.b"):
                checker.statistic()
