"""The anomaly region and the selection event along a line (no torch dependency)."""

from dalverify.selection.event import (
    LambdaCuts,
    interval_lemma,
    intersect_pairs,
    residual_line,
    sign_interval,
    truncation_from_lemma,
)
from dalverify.selection.region import (
    FILTER_PROFILES,
    average_filter,
    check_mask,
    check_threshold,
    residual_scores,
    select_region,
)

__all__ = [
    "FILTER_PROFILES",
    "LambdaCuts",
    "average_filter",
    "check_mask",
    "check_threshold",
    "interval_lemma",
    "intersect_pairs",
    "residual_line",
    "residual_scores",
    "select_region",
    "sign_interval",
    "truncation_from_lemma",
]
