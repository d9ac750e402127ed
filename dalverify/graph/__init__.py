"""Piecewise-linear graphs: the inert IR, its numpy semantics, and file I/O.

This package never imports torch.
"""

from dalverify.graph.builder import GraphBuilder
from dalverify.graph.io import graph_digest, load_graph, save_graph
from dalverify.graph.ir import KINDS, PIECEWISE_KINDS, Graph, Node
from dalverify.graph.reference import evaluate


def from_onnx(path_or_model, *, seed=None):
    """Import a piecewise-linear ONNX model as a :class:`Graph` (needs the ``onnx`` extra)."""
    from dalverify.graph.onnx_import import from_onnx as _from_onnx

    return _from_onnx(path_or_model, seed=seed)


__all__ = ["Graph", "GraphBuilder", "KINDS", "Node", "PIECEWISE_KINDS", "evaluate", "from_onnx",
           "graph_digest", "load_graph", "save_graph"]
