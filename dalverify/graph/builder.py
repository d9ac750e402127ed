"""Incremental construction of a :class:`~dalverify.graph.ir.Graph` with shape inference."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from dalverify.graph.ir import Graph, Node
from dalverify.graph.reference import apply_node


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


class GraphBuilder:
    """Append nodes one at a time; each node's shape is inferred by running the
    reference evaluator on zeros, so a wrong parameter shape fails at once.

    Every ``add_*`` method returns the new node's id.
    """

    def __init__(self, input_shape: tuple[int, ...]) -> None:
        self._nodes: list[Node] = [Node(0, "input", (), tuple(input_shape), name="input")]
        self._zeros: list[np.ndarray] = [np.zeros((1,) + tuple(input_shape))]

    def add(
        self,
        kind: str,
        inputs: tuple[int, ...] | list[int],
        attrs: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        name: str = "",
        shape: tuple[int, ...] | None = None,
    ) -> int:
        """Append a node of any kind and return its id."""
        node_id = len(self._nodes)
        draft = Node(node_id, kind, tuple(inputs), shape or (0,), attrs or {}, params or {}, name)
        if kind == "reshape":
            out = np.zeros((1,) + tuple(attrs["shape"]))
        else:
            out = apply_node(draft, [self._zeros[i] for i in draft.inputs])
        node = Node(node_id, kind, tuple(inputs), out.shape[1:], draft.attrs, draft.params, name)
        self._nodes.append(node)
        self._zeros.append(np.zeros_like(out))
        return node_id

    def shape(self, node_id: int) -> tuple[int, ...]:
        """Output shape of an existing node."""
        return self._nodes[node_id].shape

    def dense(self, x: int, weight, bias=None, name: str = "") -> int:
        weight = np.asarray(weight, dtype=np.float64)
        params = {"weight": weight}
        if bias is not None:
            params["bias"] = bias
        return self.add("dense", (x,), params=params, name=name)

    def conv2d(self, x: int, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1, name="") -> int:
        attrs = {"stride": _pair(stride), "padding": _pair(padding), "dilation": _pair(dilation), "groups": int(groups)}
        params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
        return self.add("conv2d", (x,), attrs, params, name)

    def conv_transpose2d(self, x: int, weight, bias=None, *, stride=1, padding=0, output_padding=0, dilation=1, name="") -> int:
        attrs = {
            "stride": _pair(stride),
            "padding": _pair(padding),
            "output_padding": _pair(output_padding),
            "dilation": _pair(dilation),
        }
        params = {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
        return self.add("conv_transpose2d", (x,), attrs, params, name)

    def avg_pool2d(self, x: int, kernel_size, stride=None, padding=0, count_include_pad=True, name="") -> int:
        attrs = {
            "kernel_size": _pair(kernel_size),
            "stride": _pair(stride if stride is not None else kernel_size),
            "padding": _pair(padding),
            "count_include_pad": bool(count_include_pad),
        }
        return self.add("avg_pool2d", (x,), attrs, name=name)

    def max_pool2d(self, x: int, kernel_size, stride=None, name="") -> int:
        attrs = {"kernel_size": _pair(kernel_size), "stride": _pair(stride if stride is not None else kernel_size)}
        return self.add("max_pool2d", (x,), attrs, name=name)

    def upsample_nearest(self, x: int, scale, name="") -> int:
        return self.add("upsample_nearest", (x,), {"scale": _pair(scale)}, name=name)

    def upsample_bilinear(self, x: int, out_size, align_corners=False, name="") -> int:
        in_h, in_w = self.shape(x)[1:]
        out_h, out_w = _pair(out_size)
        params = {
            "rows": bilinear_matrix(in_h, out_h, align_corners),
            "cols": bilinear_matrix(in_w, out_w, align_corners),
        }
        return self.add("upsample_bilinear", (x,), {"align_corners": bool(align_corners)}, params, name)

    def scale_shift(self, x: int, scale, shift, name="") -> int:
        return self.add("scale_shift", (x,), params={"scale": scale, "shift": shift}, name=name)

    def add_const(self, x: int, const, name="") -> int:
        return self.add("add_const", (x,), params={"const": const}, name=name)

    def mul_const(self, x: int, const, name="") -> int:
        return self.add("mul_const", (x,), params={"const": const}, name=name)

    def relu(self, x: int, name="") -> int:
        return self.add("relu", (x,), name=name)

    def leaky_relu(self, x: int, negative_slope: float, name="") -> int:
        return self.add("leaky_relu", (x,), {"negative_slope": float(negative_slope)}, name=name)

    def abs(self, x: int, name="") -> int:
        return self.add("abs", (x,), name=name)

    def binary(self, kind: str, x: int, y: int, name="") -> int:
        return self.add(kind, (x, y), name=name)

    def concat(self, xs: list[int], axis: int = 0, name="") -> int:
        return self.add("concat", tuple(xs), {"axis": int(axis)}, name=name)

    def reshape(self, x: int, shape: tuple[int, ...], name="") -> int:
        return self.add("reshape", (x,), {"shape": tuple(int(s) for s in shape)}, name=name, shape=tuple(shape))

    def build(self, output: int | None = None, metadata: Mapping[str, Any] | None = None) -> Graph:
        """Freeze the nodes into a :class:`Graph` whose output is ``output``
        (the last node when ``None``)."""
        out = len(self._nodes) - 1 if output is None else output
        return Graph(tuple(self._nodes), out, metadata or {})


def bilinear_matrix(size_in: int, size_out: int, align_corners: bool) -> np.ndarray:
    """Interpolation matrix (size_out, size_in) of torch's bilinear resize along one axis.

    With ``align_corners=False`` the source coordinate of output ``i`` is
    ``(i + 0.5) * size_in / size_out - 0.5`` clamped at 0; with ``True`` it is
    ``i * (size_in - 1) / (size_out - 1)``.
    """
    matrix = np.zeros((size_out, size_in))
    for i in range(size_out):
        if align_corners:
            source = i * (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
        else:
            source = max((i + 0.5) * size_in / size_out - 0.5, 0.0)
        low = min(int(np.floor(source)), size_in - 1)
        high = min(low + 1, size_in - 1)
        weight_high = source - low
        matrix[i, low] += 1.0 - weight_high
        matrix[i, high] += weight_high
    return matrix
