"""Layer-major walk: all pieces of a range in one sweep over the graph.

The piece-by-piece walk (:func:`dalverify.line.walk.walk_line` with the numpy
backend) evaluates the whole graph once per piece, two rows at a time. This
engine instead keeps a sorted list of *segments* of the range and sweeps the
graph once, node by node:

- a linear node is applied to the ``(alpha, beta)`` rows of every current
  segment in one batched call;
- a piecewise node computes every unit's root ``-alpha / (beta + 0.0)`` on
  every segment, splits each segment at the roots that lie strictly inside
  it, and decides the units on each new segment at its start with the sign
  rule of :mod:`dalverify.line.rule`.

After the last node every segment is a network piece. Each value on a
segment is computed with the same float64 operations as the numpy walk
computes it at the segment's start, because the numpy reference evaluator
treats every batch element independently. The sign rule is a step function
of ``z`` with jumps only at the stored roots. So the result is the numpy
walk's partition bit for bit: the same ends, pattern digests and binding
units (``proofs/direction_of_travel.md``, Claim 5).

With the ``"fast"`` kernels and numba present, the piecewise steps and the
concatenations run as compiled loops (:mod:`dalverify.accel.fused_step`)
that perform the numpy code's operations, so the result is the same bit for
bit; the numpy steps remain the reference and the fallback.

Memory is bounded by ``max_segments``. When a split would create more
segments than that, the segments beyond the limit are dropped, and the sweep
goes on with the range shortened to the first dropped start. That start is a
root, so a breakpoint of the walk, and the next sweep starts there. The
early layers of the dropped part are computed again by the next sweep.

To waste little of that work, every sweep after the first covers a
shortened range: the length the previous sweep covered, scaled to end
with :data:`SWEEP_FILL` of ``max_segments``. The end of a shortened range
is not a breakpoint, so the sweep keeps all its segments but the last,
and the next sweep starts at the last one's start, which is a breakpoint.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sys
import time

import numpy as np

from dalverify.accel.direct_conv import available as numba_available
from dalverify.accel import fma_conv
from dalverify.accel.direct_conv import conv2d_fast, conv_for, default_kernels
from dalverify.accel.heap import reuse_freed_memory
from dalverify.accel.fused_step import (apply_pairs, apply_pointwise, apply_pool_stage, conv_transpose2d_fused,
                                        gather_into, pointwise_compiled, scan_pairs, scan_pool_stage, scan_roots)
from dalverify.errors import InputError
from dalverify.graph.ir import Graph, Node
from dalverify.graph.reference import apply_linear, last_uses, pool_windows
from dalverify.line.walk import CutSet, Partition, Piece, _split_by_cuts
from dalverify.threads import single_blas_thread

logger = logging.getLogger(__name__)

#: Rows (two per segment) per call of the reference evaluator on small
#: layers. Must be even.
ROW_CHUNK = 16

#: Layers whose inputs and output take more than this many bytes per row
#: get half as many rows per call, so that a call's arrays stay in the
#: per-core cache. Measured on a 2-core x86_64 machine (1 MiB L2 per core):
#: 8 rows per call made the 64 x 64 sweep 1.2x faster than 16 and left
#: 16 x 16 and 32 x 32 within 4 %.
LARGE_ROW_BYTES = 128 * 1024

#: Fraction of ``max_segments`` that a sweep after the first aims to end
#: with. Its range is the previous sweep's covered length scaled to this
#: fill, so that it rarely hits the limit: a sweep that does computes the
#: early layers of every dropped segment for nothing. Measured on the 32 x 32
#: U-Net of ``benchmarks/walk_speed.py`` over 4 sd, limit-bound sweeps
#: applied each convolution to 57 segments per piece against 41 over 1 sd.
SWEEP_FILL = 0.8

#: Default memory budget of one sweep, in bytes, for the values of all
#: segments kept alive at once.
DEFAULT_MEMORY = 1 << 30

_PIECEWISE = ("relu", "leaky_relu", "abs", "max_pool2d")

#: Linear kinds that act on each element alone (no cache blocking needed).
_ELEMENTWISE = ("scale_shift", "add_const", "mul_const", "add", "sub")


class _Step:
    """Output of one network piece, shaped like a walk step for the cut split."""

    __slots__ = ("out_alpha", "out_beta", "pattern")

    def __init__(self, out_alpha: np.ndarray, out_beta: np.ndarray, pattern: str) -> None:
        self.out_alpha = out_alpha
        self.out_beta = out_beta
        self.pattern = pattern


class _Sweep:
    """Segments of one sweep and the values of the graph on each of them.

    ``starts`` is strictly increasing; segment ``j`` is
    ``[starts[j], starts[j + 1])``, the last one ends at ``end``. Every value
    is an array ``(n_segments, 2, *shape)`` holding ``alpha`` and ``beta``.
    """

    def __init__(self, lo: float, hi: float, max_segments: int) -> None:
        self.starts = np.array([lo], dtype=np.float64)
        self.end = hi
        self.max_segments = max_segments
        self.hashers = [hashlib.sha256()]
        self.binding: list[list[tuple[int, int]]] = [[]]
        # A value is stored at the generation (number of splits so far) at
        # which it was computed, with one row pair per segment of that
        # generation. maps[g][j] is the generation-g segment that contains
        # segment j of generation g + 1.
        self.values: dict[int, tuple[np.ndarray, int]] = {}
        self.maps: list[np.ndarray] = []
        self._to_current: dict[int, np.ndarray] = {}

    @property
    def generation(self) -> int:
        return len(self.maps)

    def index(self, generation: int, target: int | None = None) -> np.ndarray:
        """Return the rows of a generation-``generation`` value for each segment of ``target`` (default: now)."""
        target = self.generation if target is None else target
        if target == self.generation and generation in self._to_current:
            return self._to_current[generation]
        index = np.arange(self.count(target))
        for g in range(target - 1, generation - 1, -1):
            index = self.maps[g][index]
        if target == self.generation:
            self._to_current[generation] = index
        return index

    def count(self, generation: int) -> int:
        """Return the number of segments of generation ``generation``."""
        if generation == self.generation:
            return int(self.starts.size)
        # maps[g] contains one parent per segment of generation g + 1.
        return int(self.maps[generation - 1].size) if generation > 0 else 1

    def get(self, node_id: int, target: int | None = None) -> np.ndarray:
        """Return the value of ``node_id`` with one row pair per segment of generation ``target``."""
        value, generation = self.values[node_id]
        target = self.generation if target is None else target
        if generation == target:
            return value
        return value[self.index(generation, target)]

    @property
    def ends(self) -> np.ndarray:
        return np.append(self.starts[1:], self.end)

    def split(self, root: np.ndarray, extra: list[np.ndarray]) -> tuple[np.ndarray | None, list[np.ndarray]]:
        """Split every segment at the roots (``root`` is ``(n, units)``) strictly inside it.

        Returns the parent index of each new segment (None when nothing
        splits) and the arrays of ``extra`` indexed by it. ``values``,
        ``hashers`` and ``binding`` are updated in place.
        """
        with np.errstate(invalid="ignore"):
            inside = (root > self.starts[:, None]) & (root < self.ends[:, None])
        segment, unit = np.nonzero(inside)
        if segment.size == 0:
            return None, extra
        parent = self.split_at(segment, root[segment, unit])
        return parent, [array[parent] for array in extra]

    def split_at(self, segment: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Split segment ``segment[k]`` at ``points[k]`` (strictly inside it) for every ``k``.

        ``segment`` must be non-decreasing (the row-major order of
        ``np.nonzero``). Returns the parent index of each new segment and
        updates ``starts``, ``end``, ``hashers``, ``binding`` and the
        generation maps.
        """
        n = self.starts.size

        # New starts: each old start followed by the distinct roots inside it.
        all_segments = np.concatenate([np.arange(n), segment])
        all_starts = np.concatenate([self.starts, points + 0.0])
        order = np.lexsort((all_starts, all_segments))
        all_segments, all_starts = all_segments[order], all_starts[order]
        keep = np.ones(all_starts.size, dtype=bool)
        keep[1:] = (all_segments[1:] != all_segments[:-1]) | (all_starts[1:] != all_starts[:-1])
        parent, starts = all_segments[keep], all_starts[keep]
        last_child = np.ones(parent.size, dtype=bool)
        last_child[:-1] = parent[1:] != parent[:-1]

        # Bound the number of segments: the range then ends at the first
        # dropped start, a root or an earlier start, so a breakpoint of the
        # walk. The kept segment before it keeps its earlier binding units
        # exactly when that start is an earlier one (it was its parent's
        # last child before the cut).
        if parent.size > self.max_segments:
            self.end = float(starts[self.max_segments])
            parent, starts, last_child = (x[: self.max_segments] for x in (parent, starts, last_child))

        first_child = np.ones(parent.size, dtype=bool)
        first_child[1:] = parent[1:] != parent[:-1]
        old_hashers, old_binding = self.hashers, self.binding
        hashers = [old_hashers[p] if first else old_hashers[p].copy()
                   for p, first in zip(parent.tolist(), first_child.tolist())]
        binding = [list(old_binding[p]) if last else []
                   for p, last in zip(parent.tolist(), last_child.tolist())]
        self.starts, self.hashers, self.binding = starts, hashers, binding
        self.maps.append(parent)
        self._to_current = {}
        return parent

    def bind(self, root: np.ndarray, node_id: int, offset: int = 0) -> None:
        """Record the units whose root equals their segment's end."""
        with np.errstate(invalid="ignore"):
            segment, unit = np.nonzero(root == self.ends[:, None])
        for j, i in zip(segment.tolist(), unit.tolist()):
            self.binding[j].append((node_id, offset + i))

    def hash_bits(self, node_id: int, bits: np.ndarray) -> None:
        """Add one node's pattern (``bits`` is ``(n, units)``) to every segment's digest."""
        packed = np.packbits(bits, axis=1)
        tag = node_id.to_bytes(4, "little")
        for hasher, row in zip(self.hashers, packed):
            hasher.update(tag)
            hasher.update(row.tobytes())


