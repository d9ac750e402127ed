"""The sign rule that decides every piecewise-linear unit on a line.

A unit's pre-activation on the current piece is ``alpha + beta z``. Its
breakpoint is the float64 quotient ``root = -alpha / beta``, which is the
correctly rounded real root of the stored ``alpha`` and ``beta``. At a point
``z`` of the walk the unit is *active* (non-negative on ``[z, z + h)`` for
small ``h > 0``, the direction of travel being increasing ``z``) when

- ``beta > 0`` and ``root <= z``,
- ``beta < 0`` and ``root > z``, or
- ``beta == 0`` and ``alpha > 0`` (``alpha >= 0`` for max-pool comparisons,
  so that of two identical candidates the earlier one is kept).

The rule compares ``z`` with the stored root and never with a recomputed
``alpha + beta z``, so the pattern is a step function of ``z`` with jumps
exactly at the roots: on ``[z, next)`` with ``next`` the smallest root
``> z`` nothing changes. A unit exactly at zero at ``z`` therefore takes its
sign from the direction of travel, several units crossing at one ``z`` form
one breakpoint, and units with ``beta == 0`` never bind. The derivation is in
``proofs/direction_of_travel.md``.

The functions take an array namespace ``xp`` (``numpy`` or ``torch``), so
that both backends apply the identical rule.
"""

from __future__ import annotations

from typing import Any


def roots(xp: Any, alpha: Any, beta: Any) -> Any:
    """Float64 roots ``-alpha / beta`` (``inf``/``nan`` where ``beta == 0``)."""
    return -alpha / beta


def active(xp: Any, alpha: Any, beta: Any, root: Any, z: float, *, keep_ties: bool = False) -> Any:
    """Boolean mask of units that are non-negative on ``[z, next)``.

    ``keep_ties`` makes units with ``alpha == beta == 0`` active (max-pool
    comparisons keep the earlier candidate on an exact tie).
    """
    flat = (alpha >= 0) if keep_ties else (alpha > 0)
    return ((beta > 0) & (root <= z)) | ((beta < 0) & (root > z)) | ((beta == 0) & flat)


def next_candidates(xp: Any, beta: Any, root: Any, z: float) -> Any:
    """Roots strictly greater than ``z`` (``inf`` elsewhere): where units flip next."""
    return xp.where((beta != 0) & (root > z), root, float("inf"))


def previous_candidates(xp: Any, beta: Any, root: Any, z: float) -> Any:
    """Roots at or below ``z`` (``-inf`` elsewhere): where the current piece began."""
    return xp.where((beta != 0) & (root <= z), root, float("-inf"))
