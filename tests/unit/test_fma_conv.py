"""The compiled fma-chain convolution against exact rational arithmetic, torch, and itself on every path."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dalverify.accel import fma_conv
from dalverify.accel.fma_conv import conv2d_fma, conv2d_fma_parts, instruction_sets
from dalverify.errors import InputError
from dalverify.tolerances import EVALUATOR_ATOL_SCALE, EVALUATOR_RTOL

needs_extension = pytest.mark.skipif(not fma_conv.available(), reason="the compiled convolution is not built")


def rounded_fma(w: float, x: float, acc: float) -> float:
    """``w * x + acc`` rounded once to nearest even, from the exact rational value."""
    return float(Fraction(w) * Fraction(x) + Fraction(acc))


def exact_chain(x, weight, stride, padding, dilation, groups, bias=None, bias_rows="all"):
    """The kernel's contract rebuilt with Fractions: one correctly rounded fma per tap, in (c, i, j) order."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    batch, _, height, width = x.shape
    out_channels, group_channels, kh, kw = weight.shape
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    per_group = out_channels // groups
    out = np.empty((batch, out_channels, out_h, out_w))
    for b in range(batch):
        for o in range(out_channels):
            first = (o // per_group) * group_channels
            for y in range(out_h):
                for col in range(out_w):
                    acc = 0.0
                    for c in range(group_channels):
                        for i in range(kh):
                            for j in range(kw):
                                acc = rounded_fma(float(weight[o, c, i, j]),
                                                  float(padded[b, first + c, y * sh + i * dh, col * sw + j * dw]), acc)
                    if bias is not None:
                        shift = bias[o] if bias_rows == "all" or b % 2 == 0 else 0.0 * bias[o]
                        acc = acc + shift
                    out[b, o, y, col] = acc
    return out


@st.composite
def conv_cases(draw):
    groups = draw(st.sampled_from([1, 2]))
    group_channels = draw(st.integers(1, 3))
    out_per_group = draw(st.integers(1, 6))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.sampled_from([(1, 1), (1, 1), (2, 1), (1, 2), (2, 2)]))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    height = draw(st.integers(max(1, dilation[0] * (kernel[0] - 1) + 1 - 2 * padding[0]), 8))
    width = draw(st.integers(max(1, dilation[1] * (kernel[1] - 1) + 1 - 2 * padding[1]), 11))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    # Mixed magnitudes, signed zeros and exact ties make rounding visible.
    scale = draw(st.sampled_from([1.0, 1e-300, 1e150]))
    x = rng.normal(size=(draw(st.integers(1, 3)), groups * group_channels, height, width)) * scale
    x[rng.random(x.shape) < 0.1] = -0.0
    weight = rng.normal(size=(groups * out_per_group, group_channels) + kernel)
    weight[rng.random(weight.shape) < 0.1] = 0.5
    bias = rng.normal(size=groups * out_per_group) if draw(st.booleans()) else None
    bias_rows = draw(st.sampled_from(["all", "even"]))
    return x, weight, stride, padding, dilation, groups, bias, bias_rows


@needs_extension
@given(conv_cases())
@settings(max_examples=80, deadline=None)
def test_every_path_gives_the_exact_fma_chain(case):
    x, weight, stride, padding, dilation, groups, bias, bias_rows = case
    want = exact_chain(x, weight, stride, padding, dilation, groups, bias, bias_rows)
    for isa in instruction_sets():
        got = conv2d_fma(x, weight, stride, padding, dilation, groups, isa=isa, bias=bias, bias_rows=bias_rows)
        assert got.shape == want.shape
        assert np.array_equal(got.view(np.int64), want.view(np.int64)), isa


@needs_extension
@pytest.mark.parametrize("shape", [(3, 8, 32, 32, 8), (2, 16, 9, 13, 7), (2, 64, 4, 4, 64), (4, 8, 17, 5, 1),
                                   (2, 1, 64, 64, 8)])
