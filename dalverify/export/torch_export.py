"""Export a torch module to a :class:`~dalverify.graph.ir.Graph`.

The module is traced with the public ``torch.fx.symbolic_trace`` and then
run once on the example input with a ``torch.fx.Interpreter`` that records
every intermediate value. A value that does not depend on the input (a
timestep embedding looked up at a constant index, a registered noise buffer,
arithmetic on them) is folded into a constant. Every value that depends on
the input becomes one or a few IR nodes. Everything that is not piecewise
linear is collected and reported in one :class:`NotPiecewiseLinearError`.

The export never changes the module's train/eval mode; modules whose
behaviour depends on the mode (batch norm, dropout) must already be in eval
mode.
"""

from __future__ import annotations

import logging
import operator
from typing import Any

import numpy as np
import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from dalverify.errors import InputError, NotPiecewiseLinearError
from dalverify.graph.builder import GraphBuilder
from dalverify.graph.ir import Graph

logger = logging.getLogger(__name__)

_HINT = (
    "Use only piecewise-linear parts: Conv2d, ConvTranspose2d, Linear, ReLU, LeakyReLU, "
    "MaxPool2d, AvgPool2d, nearest or bilinear Upsample, BatchNorm2d in eval mode, "
    "concatenation and addition; replace SiLU/GELU/Sigmoid by ReLU, GroupNorm/LayerNorm "
    "by BatchNorm2d (eval) or nothing, and remove attention and softmax."
)

#: Module types that are never piecewise linear, with a short reason.
_NON_PL_MODULES: dict[type, str] = {
    nn.GroupNorm: "GroupNorm divides by a data-dependent standard deviation",
    nn.LayerNorm: "LayerNorm divides by a data-dependent standard deviation",
    nn.InstanceNorm2d: "InstanceNorm divides by a data-dependent standard deviation",
    nn.SiLU: "SiLU is smooth, not piecewise linear",
    nn.GELU: "GELU is smooth, not piecewise linear",
    nn.Sigmoid: "Sigmoid is smooth, not piecewise linear",
    nn.Tanh: "Tanh is smooth, not piecewise linear",
    nn.Softmax: "Softmax is smooth, not piecewise linear",
    nn.Softplus: "Softplus is smooth, not piecewise linear",
    nn.ELU: "ELU is smooth for negative inputs",
    nn.Mish: "Mish is smooth, not piecewise linear",
    nn.MultiheadAttention: "attention multiplies input-dependent tensors",
}

_NON_PL_FUNCTIONS = {
    F.silu, F.gelu, F.softmax, F.sigmoid, F.tanh, F.group_norm, F.layer_norm, F.elu, F.softplus,
    F.mish, torch.sigmoid, torch.tanh, torch.exp, torch.log, torch.sqrt, torch.softmax,
    torch.matmul, torch.bmm, F.scaled_dot_product_attention, torch.randn_like, torch.rand_like,
}


def _pair(value: Any) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def _array(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float64).numpy()


def _mode_offenders(module: nn.Module) -> list[tuple[str, str]]:
    offenders = []
    for name, sub in module.named_modules():
        label = name or type(module).__name__
        for kind, reason in _NON_PL_MODULES.items():
            if isinstance(sub, kind):
                offenders.append((label, f"{type(sub).__name__}: {reason}"))
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.training:
            offenders.append((label, f"{type(sub).__name__} in train mode normalizes by batch statistics; call .eval() first"))
        if isinstance(sub, nn.modules.dropout._DropoutNd) and sub.training and sub.p > 0:
            offenders.append((label, f"{type(sub).__name__} in train mode is random; call .eval() first"))
    return offenders


class _Recorder(torch.fx.Interpreter):
    """Run the traced graph and keep every node's value."""

    def __init__(self, module: torch.fx.GraphModule) -> None:
        super().__init__(module)
        self.values: dict[str, Any] = {}

    def run_node(self, node: torch.fx.Node) -> Any:
        result = super().run_node(node)
        self.values[node.name] = result
        return result


