"""Import a piecewise-linear ONNX model as a :class:`~dalverify.graph.ir.Graph`.

The model must have one input tensor of shape ``(N, C, H, W)`` (or any rank,
with the batch axis first) whose batch dimension is ``1`` or symbolic, and
one output. Values that do not depend on the input are folded into
constants in float64: initializers, ``Constant`` nodes and every node whose
inputs are all constant (for example a timestep embedding computed from an
initializer, or ``Shape`` of an input-dependent tensor, whose value is known
from the static shapes). Folding uses the reference evaluator shipped with
the ``onnx`` package (``onnx.reference``) at the model's opset. Every value
that depends on the input becomes one or a few IR nodes.

Operators accepted on input-dependent values
--------------------------------------------
``Conv`` and ``ConvTranspose`` (2-D, constant weights, symmetric padding),
``Gemm`` and ``MatMul`` with one constant operand, ``Relu``, ``LeakyRelu``,
``Abs``, ``Clip`` with constant bounds, ``MaxPool`` (no padding, no
dilation), ``AveragePool`` and ``GlobalAveragePool``,
``BatchNormalization`` in inference mode, ``Resize`` and ``Upsample``
(nearest by an integer factor, or linear on the two spatial axes),
``Concat``, ``Add``, ``Sub``, ``Mul`` and ``Div`` by a constant (``Add`` and
``Sub`` also of two input-dependent tensors of equal shape), ``Neg``,
``Reshape``, ``Flatten`` (axis 1), ``Squeeze`` and ``Unsqueeze`` off the
batch axis, ``Transpose`` when it only moves axes of length 1 (otherwise the
per-sample layout would be permuted), ``Identity``, ``Dropout`` (inference)
and ``Cast`` to a floating type.

Random operators
----------------
``RandomNormal`` and ``RandomNormalLike`` are folded to constants drawn from
``numpy.random.default_rng(seed)`` with the ``seed`` passed to
:func:`from_onnx`: one generator per import, drawn in node order, each
output being ``standard_normal(shape) * scale + mean`` in float64 (the
node's own ``seed`` and ``dtype`` attributes are ignored). The shape of
``RandomNormalLike`` is the full shape of its input with batch size 1.

Everything that is not accepted is collected over the whole model and
reported in one :class:`~dalverify.errors.NotPiecewiseLinearError` that
names every offending node.

Semantics
---------
Parameters are the exact float64 values of the stored tensors (float32
weights convert without rounding). Floating attributes such as the
``LeakyRelu`` slope are stored as float32 in ONNX and are used with that
float32 value (``0.1`` becomes ``0.10000000149011612``). Arithmetic that
the model would do in float32 is done in float64.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dalverify.errors import GraphFileError, InputError, NotPiecewiseLinearError
from dalverify.graph.builder import GraphBuilder
from dalverify.graph.ir import Graph

logger = logging.getLogger(__name__)

try:  # The onnx package is the optional extra "onnx".
    import onnx
    from onnx import helper, numpy_helper
except ImportError:  # pragma: no cover - exercised only without the extra
    onnx = None

_HINT = (
    "Use only piecewise-linear operators on values that depend on the input: Conv, ConvTranspose, "
    "Gemm/MatMul with a constant, Relu, LeakyRelu, MaxPool, AveragePool, nearest or linear Resize, "
    "Concat, Add/Sub, Mul/Div by a constant and reshapes; replace SiLU/GELU/Sigmoid by Relu, "
    "GroupNorm/LayerNorm by BatchNorm (eval) or nothing, and remove attention and softmax."
)

#: Largest weight matrix (entries) that MatMul, Gemm or a constant block of
#: Concat may expand to; larger expansions are reported instead of built.
MAX_DENSE_ENTRIES = 50_000_000

#: Reasons for operators that are never piecewise linear on input-dependent values.
_NOT_PIECEWISE_LINEAR = {
    "Sigmoid": "is smooth, not piecewise linear",
    "Tanh": "is smooth, not piecewise linear",
    "Softmax": "is smooth, not piecewise linear",
    "LogSoftmax": "is smooth, not piecewise linear",
    "Softplus": "is smooth, not piecewise linear",
    "Softsign": "is smooth, not piecewise linear",
    "Elu": "is smooth for negative inputs",
    "Selu": "is smooth for negative inputs",
    "Celu": "is smooth for negative inputs",
    "Gelu": "is smooth, not piecewise linear",
    "Mish": "is smooth, not piecewise linear",
    "HardSwish": "multiplies the input by a function of itself",
    "Erf": "is smooth, not piecewise linear",
    "Exp": "is smooth, not piecewise linear",
    "Log": "is smooth, not piecewise linear",
    "Sqrt": "is smooth, not piecewise linear",
    "Reciprocal": "is smooth, not piecewise linear",
    "Pow": "is not piecewise linear",
    "Sin": "is smooth, not piecewise linear",
    "Cos": "is smooth, not piecewise linear",
    "InstanceNormalization": "divides by a data-dependent standard deviation",
    "LayerNormalization": "divides by a data-dependent standard deviation",
    "GroupNormalization": "divides by a data-dependent standard deviation",
    "LpNormalization": "divides by a data-dependent norm",
    "MeanVarianceNormalization": "divides by a data-dependent standard deviation",
    "Attention": "multiplies input-dependent tensors",
}

#: Operators whose output has the shape of their first input, used to keep
#: converting past an unsupported node so that later problems are also found.
_SHAPE_PRESERVING = set(_NOT_PIECEWISE_LINEAR) - {"Attention"} | {
    "HardSigmoid", "Sign", "Round", "Floor", "Ceil", "Mul", "Div", "PRelu", "ThresholdedRelu", "Shrink",
}

_RANDOM_NORMAL = ("RandomNormal", "RandomNormalLike")
_OTHER_RANDOM = ("RandomUniform", "RandomUniformLike", "Bernoulli", "Multinomial", "Dropout_training")

_FLOAT_TYPES = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16 (onnx.TensorProto codes)


class _Unsupported(Exception):
    """A node that cannot be imported. The message explains why."""


@dataclass
class _Value:
    """A value of the ONNX graph: a constant array, an IR node id, or unknown.

    ``node`` is the builder id of an input-dependent value. ``const`` is the
    folded array of a constant, with the batch axis. A value with neither is
    *poisoned* because it comes after an unsupported node.
    """

    const: np.ndarray | None = None
    node: int | None = None

    @property
    def dependent(self) -> bool:
        return self.node is not None

    @property
    def poisoned(self) -> bool:
        return self.node is None and self.const is None


def _require_onnx() -> None:
    if onnx is None:
        raise InputError("importing ONNX models needs the 'onnx' package; install it with pip install 'dalverify[onnx]'")


def _load_model(path_or_model: Any) -> "onnx.ModelProto":
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model
    if isinstance(path_or_model, (bytes, bytearray)):
        try:
            return onnx.load_from_string(bytes(path_or_model))
        except Exception as error:  # protobuf raises its own DecodeError
            raise GraphFileError(f"the bytes given are not a valid ONNX model ({error})") from error
    if isinstance(path_or_model, (str, os.PathLike)):
        path = Path(path_or_model)
        if not path.is_file():
            raise GraphFileError(f"ONNX file {str(path)!r} not found")
        try:
            return onnx.load(str(path))
        except Exception as error:
            raise GraphFileError(f"ONNX file {str(path)!r} could not be read ({error}); re-export it") from error
    raise InputError(
        f"from_onnx expects a path, bytes or an onnx.ModelProto, got {type(path_or_model).__name__}"
    )


def _as_float64(array: np.ndarray) -> np.ndarray:
    """Convert floating arrays to float64 exactly; keep integer and bool arrays."""
    array = np.asarray(array)
    if array.dtype.kind == "f" or array.dtype.name == "bfloat16":
        return array.astype(np.float64)
    return array


def _attrs(node) -> dict[str, Any]:
    values = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        values[attribute.name] = value
    return values


def _pair(values: Any, default: int) -> tuple[int, int]:
    if values is None:
        return default, default
    values = [int(v) for v in values]
    if len(values) != 2:
        raise _Unsupported(f"expects 2 spatial dimensions, got {len(values)}")
    return values[0], values[1]


def _symmetric_pads(pads: Any) -> tuple[int, int]:
    """``(pad_h, pad_w)`` of ONNX pads ``[h_begin, w_begin, h_end, w_end]``; asymmetric pads are rejected."""
    if pads is None:
        return 0, 0
    pads = [int(p) for p in pads]
    if len(pads) != 4:
        raise _Unsupported(f"pads {pads} are not 2-D")
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise _Unsupported(f"asymmetric pads {pads} are not supported; pad symmetrically")
    return pads[0], pads[1]


def _same_pads(auto_pad: str, in_hw, kernel, stride, dilation) -> tuple[int, int]:
    """Symmetric pads equivalent to ``auto_pad``; odd total padding is rejected."""
    pads = []
    for size, k, s, d in zip(in_hw, kernel, stride, dilation):
        if auto_pad == "VALID":
            pads.append(0)
            continue
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        if total % 2:
            raise _Unsupported(f"auto_pad={auto_pad} needs asymmetric padding here; pad explicitly")
        pads.append(total // 2)
    return pads[0], pads[1]


def _pool_output(size: int, kernel: int, stride: int, pad: int, ceil_mode: bool) -> int:
    span = size + 2 * pad - kernel
    return (math.ceil(span / stride) if ceil_mode else span // stride) + 1


# ---------------------------------------------------------------------------
# Resize coordinate maps.


def _source_coordinate(out_index: int, in_len: int, out_len: int, scale: float, mode: str) -> float:
    """Source coordinate of output ``out_index`` under an ONNX ``coordinate_transformation_mode``."""
    if mode == "half_pixel":
        return (out_index + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (out_index + 0.5) / scale - 0.5 if out_len > 1 else 0.0
    if mode == "align_corners":
        return out_index * (in_len - 1) / (out_len - 1) if out_len > 1 else 0.0
    if mode == "asymmetric":
        return out_index / scale
    if mode == "tf_half_pixel_for_nn":
        return (out_index + 0.5) / scale
    if mode == "half_pixel_symmetric":
        adjustment = out_len / (scale * in_len)
        offset = in_len / 2 * (1 - adjustment)
        return offset + (out_index + 0.5) / scale - 0.5
    raise _Unsupported(f"coordinate_transformation_mode={mode!r} is not supported")


def _nearest_indices(in_len: int, out_len: int, scale: float, mode: str, nearest_mode: str) -> np.ndarray:
    rounding: dict[str, Callable[[float], int]] = {
        "round_prefer_floor": lambda x: math.ceil(x - 0.5),
        "round_prefer_ceil": lambda x: math.floor(x + 0.5),
        "floor": math.floor,
        "ceil": math.ceil,
    }
    if nearest_mode not in rounding:
        raise _Unsupported(f"nearest_mode={nearest_mode!r} is not supported")
    chosen = [rounding[nearest_mode](_source_coordinate(i, in_len, out_len, scale, mode)) for i in range(out_len)]
    return np.clip(np.array(chosen, dtype=np.int64), 0, in_len - 1)


def _linear_matrix(in_len: int, out_len: int, scale: float, mode: str) -> np.ndarray:
    """Interpolation matrix ``(out_len, in_len)``; coordinates outside the input use the edge value."""
    matrix = np.zeros((out_len, in_len))
    for i in range(out_len):
        source = _source_coordinate(i, in_len, out_len, scale, mode)
        low = math.floor(source)
        weight_high = source - low
        matrix[i, min(max(low, 0), in_len - 1)] += 1.0 - weight_high
        matrix[i, min(max(low + 1, 0), in_len - 1)] += weight_high
    return matrix


# ---------------------------------------------------------------------------


class _Importer:
    def __init__(self, model: "onnx.ModelProto", seed: int | None) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.seed = seed
        self.rng = None if seed is None else np.random.default_rng(seed)
        self.values: dict[str, _Value] = {}
        self.offenders: list[tuple[str, str]] = []
        self.builder: GraphBuilder | None = None
        self.consumers: dict[str, int] = {}
        self.inferred: dict[str, tuple[int, ...]] = {}
        self.random_nodes: list[str] = []

    # -- set-up -----------------------------------------------------------
    def node_label(self, index: int, node) -> str:
        return node.name or f"{node.op_type}_{index}"

    def prepare(self) -> None:
        for node in self.graph.node:
            for name in node.input:
                if name:
                    self.consumers[name] = self.consumers.get(name, 0) + 1
        for output in self.graph.output:
            self.consumers[output.name] = self.consumers.get(output.name, 0) + 1

        for initializer in self.graph.initializer:
            self.values[initializer.name] = _Value(const=_as_float64(numpy_helper.to_array(initializer)))

        inputs = [value for value in self.graph.input if value.name not in self.values]
        if len(inputs) != 1:
            names = [value.name for value in inputs]
            raise InputError(
                f"the ONNX model has {len(inputs)} non-constant inputs {names}; it must have exactly one "
                "image input (store other tensors as initializers)"
            )
        value_info = inputs[0]
        tensor_type = value_info.type.tensor_type
        if tensor_type.elem_type not in _FLOAT_TYPES:
            raise InputError(
                f"input {value_info.name!r} has ONNX element type {tensor_type.elem_type}; a floating type is required"
            )
        dims = []
        for position, dim in enumerate(tensor_type.shape.dim):
            if dim.HasField("dim_value"):
                dims.append(int(dim.dim_value))
            elif position == 0:
                dims.append(1)
            else:
                raise InputError(
                    f"input {value_info.name!r} has a symbolic dimension {dim.dim_param!r} at axis {position}; "
                    "only the batch axis may be symbolic: export with a fixed image size"
                )
        if len(dims) < 2:
            raise InputError(f"input {value_info.name!r} has shape {dims}; expected a batch axis and at least one more")
        if dims[0] != 1:
            raise InputError(
                f"input {value_info.name!r} has batch size {dims[0]}; export the model with batch size 1 "
                "or a dynamic batch axis"
            )
        self.builder = GraphBuilder(tuple(dims[1:]))
        self.values[value_info.name] = _Value(node=0)

        try:
            inferred = onnx.shape_inference.infer_shapes(self.model)
            for info in list(inferred.graph.value_info) + list(inferred.graph.output):
                shape = info.type.tensor_type.shape
                if all(d.HasField("dim_value") or i == 0 for i, d in enumerate(shape.dim)) and shape.dim:
                    self.inferred[info.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else 1
                                                     for d in shape.dim)
        except Exception as error:  # shape inference is only used to keep going after an error
            logger.debug("ONNX shape inference failed: %s", error)

        for index, node in enumerate(self.graph.node):
            if node.op_type in _RANDOM_NORMAL:
                self.random_nodes.append(self.node_label(index, node))
        if self.random_nodes and self.seed is None:
            raise InputError(
                f"the model draws random numbers in {self.random_nodes}; pass seed=<int> to fold them to "
                "constants (numpy default_rng(seed), drawn in node order)"
            )

    # -- helpers -----------------------------------------------------------
    def shape(self, value: _Value) -> tuple[int, ...]:
        """Full shape (batch axis 1 first) of a value."""
        if value.dependent:
            return (1,) + self.builder.shape(value.node)
        return tuple(value.const.shape)

    def const(self, value: _Value | None, what: str) -> np.ndarray:
        if value is None:
            raise _Unsupported(f"{what} is missing")
        if value.dependent:
            raise _Unsupported(f"{what} depends on the input; it must be a constant")
        return value.const

    def sample_const(self, const: np.ndarray, sample_shape: tuple[int, ...]) -> np.ndarray:
        """Convert a constant operand to an array for one sample of ``sample_shape``."""
        const = _as_float64(const).astype(np.float64)
        full = (1,) + tuple(sample_shape)
        if const.ndim > len(full):
            raise _Unsupported(f"a constant of shape {const.shape} has more axes than the input-dependent operand {full}")
        try:
            broadcast = np.broadcast_shapes(const.shape, full)
        except ValueError:
            raise _Unsupported(f"a constant of shape {const.shape} does not broadcast to {full}") from None
        if broadcast != full:
            raise _Unsupported(
                f"a constant of shape {const.shape} broadcasts the input-dependent operand {full} to {broadcast}"
            )
        if const.size == 1:
            return np.array(float(const.reshape(())))
        return np.broadcast_to(const, full)[0].copy()

    def reshape_to(self, source: int, full_shape: tuple[int, ...], name: str) -> int:
        full_shape = tuple(int(s) for s in full_shape)
        if not full_shape or full_shape[0] != 1:
            raise _Unsupported(
                f"the result shape {full_shape} moves data into the batch axis; keep the batch axis first"
            )
        if int(np.prod(full_shape[1:], dtype=np.int64)) != int(np.prod(self.builder.shape(source), dtype=np.int64)):
            raise _Unsupported(f"cannot reshape {self.builder.shape(source)} to {full_shape[1:]}")
        if full_shape[1:] == self.builder.shape(source):
            return source
        return self.builder.reshape(source, full_shape[1:], name=name)

    def dense_check(self, rows: int, cols: int, what: str) -> None:
        if rows * cols > MAX_DENSE_ENTRIES:
            raise _Unsupported(f"{what} would need a {rows} x {cols} weight matrix (limit {MAX_DENSE_ENTRIES} entries)")

    # -- main loop ---------------------------------------------------------
    def run(self) -> Graph:
        self.prepare()
        for index, node in enumerate(self.graph.node):
            label = self.node_label(index, node)
            inputs = [self.values.get(name) if name else None for name in node.input]
            missing = [name for name, value in zip(node.input, inputs) if name and value is None]
            if missing:
                raise InputError(f"node {label} ({node.op_type}) reads {missing}, which no earlier node produces")
            try:
                outputs = self.convert(node, label, inputs)
            except _Unsupported as problem:
                self.offenders.append((label, f"{node.op_type} {problem}"))
                outputs = self.stand_in(node, inputs)
            for name, value in zip(node.output, outputs):
                if name:
                    self.values[name] = value

        if len(self.graph.output) != 1:
            names = [output.name for output in self.graph.output]
            self.offenders.append(("graph outputs", f"the model has {len(names)} outputs {names}; it must have one"))
        output_id = None
        if self.graph.output:
            result = self.values.get(self.graph.output[0].name)
            if result is None or result.const is not None:
                self.offenders.append((self.graph.output[0].name, "the output does not depend on the input"))
            elif result.dependent:
                output_id = result.node
        if self.offenders:
            raise NotPiecewiseLinearError(self.offenders, _HINT)
        metadata = {"source": "onnx", "opset": int(self.opset), "producer": self.model.producer_name or ""}
        if self.random_nodes:
            metadata["random_seed"] = int(self.seed)
            metadata["random_generator"] = "numpy.random.default_rng(seed).standard_normal, node order"
        return self.builder.build(output_id, metadata)

    def stand_in(self, node, inputs: list[_Value | None]) -> list[_Value]:
        """Outputs that let the conversion continue after an unsupported node."""
        dependent = [value for value in inputs if value is not None and value.dependent]
        poisoned = [_Value() for _ in node.output]
        if not dependent or any(value is not None and value.poisoned for value in inputs):
            return poisoned
        source = dependent[0].node
        if node.op_type in _SHAPE_PRESERVING or node.op_type == "Clip":
            return [_Value(node=source)] + poisoned[1:]
        shape = self.inferred.get(node.output[0]) if node.output else None
        if not shape or shape[0] != 1:
            return poisoned
        label = f"{node.name or node.op_type}.stand_in"
        try:
            if int(np.prod(shape, dtype=np.int64)) == int(np.prod(self.builder.shape(source), dtype=np.int64)):
                return [_Value(node=self.reshape_to(source, tuple(shape), label))] + poisoned[1:]
            # A zero block of the inferred shape; only its shape matters for the later checks.
            return [_Value(node=_constant_block(self, source, np.zeros(shape[1:]), label))] + poisoned[1:]
        except _Unsupported:
            return poisoned

    def convert(self, node, label: str, inputs: list[_Value | None]) -> list[_Value]:
        op = node.op_type
        if node.domain not in ("", "ai.onnx"):
            raise _Unsupported(f"from the custom domain {node.domain!r} is not supported")
        if any(value is not None and value.poisoned for value in inputs):
            # An earlier node failed; report this one only if it can never be imported.
            if op in _NOT_PIECEWISE_LINEAR:
                raise _Unsupported(_NOT_PIECEWISE_LINEAR[op])
            variable = [value for value in inputs if value is not None and value.const is None]
            if op in ("Mul", "Div", "MatMul") and len(variable) > 1:
                raise _Unsupported("of two input-dependent tensors is not piecewise linear")
            if op not in _HANDLERS and op not in _RANDOM_NORMAL and op not in ("Shape", "Size"):
                raise _Unsupported("is not supported on input-dependent values")
            return [_Value() for _ in node.output]

        attrs = _attrs(node)
        if op in _RANDOM_NORMAL:
            return [self.random_normal(node, attrs, inputs)]
        if op in _OTHER_RANDOM:
            raise _Unsupported("draws random numbers; only RandomNormal and RandomNormalLike are folded")
        dependent = any(value is not None and value.dependent for value in inputs)
        if op in ("Shape", "Size") and dependent:
            return [_Value(const=self.static_shape(op, attrs, self.shape(inputs[0])))]
        if not dependent:
            return self.fold(node, inputs)

        if op in _NOT_PIECEWISE_LINEAR:
            raise _Unsupported(_NOT_PIECEWISE_LINEAR[op])
        handler = _HANDLERS.get(op)
        if handler is None:
            raise _Unsupported("is not supported on input-dependent values")
        result = handler(self, node, label, attrs, inputs)
        if isinstance(result, _Value):
            return [result] + [_Value() for _ in node.output[1:]]
        return [_Value(node=result)] + [_Value() for _ in node.output[1:]]

    # -- constants ---------------------------------------------------------
    def static_shape(self, op: str, attrs: dict[str, Any], shape: tuple[int, ...]) -> np.ndarray:
        if op == "Size":
            return np.array(int(np.prod(shape, dtype=np.int64)), dtype=np.int64)
        dims = np.array(shape, dtype=np.int64)
        start, end = attrs.get("start", 0), attrs.get("end")
        return dims[start:end] if end is not None else dims[start:]

    def random_normal(self, node, attrs: dict[str, Any], inputs: list[_Value | None]) -> _Value:
        if node.op_type == "RandomNormal":
            shape = tuple(int(s) for s in attrs["shape"])
        else:
            if not inputs or inputs[0] is None:
                raise _Unsupported("has no input to take the shape from")
            shape = self.shape(inputs[0])
        draws = self.rng.standard_normal(shape)
        return _Value(const=draws * float(attrs.get("scale", 1.0)) + float(attrs.get("mean", 0.0)))

    def fold(self, node, inputs: list[_Value | None]) -> list[_Value]:
        """Evaluate a node whose inputs are all constant with the ONNX reference evaluator."""
        from onnx.reference import ReferenceEvaluator

        feeds = {}
        declared = []
        for name, value in zip(node.input, inputs):
            if not name or name in feeds:
                continue
            array = np.asarray(value.const)
            feeds[name] = array
            declared.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(array.dtype), array.shape))
        outputs = [helper.make_value_info(name, onnx.TypeProto()) for name in node.output if name]
        graph = helper.make_graph([node], "fold", declared, outputs)
        model = helper.make_model(graph, opset_imports=list(self.model.opset_import))
        try:
            results = ReferenceEvaluator(model).run(None, feeds)
        except Exception as error:  # the reference evaluator raises many exception types
            raise _Unsupported(f"on constants could not be folded ({type(error).__name__}: {error})") from error
        folded = iter(results)
        return [_Value(const=_as_float64(np.asarray(next(folded)))) if name else _Value() for name in node.output]


# ---------------------------------------------------------------------------
# Handlers for input-dependent values. Each returns a builder id or a _Value.


def _dependent(inputs: list[_Value | None], position: int, what: str) -> int:
    value = inputs[position] if position < len(inputs) else None
    if value is None or not value.dependent:
        raise _Unsupported(f"needs an input-dependent {what}")
    return value.node


def _conv(im: _Importer, node, label, attrs, inputs) -> int:
    x = _dependent(inputs, 0, "data input")
    weight = im.const(inputs[1], "the weight")
    bias = im.const(inputs[2], "the bias") if len(inputs) > 2 and inputs[2] is not None else None
    if weight.ndim != 4 or len(im.builder.shape(x)) != 3:
        raise _Unsupported("is only supported in 2-D (N, C, H, W)")
    kernel = tuple(weight.shape[2:])
    if "kernel_shape" in attrs and tuple(attrs["kernel_shape"]) != kernel:
        raise _Unsupported(f"kernel_shape {attrs['kernel_shape']} differs from the weight shape {weight.shape}")
    stride = _pair(attrs.get("strides"), 1)
    dilation = _pair(attrs.get("dilations"), 1)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        padding = _symmetric_pads(attrs.get("pads"))
    else:
        padding = _same_pads(auto_pad, im.builder.shape(x)[1:], kernel, stride, dilation)
    groups = int(attrs.get("group", 1))
    return im.builder.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=groups, name=label)


def _conv_transpose(im: _Importer, node, label, attrs, inputs) -> int:
    x = _dependent(inputs, 0, "data input")
    weight = im.const(inputs[1], "the weight")
    bias = im.const(inputs[2], "the bias") if len(inputs) > 2 and inputs[2] is not None else None
    if weight.ndim != 4 or len(im.builder.shape(x)) != 3:
        raise _Unsupported("is only supported in 2-D (N, C, H, W)")
    if int(attrs.get("group", 1)) != 1:
        raise _Unsupported("with group > 1 is not supported")

    kernel = tuple(weight.shape[2:])
    stride = _pair(attrs.get("strides"), 1)
    dilation = _pair(attrs.get("dilations"), 1)
    output_padding = _pair(attrs.get("output_padding"), 0)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    in_hw = im.builder.shape(x)[1:]
    target = attrs.get("output_shape")
    if target is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = [size * s for size, s in zip(in_hw, stride)]
    if target is not None:
        target = [int(v) for v in target][-2:]
        padding = []
        for size, k, s, d, extra, out in zip(in_hw, kernel, stride, dilation, output_padding, target):
            total = s * (size - 1) + extra + (k - 1) * d + 1 - out
            if total < 0 or total % 2:
                raise _Unsupported(f"output_shape {target} needs asymmetric or negative padding")
            padding.append(total // 2)
        padding = tuple(padding)
    elif auto_pad == "VALID":
        padding = (0, 0)
    else:
        padding = _symmetric_pads(attrs.get("pads"))
    return im.builder.conv_transpose2d(x, weight, bias, stride=stride, padding=padding,
                                       output_padding=output_padding, dilation=dilation, name=label)


def _gemm(im: _Importer, node, label, attrs, inputs) -> int:
    if inputs[1] is not None and inputs[1].dependent:
        raise _Unsupported("with an input-dependent B operand mixes samples; put the input in A")
    x = _dependent(inputs, 0, "A operand")
    if len(im.builder.shape(x)) != 1:
        raise _Unsupported(f"expects A of shape (N, K), got {im.shape(inputs[0])}")
    if int(attrs.get("transA", 0)):
        raise _Unsupported("with transA=1 mixes samples")
    matrix = im.const(inputs[1], "B")
    if int(attrs.get("transB", 0)):
        matrix = matrix.T
    weight = float(attrs.get("alpha", 1.0)) * matrix.T
    bias = None
    if len(inputs) > 2 and inputs[2] is not None:
        constant = im.const(inputs[2], "C")
        bias = float(attrs.get("beta", 1.0)) * im.sample_const(constant, (weight.shape[0],))
        bias = np.broadcast_to(bias, (weight.shape[0],)).copy()
    return im.builder.dense(x, weight, bias, name=label)


def _matmul(im: _Importer, node, label, attrs, inputs) -> int:
    left, right = inputs[0], inputs[1]
    if left.dependent and right.dependent:
        raise _Unsupported("of two input-dependent tensors is not piecewise linear")
    if left.dependent:
        x = left.node
        shape = im.builder.shape(x)
        weight = right.const
        if weight.ndim != 2 or shape[-1] != weight.shape[0]:
            raise _Unsupported(f"with a constant of shape {weight.shape} on {(1,) + shape} is not supported")
        blocks = int(np.prod(shape[:-1], dtype=np.int64))
        im.dense_check(blocks * weight.shape[1], blocks * weight.shape[0], "the product")
        flat = im.reshape_to(x, (1, blocks * shape[-1]), f"{label}.flatten")
        out = im.builder.dense(flat, np.kron(np.eye(blocks), weight.T), name=label)
        return im.reshape_to(out, (1,) + shape[:-1] + (weight.shape[1],), f"{label}.reshape")
    x = right.node
    shape = im.builder.shape(x)
    weight = left.const
    if len(shape) < 2 or weight.ndim != 2 or shape[-2] != weight.shape[1]:
        raise _Unsupported(f"of a constant of shape {weight.shape} with {(1,) + shape} is not supported")
    blocks = int(np.prod(shape[:-2], dtype=np.int64))
    columns = shape[-1]
    rows, inner = weight.shape
    im.dense_check(blocks * rows * columns, blocks * inner * columns, "the product")
    flat = im.reshape_to(x, (1, blocks * inner * columns), f"{label}.flatten")
    expanded = np.kron(np.eye(blocks), np.kron(weight, np.eye(columns)))
    out = im.builder.dense(flat, expanded, name=label)
    return im.reshape_to(out, (1,) + shape[:-2] + (rows, columns), f"{label}.reshape")


def _relu(im, node, label, attrs, inputs) -> int:
    return im.builder.relu(_dependent(inputs, 0, "input"), name=label)


def _leaky_relu(im, node, label, attrs, inputs) -> int:
    return im.builder.leaky_relu(_dependent(inputs, 0, "input"), float(attrs.get("alpha", 0.01)), name=label)


def _abs(im, node, label, attrs, inputs) -> int:
    return im.builder.abs(_dependent(inputs, 0, "input"), name=label)


def _identity(im, node, label, attrs, inputs) -> _Value:
    return _Value(node=_dependent(inputs, 0, "input"))


def _dropout(im, node, label, attrs, inputs) -> _Value:
    if len(inputs) > 2 and inputs[2] is not None:
        training = im.const(inputs[2], "training_mode")
        if bool(np.asarray(training).reshape(())):
            raise _Unsupported("in training mode is random; export in eval mode")
    if len(node.output) > 1 and node.output[1] and im.consumers.get(node.output[1]):
        raise _Unsupported("mask output is used; only the inference output is supported")
    return _Value(node=_dependent(inputs, 0, "input"))


def _cast(im, node, label, attrs, inputs) -> _Value:
    if int(attrs.get("to", 0)) not in _FLOAT_TYPES:
        raise _Unsupported(f"to ONNX type {attrs.get('to')} of an input-dependent value is not piecewise linear")
    return _Value(node=_dependent(inputs, 0, "input"))


def _neg(im, node, label, attrs, inputs) -> int:
    return im.builder.mul_const(_dependent(inputs, 0, "input"), -1.0, name=label)


def _clip(im, node, label, attrs, inputs) -> int:
    x = _dependent(inputs, 0, "input")
    if im.opset < 11:
        low, high = attrs.get("min"), attrs.get("max")
    else:
        low = None if len(inputs) < 2 or inputs[1] is None else float(im.const(inputs[1], "min").reshape(()))
        high = None if len(inputs) < 3 or inputs[2] is None else float(im.const(inputs[2], "max").reshape(()))
    b = im.builder
    if low is None and high is None:
        return x
    if high is None:
        return b.add_const(b.relu(b.add_const(x, -low, name=f"{label}.shift")), low, name=label)
    if low is None:
        negated = b.relu(b.add_const(b.mul_const(x, -1.0, name=f"{label}.neg"), high, name=f"{label}.shift"))
        return b.add_const(b.mul_const(negated, -1.0, name=f"{label}.neg2"), high, name=label)
    if not low < high:
        raise _Unsupported(f"with min {low} >= max {high} is constant")
    above_low = b.relu(b.add_const(x, -low, name=f"{label}.low"))
    above_high = b.relu(b.add_const(x, -high, name=f"{label}.high"))
    return b.add_const(b.binary("sub", above_low, above_high, name=f"{label}.diff"), low, name=label)


def _max_pool(im, node, label, attrs, inputs) -> int:
    x = _dependent(inputs, 0, "input")
    if len(im.builder.shape(x)) != 3:
        raise _Unsupported("is only supported in 2-D (N, C, H, W)")
    if len(node.output) > 1 and node.output[1] and im.consumers.get(node.output[1]):
        raise _Unsupported("with an Indices output that is used is not supported")
    kernel = _pair(attrs.get("kernel_shape"), 1)
    stride = _pair(attrs.get("strides"), 1)
    if _pair(attrs.get("dilations"), 1) != (1, 1):
        raise _Unsupported("with dilation is not supported")
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", "") or _symmetric_pads(attrs.get("pads")) != (0, 0):
        raise _Unsupported("with padding is not supported; pad with a constant before pooling or use pads 0")
    if attrs.get("ceil_mode", 0):
        for size, k, s in zip(im.builder.shape(x)[1:], kernel, stride):
            if _pool_output(size, k, s, 0, True) != _pool_output(size, k, s, 0, False):
                raise _Unsupported("with ceil_mode=1 that changes the output size is not supported")
    return im.builder.max_pool2d(x, kernel, stride, name=label)


def _average_pool(im, node, label, attrs, inputs) -> int:
    x = _dependent(inputs, 0, "input")
    if len(im.builder.shape(x)) != 3:
        raise _Unsupported("is only supported in 2-D (N, C, H, W)")
    kernel = _pair(attrs.get("kernel_shape"), 1)
    stride = _pair(attrs.get("strides"), 1)
    if _pair(attrs.get("dilations"), 1) != (1, 1):
        raise _Unsupported("with dilation is not supported")
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        padding = _symmetric_pads(attrs.get("pads"))
    else:
        padding = _same_pads(auto_pad, im.builder.shape(x)[1:], kernel, stride, (1, 1))
    if attrs.get("ceil_mode", 0):
        for size, k, s, p in zip(im.builder.shape(x)[1:], kernel, stride, padding):
            if _pool_output(size, k, s, p, True) != _pool_output(size, k, s, p, False):
                raise _Unsupported("with ceil_mode=1 that changes the output size is not supported")
    include_pad = bool(attrs.get("count_include_pad", 0))
    return im.builder.avg_pool2d(x, kernel, stride, padding, include_pad, name=label)


def _global_average_pool(im, node, label, attrs, inputs) -> int:
    x = _dependent(inputs, 0, "input")
    shape = im.builder.shape(x)
    if len(shape) != 3:
        raise _Unsupported("is only supported in 2-D (N, C, H, W)")
    return im.builder.avg_pool2d(x, shape[1:], shape[1:], 0, True, name=label)


def _batch_norm(im, node, label, attrs, inputs) -> int:
    x = _dependent(inputs, 0, "input")
    if int(attrs.get("training_mode", 0)):
        raise _Unsupported("in training mode normalizes by batch statistics; export in eval mode")
    if any(name and im.consumers.get(name) for name in node.output[1:]):
        raise _Unsupported("running-statistics outputs are used; only inference is supported")
    scale, shift, mean, var = (im.const(inputs[i], what).reshape(-1)
                               for i, what in enumerate(("scale", "B", "mean", "var"), start=1))
    factor = scale / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    return im.builder.scale_shift(x, factor, shift - mean * factor, name=label)


def _resize_common(im: _Importer, x: int, label: str, out_hw: tuple[int, int], scales_hw: tuple[float, float],
                   mode: str, coordinate_mode: str, nearest_mode: str) -> int:
    in_hw = im.builder.shape(x)[1:]
    if mode == "nearest":
        factors = []
        for in_len, out_len, scale in zip(in_hw, out_hw, scales_hw):
            chosen = _nearest_indices(in_len, out_len, scale, coordinate_mode, nearest_mode)
            if out_len % in_len or not np.array_equal(chosen, np.arange(out_len) // (out_len // in_len)):
                raise _Unsupported(
                    f"nearest resize from {tuple(in_hw)} to {tuple(out_hw)} ({coordinate_mode}, {nearest_mode}) "
                    "is not an upsampling by an integer factor"
                )
            factors.append(out_len // in_len)
        if tuple(factors) == (1, 1):
            return x
        return im.builder.upsample_nearest(x, tuple(factors), name=label)
    if mode == "linear":
        rows = _linear_matrix(in_hw[0], out_hw[0], scales_hw[0], coordinate_mode)
        cols = _linear_matrix(in_hw[1], out_hw[1], scales_hw[1], coordinate_mode)
        attrs = {"align_corners": coordinate_mode == "align_corners", "coordinate_transformation_mode": coordinate_mode}
        return im.builder.add("upsample_bilinear", (x,), attrs, {"rows": rows, "cols": cols}, name=label)
    raise _Unsupported(f"mode {mode!r} is not piecewise linear or not supported")


def _resize_sizes(im: _Importer, x: int, scales: np.ndarray | None, sizes: np.ndarray | None,
                  axes: list[int] | None) -> tuple[tuple[int, int], tuple[float, float]]:
    full = (1,) + im.builder.shape(x)
    rank = len(full)
    if rank != 4:
        raise _Unsupported("is only supported on 4-D (N, C, H, W) tensors")
    axes = list(range(rank)) if axes is None else [a % rank for a in axes]
    scale_of = {axis: 1.0 for axis in range(rank)}
    size_of = {axis: full[axis] for axis in range(rank)}
    if sizes is not None and sizes.size:
        for axis, size in zip(axes, sizes.reshape(-1)):
            size_of[axis] = int(size)
            scale_of[axis] = int(size) / full[axis]
    elif scales is not None and scales.size:
        for axis, scale in zip(axes, scales.reshape(-1)):
            scale_of[axis] = float(scale)
            size_of[axis] = int(math.floor(full[axis] * float(scale)))
    else:
        raise _Unsupported("has neither scales nor sizes")
    if size_of[0] != 1 or size_of[1] != full[1]:
        raise _Unsupported("resizes the batch or channel axis; only H and W may change")
    return (size_of[2], size_of[3]), (scale_of[2], scale_of[3])


def _resize(im, node, label, attrs, inputs) -> int:
    x = _dependent(inputs, 0, "input")
    if im.opset < 11:
        scales = im.const(inputs[1], "scales") if len(inputs) > 1 and inputs[1] is not None else None
        sizes = None
        coordinate_mode = "asymmetric"
        nearest_mode = "floor" if attrs.get("mode", "nearest") == "nearest" else "round_prefer_floor"
    else:
        scales = im.const(inputs[2], "scales") if len(inputs) > 2 and inputs[2] is not None else None
        sizes = im.const(inputs[3], "sizes") if len(inputs) > 3 and inputs[3] is not None else None
        coordinate_mode = attrs.get("coordinate_transformation_mode", "half_pixel")
        nearest_mode = attrs.get("nearest_mode", "round_prefer_floor")
    if coordinate_mode == "tf_crop_and_resize":
        raise _Unsupported("with coordinate_transformation_mode='tf_crop_and_resize' is not supported")
    if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise _Unsupported(f"with keep_aspect_ratio_policy={attrs['keep_aspect_ratio_policy']!r} is not supported")
    out_hw, scales_hw = _resize_sizes(im, x, scales, sizes, attrs.get("axes"))
    if attrs.get("antialias", 0) and min(scales_hw) < 1:
        raise _Unsupported("with antialias=1 when downsampling is not supported")
    return _resize_common(im, x, label, out_hw, scales_hw, attrs.get("mode", "nearest"), coordinate_mode, nearest_mode)


def _upsample(im, node, label, attrs, inputs) -> int:
    x = _dependent(inputs, 0, "input")
    if "scales" in attrs:
        scales = np.array(attrs["scales"], dtype=np.float64)
    else:
        scales = im.const(inputs[1] if len(inputs) > 1 else None, "scales")
    out_hw, scales_hw = _resize_sizes(im, x, scales, None, None)
    mode = attrs.get("mode", "nearest")
    # NOTE: Upsample (deprecated since opset 10) does not define its coordinate
    # mapping; the asymmetric mapping of ONNX Runtime is assumed.
    return _resize_common(im, x, label, out_hw, scales_hw, "linear" if mode in ("linear", "bilinear") else mode,
                          "asymmetric", "floor")


def _concat(im, node, label, attrs, inputs) -> int:
    anchor = next(value.node for value in inputs if value is not None and value.dependent)
    rank = len(im.builder.shape(anchor)) + 1
    axis = int(attrs["axis"]) % rank
    if axis == 0:
        raise _Unsupported("along the batch axis is not supported")
    parts = []
    for position, value in enumerate(inputs):
        if value.dependent:
            parts.append(value.node)
            continue
        block = _as_float64(value.const).astype(np.float64)
        if block.ndim != rank or block.shape[0] != 1:
            raise _Unsupported(f"of a constant block of shape {block.shape} is not supported")
        parts.append(_constant_block(im, anchor, block[0], f"{label}.const{position}"))
    return im.builder.concat(parts, axis - 1, name=label)


def _constant_block(im: _Importer, anchor: int, block: np.ndarray, label: str) -> int:
    """Build an IR node equal to ``block`` for every input (zero times an input-dependent node plus the block)."""
    b = im.builder
    if b.shape(anchor) == block.shape:
        return b.add_const(b.mul_const(anchor, 0.0, name=f"{label}.zero"), block, name=label)
    size = int(np.prod(b.shape(anchor), dtype=np.int64))
    im.dense_check(block.size, size, "a constant block")
    flat = im.reshape_to(anchor, (1, size), f"{label}.flatten")
    dense = b.dense(flat, np.zeros((block.size, size)), block.reshape(-1), name=f"{label}.dense")
    return im.reshape_to(dense, (1,) + block.shape, label)


def _binary(im, node, label, attrs, inputs) -> int:
    op = node.op_type
    left, right = inputs[0], inputs[1]
    b = im.builder
    if left.dependent and right.dependent:
        if op in ("Mul", "Div"):
            raise _Unsupported("of two input-dependent tensors is not piecewise linear")
        try:
            target = np.broadcast_shapes(im.shape(left), im.shape(right))
        except ValueError:
            raise _Unsupported(f"of shapes {im.shape(left)} and {im.shape(right)} that do not broadcast") from None
        first = _broadcast_dependent(im, left.node, target[1:], f"{label}.expand0")
        second = _broadcast_dependent(im, right.node, target[1:], f"{label}.expand1")
        return b.binary("add" if op == "Add" else "sub", first, second, name=label)

    variable, constant = (left, right) if left.dependent else (right, left)
    shape = b.shape(variable.node)
    const = im.sample_const(constant.const, shape)
    if op == "Add":
        return b.add_const(variable.node, const, name=label)
    if op == "Sub":
        if left.dependent:
            return b.add_const(variable.node, -const, name=label)
        negated = b.mul_const(variable.node, -1.0, name=f"{label}.neg")
        return b.add_const(negated, const, name=label)
    if op == "Mul":
        return b.mul_const(variable.node, const, name=label)
    if not left.dependent:
        raise _Unsupported("by an input-dependent tensor is not piecewise linear")
    if np.any(const == 0):
        raise _Unsupported("by a constant that contains zeros")
    return b.mul_const(variable.node, 1.0 / const, name=label)


def _broadcast_dependent(im: _Importer, source: int, target: tuple[int, ...], label: str) -> int:
    """Broadcast an input-dependent value to the per-sample shape ``target`` (numpy rules)."""
    shape = im.builder.shape(source)
    if shape == tuple(target):
        return source
    padded = (1,) * (len(target) - len(shape)) + shape
    if len(target) == 3 and padded[0] == target[0]:
        # Repeating along H and W is a nearest upsampling by the integer factors.
        flat = im.reshape_to(source, (1,) + padded, f"{label}.reshape")
        return im.builder.upsample_nearest(flat, (target[1] // padded[1], target[2] // padded[2]), name=label)
    size_in = int(np.prod(shape, dtype=np.int64))
    size_out = int(np.prod(target, dtype=np.int64))
    im.dense_check(size_out, size_in, "broadcasting")
    selection = np.broadcast_to(np.arange(size_in).reshape(padded), target).reshape(-1)
    matrix = np.zeros((size_out, size_in))
    matrix[np.arange(size_out), selection] = 1.0
    flat = im.reshape_to(source, (1, size_in), f"{label}.flatten")
    return im.reshape_to(im.builder.dense(flat, matrix, name=f"{label}.dense"), (1,) + tuple(target), label)


def _reshape(im, node, label, attrs, inputs) -> int:
    x = _dependent(inputs, 0, "data input")
    target = [int(v) for v in im.const(inputs[1], "the shape").reshape(-1)]
    full = im.shape(inputs[0])
    if not int(attrs.get("allowzero", 0)):
        target = [full[i] if v == 0 and i < len(full) else v for i, v in enumerate(target)]
    if target.count(-1) > 1:
        raise _Unsupported(f"shape {target} has more than one -1")
    total = int(np.prod(full, dtype=np.int64))
    if -1 in target:
        known = int(np.prod([v for v in target if v != -1], dtype=np.int64))
        if known == 0 or total % known:
            raise _Unsupported(f"cannot reshape {full} to {target}")
        target = [total // known if v == -1 else v for v in target]
    return im.reshape_to(x, tuple(target), label)


def _flatten(im, node, label, attrs, inputs) -> int:
    x = _dependent(inputs, 0, "input")
    full = im.shape(inputs[0])
    axis = int(attrs.get("axis", 1))
    if axis < 0:
        axis += len(full)
    if axis == 0:
        raise _Unsupported("with axis=0 merges the batch axis; use axis=1")
    target = (int(np.prod(full[:axis], dtype=np.int64)), int(np.prod(full[axis:], dtype=np.int64)))
    return im.reshape_to(x, target, label)


def _axes(im: _Importer, attrs, inputs) -> list[int] | None:
    if "axes" in attrs:
        return [int(a) for a in attrs["axes"]]
    if len(inputs) > 1 and inputs[1] is not None:
        return [int(a) for a in im.const(inputs[1], "axes").reshape(-1)]
    return None


def _squeeze(im, node, label, attrs, inputs) -> int:
    x = _dependent(inputs, 0, "input")
    full = im.shape(inputs[0])
    axes = _axes(im, attrs, inputs)
    axes = [i for i, s in enumerate(full) if s == 1 and i > 0] if axes is None else [a % len(full) for a in axes]
    if 0 in axes:
        raise _Unsupported("of the batch axis is not supported")
    if any(full[a] != 1 for a in axes):
        raise _Unsupported(f"of axes {axes} of shape {full} that are not of length 1")
    return im.reshape_to(x, tuple(s for i, s in enumerate(full) if i not in axes), label)


def _unsqueeze(im, node, label, attrs, inputs) -> int:
    x = _dependent(inputs, 0, "input")
    full = list(im.shape(inputs[0]))
    axes = _axes(im, attrs, inputs)
    if axes is None:
        raise _Unsupported("without axes")
    rank = len(full) + len(axes)
    axes = sorted(a % rank for a in axes)
    if 0 in axes:
        raise _Unsupported("before the batch axis is not supported")
    for axis in axes:
        full.insert(axis, 1)
    return im.reshape_to(x, tuple(full), label)


def _transpose(im, node, label, attrs, inputs) -> int:
    x = _dependent(inputs, 0, "input")
    full = im.shape(inputs[0])
    perm = [int(p) for p in attrs.get("perm", list(range(len(full)))[::-1])]
    moved = [axis for axis in perm if full[axis] != 1]
    if moved != sorted(moved):
        raise _Unsupported(
            f"with perm {perm} on shape {full} permutes the per-sample layout; only transposes that move "
            "axes of length 1 are supported"
        )
    return im.reshape_to(x, tuple(full[axis] for axis in perm), label)


_HANDLERS: dict[str, Callable[..., Any]] = {
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Relu": _relu,
    "LeakyRelu": _leaky_relu,
    "Abs": _abs,
    "Identity": _identity,
    "Dropout": _dropout,
    "Cast": _cast,
    "Neg": _neg,
    "Clip": _clip,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _global_average_pool,
    "BatchNormalization": _batch_norm,
    "Resize": _resize,
    "Upsample": _upsample,
    "Concat": _concat,
    "Add": _binary,
    "Sub": _binary,
    "Mul": _binary,
    "Div": _binary,
    "Reshape": _reshape,
    "Flatten": _flatten,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
}

#: ONNX operator types accepted on input-dependent values.
SUPPORTED_OPERATORS = frozenset(_HANDLERS)


def from_onnx(path_or_model: Any, *, seed: int | None = None) -> Graph:
    """Import a piecewise-linear ONNX model as a :class:`~dalverify.graph.ir.Graph`.

    Parameters
    ----------
    path_or_model
        Path to a ``.onnx`` file, the serialized bytes, or an ``onnx.ModelProto``.
    seed
        Seed of ``numpy.random.default_rng`` for ``RandomNormal`` and
        ``RandomNormalLike`` nodes, which are folded to constants drawn in
        node order (``standard_normal(shape) * scale + mean``). Required when
        the model has such nodes.

    Returns
    -------
    Graph
        A graph on one sample (the batch axis removed) whose float64
        semantics (:func:`dalverify.graph.evaluate`) is the model's
        forward pass. Its metadata records the source, the opset and, for
        random nodes, the seed.

    Raises
    ------
    NotPiecewiseLinearError
        Listing every node (by name, or ``OpType_index`` when unnamed) that
        applies an unsupported or non-piecewise-linear operator to an
        input-dependent value.
    InputError
        If the model has more or fewer than one non-constant input, a
        batch size other than 1, symbolic non-batch dimensions, random
        nodes without ``seed``, or the ``onnx`` package is missing.
    GraphFileError
        If the file is missing or is not a valid ONNX model.
    """
    _require_onnx()
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise InputError(f"seed={seed!r} must be a non-negative int or None")
    model = _load_model(path_or_model)
    graph = _Importer(model, None if seed is None else int(seed)).run()
    logger.info("imported ONNX model (opset %s): %d nodes, %d piecewise units",
                graph.metadata.get("opset"), len(graph.nodes), graph.count_units())
    return graph


__all__ = ["MAX_DENSE_ENTRIES", "SUPPORTED_OPERATORS", "from_onnx"]