def test_paths_agree_bit_for_bit_on_network_shapes(shape):
    # Every strip-tail length and output-channel remainder of the layers a
    # U-Net has, compared across the instruction sets this processor runs.
    batch, channels, height, width, out_channels = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=(batch, channels, height, width))
    weight = rng.normal(size=(out_channels, channels, 3, 3))
    bias = rng.normal(size=out_channels)
    results = {isa: conv2d_fma(x, weight, (1, 1), (1, 1), (1, 1), 1, isa=isa, bias=bias, bias_rows="even")
               for isa in instruction_sets()}
    scalar = results.pop("scalar")
    for isa, got in results.items():
        assert np.array_equal(got.view(np.int64), scalar.view(np.int64)), isa
    # Spot checks against the exact chain on a few outputs of the scalar path.
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    for b, o, y, col in [(0, 0, 0, 0), (batch - 1, out_channels - 1, height - 1, width - 1), (1, 0, height // 2, 1)]:
        acc = 0.0
        for c in range(channels):
            for i in range(3):
                for j in range(3):
                    acc = rounded_fma(float(weight[o, c, i, j]), float(padded[b, c, y + i, col + j]), acc)
        acc = acc + (bias[o] if b % 2 == 0 else 0.0 * bias[o])
        assert scalar[b, o, y, col] == acc


@needs_extension
@given(conv_cases())
@settings(max_examples=40, deadline=None)
def test_matches_torch_within_the_evaluator_tolerance(case):
    x, weight, stride, padding, dilation, groups, _, _ = case
    x = x / max(1.0, float(np.abs(x).max()))
    got = conv2d_fma(x, weight, stride, padding, dilation, groups)
    want = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(weight), stride=stride, padding=padding,
                                      dilation=dilation, groups=groups).numpy()
    scale = EVALUATOR_ATOL_SCALE * max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, rtol=EVALUATOR_RTOL, atol=scale)


@needs_extension
def test_batch_elements_do_not_depend_on_the_batch():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 8, 33, 31))
    weight = rng.normal(size=(6, 8, 3, 3))
    bias = rng.normal(size=6)
    together = conv2d_fma(x, weight, (1, 1), (1, 1), (1, 1), 1, bias=bias, bias_rows="even")
    # An even row stays even in pairs taken alone.
    alone = np.concatenate([conv2d_fma(x[i : i + 2], weight, (1, 1), (1, 1), (1, 1), 1, bias=bias, bias_rows="even")
                            for i in range(0, 6, 2)])
    assert np.array_equal(together.view(np.int64), alone.view(np.int64))


@needs_extension
def test_bias_is_added_like_the_reference_mask():
    from dalverify.graph.reference import _with_bias

    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 3, 6, 6))
    weight = rng.normal(size=(5, 3, 3, 3))
    bias = rng.normal(size=5)
    bias[0] = -1.5  # 0.0 * bias is -0.0 here
    plain = conv2d_fma(x, weight, (1, 1), (1, 1), (1, 1), 1)
    want = _with_bias(plain, bias.reshape(-1, 1, 1), np.array([True, False, True, False]))
    got = conv2d_fma(x, weight, (1, 1), (1, 1), (1, 1), 1, bias=bias, bias_rows="even")
    assert np.array_equal(got.view(np.int64), want.view(np.int64))


@needs_extension
def test_bad_arguments_are_refused_with_the_value():
    x = np.zeros((1, 4, 5, 5))
    weight = np.zeros((2, 4, 3, 3))
    with pytest.raises(InputError, match="isa='sse9'"):
        conv2d_fma(x, weight, (1, 1), (1, 1), (1, 1), 1, isa="sse9")
    with pytest.raises(InputError, match="bias_rows='odd'"):
        conv2d_fma(x, weight, (1, 1), (1, 1), (1, 1), 1, bias=np.zeros(2), bias_rows="odd")
    with pytest.raises(InputError, match="bias has 3 values"):
        conv2d_fma(x, weight, (1, 1), (1, 1), (1, 1), 1, bias=np.zeros(3))
    with pytest.raises(InputError, match="groups=3"):
        conv2d_fma(x, weight, (1, 1), (1, 1), (1, 1), 3)
    with pytest.raises(InputError, match="does not fit"):
        conv2d_fma(x, np.zeros((2, 4, 9, 9)), (1, 1), (0, 0), (1, 1), 1)
    with pytest.raises(InputError, match="4-D"):
        conv2d_fma(x[0], weight, (1, 1), (1, 1), (1, 1), 1)
    assert conv2d_fma(np.zeros((0, 4, 5, 5)), weight, (1, 1), (1, 1), (1, 1), 1).shape == (0, 2, 5, 5)


