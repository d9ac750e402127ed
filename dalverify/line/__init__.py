"""Exact restriction of a piecewise-linear graph to a line (no torch import)."""

from dalverify.line.walk import CutSet, Partition, Piece, walk_line

__all__ = ["CutSet", "Partition", "Piece", "walk_line"]
