"""Compare another tool's selective-inference result with dalverify's exact one.

The other tool's result ("theirs") is a JSON-compatible dict in the format
described in ``docs/crosscheck.md``: truncation intervals, the observed
statistic, the selective and naive p-values and the number of searches.
:func:`normalize_their` reads it (also under the field names that sicore and
si4onnx use, see :func:`from_sicore`), and :func:`compare` sets it beside a
:class:`~dalverify.methods.dal_test.TestResult` for the same model, images
and settings.

All comparisons are made in standardized units ``z = t / sd`` with exact
rational arithmetic. The report lists

- the observed statistic and the p-values of both tools, ours in both
  two-sided forms (symmetric ``P(|T| >= |t_obs|)`` and equal-tailed
  ``2 min(F, 1 - F)``), and ours recomputed exactly on *their* intervals;
- every interval of our truncation set ``Z`` that they miss and every
  interval they add, each classified: a piece narrower than their search
  step, a gap they merged, float64 endpoint rounding, or a plain
  difference;
- p-value diagnoses: which two-sided definition their value matches, tail
  precision loss (a value of 0, or an absolute error near 1e-16 from
  ``1 - cdf``), and plain mismatches.

A diagnosis has a severity: ``"error"`` (the results disagree), ``"warning"``
(a likely cause of a disagreement) or ``"info"``. The verdict is "agree"
when there is no error.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from mpmath import mp, mpf

from dalverify.errors import InputError
from dalverify.methods.pvalues import PValue, naive_pvalue, selective_pvalue
from dalverify.numerics.intervals import IntervalUnion, as_exact, endpoint_to_decimal
from dalverify.numerics.truncnorm import log_normal_mass
from dalverify.tolerances import CROSSCHECK_ENDPOINT_RTOL, CROSSCHECK_PVALUE_RTOL

logger = logging.getLogger(__name__)

#: Default search step of sicore's parametric search (``step=1e-6`` in
#: ``SelectiveInference.inference``, sicore 2.x): a piece narrower than this
#: can be stepped over.
SICORE_SEARCH_STEP = 1e-6

#: Absolute gap below which sicore's ``RealSubset`` joins two intervals
#: (``simplify(tol=1e-10)``, sicore 2.x).
SICORE_MERGE_GAP = 1e-10

#: Absolute difference between a p-value and its exact value below which the
#: difference is attributed to computing a tail as ``1 - cdf`` in float64.
#: A CDF value near 1 is rounded by about 1.1e-16, and 1e-12 allows for a few
#: further operations and for sums of interval masses.
TAIL_ABSOLUTE_ERROR = 1e-12

#: Format name and version of the input documented in docs/crosscheck.md.
FORMAT = "dalverify-crosscheck-input"
FORMAT_VERSION = 1

SEVERITIES = ("error", "warning", "info")
TWO_SIDED = ("symmetric", "equal-tailed")

_FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "intervals": ("intervals", "truncated_intervals", "truncation_intervals", "truncation"),
    "searched_intervals": ("searched_intervals", "searched"),
    "p_value": ("p_value", "pvalue", "selective_p_value", "selective_p"),
    "naive_p_value": ("naive_p_value", "naive_p", "naive p", "naive_pvalue", "naive p-value"),
    "search_count": ("search_count", "n_search", "searches"),
    "stat": ("stat", "t_obs", "statistic", "z_obs"),
    "two_sided": ("two_sided", "alternative"),
}

_SCALE_WORDS = {
    "statistic": "statistic", "t": "statistic", "unstandardized": "statistic", "raw": "statistic",
    "standardized": "standardized", "z": "standardized", "sd": "standardized", "auto": "auto",
}

_ALTERNATIVE_WORDS = {
    "symmetric": "symmetric", "abs": "symmetric",
    "equal-tailed": "equal-tailed", "equal_tailed": "equal-tailed", "two-sided": "equal-tailed",
}


# ---------------------------------------------------------------------------
# The other tool's result.


@dataclass(frozen=True)
class TheirResult:
    """Another tool's result after :func:`normalize_their`.

    ``intervals`` and ``searched`` are in the tool's own scale ``scale``
    (``"statistic"``, ``"standardized"`` or ``"auto"``: decided from
    ``stat`` by :func:`compare`). Missing optional fields are ``None``.
    """

    tool: str
    scale: str
    intervals: IntervalUnion
    p_value: float | None = None
    naive_p_value: float | None = None
    search_count: int | None = None
    stat: Fraction | None = None
    sd: Fraction | None = None
    two_sided: str | None = None
    search_step: float | None = None
    searched: IntervalUnion | None = None
    settings: dict[str, Any] = field(default_factory=dict)


def _pick(raw: dict[str, Any], name: str) -> Any:
    for key in _FIELD_ALIASES.get(name, (name,)):
        if key in raw and raw[key] is not None:
            return raw[key]
    return None


def _intervals(value: Any, name: str) -> IntervalUnion:
    if isinstance(value, IntervalUnion):
        return value
    if isinstance(value, dict):
        return IntervalUnion.from_json(value)
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise InputError(f"{name} must be a list of [lo, hi] pairs, got {type(value).__name__}")
    return IntervalUnion([tuple(pair) for pair in value])


def _probability(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if callable(value):  # some tools expose the naive p-value as a method
        value = value()
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} = {value!r} is not a number") from None
    if not 0.0 <= number <= 1.0:
        raise InputError(f"{name} = {value!r} is not a probability in [0, 1]")
    return number


def normalize_their(raw: dict[str, Any] | TheirResult, *, tool: str | None = None) -> TheirResult:
    """Read another tool's result from the documented JSON format or its aliases.

    Parameters
    ----------
    raw
        A dict with the fields of ``docs/crosscheck.md`` (``intervals``,
        ``scale``, ``stat``, ``p_value``, ``naive_p_value``,
        ``search_count``, ...). sicore's and si4onnx's names
        (``truncated_intervals``, ``naive_p``, ``alternative``) are accepted
        too. Interval ends may be numbers or exact strings (``"1/3"``,
        ``"inf"``).
    tool
        Name of the tool, overriding ``raw["tool"]``.

    Raises
    ------
    InputError
        If the intervals are missing or malformed, a p-value is not in
        ``[0, 1]``, or ``scale`` / ``two_sided`` has an unknown value.
    """
    if isinstance(raw, TheirResult):
        return raw
    if not isinstance(raw, dict):
        raise InputError(f"the other tool's result must be a JSON object (dict), got {type(raw).__name__}")
    if raw.get("format") not in (None, FORMAT):
        raise InputError(f"format {raw.get('format')!r} is not {FORMAT!r}")
    intervals = _pick(raw, "intervals")
    if intervals is None:
        raise InputError("the other tool's result has no truncation intervals (field 'intervals')")

    scale_word = str(raw.get("scale", raw.get("units", "auto"))).lower()
    if scale_word not in _SCALE_WORDS:
        raise InputError(f"scale = {raw.get('scale')!r} is unknown; use 'statistic' or 'standardized'")
    alternative = _pick(raw, "two_sided")
    if alternative is not None:
        if str(alternative).lower() not in _ALTERNATIVE_WORDS:
            raise InputError(
                f"two_sided = {alternative!r} is unknown; use 'symmetric' (sicore 'abs') or "
                "'equal-tailed' (sicore 'two-sided')"
            )
        alternative = _ALTERNATIVE_WORDS[str(alternative).lower()]

    stat = _pick(raw, "stat")
    sd = raw.get("sd", raw.get("sigma_t"))
    searched = _pick(raw, "searched_intervals")
    count = _pick(raw, "search_count")
    step = raw.get("search_step")
    settings = raw.get("settings") or {}
    if not isinstance(settings, dict):
        raise InputError("settings must be a JSON object")
    return TheirResult(
        tool=str(tool or raw.get("tool") or "other tool"),
        scale=_SCALE_WORDS[scale_word],
        intervals=_intervals(intervals, "intervals"),
        p_value=_probability(_pick(raw, "p_value"), "p_value"),
        naive_p_value=_probability(_pick(raw, "naive_p_value"), "naive_p_value"),
        search_count=None if count is None else int(count),
        stat=None if stat is None else _finite(stat, "stat"),
        sd=None if sd is None else _finite(sd, "sd"),
        two_sided=alternative,
        search_step=None if step is None else float(step),
        searched=None if searched is None else _intervals(searched, "searched_intervals"),
        settings=dict(settings),
    )


def _finite(value: Any, name: str) -> Fraction:
    exact = as_exact(value, name=name)
    if isinstance(exact, float):
        raise InputError(f"{name} must be finite, got {value!r}")
    return exact


def from_sicore(result: Any, *, scale: str = "standardized", tool: str = "sicore",
                search_step: float | None = SICORE_SEARCH_STEP) -> dict[str, Any]:
    """Convert a sicore or si4onnx result to the documented input format.

    Parameters
    ----------
    result
        A sicore ``SelectiveInferenceResult`` (or any object or dict with its
        fields ``stat``, ``p_value``, ``naive_p``, ``truncated_intervals``,
        ``searched_intervals``, ``search_count``). A ``naive_p_value``
        method, as si4onnx results have, is called.
    scale
        Units of ``stat`` and the intervals. sicore 2.x standardizes the
        statistic (``stat = eta^T x / sqrt(eta^T Sigma eta)``), so the
        default is ``"standardized"``; pass ``"statistic"`` for older
        versions that report ``eta^T x``.
    tool
        Name recorded in the output.
    search_step
        The search step the tool used (sicore's default 1e-6).

    Returns
    -------
    dict
        A JSON-compatible dict for :func:`normalize_their` and the
        ``dalverify crosscheck`` command.
    """
    if isinstance(result, dict):
        fields = dict(result)
    elif dataclasses.is_dataclass(result):
        fields = dataclasses.asdict(result)
    else:
        fields = {name: getattr(result, name) for name in dir(result) if not name.startswith("_")}
    naive = fields.get("naive_p_value")
    if naive is None:
        naive = fields.get("naive_p")
    if callable(naive):
        naive = naive()

    def as_list(value: Any) -> Any:
        if value is None:
            return None
        if hasattr(value, "tolist"):
            value = value.tolist()
        if hasattr(value, "intervals"):
            value = value.intervals.tolist()
        return [[_json_number(lo), _json_number(hi)] for lo, hi in value]

    out = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "tool": tool,
        "scale": scale,
        "stat": _json_number(fields.get("stat")),
        "intervals": as_list(fields.get("truncated_intervals", fields.get("intervals"))),
        "searched_intervals": as_list(fields.get("searched_intervals")),
        "p_value": None if fields.get("p_value") is None else float(fields["p_value"]),
        "naive_p_value": None if naive is None else float(naive),
        "search_count": None if fields.get("search_count") is None else int(fields["search_count"]),
        "search_step": search_step,
    }
    if fields.get("alternative") is not None:
        out["two_sided"] = fields["alternative"]
    return {key: value for key, value in out.items() if value is not None}


def _json_number(value: Any) -> Any:
    """Convert a number for JSON, writing infinities as the strings "inf" and "-inf"."""
    if value is None:
        return None
    number = float(value)
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return number


# ---------------------------------------------------------------------------
# The report.


@dataclass(frozen=True)
class Diagnosis:
    """One finding of a cross-check: a stable ``kind``, a severity and a message.

    ``details`` contains JSON-compatible numbers (interval ends in
    standardized units as decimal strings, widths, masses).
    """

    kind: str
    severity: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "severity": self.severity, "message": self.message, "details": self.details}


@dataclass
class CrosscheckReport:
    """The result of :func:`compare`.

    ``agree`` is True when no diagnosis has severity ``"error"``.
    ``pvalues`` maps names to :class:`~dalverify.methods.pvalues.PValue`
    (ours) or floats (theirs); ``intervals`` summarises both truncation
    sets in standardized units.
    """

    tool: str
    agree: bool
    z_obs: dict[str, Any]
    pvalues: dict[str, Any]
    intervals: dict[str, Any]
    search: dict[str, Any]
    diagnoses: list[Diagnosis]

    @property
    def verdict(self) -> str:
        return "agree" if self.agree else "disagree"

    def errors(self) -> list[Diagnosis]:
        return [d for d in self.diagnoses if d.severity == "error"]

    def kinds(self) -> list[str]:
        return [d.kind for d in self.diagnoses]

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible report; p-values are decimal strings with their log10."""

        def encode(value: Any) -> Any:
            if isinstance(value, PValue):
                return value.to_json()
            if isinstance(value, dict):
                return {k: encode(v) for k, v in value.items()}
            return value

        return {
            "tool": self.tool,
            "verdict": self.verdict,
            "z_obs": self.z_obs,
            "pvalues": encode(self.pvalues),
            "intervals": self.intervals,
            "search": self.search,
            "diagnoses": [d.to_dict() for d in self.diagnoses],
        }

    def summary(self) -> str:
        """Format a short human-readable summary."""
        counts = {s: sum(d.severity == s for d in self.diagnoses) for s in SEVERITIES}
        ours, theirs = self.pvalues["ours"], self.pvalues["theirs"]
        on_theirs = self.pvalues.get("exact_on_their_intervals") or {}
        lines = [
            f"crosscheck against {self.tool}: {self.verdict.upper()} "
            f"({counts['error']} error(s), {counts['warning']} warning(s))",
            f"  z_obs              ours {self.z_obs['ours']}   theirs {self.z_obs['theirs']}",
            f"  selective p        ours {ours['symmetric'].text} (symmetric), {ours['equal-tailed'].text} "
            f"(equal-tailed)   theirs {_text(theirs.get('selective'))}",
        ]
        if on_theirs:
            lines.append("  exact on their Z   " + ", ".join(f"{p.text} ({name})" for name, p in on_theirs.items()))
        lines.append(f"  naive p            ours {ours['naive'].text}   theirs {_text(theirs.get('naive'))}")
        lines.append(
            f"  intervals          ours {self.intervals['ours_count']}   theirs {self.intervals['theirs_count']}   "
            f"compared over [{self.intervals['common_range'][0]}, {self.intervals['common_range'][1]}] sd"
        )
        for diagnosis in self.diagnoses:
            lines.append(f"  - [{diagnosis.severity}] {diagnosis.kind}: {diagnosis.message}")
        return "\n".join(lines)


def _text(value: Any) -> str:
    return "-" if value is None else f"{value:.15g}"


# ---------------------------------------------------------------------------
# Comparison.


def _relative_difference(first: Any, second: Any) -> mpf:
    a = first.value if isinstance(first, PValue) else mpf(first)
    b = second.value if isinstance(second, PValue) else mpf(second)
    if a == b:
        return mpf(0)
    return abs(a - b) / max(abs(a), abs(b))


def _absolute_difference(first: Any, second: Any) -> mpf:
    a = first.value if isinstance(first, PValue) else mpf(first)
    b = second.value if isinstance(second, PValue) else mpf(second)
    return abs(a - b)


def _decimal(value: Any) -> str:
    return endpoint_to_decimal(value, 17)


def _end_scale(lo: Any, hi: Any) -> Fraction:
    finite = [abs(v) for v in (lo, hi) if not isinstance(v, float)]
    return max([Fraction(1)] + finite)


def _log10_mass(lo: Any, hi: Any, dps: int) -> str:
    with mp.workdps(dps):
        log_mass = log_normal_mass(lo, hi, dps)
        return "-inf" if mp.isinf(log_mass) else mp.nstr(log_mass / mp.ln(10), 6)


def _resolve_scale(their: TheirResult, t_obs: Fraction, z_obs: Fraction) -> str:
    if their.scale != "auto":
        return their.scale
    if their.stat is None:
        raise InputError(
            "the other tool's result gives neither 'scale' nor 'stat'; set scale to 'statistic' or 'standardized'"
        )
    distances = {
        "statistic": abs(their.stat - t_obs) / max(abs(t_obs), Fraction(1)),
        "standardized": abs(their.stat - z_obs) / max(abs(z_obs), Fraction(1)),
    }
    best = min(distances, key=distances.get)
    if distances[best] > CROSSCHECK_PVALUE_RTOL:
        raise InputError(
            f"the other tool's stat {float(their.stat)!r} matches neither t_obs = {float(t_obs)!r} nor "
            f"z_obs = {float(z_obs)!r}; set 'scale' explicitly"
        )
    return best


def compare(
    their: dict[str, Any] | TheirResult,
    result: Any,
    *,
    search_step: float | None = None,
    merge_gap: float = SICORE_MERGE_GAP,
    pvalue_rtol: float = CROSSCHECK_PVALUE_RTOL,
    endpoint_rtol: float = CROSSCHECK_ENDPOINT_RTOL,
    dps: int = 50,
) -> CrosscheckReport:
    """Compare another tool's result with a dalverify :class:`TestResult`.

    Parameters
    ----------
    their
        The other tool's result: a dict in the documented format (or with
        sicore's field names), or a :class:`TheirResult`.
    result
        A :class:`~dalverify.methods.dal_test.TestResult` with status
        ``"ok"`` for the same model, images and settings.
    search_step
        The other tool's search step in standardized units (default: the
        ``search_step`` field, else sicore's 1e-6). A piece we find that is
        narrower than this and missing from their set is reported as
        ``missing_narrow_interval``.
    merge_gap
        Absolute gap (standardized units) below which the other tool is
        assumed to join intervals (sicore: 1e-10).
    pvalue_rtol, endpoint_rtol
        Relative agreement of p-values, and the width below which an
        interval difference at an end of both sets counts as rounding.
    dps
        Decimal digits of our p-values.

    Returns
    -------
    CrosscheckReport

    Raises
    ------
    InputError
        If ``result`` has no p-value (no region), or ``their`` is malformed.
    """
    their = normalize_their(their)
    if getattr(result, "status", None) != "ok" or result.truncation is None:
        raise InputError("the dalverify result has no truncation set (status is not 'ok'); nothing to compare")
    step = search_step if search_step is not None else (their.search_step or SICORE_SEARCH_STEP)
    t_obs, sd = as_exact(result.t_obs), as_exact(result.sd)
    z_obs = t_obs / sd
    scale = _resolve_scale(their, t_obs, z_obs)
    to_standard = Fraction(1) if scale == "standardized" else 1 / sd
    diagnoses: list[Diagnosis] = []

    # 1. Both truncation sets and search ranges in standardized units.
    ours = result.truncation.scaled(1 / sd)
    theirs = their.intervals.scaled(to_standard)
    our_lo, our_hi = (result.searched if result.searched is not None else (-math.inf, math.inf))
    our_range = IntervalUnion([(our_lo, our_hi)]).scaled(1 / sd)
    their_stat = None if their.stat is None else their.stat * to_standard
    if their.searched is not None and not their.searched.is_empty:
        searched = their.searched.scaled(to_standard)
        their_range = IntervalUnion([(searched.intervals[0][0], searched.intervals[-1][1])])
    else:
        their_range = our_range
    common = our_range & their_range
    if common.is_empty:
        raise InputError("the two searched ranges do not overlap; nothing to compare")
    common_lo, common_hi = common.intervals[0][0], common.intervals[-1][1]
    if their_range != our_range:
        diagnoses.append(Diagnosis(
            "range_difference", "info",
            f"we searched [{_decimal(our_range.intervals[0][0])}, {_decimal(our_range.intervals[0][1])}] sd, they "
            f"searched [{_decimal(their_range.intervals[0][0])}, {_decimal(their_range.intervals[0][1])}] sd; "
            "intervals are compared on the common part",
            {"ours": [_decimal(v) for v in our_range.intervals[0]],
             "theirs": [_decimal(v) for v in their_range.intervals[0]]},
        ))

    # 2. The observed statistic.
    if their_stat is not None:
        difference = abs(their_stat - z_obs)
        if difference > endpoint_rtol * max(Fraction(1), abs(z_obs)):
            diagnoses.append(Diagnosis(
                "statistic_mismatch", "error",
                f"their statistic is z = {_decimal(their_stat)}, ours is {_decimal(z_obs)}; the two runs did not "
                "use the same images, region, covariance or scale",
                {"ours": _decimal(z_obs), "theirs": _decimal(their_stat)},
            ))
    if their.sd is not None and scale == "statistic" and their.sd != sd:
        if abs(their.sd - sd) > endpoint_rtol * sd:
            diagnoses.append(Diagnosis(
                "sd_mismatch", "error",
                f"their sd of T is {_decimal(their.sd)}, ours is {_decimal(sd)}: the covariance or region differs",
                {"ours": _decimal(sd), "theirs": _decimal(their.sd)},
            ))

    # 3. Intervals they miss or add.
    breakpoints = _our_breakpoints(result, ours, sd)
    diagnoses.extend(_interval_differences(ours & common, theirs & common, breakpoints, step, merge_gap,
                                           endpoint_rtol, dps))

    # 4. p-values.
    pvalues, p_diagnoses = _compare_pvalues(their, result, ours, theirs, z_obs, their_stat, pvalue_rtol, dps,
                                            intervals_differ=any(d.severity == "error" and "interval" in d.kind
                                                                 or d.kind == "merged_gap" for d in diagnoses))
    diagnoses.extend(p_diagnoses)

    # 5. Search counts against our pieces.
    search = _search_summary(their, result, common_lo, common_hi, sd)
    if their.search_count is not None and search["our_intervals_in_range"] is not None:
        if their.search_count < search["our_intervals_in_range"]:
            diagnoses.append(Diagnosis(
                "fewer_searches_than_pieces", "warning",
                f"they made {their.search_count} searches, but the compared range holds "
                f"{search['our_intervals_in_range']} intervals of constant pattern and region; each search "
                "resolves one of them, so some were never visited",
                {"their_search_count": their.search_count, "our_intervals": search["our_intervals_in_range"]},
            ))

    agree = not any(d.severity == "error" for d in diagnoses)
    report = CrosscheckReport(
        tool=their.tool,
        agree=agree,
        z_obs={"ours": _decimal(z_obs), "theirs": None if their_stat is None else _decimal(their_stat)},
        pvalues=pvalues,
        intervals={
            "units": "standardized (z = t / sd)",
            "ours_count": len(ours),
            "theirs_count": len(theirs),
            "common_range": [_decimal(common_lo), _decimal(common_hi)],
            "ours": [[_decimal(lo), _decimal(hi)] for lo, hi in ours],
            "ours_exact_statistic_units": result.truncation.to_json(),
            "theirs": [[_decimal(lo), _decimal(hi)] for lo, hi in theirs],
        },
        search=search,
        diagnoses=diagnoses,
    )
    logger.info("crosscheck against %s: %s (%d diagnoses)", their.tool, report.verdict, len(diagnoses))
    return report


def _our_breakpoints(result: Any, ours: IntervalUnion, sd: Fraction) -> set:
    """Standardized ends of our elementary intervals (or of Z's components without a partition)."""
    points = set()
    partition = getattr(result, "partition", None)
    if partition is not None:
        for piece in partition.pieces:
            for end in (piece.lo, piece.hi):
                exact = as_exact(end)
                points.add(exact if isinstance(exact, float) else exact / sd)
    for lo, hi in ours:
        points.update((lo, hi))
    return points


def _interval_differences(ours: IntervalUnion, theirs: IntervalUnion, breakpoints: set, step: float,
                          merge_gap: float, endpoint_rtol: float, dps: int) -> list[Diagnosis]:
    diagnoses = []
    our_ends = {end for pair in ours for end in pair}
    our_lower_ends = {lo for lo, _ in ours}
    our_upper_ends = {hi for _, hi in ours}
    their_ends = {end for pair in theirs for end in pair}
    rounding = []
    for kind_of_set, difference in (("missing", ours - theirs), ("extra", theirs - ours)):
        for lo, hi in difference:
            width = hi - lo
            finite = not isinstance(width, float)
            whole_pieces = lo in breakpoints and hi in breakpoints
            details = {"interval": [_decimal(lo), _decimal(hi)], "width": _decimal(width),
                       "log10_mass": _log10_mass(lo, hi, dps)}
            if (not whole_pieces and finite and width <= endpoint_rtol * _end_scale(lo, hi)
                    and (lo in our_ends or hi in our_ends) and (lo in their_ends or hi in their_ends)):
                rounding.append(details)
                continue
            if kind_of_set == "missing":
                if finite and width < Fraction(step):
                    diagnoses.append(Diagnosis(
                        "missing_narrow_interval", "error",
                        f"they miss [{details['interval'][0]}, {details['interval'][1]}] of width "
                        f"{_decimal(width)} sd, narrower than their search step {step:g}: a search that moves "
                        "by a fixed step steps over it",
                        details,
                    ))
                else:
                    diagnoses.append(Diagnosis(
                        "missing_interval", "error",
                        f"they miss [{details['interval'][0]}, {details['interval'][1]}] (width {_decimal(width)} sd), "
                        "where the region equals the observed one",
                        details,
                    ))
                continue
            between = lo in our_upper_ends and hi in our_lower_ends
            if between and finite and width <= Fraction(max(merge_gap, step)):
                diagnoses.append(Diagnosis(
                    "merged_gap", "error",
                    f"they join two intervals across the gap [{details['interval'][0]}, {details['interval'][1]}] "
                    f"of width {_decimal(width)} sd, where the region differs from the observed one (an absolute "
                    f"merge tolerance of {merge_gap:g} or a step of {step:g} hides it)",
                    details,
                ))
            else:
                diagnoses.append(Diagnosis(
                    "extra_interval", "error",
                    f"they include [{details['interval'][0]}, {details['interval'][1]}] (width {_decimal(width)} sd), "
                    "where the region differs from the observed one",
                    details,
                ))
    if rounding:
        widest = max(Fraction(d["width"]) for d in rounding)
        diagnoses.append(Diagnosis(
            "endpoint_rounding", "info",
            f"{len(rounding)} interval end(s) differ by at most {float(widest):.3g} sd, within float64 rounding",
            {"slivers": rounding},
        ))
    return diagnoses


def _compare_pvalues(their: TheirResult, result: Any, ours: IntervalUnion, theirs: IntervalUnion, z_obs: Fraction,
                     their_stat: Fraction | None, rtol: float, dps: int,
                     intervals_differ: bool) -> tuple[dict[str, Any], list[Diagnosis]]:
    diagnoses: list[Diagnosis] = []
    ours_by_definition = {
        name: selective_pvalue(z_obs, 1, ours, two_sided=name, dps=dps) for name in TWO_SIDED
    }
    our_naive = naive_pvalue(z_obs, 1, dps=dps)
    on_theirs: dict[str, PValue] = {}
    stat_for_theirs = their_stat if their_stat is not None else z_obs
    if not theirs.is_empty:
        try:
            on_theirs = {name: selective_pvalue(stat_for_theirs, 1, theirs, two_sided=name, dps=dps)
                         for name in TWO_SIDED}
        except InputError:
            diagnoses.append(Diagnosis(
                "statistic_outside_their_intervals", "error",
                f"the statistic z = {_decimal(stat_for_theirs)} lies outside their truncation set, so their "
                "selective p-value is not defined on it",
                {},
            ))
    pvalues: dict[str, Any] = {
        "ours": dict(ours_by_definition, naive=our_naive),
        "theirs": {"selective": their.p_value, "naive": their.naive_p_value},
        "exact_on_their_intervals": on_theirs,
    }

    ratio = _relative_difference(ours_by_definition["symmetric"], ours_by_definition["equal-tailed"])
    if their.p_value is not None:
        p = their.p_value
        close_ours = [name for name in TWO_SIDED if _relative_difference(p, ours_by_definition[name]) <= rtol]
        close_theirs = [name for name in TWO_SIDED if name in on_theirs
                        and _relative_difference(p, on_theirs[name]) <= rtol]
        matched = close_ours or close_theirs
        definition = their.two_sided or (matched[0] if matched else result.settings.get("two_sided", "symmetric"))
        if definition not in TWO_SIDED:
            definition = "symmetric"
        if ratio > rtol:
            matches = [name for name in TWO_SIDED if name in matched]
            diagnoses.append(Diagnosis(
                "pvalue_definition", "info",
                f"the symmetric and equal-tailed p-values differ here ({ours_by_definition['symmetric'].text} and "
                f"{ours_by_definition['equal-tailed'].text}); their value matches "
                + (" and ".join(matches) if matches else "neither"),
                {"matches": matches},
            ))
        if their.two_sided is not None and their.two_sided not in matched and matched:
            diagnoses.append(Diagnosis(
                "pvalue_definition_mismatch", "error",
                f"they declare the {their.two_sided} p-value, but their value {p:.15g} equals the "
                f"{matched[0]} one",
                {"declared": their.two_sided, "matches": matched[0]},
            ))
        reference = ours_by_definition[definition]
        if _relative_difference(p, reference) > rtol:
            diagnoses.append(_explain_pvalue(p, reference, on_theirs.get(definition), definition, intervals_differ))
    if their.naive_p_value is not None and _relative_difference(their.naive_p_value, our_naive) > rtol:
        if their.naive_p_value == 0.0 or _absolute_difference(their.naive_p_value, our_naive) <= TAIL_ABSOLUTE_ERROR:
            diagnoses.append(Diagnosis(
                "naive_tail_precision_loss", "error",
                f"their naive p-value {their.naive_p_value:.15g} differs from 2 Phi(-|z|) = {our_naive.text} by "
                "the rounding of a float64 CDF value near 1 (1 - cdf)",
                {"ours": our_naive.text, "theirs": their.naive_p_value},
            ))
        else:
            diagnoses.append(Diagnosis(
                "naive_mismatch", "error",
                f"their naive p-value {their.naive_p_value:.15g} differs from 2 Phi(-|z|) = {our_naive.text}",
                {"ours": our_naive.text, "theirs": their.naive_p_value},
            ))
    return pvalues, diagnoses


def _explain_pvalue(p: float, reference: PValue, exact_on_theirs: PValue | None, definition: str,
                    intervals_differ: bool) -> Diagnosis:
    details = {"theirs": p, "ours": reference.text, "definition": definition,
               "exact_on_their_intervals": None if exact_on_theirs is None else exact_on_theirs.text}
    target = exact_on_theirs if exact_on_theirs is not None else reference
    if (p == 0.0 and target.value > 0) or (
            _relative_difference(p, target) > CROSSCHECK_PVALUE_RTOL
            and _absolute_difference(p, target) <= TAIL_ABSOLUTE_ERROR):
        return Diagnosis(
            "tail_precision_loss", "error",
            f"their {definition} p-value {p:.15g} differs from the exact value {target.text} on their own intervals "
            "by about the rounding of a float64 CDF value near 1: a tail computed as 1 - cdf loses its digits",
            details,
        )
    if exact_on_theirs is not None and _relative_difference(p, exact_on_theirs) <= CROSSCHECK_PVALUE_RTOL:
        cause = "their value is right for their intervals, so the intervals cause the difference"
    elif intervals_differ:
        cause = "both their intervals and their arithmetic on them differ from ours"
    else:
        cause = "their intervals agree with ours, so their p-value arithmetic differs"
    return Diagnosis(
        "pvalue_mismatch", "error",
        f"their {definition} p-value {p:.15g} differs from ours {reference.text}; {cause}",
        details,
    )


def _search_summary(their: TheirResult, result: Any, common_lo: Any, common_hi: Any, sd: Fraction) -> dict[str, Any]:
    partition = getattr(result, "partition", None)
    in_range = None
    network = None
    if partition is not None:
        lo_t = common_lo if isinstance(common_lo, float) else common_lo * sd
        hi_t = common_hi if isinstance(common_hi, float) else common_hi * sd
        inside = [p for p in partition.pieces if as_exact(p.hi) > lo_t and as_exact(p.lo) < hi_t]
        in_range = len(inside)
        network = len({p.network_piece for p in inside})
    return {
        "their_search_count": their.search_count,
        "their_search_step": their.search_step,
        "our_intervals_in_range": in_range,
        "our_network_pieces_in_range": network,
    }


__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SICORE_MERGE_GAP",
    "SICORE_SEARCH_STEP",
    "CrosscheckReport",
    "Diagnosis",
    "TheirResult",
    "compare",
    "from_sicore",
    "normalize_their",
]
