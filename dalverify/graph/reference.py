"""Reference float64 semantics of a :class:`~dalverify.graph.ir.Graph`, in numpy.

Every kind computes each batch element with the same operations whatever
the batch size, so a value does not depend on what else is in the batch.

This module imports no torch. It defines what every node kind computes and
is the semantics that the independent verifier relies on. The torch backend
must agree with it within :data:`dalverify.tolerances.EVALUATOR_RTOL`.

Linear kinds take an optional ``bias_mask`` (one flag per batch element):
the constant term of the node is added only where the flag is set. A line
``(alpha, beta)`` is propagated by stacking ``alpha`` and ``beta`` along the
batch axis with ``bias_mask = [True, False]``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from dalverify.errors import InputError
from dalverify.graph.ir import BIAS_PARAMS, Graph, Node


def _with_bias(out: np.ndarray, bias: np.ndarray, bias_mask: np.ndarray | None) -> np.ndarray:
    if bias_mask is None:
        return out + bias
    mask = np.asarray(bias_mask, dtype=np.float64).reshape((-1,) + (1,) * (out.ndim - 1))
    return out + mask * bias


def conv2d(x: np.ndarray, weight: np.ndarray, stride, padding, dilation, groups: int) -> np.ndarray:
    """2-D cross-correlation with torch ``conv2d`` semantics, without bias.

    Lowered to one matrix product per group: the ``kh * kw`` shifted views of
    the padded input are copied into a column buffer (im2col), which BLAS then
    multiplies by the flattened weight. Each output is a sum of
    ``C / groups * kh * kw`` products; the summation order is BLAS's, and the
    rounding-error bounds used downstream hold for any order.
    """
    batch, channels, height, width = x.shape
    out_channels, group_channels, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x

    columns = np.empty((batch, channels, kh, kw, out_h, out_w))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + sh * (out_h - 1) + 1, sh)
            cols = slice(j * dw, j * dw + sw * (out_w - 1) + 1, sw)
            columns[:, :, i, j] = padded[:, :, rows, cols]
    return columns_product(columns, weight, groups)


def columns_product(columns: np.ndarray, weight: np.ndarray, groups: int) -> np.ndarray:
    """Multiply an im2col buffer ``(batch, C, kh, kw, out_h, out_w)`` by the weight: the product step of :func:`conv2d`."""
    batch, channels, kh, kw, out_h, out_w = columns.shape
    out_channels, group_channels = weight.shape[:2]
    columns = columns.reshape(batch, groups, group_channels * kh * kw, out_h * out_w)
    grouped = weight.reshape(groups, out_channels // groups, group_channels * kh * kw)
    out = np.matmul(grouped, columns)
    return out.reshape(batch, out_channels, out_h, out_w)


def conv_transpose2d(x: np.ndarray, weight: np.ndarray, stride, padding, output_padding, dilation) -> np.ndarray:
    """Transposed 2-D convolution with torch semantics (groups 1), without bias.

    One matrix product gives every kernel tap's contribution; the taps are
    then added into the strided output positions (col2im).
    """
    batch, channels, height, width = x.shape
    _, out_channels, kh, kw = weight.shape
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    full_h = (height - 1) * sh + dh * (kh - 1) + 1 + oph
    full_w = (width - 1) * sw + dw * (kw - 1) + 1 + opw

    taps = np.matmul(weight.reshape(channels, out_channels * kh * kw).T, x.reshape(batch, channels, height * width))
    taps = taps.reshape(batch, out_channels, kh, kw, height, width)

    full = np.zeros((batch, out_channels, full_h, full_w))
    for i in range(kh):
        for j in range(kw):
            full[:, :, i * dh : i * dh + (height - 1) * sh + 1 : sh, j * dw : j * dw + (width - 1) * sw + 1 : sw] += taps[:, :, i, j]
    out_h = (height - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    out_w = (width - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    return full[:, :, ph : ph + out_h, pw : pw + out_w]


def pool_windows(x: np.ndarray, kernel_size, stride) -> np.ndarray:
    """Windows of ``x`` (B, C, H, W) as an array (B, C, Ho, Wo, kh * kw)."""
    kh, kw = kernel_size
    sh, sw = stride
    height, width = x.shape[2:]
    out_h = (height - kh) // sh + 1
    out_w = (width - kw) // sw + 1
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw][:, :, :out_h, :out_w]
    return windows.reshape(windows.shape[:4] + (kh * kw,))


def avg_pool2d(x: np.ndarray, kernel_size, stride, padding, count_include_pad: bool) -> np.ndarray:
    """Average pooling with torch semantics (``ceil_mode=False``)."""
    ph, pw = padding
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    sums = pool_windows(padded, kernel_size, stride).sum(axis=-1)
    if count_include_pad or (ph == 0 and pw == 0):
        return sums / float(kernel_size[0] * kernel_size[1])
    ones = np.pad(np.ones((1, 1) + x.shape[2:]), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    counts = pool_windows(ones, kernel_size, stride).sum(axis=-1)
    return sums / counts


def apply_linear(node: Node, inputs: Sequence[np.ndarray], bias_mask: np.ndarray | None = None,
                 conv: Callable | None = None) -> np.ndarray:
    """Apply a node that is linear or affine (every kind except the piecewise ones).

    ``inputs`` are batched arrays (B, *shape). The constant term, if the kind
    has one, is added where ``bias_mask`` is set (everywhere when ``None``).
    ``conv`` replaces :func:`conv2d` for ``conv2d`` nodes (same signature), for
    a faster kernel with the same semantics up to the order of summation.
    """
    kind, attrs, params = node.kind, node.attrs, node.params
    x = inputs[0] if inputs else None
    if kind == "conv2d" and conv is not None:
        out = conv(x, params["weight"], attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"])
        out_bias = params.get("bias")
        return out if out_bias is None else _with_bias(out, out_bias.reshape(-1, 1, 1), bias_mask)
    if kind == "dense":
        # One product per batch element, so that each element's result does
        # not depend on the batch size (the layer-major walk relies on it).
        out = np.matmul(x[:, None, :], params["weight"].T)[:, 0]
    elif kind == "conv2d":
        out = conv2d(x, params["weight"], attrs["stride"], attrs["padding"], attrs["dilation"], attrs["groups"])
        out_bias = params.get("bias")
        return out if out_bias is None else _with_bias(out, out_bias.reshape(-1, 1, 1), bias_mask)
    elif kind == "conv_transpose2d":
        out = conv_transpose2d(
            x, params["weight"], attrs["stride"], attrs["padding"], attrs["output_padding"], attrs["dilation"]
        )
        out_bias = params.get("bias")
        return out if out_bias is None else _with_bias(out, out_bias.reshape(-1, 1, 1), bias_mask)
    elif kind == "avg_pool2d":
        return avg_pool2d(x, attrs["kernel_size"], attrs["stride"], attrs["padding"], attrs["count_include_pad"])
    elif kind == "upsample_nearest":
        sh, sw = attrs["scale"]
        return np.repeat(np.repeat(x, sh, axis=2), sw, axis=3)
    elif kind == "upsample_bilinear":
        return np.matmul(np.matmul(params["rows"], x), params["cols"].T)
    elif kind == "scale_shift":
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return _with_bias(x * params["scale"].reshape(shape), params["shift"].reshape(shape), bias_mask)
    elif kind == "add_const":
        return _with_bias(x, params["const"], bias_mask)
    elif kind == "mul_const":
        return x * params["const"]
    elif kind == "add":
        return inputs[0] + inputs[1]
    elif kind == "sub":
        return inputs[0] - inputs[1]
    elif kind == "concat":
        return np.concatenate(inputs, axis=attrs["axis"] + 1)
    elif kind == "reshape":
        return x.reshape((x.shape[0],) + tuple(node.shape))
    else:
        raise InputError(f"node {node.id} has kind {kind!r}, which is not linear")
    if "bias" in params:
        out = _with_bias(out, params["bias"], bias_mask)
    return out


def apply_piecewise(node: Node, x: np.ndarray) -> np.ndarray:
    """Evaluate a piecewise-linear node at points (not on a line)."""
    if node.kind == "relu":
        return np.maximum(x, 0.0)
    if node.kind == "leaky_relu":
        return np.where(x >= 0.0, x, node.attrs["negative_slope"] * x)
    if node.kind == "abs":
        return np.abs(x)
    if node.kind == "max_pool2d":
        return pool_windows(x, node.attrs["kernel_size"], node.attrs["stride"]).max(axis=-1)
    raise InputError(f"node {node.id} has kind {node.kind!r}, which is not piecewise linear")


def apply_node(node: Node, inputs: Sequence[np.ndarray]) -> np.ndarray:
    """Evaluate any non-input node on batched inputs."""
    if node.kind in ("relu", "leaky_relu", "abs", "max_pool2d"):
        return apply_piecewise(node, inputs[0])
    return apply_linear(node, inputs)


def last_uses(graph: Graph) -> list[int]:
    """For each node, the id of the last node that reads it (or its own id)."""
    last = list(range(len(graph.nodes)))
    for node in graph.nodes:
        for source in node.inputs:
            last[source] = max(last[source], node.id)
    last[graph.output] = len(graph.nodes)
    return last


def evaluate(graph: Graph, x: np.ndarray) -> np.ndarray:
    """Evaluate ``graph`` on a batch ``x`` of shape (B, *input_shape) in float64.

    Returns an array of shape (B, *output_shape). Intermediate values are
    released as soon as no later node reads them.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.shape[1:] != graph.input_shape:
        raise InputError(
            f"input has shape {x.shape[1:]} per batch element; the graph expects {graph.input_shape}"
        )
    last = last_uses(graph)
    values: dict[int, np.ndarray] = {0: x}
    for node in graph.nodes[1:]:
        values[node.id] = apply_node(node, [values[i] for i in node.inputs])
        for source in set(node.inputs):
            if last[source] == node.id:
                del values[source]
    return values[graph.output]


__all__ = ["BIAS_PARAMS", "apply_linear", "apply_node", "apply_piecewise", "evaluate", "last_uses"]
