"""Exact interval unions and extended-precision normal masses.

This package imports neither torch nor numpy: interval ends are exact
rationals and every probability is computed with mpmath.
"""

from dalverify.numerics.intervals import IntervalUnion, as_exact
from dalverify.numerics.truncnorm import (
    log1mexp,
    log_normal_mass,
    log_tail,
    log_union_mass,
    logsumexp,
)

__all__ = [
    "IntervalUnion",
    "as_exact",
    "log1mexp",
    "log_normal_mass",
    "log_tail",
    "log_union_mass",
    "logsumexp",
]
