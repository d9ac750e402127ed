"""Summaries of sweep results: rejection rates with Wilson intervals, a Markdown table and figures.

The rejection rate of a method in a cell is the fraction of the images
*with a p-value for that method* (status ``"ok"``; for the permutation
p-value, the subset on which it was computed) whose p-value is at most
``alpha``: the type I error in ``type1`` and ``robustness`` cells, the power
in ``power`` cells; in ``brain`` cells, the type I error on normal slices
(``lesion_contrast = 0``) and the power on slices with a synthetic lesion.
Images where the threshold selected no pixel have no hypothesis; they are
counted (``no_region``) and shown, never dropped silently. Failed images are
counted as ``errors``. The intensity-threshold baseline of brain cells has
its own region, so an image may have a baseline p-value and no DAL-Test
region (or the reverse); each method's rate counts the images with a
p-value for that method.

Brain cells with a lesion also report the mean Dice coefficient
``2 |R & L| / (|R| + |L|)`` of the detected region ``R`` and the lesion mask
``L`` over all their images (an image with no region counts as 0), for the
DAL-Test and for the baseline; so do ``elpv`` cells with a synthetic
defect. ``elpv`` cells on real defective cells report an image-level
detection rate (no pixel mask, no Dice).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from dalverify.errors import InputError

logger = logging.getLogger(__name__)

#: Two-sided 95% standard normal quantile, Phi^{-1}(0.975), to 17 digits.
Z_95 = 1.959963984540054

METHOD_LABELS = {
    "selective": "selective",
    "overconditioned": "over-conditioned",
    "naive": "naive",
    "bonferroni": "Bonferroni",
    "permutation": "permutation",
    "baseline_selective": "threshold baseline, selective",
    "baseline_naive": "threshold baseline, naive",
}


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion.

    The interval is the set of ``p`` with ``(k/n - p)^2 <= z^2 p (1 - p) / n``:
    ``(k + z^2/2 -+ z sqrt(k (n - k)/n + z^2/4)) / (n + z^2)``
    (Wilson, 1927). Returns ``(nan, nan)`` for ``trials = 0``.
    """
    if trials < 0 or successes < 0 or successes > trials:
        raise InputError(f"need 0 <= successes <= trials; got {successes} of {trials}")
    if trials == 0:
        return math.nan, math.nan
    k, n, z2 = float(successes), float(trials), z * z
    centre = k + z2 / 2.0
    half = z * math.sqrt(k * (n - k) / n + z2 / 4.0)
    lo = max(0.0, (centre - half) / (n + z2))
    hi = min(1.0, (centre + half) / (n + z2))
    if successes == 0:
        lo = 0.0
    if successes == trials:
        hi = 1.0
    return lo, hi


def _results_path(item: str | os.PathLike) -> Path:
    path = Path(item)
    if path.is_dir():
        path = path / "results.jsonl"
    if not path.is_file():
        raise InputError(f"{str(item)!r} is neither a results.jsonl file nor a folder holding one")
    return path


