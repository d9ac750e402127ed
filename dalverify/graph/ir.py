"""Inert, frozen intermediate representation of a piecewise-linear network.

A :class:`Graph` is a topologically ordered tuple of :class:`Node` records.
Nodes carry data only: a kind from the closed set :data:`KINDS`, the ids of
their inputs, their output shape (without the batch axis), integer or float
attributes, and float64 parameter arrays that are read-only. Behaviour lives
in the evaluators (``dalverify.graph.reference`` for numpy, the torch backend
in ``dalverify.accel``) and in the line walk.

Kinds and their contracts (``x`` is the single input unless noted):

============================  =================================================
kind                          output
============================  =================================================
``input``                     the graph input
``dense``                     ``weight @ x + bias`` (``x`` one-dimensional)
``conv2d``                    2-D cross-correlation, torch ``conv2d`` semantics
``conv_transpose2d``          torch ``conv_transpose2d`` semantics (groups 1)
``avg_pool2d``                mean over windows, torch semantics
``max_pool2d``                max over windows (no padding, no dilation)
``upsample_nearest``          repeat each pixel ``scale`` times per axis
``upsample_bilinear``         ``rows @ x @ cols.T`` per channel (separable)
``scale_shift``               ``scale[c] * x[c] + shift[c]`` (folded batch norm)
``add_const``                 ``x + const`` (``const`` broadcasts to the shape)
``mul_const``                 ``x * const`` (``const`` broadcasts to the shape)
``add`` / ``sub``             ``x0 + x1`` / ``x0 - x1``
``concat``                    concatenation of the inputs along ``axis``
``reshape``                   ``x`` reshaped to ``shape``
``relu``                      ``max(x, 0)``
``leaky_relu``                ``x`` if ``x >= 0`` else ``negative_slope * x``
``abs``                       ``|x|``
============================  =================================================

The parameters called *bias* in :data:`BIAS_PARAMS` are the only ones that
add a constant: when a line ``(alpha, beta)`` is propagated, they apply to
``alpha`` and not to ``beta``.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from dalverify.errors import InputError

#: The closed set of node kinds.
KINDS = frozenset(
    {
        "input",
        "dense",
        "conv2d",
        "conv_transpose2d",
        "avg_pool2d",
        "max_pool2d",
        "upsample_nearest",
        "upsample_bilinear",
        "scale_shift",
        "add_const",
        "mul_const",
        "add",
        "sub",
        "concat",
        "reshape",
        "relu",
        "leaky_relu",
        "abs",
    }
)

#: Kinds whose output is piecewise linear with breakpoints (they cut the line).
PIECEWISE_KINDS = frozenset({"relu", "leaky_relu", "abs", "max_pool2d"})

#: Per kind, the parameter that adds a constant term (applied to alpha only).
BIAS_PARAMS = {
    "dense": "bias",
    "conv2d": "bias",
    "conv_transpose2d": "bias",
    "scale_shift": "shift",
    "add_const": "const",
}

#: Number of inputs per kind; ``None`` means one or more.
ARITY = {kind: 1 for kind in KINDS}
ARITY.update({"input": 0, "add": 2, "sub": 2, "concat": None})


def _freeze_array(value: Any, where: str) -> np.ndarray:
    array = np.array(value, dtype=np.float64, copy=True)
    if not np.all(np.isfinite(array)):
        raise InputError(f"{where} contains NaN or infinite values; parameters must be finite")
    array.setflags(write=False)
    return array


def _freeze_attr(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_attr(v) for v in value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    return value


@dataclass(frozen=True, eq=False)
class Node:
    """One operation of a :class:`Graph`.

    Parameters
    ----------
    id
        Position of the node in the graph (nodes are topologically ordered).
    kind
        One of :data:`KINDS`.
    inputs
        Ids of the input nodes, all smaller than ``id``.
    shape
        Output shape without the batch axis.
    attrs
        Integer, float or tuple attributes (strides, paddings, axis, ...).
    params
        Read-only float64 arrays (weights, biases, constants).
    name
        Where the node came from (a module path), for messages only; the
        name is not part of the graph digest.
    """

    id: int
    kind: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    params: Mapping[str, np.ndarray] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"unknown node kind {self.kind!r}; expected one of {sorted(KINDS)}")
        object.__setattr__(self, "inputs", tuple(int(i) for i in self.inputs))
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        frozen_attrs = {k: _freeze_attr(v) for k, v in dict(self.attrs).items()}
        object.__setattr__(self, "attrs", types.MappingProxyType(frozen_attrs))
        frozen_params = {
            k: _freeze_array(v, f"parameter {k!r} of node {self.id} ({self.kind} {self.name})")
            for k, v in dict(self.params).items()
        }
        object.__setattr__(self, "params", types.MappingProxyType(frozen_params))

    @property
    def size(self) -> int:
        """Number of scalar outputs of the node (per batch element)."""
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True, eq=False)
class Graph:
    """A piecewise-linear network as an inert, topologically ordered node tuple.

    Node 0 is the single ``input`` node; ``output`` names the output node.
    ``metadata`` contains JSON-compatible facts that belong to the map (for a
    reconstruction: schedule, ``eta``, seed) and is covered by the digest.
    """

    nodes: tuple[Node, ...]
    output: int
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(self.nodes))
        object.__setattr__(self, "metadata", types.MappingProxyType(dict(self.metadata)))
        validate_graph(self)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of the input without the batch axis."""
        return self.nodes[0].shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the output without the batch axis."""
        return self.nodes[self.output].shape

    def piecewise_nodes(self) -> list[Node]:
        """Nodes that can cut a line (ReLU, LeakyReLU, abs, max pool)."""
        return [node for node in self.nodes if node.kind in PIECEWISE_KINDS]

    def count_units(self) -> int:
        """Number of scalar piecewise-linear units (a max-pool window counts
        one unit per comparison)."""
        total = 0
        for node in self.piecewise_nodes():
            if node.kind == "max_pool2d":
                kh, kw = node.attrs["kernel_size"]
                total += node.size * (kh * kw - 1)
            else:
                total += node.size
        return total

    def digest(self) -> str:
        """sha256 over kinds, wiring, shapes, attributes, metadata and the
        exact bytes of every parameter (see :func:`dalverify.graph.io.graph_digest`)."""
        from dalverify.graph.io import graph_digest

        return graph_digest(self)


def validate_graph(graph: Graph) -> None:
    """Check ids, wiring and arities of a graph; raise ``InputError`` if wrong."""
    nodes = graph.nodes
    if not nodes or nodes[0].kind != "input":
        raise InputError("a graph must start with exactly one 'input' node (node 0)")
    for position, node in enumerate(nodes):
        if node.id != position:
            raise InputError(f"node at position {position} has id {node.id}; ids must equal positions")
        if node.kind == "input" and position != 0:
            raise InputError(f"node {position} is a second 'input' node; a graph has one input")
        arity = ARITY[node.kind]
        if arity is None and not node.inputs:
            raise InputError(f"node {position} ({node.kind}) needs at least one input")
        if arity is not None and len(node.inputs) != arity:
            raise InputError(
                f"node {position} ({node.kind}) has {len(node.inputs)} inputs; expected {arity}"
            )
        for source in node.inputs:
            if not 0 <= source < position:
                raise InputError(
                    f"node {position} ({node.kind}) reads node {source}; inputs must come earlier"
                )
    if not 0 <= graph.output < len(nodes):
        raise InputError(f"output id {graph.output} is not a node of the graph")
