"""One pass of a line ``a + b z`` through a graph, in numpy (no torch).

This is the reference implementation of a walk step: the torch backend must
return the same pattern digests, breakpoints and binding units.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from dalverify.accel.direct_conv import conv_for
from dalverify.graph.ir import Graph, Node
from dalverify.graph.reference import apply_linear, last_uses, pool_windows
from dalverify.line import rule

_LINE_BIAS = np.array([True, False])


@dataclass
class LinePass:
    """Result of propagating the line through the graph at one ``z``.

    Attributes
    ----------
    z
        Point at which the pattern was decided (by :mod:`dalverify.line.rule`).
    next_break
        Smallest unit root ``> z`` (``inf`` when none): the piece is ``[z, next_break)``.
    previous_break
        Largest unit root ``<= z`` (``-inf`` when none): the piece containing ``z``
        starts there. NaN unless requested with ``with_previous``.
    binding
        ``(node_id, flat_index)`` of every unit whose root equals ``next_break``.
    pattern
        sha256 hex digest of the activation pattern (one bit per unit, node order).
    out_alpha, out_beta
        Output of the graph on the piece: ``out_alpha + out_beta z``.
    """

    z: float
    next_break: float
    previous_break: float
    binding: tuple[tuple[int, int], ...]
    pattern: str
    out_alpha: np.ndarray
    out_beta: np.ndarray
    bits: dict[int, np.ndarray] | None = None


def piecewise_on_line(node: Node, line: np.ndarray, z: float):
    """Apply a piecewise node to a stacked line ``line`` (2, *shape).

    Returns ``(out, root, bits)``: the output line, and per unit
    (flattened, in the order that identifies units) its root and activity bit. A max-pool unit is one comparison of the tournament
    that runs over each window in order; its unit index is
    ``(stage - 1) * out_size + output_index`` for stage ``1 .. k*k - 1``.
    """
    alpha, beta = line[0], line[1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if node.kind == "max_pool2d":
            windows = pool_windows(line, node.attrs["kernel_size"], node.attrs["stride"])
            win_alpha, win_beta = windows[0, ..., 0], windows[1, ..., 0]
            stage_roots, stage_bits = [], []
            for j in range(1, windows.shape[-1]):
                cand_alpha, cand_beta = windows[0, ..., j], windows[1, ..., j]
                diff_alpha, diff_beta = win_alpha - cand_alpha, win_beta - cand_beta
                root = rule.roots(np, diff_alpha, diff_beta)
                keep = rule.active(np, diff_alpha, diff_beta, root, z)
                win_alpha = np.where(keep, win_alpha, cand_alpha)
                win_beta = np.where(keep, win_beta, cand_beta)
                stage_roots.append(root.ravel())
                stage_bits.append(keep.ravel())
            out = np.stack([win_alpha, win_beta])
            return out, np.concatenate(stage_roots), np.concatenate(stage_bits)
        root = rule.roots(np, alpha, beta)
        on = rule.active(np, alpha, beta, root, z)
        if node.kind == "relu":
            out = np.where(on, line, 0.0)
        elif node.kind == "leaky_relu":
            out = np.where(on, line, node.attrs["negative_slope"] * line)
        else:  # abs
            out = np.where(on, line, -line)
        return out, root.ravel(), on.ravel()


def line_pass(graph: Graph, a: np.ndarray, b: np.ndarray, z: float, *, keep_bits: bool = False,
              with_previous: bool = False, kernels: str = "reference") -> LinePass:
    """Propagate ``a + b z`` through ``graph`` with the pattern decided at ``z``.

    ``kernels`` is ``"reference"`` (the numpy reference operations) or
    ``"fast"`` (convolutions by :func:`dalverify.accel.direct_conv.conv2d_fast`).
    """
    conv = conv_for(kernels)
    last = last_uses(graph)
    values = {0: np.stack([np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)])}
    hasher = hashlib.sha256()
    candidates: dict[int, np.ndarray] = {}
    next_break, previous_break = float("inf"), float("-inf")
    bits_by_node: dict[int, np.ndarray] = {}

    for node in graph.nodes[1:]:
        inputs = [values[i] for i in node.inputs]
        if node.kind in ("relu", "leaky_relu", "abs", "max_pool2d"):
            out, root, bits = piecewise_on_line(node, inputs[0], z)
            with np.errstate(invalid="ignore"):
                upcoming = rule.next_candidates(np, root, z)
                earlier = rule.previous_candidates(np, root, z)
            if upcoming.size:
                candidates[node.id] = upcoming
                next_break = min(next_break, float(upcoming.min()))
                previous_break = max(previous_break, float(earlier.max()))
            hasher.update(node.id.to_bytes(4, "little"))
            hasher.update(np.packbits(bits).tobytes())
            if keep_bits:
                bits_by_node[node.id] = bits
        else:
            out = apply_linear(node, inputs, bias_mask=_LINE_BIAS, conv=conv)
        values[node.id] = out
        for source in set(node.inputs):
            if last[source] == node.id:
                del values[source]

    binding: list[tuple[int, int]] = []
    if next_break != float("inf"):
        for node_id, upcoming in candidates.items():
            binding.extend((node_id, int(i)) for i in np.flatnonzero(upcoming == next_break))
    output = values[graph.output]
    return LinePass(
        z=z,
        next_break=next_break + 0.0,
        previous_break=previous_break + 0.0 if with_previous else float("nan"),
        binding=tuple(binding),
        pattern=hasher.hexdigest(),
        out_alpha=output[0],
        out_beta=output[1],
        bits=bits_by_node if keep_bits else None,
    )


class NumpyLineBackend:
    """Walk steps computed with :func:`line_pass` (reference, CPU, no torch)."""

    name = "numpy"

    def __init__(self, graph: Graph, a: np.ndarray, b: np.ndarray, kernels: str = "reference") -> None:
        conv_for(kernels)
        self.graph = graph
        self.a = np.asarray(a, dtype=np.float64).reshape(graph.input_shape)
        self.b = np.asarray(b, dtype=np.float64).reshape(graph.input_shape)
        self.kernels = kernels

    def line_pass(self, z: float, *, keep_bits: bool = False, with_previous: bool = False) -> LinePass:
        return line_pass(self.graph, self.a, self.b, z, keep_bits=keep_bits, with_previous=with_previous,
                         kernels=self.kernels)
