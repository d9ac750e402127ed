"""ONNX import: exported torch models and hand-built ONNX graphs against independent evaluators.

Torch models are exported in float64 with the legacy TorchScript exporter
(``dynamo=False``) and compared with the torch module itself. Hand-built
graphs are compared with the reference evaluator of the ``onnx`` package.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

from dalverify.errors import GraphFileError, InputError, NotPiecewiseLinearError  # noqa: E402
from dalverify.graph import evaluate, from_onnx  # noqa: E402
from dalverify.tolerances import EVALUATOR_ATOL_SCALE, EVALUATOR_RTOL  # noqa: E402


def assert_close(got, want):
    scale = EVALUATOR_ATOL_SCALE * max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=EVALUATOR_RTOL, atol=scale)


def export_bytes(module: nn.Module, shape: tuple[int, ...], **options) -> bytes:
    """Serialize a float64 module with the legacy ONNX exporter."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros(shape, dtype=torch.float64), buffer, dynamo=False, **options)
    return buffer.getvalue()


def torch_output(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(x)).numpy()


# ---------------------------------------------------------------------------
# Small piecewise-linear torch models.


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.strided = nn.Conv2d(3, 2, 3, stride=2, padding=1, dilation=1)

    def forward(self, x):
        return self.strided(F.relu(self.conv(x)))


class TransposeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)

    def forward(self, x):
        return F.relu(self.up(x))


class PoolNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        h = F.max_pool2d(self.conv(x), 2)
        return F.avg_pool2d(h, 3, stride=1, padding=1, count_include_pad=False) + nn.AdaptiveAvgPool2d(1)(h)


class UpsampleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.nearest = nn.Upsample(scale_factor=2, mode="nearest")
        self.bilinear = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.corners = nn.Upsample(size=(11, 11), mode="bilinear", align_corners=True)

    def forward(self, x):
        y = self.nearest(x) - self.bilinear(x)
        return torch.cat([self.corners(y), F.interpolate(x, size=(11, 11), mode="bilinear")], dim=1)


