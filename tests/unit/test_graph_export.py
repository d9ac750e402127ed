"""Graph evaluators and torch export against torch modules; save/load integrity."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dalverify.accel.torch_backend import evaluate_torch
from dalverify.errors import GraphFileError, NotPiecewiseLinearError
from dalverify.export import export
from dalverify.graph import evaluate, load_graph, save_graph
from dalverify.line import walk_line
from dalverify.tolerances import EVALUATOR_ATOL_SCALE, EVALUATOR_RTOL
from reference.torch_modules import EveryKind, SmallUNet


def assert_close(got, want):
    scale = EVALUATOR_ATOL_SCALE * max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=EVALUATOR_RTOL, atol=scale)


class NotPiecewise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.norm(self.conv(x)))


images = arrays(np.float64, (2, 2, 8, 8), elements=st.floats(-4, 4, allow_nan=False, width=64))
unet_images = arrays(np.float64, (2, 1, 16, 16), elements=st.floats(-4, 4, allow_nan=False, width=64))


@pytest.fixture(scope="module")
def every_kind():
    module = EveryKind().double().eval()
    return module, export(module, torch.zeros(1, 2, 8, 8, dtype=torch.float64))


@pytest.fixture(scope="module")
def unet():
    module = SmallUNet().double().eval()
    return module, export(module, torch.zeros(1, 1, 16, 16, dtype=torch.float64))


@given(images)
def test_every_kind_matches_torch(every_kind, x):
    module, graph = every_kind
    with torch.no_grad():
        want = module(torch.as_tensor(x)).numpy()
    assert_close(evaluate(graph, x), want)
    assert_close(evaluate_torch(graph, x, "cpu"), want)


@given(unet_images)
@settings(max_examples=15)
def test_unet_matches_torch(unet, x):
    module, graph = unet
    with torch.no_grad():
        want = module(torch.as_tensor(x)).numpy()
    assert_close(evaluate(graph, x), want)


def test_export_keeps_train_mode():
    module = SmallUNet().double().train()
    export(module, torch.zeros(1, 1, 16, 16, dtype=torch.float64))
    assert module.training


def test_export_names_every_non_piecewise_part():
    with pytest.raises(NotPiecewiseLinearError) as caught:
        export(NotPiecewise(), torch.zeros(1, 1, 8, 8))
    names = [name for name, _ in caught.value.offenders]
    assert names == ["norm", "act"]
    assert "GroupNorm" in str(caught.value) and "SiLU" in str(caught.value)


def test_export_rejects_batch_norm_in_train_mode():
    module = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    with pytest.raises(NotPiecewiseLinearError, match="call .eval"):
        export(module, torch.zeros(1, 1, 8, 8))


def test_export_rejects_product_of_inputs():
    class Square(nn.Module):
        def forward(self, x):
            return x * x

    with pytest.raises(NotPiecewiseLinearError, match="product"):
        export(Square(), torch.zeros(1, 1, 4, 4))


def test_export_rejects_data_dependent_branch():
    class Branch(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(NotPiecewiseLinearError, match="traced"):
        export(Branch(), torch.zeros(1, 1, 4, 4))


def test_save_load_keeps_digest(tmp_path, unet):
    _, graph = unet
    path = tmp_path / "unet.dalg"
    digest = save_graph(graph, path)
    loaded = load_graph(path, expected_digest=digest)
    assert loaded.digest() == digest == graph.digest()
    x = np.random.default_rng(0).normal(size=(1, 1, 16, 16))
    assert np.array_equal(evaluate(loaded, x), evaluate(graph, x))


def test_changed_parameter_byte_is_rejected(tmp_path, unet):
    _, graph = unet
    path = tmp_path / "unet.dalg"
    save_graph(graph, path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    name = next(n for n in members if n.startswith("n1.weight"))
    data = bytearray(members[name])
    data[-3] ^= 0x01
    members[name] = bytes(data)
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content)
    with pytest.raises(GraphFileError, match="altered.*node 1"):
        load_graph(path)


def test_truncated_file_is_rejected(tmp_path, unet):
    _, graph = unet
    path = tmp_path / "unet.dalg"
    save_graph(graph, path)
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(GraphFileError, match="corrupt or truncated"):
        load_graph(path)


def test_missing_file_is_rejected(tmp_path):
    with pytest.raises(GraphFileError, match="not found"):
        load_graph(tmp_path / "absent.dalg")


@given(st.integers(0, 2**32 - 1))
@settings(max_examples=8)
def test_unet_pieces_match_module_at_midpoints(unet, seed):
    module, graph = unet
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(1, 16, 16))
    b = rng.normal(size=(1, 16, 16))
    partition = walk_line(graph, a, b, -0.05, 0.05, record_outputs=True, backend="torch")
    partition.check_tiling()
    points = [(lo + hi) / 2 for lo, hi, _, _ in partition.outputs]
    with torch.no_grad():
        outputs = module(torch.as_tensor(np.stack([a + b * z for z in points]))).numpy()
    for (lo, hi, out_alpha, out_beta), z, want in zip(partition.outputs, points, outputs):
        assert_close(out_alpha + out_beta * z, want)


def test_unet_backends_give_same_partition(unet):
    _, graph = unet
    rng = np.random.default_rng(5)
    a = rng.normal(size=(1, 16, 16))
    b = rng.normal(size=(1, 16, 16))
    by_numpy = walk_line(graph, a, b, -0.1, 0.1, backend="numpy")
    by_torch = walk_line(graph, a, b, -0.1, 0.1, backend="torch")
    assert len(by_numpy.pieces) > 5
    # The two backends sum the convolution products in different orders, so
    # a root may move by a few hundred ulps. The pieces, their patterns and
    # the units that bind at each end must be the same.
    assert [(p.pattern, p.end_units) for p in by_numpy.pieces] == [(p.pattern, p.end_units) for p in by_torch.pieces]
    ends_numpy = np.array([p.hi for p in by_numpy.pieces[:-1]])
    ends_torch = np.array([p.hi for p in by_torch.pieces[:-1]])
    np.testing.assert_allclose(ends_numpy, ends_torch, rtol=EVALUATOR_RTOL, atol=0)