def summarize_cell(item: str | os.PathLike, alpha: float | None = None) -> dict[str, Any]:
    """Counts, rejection rates and Wilson intervals of one cell."""
    from dalverify.experiments.runner import read_results

    path = _results_path(item)
    config_path = path.parent / "config.json"
    config = json.loads(config_path.read_text()) if config_path.is_file() else {}
    level = float(alpha if alpha is not None else config.get("alpha", 0.05))
    records = read_results(path)
    seen: dict[int, dict[str, Any]] = {}
    for record in records:
        seen.setdefault(int(record["index"]), record)
    records = list(seen.values())
    status = [r.get("status") for r in records]
    methods = config.get("methods") or sorted({m for r in records for m in r.get("pvalues", {})})
    rates = {}
    for method in methods:
        values = [r["pvalues"][method] for r in records
                  if r.get("status") != "error" and method in (r.get("pvalues") or {})]
        rejected = sum(1 for p in values if p <= level)
        lo, hi = wilson_interval(rejected, len(values))
        rates[method] = {"rejected": rejected, "tested": len(values),
                         "rate": rejected / len(values) if values else math.nan, "wilson95": [lo, hi]}
    seconds = [r.get("seconds", 0.0) for r in records]
    lesion = (config.get("kind") == "brain" and config.get("lesion_contrast", 0) != 0) or (
        config.get("kind") == "elpv" and config.get("defect") == "synthetic")
    dice = {}
    if lesion:
        usable = [r for r in records if r.get("status") != "error"]
        for key, field in (("dal", "dice"), ("baseline", "baseline_dice")):
            if any(field in r for r in usable) or key == "dal":
                values = [float(r.get(field, 0.0)) for r in usable]
                dice[key] = sum(values) / len(values) if values else math.nan
    return {
        "cell": config.get("name", path.parent.name),
        "path": str(path),
        "kind": config.get("kind"),
        "side": config.get("side"),
        "n": None if config.get("side") is None else config["side"] ** 2,
        "covariance": config.get("covariance"),
        "rho": config.get("rho") if config.get("covariance") == "ar1" else None,
        "delta": config.get("delta") if config.get("kind") == "power" else None,
        "family": config.get("family") if config.get("kind") == "robustness" else None,
        "distance": config.get("distance") if config.get("kind") == "robustness" else None,
        "lesion_contrast": config.get("lesion_contrast") if config.get("kind") == "brain" else None,
        "defect": config.get("defect") if config.get("kind") == "elpv" else None,
        "defect_shape": config.get("defect_shape") if config.get("defect") == "synthetic" else None,
        "defect_contrast": config.get("defect_contrast") if config.get("kind") == "elpv" else None,
        "mean_dice": dice or None,
        "alpha": level,
        "images_planned": config.get("images"),
        "images": len(records),
        "ok": status.count("ok"),
        "no_region": status.count("no_region"),
        "errors": status.count("error"),
        "mean_seconds": sum(seconds) / len(seconds) if seconds else math.nan,
        "methods": rates,
    }


def _cell_label(s: dict[str, Any]) -> str:
    if s["kind"] == "power":
        return f"Delta={s['delta']:g}"
    if s["kind"] == "robustness":
        return f"{s['family']}, d={s['distance']:g}"
    if s["kind"] == "brain":
        contrast = s.get("lesion_contrast") or 0
        return "normal slices" if contrast == 0 else f"synthetic lesion, {contrast:+g} sd"
    if s["kind"] == "elpv":
        if s.get("defect") == "synthetic":
            return f"synthetic {s['defect_shape']}, {s['defect_contrast']:+g} sd"
        return "real defective cells" if s.get("defect") == "real" else "test normals"
    return "-"


def _sigma_label(s: dict[str, Any]) -> str:
    if s["covariance"] == "identity":
        return "I"
    if s["covariance"] == "diagonal":
        return "diagonal"
    return f"AR(1) rho={s['rho']:g}"