def _apply(node: Node, inputs: list[np.ndarray], conv, fused: bool, addend: np.ndarray | None = None) -> np.ndarray:
    """Apply a linear node to ``(n, 2, *shape)`` inputs, :data:`ROW_CHUNK` rows per call (half on large layers).

    Element-wise kinds and convolutions by the compiled fma kernel take all
    rows in one call, because their result for a row does not depend on the
    other rows and their memory use does not grow with the call. ``addend``
    is the constant of a folded constant-add node (see
    :func:`folded_constants`), added by the compiled convolution.
    """
    n = inputs[0].shape[0]
    rows = [x.reshape((2 * n,) + x.shape[2:]) for x in inputs]
    if node.kind == "conv2d" and conv is conv2d_fast and fma_conv.preferred():
        attrs = node.attrs
        out = fma_conv.conv2d_fma_parts([(rows[0], None)], node.params["weight"], attrs["stride"], attrs["padding"],
                                        attrs["dilation"], attrs["groups"], bias=node.params.get("bias"),
                                        bias_rows="even", addend=addend)
        return out.reshape((n, 2) + out.shape[1:])
    if node.kind == "conv_transpose2d" and fused:
        # In chunks of ROW_CHUNK rows, so that the per-tap products stay in
        # the cache between the product and the scatter.
        attrs = node.attrs
        out = np.empty((2 * n,) + tuple(node.shape))
        for start in range(0, 2 * n, ROW_CHUNK):
            conv_transpose2d_fused(rows[0][start : start + ROW_CHUNK], node.params["weight"], attrs["stride"],
                                   attrs["padding"], attrs["output_padding"], attrs["dilation"],
                                   bias=node.params.get("bias"), bias_rows="even", out=out[start : start + ROW_CHUNK])
        return out.reshape((n, 2) + out.shape[1:])
    if node.kind == "add_const":
        # x + const on alpha rows and x + 0.0 * const on beta rows: the values
        # of the reference's masked addition, without its full-size temporary.
        const = node.params["const"]
        out = np.empty((n, 2) + tuple(node.shape))
        np.add(inputs[0][:, 0], const, out=out[:, 0])
        np.add(inputs[0][:, 1], 0.0 * const, out=out[:, 1])
        return out
    if node.kind in _ELEMENTWISE:
        out = apply_linear(node, rows, bias_mask=np.tile(np.array([True, False]), n), conv=conv)
        return out.reshape((n, 2) + out.shape[1:])
    row_bytes = 8 * (node.size + sum(int(np.prod(x.shape[2:])) for x in inputs))
    per_call = ROW_CHUNK if row_bytes <= LARGE_ROW_BYTES else ROW_CHUNK // 2
    mask = np.tile(np.array([True, False]), per_call // 2)
    if 2 * n <= per_call:
        out = apply_linear(node, rows, bias_mask=mask[: 2 * n], conv=conv)
        return out.reshape((n, 2) + out.shape[1:])
    out = np.empty((2 * n,) + tuple(node.shape))
    for start in range(0, 2 * n, per_call):
        chunk = [r[start : start + per_call] for r in rows]
        out[start : start + per_call] = apply_linear(node, chunk, bias_mask=mask[: chunk[0].shape[0]], conv=conv)
    return out.reshape((n, 2) + out.shape[1:])


def _concat(sweep: _Sweep, node: Node, generation: int, fused: bool) -> np.ndarray:
    """Concatenate the inputs of ``node`` straight into its output, for the segments of ``generation``.

    The same values as the reference concatenation (a copy). With ``fused``
    an input of an earlier generation is gathered by a compiled loop, with no
    temporary array.
    """
    values = [sweep.values[source] for source in node.inputs]
    m = sweep.count(generation)
    out = np.empty((m, 2) + tuple(node.shape))
    axis = node.attrs["axis"] + 2
    blocks = 2 * int(np.prod(node.shape[: axis - 2]))
    flat_out = out.reshape(m, blocks, -1)
    offset = 0
    for (value, value_generation), source in zip(values, node.inputs):
        width = value.shape[axis]
        if fused and value.flags.c_contiguous:
            index = sweep.index(value_generation, generation) if value_generation != generation else np.arange(m)
            flat = value.reshape(value.shape[0], blocks, -1)
            gather_into(flat_out, flat, index, offset * flat.shape[2] // width)
        else:
            out[(slice(None),) * axis + (slice(offset, offset + width),)] = sweep.get(source, generation)
        offset += width
    return out


class _Parts:
    """Stand-in value of a concatenation that its only consumer, a convolution, reads part by part."""

    __slots__ = ("sources",)

    def __init__(self, sources: tuple[int, ...]) -> None:
        self.sources = sources

    @property
    def shape(self) -> tuple[int, ...]:
        return (0,)


def _readers(graph: Graph) -> dict[int, list[Node]]:
    """Return, per node id, the nodes that read it, in graph order."""
    readers: dict[int, list[Node]] = {}
    for node in graph.nodes:
        for source in node.inputs:
            readers.setdefault(source, []).append(node)
    return readers


def deferred_concats(graph: Graph) -> dict[int, int]:
    """Return ``{concat id: conv id}`` for channel concatenations read by one convolution only.

    The sweep leaves such a concatenation unbuilt and lets the compiled
    convolution (:func:`dalverify.accel.fma_conv.conv2d_fma_parts`) read its
    inputs directly: the same input values, so the same bits.
    """
    readers = _readers(graph)
    deferred = {}
    for node in graph.nodes:
        if node.kind != "concat" or node.attrs["axis"] != 0 or len(node.shape) != 3:
            continue
        consumers = readers.get(node.id, [])
        if len(consumers) == 1 and consumers[0].kind == "conv2d" and tuple(consumers[0].inputs) == (node.id,):
            deferred[node.id] = consumers[0].id
    return deferred


def folded_constants(graph: Graph) -> dict[int, int]:
    """Return ``{conv id: add_const id}`` for convolutions read only by one constant add.

    The compiled convolution adds such a constant after its bias, with the
    same roundings as the separate node (see
    :func:`dalverify.accel.fma_conv.conv2d_fma_parts`), and the constant
    node then passes the convolution's rows on.
    """
    readers = _readers(graph)
    folded = {}
    for node in graph.nodes:
        if node.kind != "conv2d" or node.id == graph.output:
            continue
        consumers = readers.get(node.id, [])
        if len(consumers) == 1 and consumers[0].kind == "add_const" and tuple(consumers[0].shape) == tuple(node.shape):
            folded[node.id] = consumers[0].id
    return folded


def _conv_parts(sweep: _Sweep, node: Node, parts: _Parts, generation: int,
                addend: np.ndarray | None = None) -> np.ndarray:
    """Apply a convolution to a deferred concatenation, gathering each input's rows inside the kernel."""
    n = sweep.count(generation)
    inputs = []
    for source in parts.sources:
        value, value_generation = sweep.values[source]
        rows = value.reshape((-1,) + value.shape[2:])
        index = None
        if value_generation != generation:
            segments = sweep.index(value_generation, generation)
            index = (2 * segments[:, None] + np.arange(2)).reshape(-1)
        inputs.append((rows, index))
    attrs = node.attrs
    out = fma_conv.conv2d_fma_parts(inputs, node.params["weight"], attrs["stride"], attrs["padding"],
                                    attrs["dilation"], attrs["groups"], bias=node.params.get("bias"),
                                    bias_rows="even", addend=addend)
    return out.reshape((n, 2) + out.shape[1:])


def _roots(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return -alpha / (beta + 0.0)


def _decide(root: np.ndarray, beta: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Apply the sign rule ``not (root > z) xor (beta < 0)`` with ``z`` the segment start."""
    with np.errstate(invalid="ignore"):
        return ~(root > starts[:, None]) ^ (beta < 0)


def _pointwise(sweep: _Sweep, node: Node, x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    alpha, beta = x[:, 0].reshape(n, -1), x[:, 1].reshape(n, -1)
    root = _roots(alpha, beta)
    parent, (x, root, beta) = sweep.split(root, [x, root, beta])
    on = _decide(root, beta, sweep.starts)
    sweep.bind(root, node.id)
    sweep.hash_bits(node.id, on)
    shaped = on.reshape((on.shape[0], 1) + x.shape[2:])
    if node.kind == "relu":
        return np.where(shaped, x, 0.0)
    if node.kind == "leaky_relu":
        return np.where(shaped, x, node.attrs["negative_slope"] * x)
    return np.where(shaped, x, -x)


def _pointwise_fused(sweep: _Sweep, node: Node, x: np.ndarray) -> np.ndarray:
    """Same result as :func:`_pointwise`, bit for bit, by the compiled kernels of :mod:`dalverify.accel.fused_step`."""
    n = x.shape[0]
    rows = x.reshape(n, 2, -1)
    slope = node.attrs["negative_slope"] if node.kind == "leaky_relu" else 0.0
    if pointwise_compiled() and rows.flags.c_contiguous:
        segment, unit, points = scan_pairs(rows, sweep.starts, sweep.ends)
        parent = sweep.split_at(segment, points) if segment.size else np.arange(n)
        out, bits, bound_segment, bound_unit = apply_pairs(rows, parent, sweep.starts, sweep.ends, node.kind, slope)
    else:
        alpha, beta = rows[:, 0], rows[:, 1]
        segment, unit, points = scan_roots(alpha, beta, sweep.starts, sweep.ends)
        parent = sweep.split_at(segment, points) if segment.size else np.arange(n)
        out, bits, bound_segment, bound_unit = apply_pointwise(alpha, beta, parent, sweep.starts, sweep.ends,
                                                               node.kind, slope)
    for j, i in zip(bound_segment.tolist(), bound_unit.tolist()):
        sweep.binding[j].append((node.id, i))
    sweep.hash_bits(node.id, bits)
    return out.reshape((parent.size, 2) + x.shape[2:])


def _max_pool(sweep: _Sweep, node: Node, x: np.ndarray) -> np.ndarray:
    """Apply a max-pool node as its tournament of comparisons, with one split per stage."""
    n = x.shape[0]
    windows = pool_windows(x.reshape((2 * n,) + x.shape[2:]), node.attrs["kernel_size"], node.attrs["stride"])
    windows = np.ascontiguousarray(windows).reshape((n, 2) + windows.shape[1:])
    winner = windows[..., 0]
    out_size = int(np.prod(winner.shape[2:]))
    stage_bits: list[np.ndarray] = []
    for stage in range(1, windows.shape[-1]):
        candidate = windows[..., stage]
        diff = winner - candidate
        m = diff.shape[0]
        diff_alpha, diff_beta = diff[:, 0].reshape(m, -1), diff[:, 1].reshape(m, -1)
        root = _roots(diff_alpha, diff_beta)
        parent, extra = sweep.split(root, [windows, winner, root, diff_beta] + stage_bits)
        windows, winner, root, diff_beta, stage_bits = extra[0], extra[1], extra[2], extra[3], extra[4:]
        keep = _decide(root, diff_beta, sweep.starts)
        sweep.bind(root, node.id, (stage - 1) * out_size)
        shaped = keep.reshape((keep.shape[0], 1) + winner.shape[2:])
        winner = np.where(shaped, winner, windows[..., stage])
        stage_bits.append(keep)
    if stage_bits:
        sweep.hash_bits(node.id, np.concatenate(stage_bits, axis=1))
    else:
        sweep.hash_bits(node.id, np.zeros((sweep.starts.size, 0), dtype=bool))
    return winner


def _max_pool_fused(sweep: _Sweep, node: Node, x: np.ndarray) -> np.ndarray:
    """Same result as :func:`_max_pool`, bit for bit, by the compiled kernels of :mod:`dalverify.accel.fused_step`.

    The windows are gathered once; each later segment reads them through
    ``rows``, the window row of the segment it descends from.
    """
    n = x.shape[0]
    windows = pool_windows(x.reshape((2 * n,) + x.shape[2:]), node.attrs["kernel_size"], node.attrs["stride"])
    out_shape = windows.shape[1:4]
    size = windows.shape[-1]
    windows = np.ascontiguousarray(windows).reshape(n, 2, -1, size)
    winner = np.ascontiguousarray(windows[..., 0])
    rows = np.arange(n)
    out_size = winner.shape[2]
    stage_bits: list[np.ndarray] = []
    for stage in range(1, size):
        segment, unit, points = scan_pool_stage(winner, windows, rows, stage, sweep.starts, sweep.ends)
        parent = sweep.split_at(segment, points) if segment.size else np.arange(rows.size)
        winner, keep, bound_segment, bound_unit = apply_pool_stage(winner, windows, rows, parent, stage,
                                                                   sweep.starts, sweep.ends)
        if segment.size:
            rows = rows[parent]
            stage_bits = [bits[parent] for bits in stage_bits]
        offset = (stage - 1) * out_size
        for j, i in zip(bound_segment.tolist(), bound_unit.tolist()):
            sweep.binding[j].append((node.id, offset + i))
        stage_bits.append(keep)
    if stage_bits:
        sweep.hash_bits(node.id, np.concatenate(stage_bits, axis=1))
    else:
        sweep.hash_bits(node.id, np.zeros((sweep.starts.size, 0), dtype=bool))
    return winner.reshape((winner.shape[0], 2) + out_shape)


def default_max_segments(graph: Graph, memory: int = DEFAULT_MEMORY) -> int:
    """Segments per sweep such that the live values fit in about ``memory`` bytes.

    The estimate counts, per segment, two float64 rows of the values that are
    alive at the same time (at most the sum of the node sizes between a
    value's creation and its last use). It adds the working arrays of the
    widest piecewise node.
    """
    last = last_uses(graph)
    live = 0
    peak = 0
    ending: dict[int, int] = {}
    for node in graph.nodes:
        live += node.size
        ending.setdefault(last[node.id], 0)
        ending[last[node.id]] += node.size
        peak = max(peak, live)
        live -= ending.pop(node.id, 0)
    widest = max((node.size for node in graph.nodes), default=1)
    per_segment = 16 * (peak + 6 * widest)
    return max(2, int(memory // max(per_segment, 1)))


def _plan(graph: Graph, conv) -> tuple[list[int], dict[int, int], dict[int, int]]:
    """Return the last reader of each value and the deferred concatenations and folded constants for ``conv``.

    Both rearrangements need the compiled convolution; the inputs of a
    deferred concatenation are read by its convolution, so they live until
    then.
    """
    compiled = conv is conv2d_fast and fma_conv.preferred()
    deferred = deferred_concats(graph) if compiled else {}
    folded = folded_constants(graph) if compiled else {}
    last = last_uses(graph)
    for concat_id, conv_id in deferred.items():
        for source in graph.nodes[concat_id].inputs:
            last[source] = max(last[source], conv_id)
    return last, deferred, folded


def _sweep(graph: Graph, a: np.ndarray, b: np.ndarray, lo: float, hi: float, max_segments: int, last: list[int],
           conv, fused: bool, timings: dict[str, list[float]] | None = None,
           deferred: dict[int, int] | None = None, folded: dict[int, int] | None = None) -> _Sweep:
    sweep = _Sweep(lo, hi, max_segments)
    sweep.values[0] = (np.stack([a, b])[None], 0)
    released: dict[int, list[int]] = {}
    for source, reader in enumerate(last):
        if reader != source:
            released.setdefault(reader, []).append(source)
    for node in graph.nodes[1:]:
        started = time.perf_counter() if timings is not None else 0.0
        if node.kind in _PIECEWISE:
            x = sweep.get(node.inputs[0])
            if node.kind == "max_pool2d":
                out = (_max_pool_fused if fused else _max_pool)(sweep, node, x)
            else:
                out = (_pointwise_fused if fused else _pointwise)(sweep, node, x)
            sweep.values[node.id] = (out, sweep.generation)
        else:
            # A linear node depends only on its inputs: it is computed once
            # per segment of the newest generation among them.
            generation = max(sweep.values[i][1] for i in node.inputs)
            addend = graph.nodes[folded[node.id]].params["const"] if folded and node.id in folded else None
            if deferred and node.id in deferred:
                out = _Parts(node.inputs)
            elif node.kind == "conv2d" and isinstance(sweep.values[node.inputs[0]][0], _Parts):
                out = _conv_parts(sweep, node, sweep.values[node.inputs[0]][0], generation, addend)
            elif folded and node.kind == "add_const" and folded.get(node.inputs[0]) == node.id:
                # Added by the convolution already.
                out = sweep.values[node.inputs[0]][0]
            elif node.kind == "concat":
                out = _concat(sweep, node, generation, fused)
            else:
                out = _apply(node, [sweep.get(i, generation) for i in node.inputs], conv, fused, addend)
            sweep.values[node.id] = (out, generation)
        # Values whose last reader is this node, including the inputs of a
        # deferred concatenation, which its convolution reads.
        for source in released.get(node.id, ()):
            del sweep.values[source]
        if timings is not None:
            entry = timings.setdefault(node.kind, [0.0, 0.0])
            entry[0] += time.perf_counter() - started
            entry[1] += out.shape[0]
    return sweep


def walk_layer_major(
    graph: Graph,
    a: np.ndarray,
    b: np.ndarray,
    lo: float,
    hi: float,
    *,
    cuts: CutSet | None = None,
    record_outputs: bool = False,
    max_pieces: int | None = None,
    max_segments: int | None = None,
    kernels: str | None = None,
    progress: bool | None = None,
    timings: dict[str, list[float]] | None = None,
) -> Partition:
    """Partition ``[lo, hi]`` into the linear pieces of ``graph`` along ``a + b z``, layer-major.

    Same contract and same result as :func:`dalverify.line.walk.walk_line`
    with a :class:`~dalverify.line.numpy_backend.NumpyLineBackend` of the same
    ``kernels``. That function checks the arguments and calls this one for
    ``backend="layer"``.

    Parameters
    ----------
    max_segments
        Most segments one sweep keeps (default: :func:`default_max_segments`).
    kernels
        ``"fast"`` (direct convolutions where faster, needs numba) or
        ``"reference"``; default ``"fast"`` when numba is importable.
    timings
        When given, receives per node kind ``[seconds, segments]``: the wall
        time spent in nodes of that kind and the number of segments they
        produced, summed over all sweeps (for profiling).

    Returns
    -------
    Partition
        With ``backend == "layer"``.
    """
    if max_segments is None:
        max_segments = default_max_segments(graph)
    if max_segments < 2:
        raise InputError(f"max_segments={max_segments} must be at least 2")
    kernels = default_kernels() if kernels is None else kernels
    try:
        conv = conv_for(kernels)
    except ValueError as error:
        raise InputError(str(error)) from None
    # The compiled element-wise steps give the numpy steps' bits, so they
    # belong to the "fast" set only to keep "reference" free of numba.
    fused = kernels == "fast" and numba_available()
    last, deferred, folded = _plan(graph, conv)
    a = np.asarray(a, dtype=np.float64).reshape(graph.input_shape)
    b = np.asarray(b, dtype=np.float64).reshape(graph.input_shape)

    show = sys.stderr.isatty() if progress is None else progress
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(desc="line sweep", unit="piece", file=sys.stderr, leave=False)

    started = time.perf_counter()
    pieces: list[Piece] = []
    outputs: list[tuple[float, float, np.ndarray, np.ndarray]] = []
    network_index = 0
    z = lo
    sweeps = 0
    # Length of the next sweep's range. The first sweep takes the whole
    # range. Later ones take what the previous one covered, scaled to fill
    # SWEEP_FILL of max_segments, so that the limit drops few segments.
    width = math.inf
    try:
        with single_blas_thread(), reuse_freed_memory():
            while True:
                end = min(hi, z + width)
                if not end > z:
                    end = hi
                sweep = _sweep(graph, a, b, z, end, max_segments, last, conv, fused, timings, deferred, folded)
                sweeps += 1

                # A sweep that reached a shortened end keeps all segments
                # but the last, because that one ends at an arbitrary point.
                # The next sweep starts at its start, a breakpoint.
                soft = end < hi and sweep.end >= end
                count = sweep.starts.size - 1 if soft else sweep.starts.size
                if count == 0:
                    width *= 2.0
                    continue

                out = sweep.get(graph.output)
                ends = sweep.ends
                for j in range(count):
                    start, end = float(sweep.starts[j]), float(ends[j])
                    final = end >= hi
                    units = () if final else tuple(sweep.binding[j])
                    pattern = sweep.hashers[j].hexdigest()
                    if record_outputs:
                        outputs.append((start, end, np.array(out[j, 0]), np.array(out[j, 1])))
                    if cuts is None:
                        pieces.append(Piece(start, end, pattern, units, "", None, network_index))
                    else:
                        step = _Step(out[j, 0], out[j, 1], pattern)
                        pieces.extend(_split_by_cuts(cuts, step, start, end, units, network_index))
                    network_index += 1
                    if max_pieces is not None and network_index >= max_pieces and not final:
                        raise InputError(
                            f"the walk reached max_pieces={max_pieces} network pieces at z={end!r} before "
                            f"the end of the range {hi!r}; raise max_pieces or narrow the range"
                        )
                next_z = float(sweep.starts[count]) if soft else sweep.end
                if bar is not None:
                    bar.update(count)
                    bar.set_postfix(z=f"{next_z:.4g}", refresh=False)
                if not soft and sweep.end >= hi:
                    break
                scale = min(2.0, SWEEP_FILL * max_segments / count) if soft else SWEEP_FILL
                width = (next_z - z) * scale
                z = next_z
    finally:
        if bar is not None:
            bar.close()

    seconds = time.perf_counter() - started
    logger.info("swept %d network pieces (%d intervals) over [%g, %g] in %d sweeps, %.2f s (%s kernels)",
                network_index, len(pieces), lo, hi, sweeps, seconds, kernels)
    return Partition(lo, hi, pieces, network_index, seconds, "layer", outputs)


__all__ = ["DEFAULT_MEMORY", "LARGE_ROW_BYTES", "ROW_CHUNK", "SWEEP_FILL", "default_max_segments", "walk_layer_major"]
