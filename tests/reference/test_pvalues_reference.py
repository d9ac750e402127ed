"""p-values against the committed reference table (quadrature at 120+ digits).

The table is written by ``make_pvalue_table.py`` beside this file, which
shares no code with dalverify. Every value is compared through ``log10 p``
to an absolute 1e-13 / ln 10, that is about 1e-13 relative in ``p``, also for
values far below the float64 range.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mpmath import mp, mpf

from dalverify.methods.pvalues import (
    bonferroni_pvalue,
    naive_pvalue,
    selective_pvalue,
    selective_pvalue_enclosure,
)

TABLE = json.loads(Path(__file__).with_name("pvalue_table.json").read_text())
CASES = TABLE["cases"]
RELATIVE = mpf("1e-13")


def read_end(text, end_type):
    """Pass float-typed ends as Python floats and the others as strings."""
    if end_type == "float":
        return float.fromhex(text) if text not in ("inf", "-inf") else float(text)
    return text


def read_pairs(case, key):
    pairs = TABLE["unions"][case[key + "_ref"]] if key + "_ref" in case else case[key]
    return [(read_end(lo, case["end_type"]), read_end(hi, case["end_type"])) for lo, hi in pairs]


def assert_matches(pvalue, expected, case_id):
    if expected["value"] == "0":
        assert pvalue.value == 0, case_id
        return
    assert pvalue.value > 0, case_id
    with mp.workdps(60 + len(expected["log10"])):
        reference = mpf(expected["log10"])
        error = abs(pvalue.log10 - reference) * mp.ln10
    assert error < RELATIVE, f"{case_id}: log10 {mp.nstr(pvalue.log10, 25)} vs reference {expected['log10'][:40]}"
    # The 15-digit text agrees with the reference to its own rounding.
    with mp.workdps(60 + len(expected["log10"])):
        text_error = abs(mp.log10(mpf(pvalue.text)) - reference) * mp.ln10
    assert text_error < mpf("1e-14"), f"{case_id}: text {pvalue.text}"


def by_kind(kind):
    return [pytest.param(case, id=case["id"]) for case in CASES if case["kind"] == kind]


def test_table_covers_every_regime():
    ids = {case["id"] for case in CASES}
    for needed in ("ratio0.1", "ratio2", "ratio40", "ratio1000", "ratio1e200", "underflow", "many-center",
                   "many-tail", "narrow", "rational", "decimal", "at-lowest-end", "enclosure"):
        assert any(needed in case_id for case_id in ids), needed
    sizes = [len(read_pairs(case, "intervals")) for case in CASES if case["kind"] == "selective"]
    assert max(sizes) >= 2000
    tiny = [case for case in CASES if case["expected"].get("log10", "0").startswith("-") and
            "e" not in case["expected"]["log10"] and float(case["expected"]["log10"]) < -308]
    assert tiny, "the table needs a p-value below 1e-308"


@pytest.mark.parametrize("case", by_kind("selective"))
def test_selective_matches_reference(case):
    t_obs = read_end(case["t_obs"], case["end_type"])
    sd = read_end(case["sd"], case["end_type"])
    pvalue = selective_pvalue(t_obs, sd, read_pairs(case, "intervals"), two_sided=case["two_sided"])
    assert_matches(pvalue, case["expected"], case["id"])


@pytest.mark.parametrize("case", by_kind("enclosure"))
def test_enclosure_matches_brute_force(case):
    low, high = selective_pvalue_enclosure(
        case["t_obs"], case["sd"], read_pairs(case, "intervals"), read_pairs(case, "unexplored"),
        two_sided=case["two_sided"],
    )
    assert_matches(low, case["expected"]["lo"], case["id"] + " lo")
    assert_matches(high, case["expected"]["hi"], case["id"] + " hi")


@pytest.mark.parametrize("case", by_kind("naive"))
def test_naive_matches_reference(case):
    assert_matches(naive_pvalue(case["t_obs"], case["sd"]), case["expected"], case["id"])


@pytest.mark.parametrize("case", by_kind("bonferroni"))
def test_bonferroni_matches_reference(case):
    pvalue = bonferroni_pvalue(case["t_obs"], case["sd"], case["m"])
    assert_matches(pvalue, case["expected"], case["id"])