@needs_extension
def test_extension_checks_buffer_sizes():
    # The wrapper sizes the buffers; the extension must still refuse a wrong
    # one rather than read or write past it.
    from dalverify.accel import _fmaconv

    x = np.zeros((1, 2, 4, 4))
    weight = np.zeros((2, 2, 3, 3))
    dims = (1, 2, 4, 4, 2, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 4)
    with pytest.raises(ValueError, match="output buffer"):
        _fmaconv.conv2d_parts([(x, 2, None)], weight, np.zeros((1, 2, 4, 3)), dims, 0, None, 0, None)
    with pytest.raises(ValueError, match="input buffer"):
        _fmaconv.conv2d_parts([(x[:, :1].copy(), 2, None)], weight, np.zeros((1, 2, 4, 4)), dims, 0, None, 0, None)
    with pytest.raises(ValueError, match="not the output size"):
        _fmaconv.conv2d_parts([(x, 2, None)], weight, np.zeros((1, 2, 5, 4)), dims[:15] + (5, 4), 0, None, 0, None)
    with pytest.raises(ValueError, match="bias buffer"):
        _fmaconv.conv2d_parts([(x, 2, None)], weight, np.zeros((1, 2, 4, 4)), dims, 0, np.zeros(3), 1, None)


def test_missing_extension_names_the_fix(monkeypatch):
    monkeypatch.setattr(fma_conv, "_fmaconv", None)
    assert not fma_conv.available()
    assert instruction_sets() == []
    with pytest.raises(RuntimeError, match="C compiler"):
        conv2d_fma(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), (1, 1), (1, 1), (1, 1), 1)


@st.composite
def part_cases(draw):
    height, width = draw(st.integers(1, 7)), draw(st.integers(1, 9))
    batch = draw(st.integers(0, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        rows = draw(st.integers(1, 6))
        array = rng.normal(size=(rows, draw(st.integers(1, 3)), height, width))
        index = rng.integers(0, rows, size=batch) if draw(st.booleans()) or rows != batch else None
        parts.append((array, index))
    channels = sum(array.shape[1] for array, _ in parts)
    weight = rng.normal(size=(draw(st.integers(1, 6)), channels, 3, 3))
    return parts, weight


@needs_extension
@given(part_cases())
@settings(max_examples=60, deadline=None)
def test_parts_equal_the_built_concatenation(case):
    parts, weight = case
    built = np.concatenate([array if index is None else array[index] for array, index in parts], axis=1)
    bias = np.linspace(-1.0, 1.0, weight.shape[0])
    want = conv2d_fma(built, weight, (1, 1), (1, 1), (1, 1), 1, bias=bias, bias_rows="even")
    got = conv2d_fma_parts(parts, weight, (1, 1), (1, 1), (1, 1), 1, bias=bias, bias_rows="even")
    assert got.shape == want.shape
    assert np.array_equal(got.view(np.int64), want.view(np.int64))


@needs_extension
def test_bad_parts_are_refused_with_the_value():
    a = np.zeros((3, 2, 4, 4))
    weight = np.zeros((1, 3, 3, 3))
    with pytest.raises(InputError, match="parts is empty"):
        conv2d_fma_parts([], weight, (1, 1), (1, 1), (1, 1), 1)
    with pytest.raises(InputError, match=r"\(rows, C, 4, 4\)"):
        conv2d_fma_parts([(a, None), (np.zeros((3, 1, 5, 4)), None)], weight, (1, 1), (1, 1), (1, 1), 1)
    with pytest.raises(InputError, match="give 3 batch elements"):
        conv2d_fma_parts([(a, None), (np.zeros((2, 1, 4, 4)), None)], weight, (1, 1), (1, 1), (1, 1), 1)
    with pytest.raises(InputError, match="input channels 4"):
        conv2d_fma_parts([(a, None), (a, None)], weight, (1, 1), (1, 1), (1, 1), 1)
    with pytest.raises(InputError, match="row index points outside"):
        conv2d_fma_parts([(a, np.array([0, 3, 1])), (a[:, :1], None)], weight, (1, 1), (1, 1), (1, 1), 1)
    with pytest.raises(InputError, match="row index points outside"):
        conv2d_fma_parts([(a, np.array([0, -1, 1])), (a[:, :1], None)], weight, (1, 1), (1, 1), (1, 1), 1)


@needs_extension
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("bias_rows", ["all", "even"])
def test_addend_is_added_like_a_following_constant_node(with_bias, bias_rows):
    from dalverify.graph.reference import _with_bias

    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 3, 5, 7))
    weight = rng.normal(size=(2, 3, 3, 3))
    bias = rng.normal(size=2) if with_bias else None
    addend = rng.normal(size=(2, 5, 7))
    addend[0, 0, 0] = -2.0  # 0.0 * addend is -0.0 there
    mask = np.array([True, False, True, False]) if bias_rows == "even" else None
    want = conv2d_fma(x, weight, (1, 1), (1, 1), (1, 1), 1)
    if bias is not None:
        want = _with_bias(want, bias.reshape(-1, 1, 1), mask)
    want = _with_bias(want, addend, mask)
    got = conv2d_fma_parts([(x, None)], weight, (1, 1), (1, 1), (1, 1), 1, bias=bias, bias_rows=bias_rows,
                           addend=addend)
    assert np.array_equal(got.view(np.int64), want.view(np.int64))
    # A per-channel addend broadcasts over the map.
    channel = conv2d_fma_parts([(x, None)], weight, (1, 1), (1, 1), (1, 1), 1, addend=np.ones((2, 1, 1)))
    assert np.array_equal(channel, conv2d_fma(x, weight, (1, 1), (1, 1), (1, 1), 1) + 1.0)
    with pytest.raises(InputError, match="does not broadcast"):
        conv2d_fma_parts([(x, None)], weight, (1, 1), (1, 1), (1, 1), 1, addend=np.ones((3, 5, 7)))