class SkipNet(nn.Module):
    """A concatenation skip and a constant noise buffer added to the input."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(2, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 2, 2, stride=2)
        self.merge = nn.Conv2d(4, 2, 3, padding=1)
        self.register_buffer("noise", torch.randn(1, 2, 8, 8))

    def forward(self, x):
        x = x + 0.5 * self.noise
        h = self.up(F.max_pool2d(F.relu(self.down(x)), 2))
        return self.merge(torch.cat([h, x], dim=1))


class LeakyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x):
        # 0.25 and 0.125 are exact in float32, the type of ONNX float attributes.
        return F.leaky_relu(self.conv(x), 0.25) + nn.LeakyReLU(0.125)(x).abs() - F.hardtanh(x, -0.5, 0.75)


class LinearNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.fc1 = nn.Linear(2 * 8 * 8, 7)
        self.fc2 = nn.Linear(7, 2 * 8 * 8)
        self.norm = nn.BatchNorm1d(7)
        with torch.no_grad():
            self.norm.running_mean.uniform_(-1, 1)
            self.norm.running_var.uniform_(0.5, 2)

    def forward(self, x):
        h = F.relu(self.norm(self.fc1(torch.flatten(F.relu(self.conv(x)), 1))))
        return (self.fc2(h) / 3.0).view(-1, 2, 8, 8) - x


class MatMulNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.right = nn.Parameter(torch.randn(8, 5))
        self.left = nn.Parameter(torch.randn(3, 8))

    def forward(self, x):
        right = F.relu(torch.matmul(x, self.right)).flatten(1)
        return torch.cat([right, torch.matmul(self.left, x).flatten(1)], dim=1)


MODELS = {
    "conv": (ConvNet, (1, 2, 8, 8)),
    "conv_transpose": (TransposeNet, (1, 2, 4, 4)),
    "pooling": (PoolNet, (1, 2, 8, 8)),
    "upsample": (UpsampleNet, (1, 2, 4, 4)),
    "concat_skip_noise": (SkipNet, (1, 2, 8, 8)),
    "leaky_relu_clip": (LeakyNet, (1, 2, 8, 8)),
    "linear_after_flatten": (LinearNet, (1, 2, 8, 8)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_torch_model_matches(name):
    factory, shape = MODELS[name]
    torch.manual_seed(len(name))
    module = factory().double().eval()
    graph = from_onnx(export_bytes(module, shape))
    assert graph.input_shape == shape[1:]
    x = np.random.default_rng(7).normal(size=(3,) + shape[1:])
    assert_close(evaluate(graph, x), torch_output(module, x))


def test_exported_kinds_are_the_expected_ones():
    torch.manual_seed(1)
    module = SkipNet().double().eval()
    kinds = [node.kind for node in from_onnx(export_bytes(module, (1, 2, 8, 8))).nodes]
    assert kinds.count("add_const") == 1  # the noise buffer
    assert "concat" in kinds
    assert "max_pool2d" in kinds
    assert "conv_transpose2d" in kinds


def test_dynamic_batch_axis_imports():
    torch.manual_seed(3)
    module = LinearNet().double().eval()
    data = export_bytes(module, (1, 2, 8, 8), input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    graph = from_onnx(data)
    x = np.random.default_rng(2).normal(size=(4, 2, 8, 8))
    assert_close(evaluate(graph, x), torch_output(module, x))


def test_float32_model_keeps_exact_weights():
    torch.manual_seed(4)
    module = ConvNet().eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, torch.zeros((1, 2, 8, 8)), buffer, dynamo=False)
    graph = from_onnx(buffer.getvalue())
    conv = next(node for node in graph.nodes if node.kind == "conv2d")
    np.testing.assert_array_equal(conv.params["weight"], module.conv.weight.detach().numpy().astype(np.float64))
    x = np.random.default_rng(5).normal(size=(2, 2, 8, 8))
    assert_close(evaluate(graph, x), torch_output(module.double(), x))


def test_matmul_with_constants_matches():
    torch.manual_seed(5)
    module = MatMulNet().double().eval()
    graph = from_onnx(export_bytes(module, (1, 2, 8, 8)))
    x = np.random.default_rng(3).normal(size=(2, 2, 8, 8))
    assert_close(evaluate(graph, x), torch_output(module, x))


# ---------------------------------------------------------------------------
# A DDIM-like unrolled reconstruction: a small U-Net called several times.


@pytest.mark.parametrize("upsample,pool", [("transpose", "max"), ("bilinear", "avg"), ("nearest", "max")])
def test_unrolled_ddim_reconstruction_matches(upsample, pool):
    from dalverify.diffusion.reconstruction import Reconstruction
    from dalverify.diffusion.unet import UNet

    torch.manual_seed(11)
    unet = UNet(1, 2, 2, upsample=upsample, pool=pool)
    with torch.no_grad():
        for parameter in unet.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    reconstruction = Reconstruction(unet, t_start=300, steps=3, image_shape=(1, 8, 8)).eval()
    graph = from_onnx(export_bytes(reconstruction, (1, 1, 8, 8)))
    assert sum(node.kind == "conv2d" for node in graph.nodes) == 3 * 11  # 3 U-Net calls of 11 convolutions
    x = np.random.default_rng(1).normal(size=(2, 1, 8, 8))
    assert_close(evaluate(graph, x), torch_output(reconstruction, x))


# ---------------------------------------------------------------------------
# Errors.


class SmoothNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        h = torch.sigmoid(self.conv(x))
        h = F.relu(h).flatten(1)
        return torch.softmax(h, dim=1) + torch.sigmoid(h)


def test_smooth_model_reports_every_node_once():
    data = export_bytes(SmoothNet().double().eval(), (1, 1, 4, 4))
    model = onnx.load_from_string(data)
    smooth = {node.name for node in model.graph.node if node.op_type in ("Sigmoid", "Softmax")}
    assert len(smooth) == 3
    with pytest.raises(NotPiecewiseLinearError) as caught:
        from_onnx(data)
    names = [name for name, _ in caught.value.offenders]
    assert sorted(names) == sorted(smooth)
    for name in smooth:
        assert name in str(caught.value)


def _model(nodes, inputs, output, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "test", inputs, [output], initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _input(shape, name="x"):
    return helper.make_tensor_value_info(name, TensorProto.DOUBLE, list(shape))


def _output(name="y"):
    return helper.make_tensor_value_info(name, TensorProto.DOUBLE, None)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float64), name)


def _int_init(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def test_unsupported_and_unnamed_nodes_are_all_listed():
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"]),
        helper.make_node("Relu", ["p"], ["r"], name="after_pad"),
        helper.make_node("Mul", ["r", "r"], ["m"], name="square"),
        helper.make_node("Tanh", ["m"], ["y"], name="squash"),
    ]
    model = _model(nodes, [_input((1, 1, 3, 3))], _output(), [_int_init("pads", [0, 0, 1, 1, 0, 0, 1, 1])])
    with pytest.raises(NotPiecewiseLinearError) as caught:
        from_onnx(model)
    names = [name for name, _ in caught.value.offenders]
    assert names == ["Pad_0", "square", "squash"]


def test_layout_transpose_is_reported():
    nodes = [helper.make_node("Transpose", ["x"], ["y"], name="swap", perm=[0, 1, 3, 2])]
    with pytest.raises(NotPiecewiseLinearError, match="swap"):
        from_onnx(_model(nodes, [_input((1, 1, 2, 3))], _output()))


def test_noop_and_constant_transposes_import():
    table = np.arange(6.0).reshape(2, 3)
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1, 3]),  # moves an axis of length 1
        helper.make_node("Transpose", ["table"], ["table_t"], perm=[1, 0]),  # constant: folded
        helper.make_node("Reshape", ["table_t", "shape"], ["offset"]),
        helper.make_node("Add", ["t", "offset"], ["y"]),
    ]
    model = _model(nodes, [_input((1, 1, 2, 3))], _output(),
                   [_init("table", table), _int_init("shape", [1, 2, 1, 3])])
    graph = from_onnx(model)
    x = np.random.default_rng(0).normal(size=(1, 1, 2, 3))
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert_close(evaluate(graph, x), want)
    assert evaluate(graph, np.zeros((1, 1, 2, 3))).ravel().tolist() == [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]


@pytest.mark.parametrize("problem", ["two_inputs", "batch_two", "symbolic_height"])
def test_bad_inputs_raise_input_error(problem):
    relu = helper.make_node("Relu", ["x"], ["y"])
    if problem == "two_inputs":
        model = _model([helper.make_node("Add", ["x", "z"], ["y"])], [_input((1, 2)), _input((1, 2), "z")], _output())
    elif problem == "batch_two":
        model = _model([relu], [_input((2, 3))], _output())
    else:
        model = _model([relu], [_input((1, 1, "h", 4))], _output())
    with pytest.raises(InputError):
        from_onnx(model)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(GraphFileError, match="not found"):
        from_onnx(tmp_path / "absent.onnx")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x00\x01 not a protobuf")
    with pytest.raises(GraphFileError):
        from_onnx(broken)
    with pytest.raises(InputError):
        from_onnx(12345)


# ---------------------------------------------------------------------------
# Random nodes folded from a seed.


class NoisyNet(nn.Module):
    def forward(self, x):
        return F.relu(x + 0.3 * torch.randn_like(x))


def test_random_normal_like_needs_a_seed():
    with pytest.raises(InputError, match="seed"):
        from_onnx(export_bytes(NoisyNet(), (1, 1, 4, 4)))


def test_random_normal_like_is_drawn_from_default_rng():
    graph = from_onnx(export_bytes(NoisyNet(), (1, 1, 4, 4)), seed=3)
    draws = np.random.default_rng(3).standard_normal((1, 1, 4, 4))
    x = np.random.default_rng(9).normal(size=(2, 1, 4, 4))
    assert_close(evaluate(graph, x), np.maximum(x + 0.3 * draws, 0.0))
    assert graph.metadata["random_seed"] == 3


def test_random_nodes_use_attributes_and_node_order():
    nodes = [
        helper.make_node("RandomNormal", [], ["first"], shape=[1, 3], mean=2.0, scale=0.5, seed=99.0),
        helper.make_node("RandomNormalLike", ["x"], ["second"], mean=-1.0, scale=4.0),
        helper.make_node("Add", ["x", "first"], ["h"]),
        helper.make_node("Sub", ["h", "second"], ["y"]),
    ]
    graph = from_onnx(_model(nodes, [_input((1, 3))], _output()), seed=21)
    rng = np.random.default_rng(21)
    first = rng.standard_normal((1, 3)) * 0.5 + 2.0
    second = rng.standard_normal((1, 3)) * 4.0 - 1.0
    x = np.array([[0.25, -1.0, 3.0]])
    assert_close(evaluate(graph, x), x + first - second)


# ---------------------------------------------------------------------------
# Hand-built graphs against the ONNX reference evaluator.


def _resize_model(mode, coordinate_mode, nearest_mode="round_prefer_floor", scales=None, sizes=None):
    inputs = ["x", "", "scales" if scales is not None else "", "sizes" if sizes is not None else ""]
    node = helper.make_node("Resize", inputs, ["y"], mode=mode, coordinate_transformation_mode=coordinate_mode,
                            nearest_mode=nearest_mode)
    initializers = []
    if scales is not None:
        initializers.append(numpy_helper.from_array(np.asarray(scales, dtype=np.float32), "scales"))
    if sizes is not None:
        initializers.append(_int_init("sizes", sizes))
    return _model([node], [_input((1, 2, 3, 4))], _output(), initializers)


RESIZE_CASES = [
    ("linear", "half_pixel", None, [1, 1, 2, 2], None),
    ("linear", "pytorch_half_pixel", None, None, [1, 2, 7, 5]),
    ("linear", "align_corners", None, None, [1, 2, 5, 9]),
    ("linear", "asymmetric", None, [1, 1, 3, 2], None),
    ("linear", "half_pixel", None, None, [1, 2, 2, 3]),  # downsampling
    ("nearest", "asymmetric", "floor", [1, 1, 2, 3], None),
    ("nearest", "half_pixel", "round_prefer_floor", [1, 1, 3, 2], None),
    ("nearest", "half_pixel", "round_prefer_ceil", None, [1, 2, 6, 8]),
]


@pytest.mark.parametrize("mode,coordinate_mode,nearest_mode,scales,sizes", RESIZE_CASES)
def test_resize_matches_reference_evaluator(mode, coordinate_mode, nearest_mode, scales, sizes):
    model = _resize_model(mode, coordinate_mode, nearest_mode or "round_prefer_floor", scales, sizes)
    graph = from_onnx(model)
    x = np.random.default_rng(4).normal(size=(1, 2, 3, 4))
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert_close(evaluate(graph, x), want)


def test_non_integer_nearest_resize_reported():
    model = _resize_model("nearest", "half_pixel", "floor", [1, 1, 2, 2])
    with pytest.raises(NotPiecewiseLinearError, match="integer factor"):
        from_onnx(model)


def test_upsample_nearest_repeats_pixels():
    node = helper.make_node("Upsample", ["x", "scales"], ["y"], mode="nearest")
    model = _model([node], [_input((1, 1, 2, 2))], _output(),
                   [numpy_helper.from_array(np.array([1, 1, 2, 3], dtype=np.float32), "scales")], opset=9)
    graph = from_onnx(model)
    x = np.arange(4.0).reshape(1, 1, 2, 2)
    assert_close(evaluate(graph, x), np.repeat(np.repeat(x, 2, axis=2), 3, axis=3))


def test_operator_mix_matches_reference_evaluator():
    rng = np.random.default_rng(12)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], auto_pad="SAME_UPPER", strides=[1, 1]),
        helper.make_node("ConvTranspose", ["c", "wt", "bt"], ["ct"], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["ct"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["ap", "low", ""], ["cl"]),
        helper.make_node("Sub", ["offset", "cl"], ["sb"]),
        helper.make_node("Div", ["sb", "divisor"], ["dv"]),
        helper.make_node("Neg", ["dv"], ["ng"]),
        helper.make_node("Flatten", ["ng"], ["fl"], axis=1),
        helper.make_node("Gemm", ["fl", "gw", "gb"], ["gm"], transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Unsqueeze", ["gm", "axes"], ["us"]),
        helper.make_node("Squeeze", ["us", "axes"], ["sq"]),
        helper.make_node("Reshape", ["sq", "shape"], ["rs"]),
        helper.make_node("MatMul", ["left", "rs"], ["ml"]),
        helper.make_node("Abs", ["ml"], ["ab"]),
        helper.make_node("LeakyRelu", ["ab"], ["y"], alpha=0.1),
    ]
    initializers = [
        _init("w", rng.normal(size=(3, 2, 3, 3))),
        _init("wt", rng.normal(size=(3, 2, 3, 3))),
        _init("bt", rng.normal(size=2)),
        _init("low", -0.2),
        _init("offset", rng.normal(size=(2, 1, 1))),
        _init("divisor", [[[3.0]], [[-2.0]]]),
        _init("gw", rng.normal(size=(12, 98))),
        _init("gb", rng.normal(size=12)),
        _int_init("axes", [2]),
        _int_init("shape", [0, 3, -1]),
        _init("left", rng.normal(size=(5, 3))),
    ]
    model = _model(nodes, [_input((1, 2, 4, 4))], _output(), initializers)
    graph = from_onnx(model)
    x = rng.normal(size=(1, 2, 4, 4))
    want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    assert_close(evaluate(graph, x), want)


def test_constant_subgraph_is_folded():
    # Sigmoid and Exp act on constants only, so the model is piecewise linear in x.
    nodes = [
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array([0.5, -1.0]), "c")),
        helper.make_node("Sigmoid", ["c"], ["s"]),
        helper.make_node("Exp", ["s"], ["e"]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Reshape", ["e", "shape"], ["er"]),
        helper.make_node("Mul", ["x", "er"], ["m"]),
        helper.make_node("Relu", ["m"], ["y"]),
    ]
    model = _model(nodes, [_input((1, 2))], _output())
    graph = from_onnx(model)
    assert [node.kind for node in graph.nodes] == ["input", "mul_const", "relu"]
    x = np.array([[2.0, 3.0]])
    scale = np.exp(1.0 / (1.0 + np.exp(-np.array([0.5, -1.0]))))
    assert_close(evaluate(graph, x), np.maximum(x * scale, 0.0))


@pytest.mark.parametrize("attributes", [{"output_shape": [7, 7]}, {"pads": [1, 1, 1, 1]}])
def test_conv_transpose_output_shape_matches_torch(attributes):
    rng = np.random.default_rng(13)
    weight, bias = rng.normal(size=(3, 2, 3, 3)), rng.normal(size=2)
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], strides=[2, 2], **attributes)
    graph = from_onnx(_model([node], [_input((1, 3, 4, 4))], _output(), [_init("w", weight), _init("b", bias)]))
    x = rng.normal(size=(2, 3, 4, 4))
    want = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias), stride=2, padding=1)
    assert_close(evaluate(graph, x), want.numpy())


def test_conv_transpose_with_odd_total_padding_is_reported():
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="odd", strides=[2, 2], output_shape=[8, 8])
    model = _model([node], [_input((1, 3, 4, 4))], _output(), [_init("w", np.ones((3, 2, 3, 3)))])
    with pytest.raises(NotPiecewiseLinearError, match="odd"):
        from_onnx(model)
