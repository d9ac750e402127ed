"""The sign rule that decides every piecewise-linear unit on a line.

A unit's pre-activation on the current piece is ``alpha + beta z``. Its
breakpoint is the float64 quotient ``root = -alpha / (beta + 0.0)``, which is
the correctly rounded real root of the stored ``alpha`` and ``beta`` (adding
``+0.0`` turns a slope of ``-0.0`` into ``+0.0``). At a point ``z`` of the
walk the unit is *active* (non-negative on ``[z, z + h)`` for small
``h > 0``, the direction of travel being increasing ``z``) when

- ``beta > 0`` and ``root <= z``,
- ``beta < 0`` and ``root > z``, or
- ``beta == 0`` and ``alpha >= 0`` (the root is then ``-inf`` for
  ``alpha > 0`` and NaN for ``alpha == 0``; a unit that is identically zero
  on the piece counts as active, which does not change any output, and of
  two identical max-pool candidates keeps the earlier one).

In one expression: ``active = not (root > z)  xor  (beta < 0)``.

The rule compares ``z`` with the stored root and never with a recomputed
``alpha + beta z``, so the pattern is a step function of ``z`` with jumps
exactly at the roots: on ``[z, next)`` with ``next`` the smallest root
``> z`` nothing changes. A unit exactly at zero at ``z`` therefore takes its
sign from the direction of travel, several units crossing at one ``z`` form
one breakpoint, and units with ``beta == 0`` never bind (their root is
``+-inf`` or NaN). The derivation is in ``proofs/direction_of_travel.md``.

The functions take an array namespace ``xp`` (``numpy`` or ``torch``), so
that both backends apply the identical rule.
"""

from __future__ import annotations

from typing import Any


def roots(xp: Any, alpha: Any, beta: Any) -> Any:
    """Float64 roots ``-alpha / (beta + 0.0)`` (``+-inf`` or NaN where ``beta == 0``)."""
    return -alpha / (beta + 0.0)


def active(xp: Any, alpha: Any, beta: Any, root: Any, z: float) -> Any:
    """Boolean mask of units that are non-negative on ``[z, next)``."""
    return ~(root > z) ^ (beta < 0)


def next_candidates(xp: Any, root: Any, z: float) -> Any:
    """Roots strictly greater than ``z`` (``inf`` elsewhere): where units flip next.

    A unit with ``beta == 0`` has root ``+-inf`` or NaN and never yields a
    finite candidate.
    """
    return xp.where(root > z, root, float("inf"))


def previous_candidates(xp: Any, root: Any, z: float) -> Any:
    """Finite roots at or below ``z`` (``-inf`` elsewhere): where the current piece began."""
    return xp.where(root <= z, root, float("-inf"))


def decide(xp: Any, alpha: Any, beta: Any, z: float) -> tuple[Any, Any, Any]:
    """Return ``(root, active, upcoming)`` of units in one pass over the arrays.

    Equal to :func:`roots`, :func:`active` and :func:`next_candidates`, with the
    comparison ``root > z`` computed once.
    """
    root = -alpha / (beta + 0.0)
    beyond = root > z
    return root, ~beyond ^ (beta < 0), xp.where(beyond, root, float("inf"))