def markdown_table(summaries: list[dict[str, Any]]) -> str:
    """Format one row per cell: counts and each method's rate with its Wilson 95% interval."""
    methods = [m for m in METHOD_LABELS if any(m in s["methods"] for s in summaries)]
    header = ["cell", "kind", "n", "Sigma", "setting", "images", "tested", "no region", "errors"]
    header += [f"{METHOD_LABELS[m]} [95% CI]" for m in methods]
    with_dice = any(s.get("mean_dice") for s in summaries)
    if with_dice:
        header.append("mean Dice (DAL-Test; baseline)")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in summaries:
        row = [s["cell"], s["kind"], str(s["n"]), _sigma_label(s), _cell_label(s), str(s["images"]), str(s["ok"]),
               str(s["no_region"]), str(s["errors"])]
        for m in methods:
            r = s["methods"].get(m)
            if r is None or not r["tested"]:
                row.append("-")
            else:
                lo, hi = r["wilson95"]
                row.append(f"{r['rate']:.3f} [{lo:.3f}, {hi:.3f}] ({r['rejected']}/{r['tested']})")
        if with_dice:
            dice = s.get("mean_dice") or {}
            row.append("; ".join(f"{dice[k]:.3f}" if k in dice else "-" for k in ("dal", "baseline"))
                       if dice else "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def _plot(summaries: list[dict[str, Any]], x_key: str, x_label: str, y_label: str, title: str, path: Path,
          alpha_line: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=120)
    methods = [m for m in METHOD_LABELS if any(m in s["methods"] for s in summaries)]
    for offset, method in enumerate(methods):
        points = sorted((s[x_key], s["methods"][method]) for s in summaries if method in s["methods"]
                        and s["methods"][method]["tested"])
        if not points:
            continue
        xs = [p[0] for p in points]
        ys = [p[1]["rate"] for p in points]
        lo = [p[1]["rate"] - p[1]["wilson95"][0] for p in points]
        hi = [p[1]["wilson95"][1] - p[1]["rate"] for p in points]
        spread = (max(xs) - min(xs)) or 1.0
        shifted = [x + (offset - len(methods) / 2) * 0.012 * spread for x in xs]
        ax.errorbar(shifted, ys, yerr=[lo, hi], marker="o", capsize=3, label=METHOD_LABELS[method])
    if alpha_line is not None:
        ax.axhline(alpha_line, color="grey", linestyle="--", linewidth=1, label=f"alpha = {alpha_line:g}")
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def write_report(results: list[str | os.PathLike], out_dir: str | os.PathLike,
                 alpha: float | None = None) -> list[Path]:
    """Write ``summary.json``, ``table.md`` and one PNG per figure group into ``out_dir``.

    Figures: type I error against ``n`` (one per covariance), power against
    ``Delta`` (one per ``n`` and covariance), type I error against ``d`` (one
    per family), each with Wilson 95% intervals as error bars.
    """
    from dalverify.graph.io import atomic_write_bytes

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summaries = [summarize_cell(item, alpha) for item in results]
    written = []
    summary_path = out / "summary.json"
    atomic_write_bytes(summary_path, (json.dumps(summaries, indent=2, sort_keys=True) + "\n").encode())
    table_path = out / "table.md"
    atomic_write_bytes(table_path, markdown_table(summaries).encode())
    written += [summary_path, table_path]

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for s in summaries:
        if s["kind"] == "type1":
            key = ("type1", _sigma_label(s))
        elif s["kind"] == "power":
            key = ("power", s["n"], _sigma_label(s))
        elif s["kind"] == "brain":
            key = ("brain", s["n"])
        elif s["kind"] == "elpv":
            # One figure per defect shape, rates against the contrast. Test
            # normals join each figure at contrast 0 below; real defective
            # cells have no contrast and appear in the table only.
            if s.get("defect") != "synthetic":
                continue
            key = ("elpv", s["n"], s["defect_shape"])
        else:
            key = ("robustness", s["family"], s["n"], _sigma_label(s))
        groups.setdefault(key, []).append(s)
    for s in summaries:
        if s["kind"] == "elpv" and s.get("defect") == "none":
            for key, cells in groups.items():
                if key[:2] == ("elpv", s["n"]):
                    cells.append(s)
    for key, cells in groups.items():
        level = cells[0]["alpha"]
        slug = "_".join(str(k).replace(" ", "").replace("=", "").replace("(", "").replace(")", "") for k in key)
        path = out / f"{slug}.png"
        if key[0] == "type1":
            _plot(cells, "n", "n (pixels)", "type I error", f"Type I error, Sigma = {key[1]}", path, level)
        elif key[0] == "brain":
            _plot(cells, "lesion_contrast", "synthetic lesion contrast (sd; 0 = normal slices)",
                  "rejection rate", f"Brain T1 slices, n = {key[1]}", path, level)
        elif key[0] == "elpv":
            _plot(cells, "defect_contrast", f"synthetic {key[2]} contrast (sd; 0 = test normals)",
                  "rejection rate", f"ELPV mono cells, n = {key[1]}", path, level)
        elif key[0] == "power":
            _plot(cells, "delta", "Delta", "power", f"Power, n = {key[1]}, Sigma = {key[2]}", path, None)
        else:
            _plot(cells, "distance", "Wasserstein distance d", "type I error",
                  f"Robustness ({key[1]}), n = {key[2]}, Sigma = {key[3]}", path, level)
        written.append(path)
    logger.info("wrote %d report files to %s", len(written), out)
    return written
