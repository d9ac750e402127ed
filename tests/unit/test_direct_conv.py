"""The direct convolution kernel against exact sums and torch."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dalverify.accel.direct_conv import available, conv2d_columns, conv2d_direct, conv2d_fast, conv_for, prefers_direct
from dalverify.graph.reference import conv2d
from dalverify.tolerances import EVALUATOR_ATOL_SCALE, EVALUATOR_RTOL

needs_numba = pytest.mark.skipif(not available(), reason="numba is not installed")


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 2, 3]))
    group_channels = draw(st.integers(1, 3))
    out_per_group = draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    height = draw(st.integers(dilation[0] * (kernel[0] - 1) + 1, 9))
    width = draw(st.integers(dilation[1] * (kernel[1] - 1) + 1, 9))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(draw(st.integers(1, 3)), groups * group_channels, height, width))
    weight = rng.normal(size=(groups * out_per_group, group_channels) + kernel)
    return x, weight, stride, padding, dilation, groups


@needs_numba
@given(conv_cases())
@settings(max_examples=60)
def test_matches_torch_on_every_geometry(case):
    x, weight, stride, padding, dilation, groups = case
    got = conv2d_direct(x, weight, stride, padding, dilation, groups)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight), stride=stride, padding=padding,
                                      dilation=dilation, groups=groups).numpy()
    assert got.shape == want.shape
    scale = EVALUATOR_ATOL_SCALE * max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=EVALUATOR_RTOL, atol=scale)


@needs_numba
@given(conv_cases())
@settings(max_examples=60)
def test_compiled_column_buffer_gives_the_reference_bits(case):
    # Same buffer values, same product call: equal to the last bit, including
    # paddings wider than the kernel reach and strided, dilated windows.
    x, weight, stride, padding, dilation, groups = case
    got = conv2d_columns(x, weight, stride, padding, dilation, groups)
    want = conv2d(x, weight, stride, padding, dilation, groups)
    assert got.shape == want.shape
    assert np.array_equal(got.view(np.int64), want.view(np.int64))


@needs_numba
def test_dyadic_inputs_give_exact_sums():
    # Small dyadic numbers: every product and partial sum is exact in float64,
    # so the kernel must return the exact rational sum.
    rng = np.random.default_rng(7)
    x = rng.integers(-8, 9, size=(2, 3, 6, 5)) / 4.0
    weight = rng.integers(-8, 9, size=(4, 3, 3, 3)) / 8.0
    got = conv2d_direct(x, weight, (1, 1), (1, 1), (1, 1), 1)
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for b, o, y, col in [(0, 0, 0, 0), (1, 3, 5, 4), (0, 2, 3, 2), (1, 1, 0, 4)]:
        exact = sum(Fraction(float(weight[o, c, i, j])) * Fraction(float(padded[b, c, y + i, col + j]))
                    for c in range(3) for i in range(3) for j in range(3))
        assert Fraction(float(got[b, o, y, col])) == exact


@needs_numba
def test_without_the_extension_the_numba_kernels_run(monkeypatch):
    from dalverify.accel import fma_conv

    monkeypatch.setattr(fma_conv, "_fmaconv", None)
    rng = np.random.default_rng(10)
    x = rng.normal(size=(2, 8, 64, 64))
    weight = rng.normal(size=(8, 8, 3, 3))
    assert np.array_equal(conv2d_fast(x, weight, (1, 1), (1, 1), (1, 1), 1),
                          conv2d_direct(x, weight, (1, 1), (1, 1), (1, 1), 1))


@needs_numba
def test_batch_elements_do_not_depend_on_the_batch():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(5, 8, 64, 64))
    weight = rng.normal(size=(8, 8, 3, 3))
    together = conv2d_fast(x, weight, (1, 1), (1, 1), (1, 1), 1)
    alone = np.concatenate([conv2d_fast(x[i : i + 1], weight, (1, 1), (1, 1), (1, 1), 1) for i in range(5)])
    assert np.array_equal(together, alone)


def test_layer_choice_and_kernel_names():
    assert prefers_direct((8, 8, 3, 3), 64 * 64)
    assert not prefers_direct((32, 32, 3, 3), 16 * 16)
    assert prefers_direct((1, 16, 3, 3), 8 * 8)
    assert conv_for("reference") is None
    assert conv_for("fast") is conv2d_fast
    with pytest.raises(ValueError, match="kernels='torch'"):
        conv_for("torch")


def test_without_numba_the_reference_kernels_run(monkeypatch):
    from dalverify.accel import direct_conv, fma_conv
    from dalverify.graph.reference import conv2d

    monkeypatch.setattr(direct_conv, "_AVAILABLE", False)
    monkeypatch.setattr(fma_conv, "_fmaconv", None)
    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 8, 64, 64))
    weight = rng.normal(size=(8, 8, 3, 3))
    assert direct_conv.default_kernels() == "reference"
    assert np.array_equal(conv2d_fast(x, weight, (1, 1), (1, 1), (1, 1), 1), conv2d(x, weight, (1, 1), (1, 1), (1, 1), 1))


@needs_numba
def test_scalar_only_extension_leaves_numba_kernels(monkeypatch):
    # The C scalar path is slower than numba's loops, so it is not preferred.
    from dalverify.accel import fma_conv

    monkeypatch.setattr(fma_conv, "instruction_sets", lambda: ["scalar"])
    assert not fma_conv.preferred()
    rng = np.random.default_rng(11)
    x = rng.normal(size=(2, 8, 64, 64))
    weight = rng.normal(size=(8, 8, 3, 3))
    assert np.array_equal(conv2d_fast(x, weight, (1, 1), (1, 1), (1, 1), 1),
                          conv2d_direct(x, weight, (1, 1), (1, 1), (1, 1), 1))