@needs_extension
@pytest.mark.parametrize("dims", [
    (2**61 + 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1),  # batch * O * out_h * out_w wraps
    (1, 1, 3, 768614336404564651, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1),  # H * W wraps
    (1, 1, 1, 1, 1, 1, 274177, 67280421310721, 1, 1, 1, 137088, 33640210655360, 1, 1, 1, 1),  # kh * kw wraps
    (1, 1, 3, 1, 1, 1, 1, 1, 1, 2**62 + 2**40, 1, 0, 0, 1, 1, 3, 1),  # the reach term wraps
])
def test_dimensions_that_overflow_are_refused(dims):
    # Each of these once passed the size checks through a wrapped product
    # and then read or wrote far outside its buffers.
    from dalverify.accel import _fmaconv

    with pytest.raises(ValueError, match="exceeds 2"):
        _fmaconv.conv2d_parts([(bytearray(8), dims[1], None)], bytearray(8), bytearray(8), dims, 1, None, 0, None)


@needs_extension
def test_part_channels_that_overflow_are_refused():
    from dalverify.accel import _fmaconv

    with pytest.raises(ValueError, match="channel count"):
        _fmaconv.conv2d_parts([(bytearray(8), 2**61 + 1, None)] * 8, bytearray(64), bytearray(8),
                              (1, 8, 1, 1, 1, 8, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1), 1, None, 0, None)
    with pytest.raises(ValueError, match="exceeds 2"):
        _fmaconv.conv2d_parts([(bytearray(0), 1, None)], bytearray(8), bytearray(8),
                              (1, 1, 2**32, 2**29, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1), 1, None, 0, None)


@needs_extension
def test_row_index_aliasing_output_is_safe():
    # The indices are copied before the kernel writes: a row index that lies
    # in the output buffer keeps the value it had when it was checked.
    from dalverify.accel import _fmaconv

    memory = bytearray(32)
    view = memoryview(memory)
    memory[0:24] = np.array([0, 1, 1], dtype=np.int64).tobytes()
    rows = np.array([1.0, 2.0]).reshape(2, 1, 1, 1)
    _fmaconv.conv2d_parts([(rows.tobytes(), 1, view[0:24])], np.array([3.0]).tobytes(), view[8:32],
                          (3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1), 1, None, 0, None)
    assert np.frombuffer(memory[8:32]).tolist() == [3.0, 6.0, 6.0]


@needs_extension
def test_isa_codes_and_output_sizes_are_checked():
    from dalverify.accel import _fmaconv

    dims = (1, 1, 4, 4, 1, 1, 3, 3, 1, 1, 1, 1, 1, 1, 1, 4, 4)
    for code in (-1, 4):
        with pytest.raises(ValueError, match="isa must be"):
            _fmaconv.conv2d_parts([(bytearray(128), 1, None)], bytearray(72), bytearray(128), dims, code, None, 0, None)
    with pytest.raises(ValueError, match="not the output size"):
        _fmaconv.conv2d_parts([(bytearray(128), 1, None)], bytearray(72), bytearray(72), dims[:15] + (3, 3), 0, None, 0, None)