class _Converter:
    def __init__(self, traced: torch.fx.GraphModule, values: dict[str, Any], batch: int) -> None:
        self.traced = traced
        self.values = values
        self.batch = batch
        self.modules = dict(traced.named_modules())
        self.ids: dict[str, int] = {}
        self.offenders: list[tuple[str, str]] = []
        self.builder: GraphBuilder | None = None

    # -- helpers ---------------------------------------------------------
    def dependent(self, arg: Any) -> bool:
        return isinstance(arg, torch.fx.Node) and arg.name in self.ids

    def value(self, arg: Any) -> Any:
        return self.values[arg.name] if isinstance(arg, torch.fx.Node) else arg

    def sample_const(self, const: Any, where: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """Convert a constant operand to an array that broadcasts against one sample of ``shape``."""
        if isinstance(const, (int, float)):
            return np.array(float(const))
        if not isinstance(const, torch.Tensor):
            self.offenders.append((where, f"unsupported constant operand of type {type(const).__name__}"))
            return None
        array = _array(const)
        full = len(shape) + 1
        if array.ndim == full:
            if array.shape[0] != 1:
                array_batch = array.shape[0]
                if np.all(array == array[:1]):
                    array = array[:1]
                else:
                    self.offenders.append((where, f"a constant with batch size {array_batch} differs per sample"))
                    return None
            array = array[0]
        elif array.ndim > full:
            self.offenders.append((where, f"a constant of shape {tuple(array.shape)} broadcasts beyond the input"))
            return None
        return np.broadcast_to(array, shape).copy() if array.ndim else array

    # -- conversion --------------------------------------------------------
    def convert(self) -> Graph:
        output_id = None
        for node in self.traced.graph.nodes:
            where = node.target if node.op == "call_module" else f"{node.name} ({node.op} {getattr(node.target, '__name__', node.target)})"
            if node.op == "placeholder":
                value = self.values[node.name]
                if isinstance(value, torch.Tensor) and self.builder is None:
                    self.builder = GraphBuilder(tuple(value.shape[1:]))
                    self.ids[node.name] = 0
                continue
            if node.op == "output":
                result = node.args[0]
                if isinstance(result, (tuple, list)) and len(result) == 1:
                    result = result[0]
                if not self.dependent(result):
                    self.offenders.append(("output", "the output must be a single tensor that depends on the input"))
                else:
                    output_id = self.ids[result.name]
                continue
            args = list(node.args)
            if not any(self.dependent(a) for a in _flatten(args) + _flatten(list(node.kwargs.values()))):
                continue  # constant: folded through self.values
            try:
                new_id = self.convert_node(node, where)
            except _Unsupported as problem:
                self.offenders.append((str(where), str(problem)))
                continue
            if new_id is not None:
                self.ids[node.name] = new_id
        if self.offenders:
            raise NotPiecewiseLinearError(self.offenders, _HINT)
        return self.builder.build(output_id)

    def convert_node(self, node: torch.fx.Node, where: str) -> int | None:
        b = self.builder
        if node.op == "call_module":
            return self.convert_module(self.modules[node.target], node, where)
        target = node.target
        args = list(node.args)
        kwargs = dict(node.kwargs)
        if node.op == "call_method":
            name = target
            if name in ("contiguous", "clone", "detach", "float", "double", "to"):
                return self.ids[args[0].name]
            if name in ("view", "reshape", "flatten"):
                shape = tuple(self.values[node.name].shape[1:])
                return b.reshape(self.ids[args[0].name], shape, name=node.name)
            if name in ("relu", "abs", "add", "sub", "mul", "div", "neg"):
                target = {"relu": torch.relu, "abs": torch.abs, "add": operator.add, "sub": operator.sub,
                          "mul": operator.mul, "div": operator.truediv, "neg": operator.neg}[name]
            else:
                raise _Unsupported(f"tensor method .{name}() is not supported")
        if target in _NON_PL_FUNCTIONS:
            raise _Unsupported(f"{getattr(target, '__name__', target)} is not piecewise linear")
        if target in (torch.relu, F.relu):
            return b.relu(self.ids[args[0].name], name=node.name)
        if target is F.leaky_relu:
            slope = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
            return b.leaky_relu(self.ids[args[0].name], slope, name=node.name)
        if target in (torch.abs, abs, operator.abs):
            return b.abs(self.ids[args[0].name], name=node.name)
        if target in (torch.cat, torch.concat):
            tensors = args[0]
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            ndim = self.values[node.name].dim()
            dim = dim % ndim
            if dim == 0:
                raise _Unsupported("concatenation along the batch axis")
            anchor = self.ids[next(t for t in tensors if self.dependent(t)).name]
            parts = []
            for tensor in tensors:
                if self.dependent(tensor):
                    parts.append(self.ids[tensor.name])
                else:
                    # A constant block: zero times an input-dependent tensor plus the constant.
                    const_shape = tuple(self.value(tensor).shape[1:])
                    const = self.sample_const(self.value(tensor), where, const_shape)
                    if const_shape != b.shape(anchor):
                        raise _Unsupported("concatenating a constant whose shape differs from the variable parts")
                    parts.append(b.add_const(b.mul_const(anchor, 0.0), const, name=f"{node.name}.const"))
            return b.concat(parts, dim - 1, name=node.name)
        if target in (operator.add, torch.add, operator.sub, torch.sub, operator.mul, torch.mul, operator.truediv, torch.div):
            return self.convert_arithmetic(node, target, args, where)
        if target in (operator.neg, torch.neg):
            return b.mul_const(self.ids[args[0].name], -1.0, name=node.name)
        if target in (torch.flatten, torch.reshape):
            shape = tuple(self.values[node.name].shape[1:])
            return b.reshape(self.ids[args[0].name], shape, name=node.name)
        if target is F.max_pool2d:
            return self.max_pool(self.ids[args[0].name], node, _kw(args, kwargs, ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode"]))
        if target is F.avg_pool2d:
            options = _kw(args, kwargs, ["input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"])
            return self.avg_pool(self.ids[args[0].name], node, options)
        if target is F.interpolate:
            options = _kw(args, kwargs, ["input", "size", "scale_factor", "mode", "align_corners"])
            return self.upsample(self.ids[args[0].name], node, options.get("mode", "nearest"), options.get("align_corners"))
        if target is operator.getitem:
            raise _Unsupported("indexing or slicing an input-dependent tensor is not supported")
        raise _Unsupported(f"function {getattr(target, '__name__', target)} is not supported")

    def convert_arithmetic(self, node, target, args, where) -> int:
        b = self.builder
        left, right = args[0], args[1]
        shape = tuple(self.values[node.name].shape[1:])
        dep_left, dep_right = self.dependent(left), self.dependent(right)
        is_add = target in (operator.add, torch.add)
        is_sub = target in (operator.sub, torch.sub)
        is_mul = target in (operator.mul, torch.mul)
        alpha = node.kwargs.get("alpha", 1)
        if dep_left and dep_right:
            if is_add or is_sub:
                lid, rid = self.ids[left.name], self.ids[right.name]
                if b.shape(lid) != shape or b.shape(rid) != shape:
                    raise _Unsupported("adding tensors of different shapes (broadcasting) is not supported")
                if alpha != 1:
                    rid = b.mul_const(rid, float(alpha))
                return b.binary("add" if is_add else "sub", lid, rid, name=node.name)
            raise _Unsupported("product or quotient of two input-dependent tensors is not piecewise linear")
        variable, const = (left, right) if dep_left else (right, left)
        vid = self.ids[variable.name]
        if b.shape(vid) != shape:
            raise _Unsupported("broadcasting an input-dependent tensor to a larger shape is not supported")
        const_array = self.sample_const(self.value(const), where, shape)
        if const_array is None:
            raise _Unsupported("constant operand could not be folded")
        if is_add:
            if dep_left:
                return b.add_const(vid, const_array * float(alpha), name=node.name)
            scaled = vid if alpha == 1 else b.mul_const(vid, float(alpha), name=f"{node.name}.scale")
            return b.add_const(scaled, const_array, name=node.name)
        if is_sub:
            if dep_left:
                return b.add_const(vid, -const_array * float(alpha), name=node.name)
            negated = b.mul_const(vid, -float(alpha), name=f"{node.name}.neg")
            return b.add_const(negated, const_array, name=node.name)
        if is_mul:
            return b.mul_const(vid, const_array, name=node.name)
        if not dep_left:
            raise _Unsupported("dividing by an input-dependent tensor is not piecewise linear")
        return b.mul_const(vid, 1.0 / const_array, name=node.name)

    def max_pool(self, source: int, node, options: dict) -> int:
        kernel = _pair(options["kernel_size"])
        stride = _pair(options.get("stride") or kernel)
        if _pair(options.get("padding", 0)) != (0, 0) or _pair(options.get("dilation", 1)) != (1, 1) or options.get("ceil_mode"):
            raise _Unsupported("max pooling with padding, dilation or ceil_mode is not supported; use padding=0")
        return self.builder.max_pool2d(source, kernel, stride, name=node.name)

    def avg_pool(self, source: int, node, options: dict) -> int:
        kernel = _pair(options["kernel_size"])
        stride = _pair(options.get("stride") or kernel)
        if options.get("ceil_mode") or options.get("divisor_override"):
            raise _Unsupported("average pooling with ceil_mode or divisor_override is not supported")
        return self.builder.avg_pool2d(source, kernel, stride, options.get("padding", 0), options.get("count_include_pad", True), name=node.name)

    def upsample(self, source: int, node, mode: str, align_corners) -> int:
        in_h, in_w = self.builder.shape(source)[1:]
        out_h, out_w = tuple(self.values[node.name].shape[2:])
        if mode == "nearest":
            if out_h % in_h or out_w % in_w:
                raise _Unsupported("nearest upsampling by a non-integer factor is not supported")
            return self.builder.upsample_nearest(source, (out_h // in_h, out_w // in_w), name=node.name)
        if mode == "bilinear":
            return self.builder.upsample_bilinear(source, (out_h, out_w), bool(align_corners), name=node.name)
        raise _Unsupported(f"upsampling mode {mode!r} is not piecewise linear or not supported")

    def convert_module(self, module: nn.Module, node, where: str) -> int | None:
        b = self.builder
        source = self.ids[node.args[0].name]
        if len([a for a in node.args if self.dependent(a)]) != 1 or node.kwargs:
            raise _Unsupported(f"{type(module).__name__} called with extra arguments")
        for kind, reason in _NON_PL_MODULES.items():
            if isinstance(module, kind):
                raise _Unsupported(f"{type(module).__name__}: {reason}")
        if isinstance(module, nn.Conv2d):
            if module.padding_mode != "zeros":
                raise _Unsupported(f"Conv2d padding_mode={module.padding_mode!r}; use 'zeros'")
            padding = module.padding
            if isinstance(padding, str):
                padding = _same_padding(module) if padding == "same" else (0, 0)
            bias = None if module.bias is None else _array(module.bias)
            return b.conv2d(source, _array(module.weight), bias, stride=module.stride, padding=padding,
                            dilation=module.dilation, groups=module.groups, name=node.target)
        if isinstance(module, nn.ConvTranspose2d):
            if module.groups != 1:
                raise _Unsupported("ConvTranspose2d with groups > 1 is not supported")
            bias = None if module.bias is None else _array(module.bias)
            return b.conv_transpose2d(source, _array(module.weight), bias, stride=module.stride, padding=module.padding,
                                      output_padding=module.output_padding, dilation=module.dilation, name=node.target)
        if isinstance(module, nn.Linear):
            if len(b.shape(source)) != 1:
                raise _Unsupported("Linear applied to a tensor with more than one feature axis; flatten first")
            bias = None if module.bias is None else _array(module.bias)
            return b.dense(source, _array(module.weight), bias, name=node.target)
        if isinstance(module, nn.ReLU):
            return b.relu(source, name=node.target)
        if isinstance(module, nn.LeakyReLU):
            return b.leaky_relu(source, module.negative_slope, name=node.target)
        if isinstance(module, nn.MaxPool2d):
            options = {"kernel_size": module.kernel_size, "stride": module.stride, "padding": module.padding,
                       "dilation": module.dilation, "ceil_mode": module.ceil_mode}
            if module.return_indices:
                raise _Unsupported("MaxPool2d with return_indices=True is not supported")
            return self.max_pool(source, node, options)
        if isinstance(module, nn.AvgPool2d):
            options = {"kernel_size": module.kernel_size, "stride": module.stride, "padding": module.padding,
                       "ceil_mode": module.ceil_mode, "count_include_pad": module.count_include_pad,
                       "divisor_override": module.divisor_override}
            return self.avg_pool(source, node, options)
        if isinstance(module, nn.Upsample):
            return self.upsample(source, node, module.mode, module.align_corners)
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            if module.training:
                raise _Unsupported(f"{type(module).__name__} in train mode; call .eval() first")
            mean = _array(module.running_mean)
            var = _array(module.running_var)
            weight = _array(module.weight) if module.affine else np.ones_like(mean)
            shift = _array(module.bias) if module.affine else np.zeros_like(mean)
            scale = weight / np.sqrt(var + module.eps)
            return b.scale_shift(source, scale, shift - mean * scale, name=node.target)
        if isinstance(module, nn.Identity) or (isinstance(module, nn.modules.dropout._DropoutNd) and not module.training):
            return source
        if isinstance(module, nn.Flatten):
            return b.reshape(source, tuple(self.values[node.name].shape[1:]), name=node.target)
        raise _Unsupported(f"module type {type(module).__name__} is not supported")


class _Unsupported(Exception):
    pass


def _flatten(items: list) -> list:
    flat = []
    for item in items:
        if isinstance(item, (list, tuple)):
            flat.extend(_flatten(list(item)))
        else:
            flat.append(item)
    return flat


def _kw(args: list, kwargs: dict, names: list[str]) -> dict:
    options = dict(zip(names, args))
    options.update(kwargs)
    return options


def _same_padding(module: nn.Conv2d) -> tuple[int, int]:
    pads = []
    for k, d in zip(module.kernel_size, module.dilation):
        total = d * (k - 1)
        if total % 2:
            raise _Unsupported("Conv2d padding='same' with an even effective kernel is asymmetric; pad explicitly")
        pads.append(total // 2)
    return tuple(pads)


def export(module: nn.Module, example_input: torch.Tensor, *, metadata: dict | None = None) -> Graph:
    """Export ``module`` (a map from a batched tensor to a batched tensor) to a Graph.

    Parameters
    ----------
    module
        A ``torch.nn.Module`` whose ``forward(x)`` is piecewise linear in ``x``.
    example_input
        A tensor of shape (B, *input_shape); it fixes the shapes and is run
        once through the module (under ``torch.no_grad``).
    metadata
        JSON-compatible facts stored in the graph and covered by its digest.

    Raises
    ------
    NotPiecewiseLinearError
        Listing every module or operation that is not piecewise linear (by
        qualified module path or traced node name), data-dependent control
        flow, and modes that must be switched to eval.
    """
    if not isinstance(module, nn.Module):
        raise InputError(f"export expects a torch.nn.Module, got {type(module).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 2:
        raise InputError("example_input must be a batched tensor of shape (B, *input_shape)")

    offenders = _mode_offenders(module)
    try:
        traced = torch.fx.symbolic_trace(module)
    except (torch.fx.proxy.TraceError, TypeError, RuntimeError) as error:
        offenders.append((type(module).__name__, f"cannot be traced (data-dependent control flow?): {error}"))
        raise NotPiecewiseLinearError(offenders, _HINT) from error
    if offenders:
        # Report leaf-module problems together with functions found in the trace.
        raise NotPiecewiseLinearError(offenders + _function_offenders(traced), _HINT)

    recorder = _Recorder(traced)
    with torch.no_grad():
        recorder.run(example_input)
    converter = _Converter(traced, recorder.values, int(example_input.shape[0]))
    graph = converter.convert()
    if metadata:
        graph = Graph(graph.nodes, graph.output, dict(metadata))
    logger.info("exported %s: %d nodes, %d piecewise units", type(module).__name__, len(graph.nodes), graph.count_units())
    return graph


def _function_offenders(traced: torch.fx.GraphModule) -> list[tuple[str, str]]:
    found = []
    for node in traced.graph.nodes:
        if node.op == "call_function" and node.target in _NON_PL_FUNCTIONS:
            found.append((node.name, f"{getattr(node.target, '__name__', node.target)} is not piecewise linear"))
    return found


__all__ = ["export"]
