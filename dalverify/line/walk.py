"""Exact restriction of a piecewise-linear graph to a line ``x(z) = a + b z``.

The walk starts at the low end of the range and moves to increasing ``z``.
At each point it propagates the line through the graph with the pattern
fixed by :mod:`dalverify.line.rule`, which yields the network piece
``[z, next)`` and the output ``out_alpha + out_beta z`` on it. Optional cut
functions of the output (the selection event's ``+-lambda`` crossings) split
the network piece further into elementary intervals, each with constant cut
signs. The next network piece starts exactly at ``next``: no small step is
ever added, so no piece can be skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from dalverify.errors import InputError
from dalverify.graph.ir import Graph
from dalverify.line import rule
from dalverify.threads import single_blas_thread

logger = logging.getLogger(__name__)

#: Marker used in ``Piece.end_units`` for a cut function (instead of a node id).
CUT_NODE = -1


class CutSet(Protocol):
    """Affine cut functions of the graph output that split network pieces.

    ``functions`` maps the output line of a network piece to the cut
    functions ``(alpha_c, beta_c)`` (flat float64 arrays); the walk cuts the
    piece where any of them changes sign. ``label`` maps the boolean sign
    vector on an elementary interval (True where the function is positive
    there) to the value stored as ``Piece.label``.
    """

    def functions(self, out_alpha: np.ndarray, out_beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def label(self, signs: np.ndarray) -> Any: ...


@dataclass(frozen=True)
class Piece:
    """An elementary interval ``[lo, hi]`` of the line.

    Attributes
    ----------
    lo, hi
        Ends, float64; ``lo < hi``; ``-inf``/``inf`` for unbounded pieces.
    pattern
        sha256 digest of the network's activation pattern on the interval.
    end_units
        Units whose root is ``hi``: ``(node_id, index)`` for network units
        and ``(-1, index)`` for cut functions. Empty when ``hi`` is the end of
        the searched range.
    signs
        sha256 digest of the cut-function signs (``""`` without cuts).
    label
        The cut set's label of the interval (for the DAL-Test: whether the
        region equals the observed one); ``None`` without cuts.
    network_piece
        Index of the network piece that contains the interval.
    """

    lo: float
    hi: float
    pattern: str
    end_units: tuple[tuple[int, int], ...]
    signs: str = ""
    label: Any = None
    network_piece: int = 0


@dataclass
class Partition:
    """The pieces of a walk over ``[lo, hi]`` and its counters."""

    lo: float
    hi: float
    pieces: list[Piece]
    network_pieces: int
    seconds: float
    backend: str
    outputs: list[tuple[float, float, np.ndarray, np.ndarray]] = field(default_factory=list)

    def ends(self) -> np.ndarray:
        """Breakpoints including both range ends, as float64."""
        return np.array([self.pieces[0].lo] + [piece.hi for piece in self.pieces])

    def check_tiling(self) -> None:
        """Raise ``AssertionError`` unless the pieces tile ``[lo, hi]`` exactly."""
        assert self.pieces, "no pieces"
        assert self.pieces[0].lo == self.lo, (self.pieces[0].lo, self.lo)
        assert self.pieces[-1].hi == self.hi, (self.pieces[-1].hi, self.hi)
        for left, right in zip(self.pieces, self.pieces[1:]):
            assert left.hi == right.lo, f"gap or overlap between {left} and {right}"
        for piece in self.pieces:
            assert piece.lo < piece.hi, f"piece {piece} has zero width"

    def piece_at(self, z: float) -> Piece:
        """Return the piece whose half-open span ``[lo, hi)`` contains ``z``."""
        index = int(np.searchsorted(self.ends(), z, side="right")) - 1
        index = min(max(index, 0), len(self.pieces) - 1)
        return self.pieces[index]


def _cut_signs(alpha: np.ndarray, beta: np.ndarray, root: np.ndarray, z: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return rule.active(np, alpha, beta, root, z)


def _digest_bits(bits: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(bits).tobytes()).hexdigest()


def make_backend(graph: Graph, a: np.ndarray, b: np.ndarray, backend: str | Any = "auto"):
    """Create the walk backend: ``"numpy"``, ``"torch"``, ``"auto"`` (torch
    when importable) or an object with a ``line_pass(z)`` method."""
    if not isinstance(backend, str):
        return backend
    if backend in ("auto", "torch"):
        try:
            from dalverify.accel.torch_backend import TorchLineBackend
        except ImportError:
            if backend == "torch":
                raise
        else:
            return TorchLineBackend(graph, a, b)
    if backend in ("auto", "numpy"):
        from dalverify.line.numpy_backend import NumpyLineBackend

        return NumpyLineBackend(graph, a, b)
    raise InputError(f"unknown backend {backend!r}; use 'auto', 'numpy' or 'torch'")


def walk_line(
    graph: Graph,
    a: np.ndarray,
    b: np.ndarray,
    lo: float = -math.inf,
    hi: float = math.inf,
    *,
    cuts: CutSet | None = None,
    backend: str | Any = "auto",
    record_outputs: bool = False,
    max_pieces: int | None = None,
    progress: bool | None = None,
) -> Partition:
    """Partition ``[lo, hi]`` into the linear pieces of ``graph`` along ``a + b z``.

    Parameters
    ----------
    graph
        The piecewise-linear map.
    a, b
        Line intercept and direction, each of the graph's input shape.
    lo, hi
        Range to partition; either end may be infinite (``lo < hi``).
    cuts
        Optional :class:`CutSet` whose sign changes also cut the pieces.
    backend
        ``"layer"`` (the layer-major sweep of
        :mod:`dalverify.line.layer_major`: numpy arithmetic, the same
        partition as ``"numpy"``, several times faster), ``"numpy"`` or
        ``"torch"`` (one pass per piece), a backend object, or ``"auto"``
        (the default: ``"layer"``).
    record_outputs
        Keep ``(lo, hi, out_alpha, out_beta)`` of every network piece.
    max_pieces
        Stop with ``InputError`` after this many network pieces.
    progress
        Show a tqdm bar on stderr (default: when stderr is a terminal).

    Returns
    -------
    Partition
        Pieces that tile ``[lo, hi]`` with no gap, no overlap and no zero
        width; consecutive pieces share their end exactly.
    """
    lo, hi = float(lo), float(hi)
    if math.isnan(lo) or math.isnan(hi) or not lo < hi:
        raise InputError(f"range [{lo}, {hi}] is empty or NaN; pass lo < hi")
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    for name, value in (("a", a), ("b", b)):
        if value.size != int(np.prod(graph.input_shape)):
            raise InputError(f"line {name} has {value.size} entries; the graph input has shape {graph.input_shape}")
        if not np.all(np.isfinite(value)):
            raise InputError(f"line {name} contains NaN or infinite values")
    if isinstance(backend, str) and backend in ("layer", "auto"):
        from dalverify.line.layer_major import walk_layer_major

        return walk_layer_major(graph, a, b, lo, hi, cuts=cuts, record_outputs=record_outputs,
                                max_pieces=max_pieces, progress=progress)
    engine = make_backend(graph, a.reshape(graph.input_shape), b.reshape(graph.input_shape), backend)

    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(desc="line walk", unit="piece", file=sys.stderr, leave=False)

    started = time.perf_counter()
    pieces: list[Piece] = []
    outputs: list[tuple[float, float, np.ndarray, np.ndarray]] = []
    z = lo
    network_index = 0
    # The numpy engine multiplies small matrices: one BLAS thread is faster.
    blas = single_blas_thread() if getattr(engine, "name", "") == "numpy" else contextlib.nullcontext()
    try:
        with blas:
            while True:
                step = engine.line_pass(z)
                piece_hi = min(step.next_break, hi)
                final = step.next_break >= hi
                network_units = () if final else step.binding
                if record_outputs:
                    outputs.append((z, piece_hi, np.array(step.out_alpha), np.array(step.out_beta)))
                if cuts is None:
                    pieces.append(Piece(z, piece_hi, step.pattern, network_units, "", None, network_index))
                else:
                    pieces.extend(_split_by_cuts(cuts, step, z, piece_hi, network_units, network_index))
                network_index += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(z=f"{piece_hi:.4g}", refresh=False)
                if max_pieces is not None and network_index >= max_pieces and not final:
                    raise InputError(
                        f"the walk reached max_pieces={max_pieces} network pieces at z={piece_hi!r} before "
                        f"the end of the range {hi!r}; raise max_pieces or narrow the range"
                    )
                if final:
                    break
                z = piece_hi
    finally:
        if bar is not None:
            bar.close()

    seconds = time.perf_counter() - started
    logger.info("walked %d network pieces (%d intervals) over [%g, %g] in %.2f s with %s",
                network_index, len(pieces), lo, hi, seconds, getattr(engine, "name", "custom"))
    return Partition(lo, hi, pieces, network_index, seconds, getattr(engine, "name", "custom"), outputs)


def _split_by_cuts(cuts: CutSet, step, lo: float, hi: float, network_units, network_index: int) -> list[Piece]:
    """Split the network piece ``[lo, hi]`` where a cut function changes sign."""
    cut_alpha, cut_beta = cuts.functions(step.out_alpha, step.out_beta)
    cut_alpha = np.asarray(cut_alpha, dtype=np.float64).ravel()
    cut_beta = np.asarray(cut_beta, dtype=np.float64).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        cut_root = rule.roots(np, cut_alpha, cut_beta)
        inside = (cut_root > lo) & (cut_root < hi)
    breaks = np.unique(cut_root[inside])

    pieces = []
    starts = [lo] + [float(x) + 0.0 for x in breaks]
    ends = starts[1:] + [hi]
    for start, end in zip(starts, ends):
        signs = _cut_signs(cut_alpha, cut_beta, cut_root, start)
        if end == hi:
            at_end = np.flatnonzero(cut_root == hi) if network_units else np.array([], int)
            units = tuple(network_units) + tuple((CUT_NODE, int(i)) for i in at_end)
        else:
            units = tuple((CUT_NODE, int(i)) for i in np.flatnonzero(cut_root == end))
        pieces.append(Piece(start, end, step.pattern, units, _digest_bits(signs), cuts.label(signs), network_index))
    return pieces
