"""The compiled piecewise step of the sweep equals the numpy step bit for bit.

Both steps run on the same segments and rows: the new starts, the generation
map, the binding units, the pattern digests and the output rows must be
identical, signed zeros included. The rows are drawn with the values that
make the comparisons delicate: zeros of both signs, ``beta = 0`` (infinite
or NaN roots), roots exactly at a segment's start or end, and repeated
roots.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dalverify.accel.direct_conv import available
from dalverify.accel.fused_step import (apply_pairs, apply_pointwise, conv_transpose2d_fused, pointwise_compiled,
                                        pointwise_instruction_sets, scan_pairs, scan_roots)
from dalverify.graph.ir import Node
from dalverify.graph.reference import _with_bias, conv_transpose2d
from dalverify.line.layer_major import _max_pool, _max_pool_fused, _pointwise, _pointwise_fused, _Sweep

pytestmark = pytest.mark.skipif(not available(), reason="the compiled step needs numba")

SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, -2.0, 3.0]


@st.composite
def segments_and_rows(draw):
    """Segments of ``[-2, 2]`` and rows whose roots often fall on their ends."""
    n = draw(st.integers(1, 4))
    # Up to 6 units run the scalar tail alone; 8 and more run full vectors too.
    units = draw(st.one_of(st.integers(1, 6), st.sampled_from([8, 13, 20])))
    inner = sorted(set(draw(st.lists(st.sampled_from([-1.0, -0.5, 0.0, 0.25, 1.0]), max_size=n - 1))))
    starts = np.array([-2.0] + inner)
    values = st.one_of(st.sampled_from(SPECIAL), st.floats(-4, 4, allow_nan=False, width=64))
    alpha = np.array(draw(st.lists(values, min_size=starts.size * units, max_size=starts.size * units)))
    beta = np.array(draw(st.lists(values, min_size=starts.size * units, max_size=starts.size * units)))
    # Put some roots exactly on segment boundaries: alpha = -root * beta with
    # beta = 1 gives the root -alpha / 1 exactly.
    on_boundary = draw(st.lists(st.booleans(), min_size=alpha.size, max_size=alpha.size))
    boundaries = np.append(starts, 2.0)
    for k, flag in enumerate(on_boundary):
        if flag:
            beta[k] = 1.0
            alpha[k] = -boundaries[draw(st.integers(0, boundaries.size - 1))]
    rows = np.stack([alpha.reshape(starts.size, units), beta.reshape(starts.size, units)], axis=1)
    kind = draw(st.sampled_from(["relu", "leaky_relu", "abs"]))
    return starts, rows, kind


def fresh_sweep(starts: np.ndarray) -> _Sweep:
    sweep = _Sweep(float(starts[0]), 2.0, max_segments=1000)
    sweep.starts = starts.copy()
    sweep.hashers = [sweep.hashers[0].copy() for _ in starts]
    sweep.binding = [[(0, j)] for j in range(starts.size)]
    return sweep


def state(sweep: _Sweep):
    return (sweep.starts.tolist(), sweep.end, [m.tolist() for m in sweep.maps], sweep.binding,
            [h.hexdigest() for h in sweep.hashers])


@given(segments_and_rows())
def test_fused_pointwise_equals_numpy(case):
    starts, rows, kind = case
    attrs = {"negative_slope": 0.1} if kind == "leaky_relu" else {}
    node = Node(id=7, kind=kind, inputs=(3,), shape=(rows.shape[2],), attrs=attrs, params={})

    plain, fused = fresh_sweep(starts), fresh_sweep(starts)
    expected = _pointwise(plain, node, rows.copy())
    got = _pointwise_fused(fused, node, rows.copy())

    assert state(fused) == state(plain)
    assert got.shape == expected.shape
    # Bitwise equality, so -0.0 and 0.0 count as different.
    assert np.array_equal(got.view(np.int64), expected.view(np.int64))


def test_fused_pointwise_hand_case():
    """One segment [-2, 2), units with roots -1 (inside), 2 (its end) and none (beta = 0)."""
    starts = np.array([-2.0])
    rows = np.array([[[1.0, -2.0, 1.0], [1.0, 1.0, 0.0]]])
    node = Node(id=5, kind="relu", inputs=(3,), shape=(3,), attrs={}, params={})
    sweep = fresh_sweep(starts)
    out = _pointwise_fused(sweep, node, rows)

    assert sweep.starts.tolist() == [-2.0, -1.0]
    assert sweep.maps[-1].tolist() == [0, 0]
    # The first segment ends at unit 0's root, so unit 0 binds it. It is not
    # its parent's last child, so it keeps none of the parent's earlier
    # units. The last segment keeps them and ends at 2, unit 1's root.
    assert sweep.binding == [[(5, 0)], [(0, 0), (5, 1)]]
    # On [-2, -1): unit 0 (1 + z) is negative, unit 1 (-2 + z) negative,
    # unit 2 (constant 1) positive. On [-1, 2): unit 0 positive.
    assert out[:, 0].tolist() == [[0.0, 0.0, 1.0], [1.0, 0.0, 1.0]]
    assert out[:, 1].tolist() == [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]


@st.composite
def pool_cases(draw):
    """Segments and ``(n, 2, C, H, W)`` rows of small integers: many equal window entries and roots on ends."""
    n = draw(st.integers(1, 3))
    inner = sorted(set(draw(st.lists(st.sampled_from([-1.0, 0.0, 0.5]), max_size=n - 1))))
    starts = np.array([-2.0] + inner)
    channels = draw(st.integers(1, 2))
    side = draw(st.sampled_from([2, 3, 4]))
    kernel = draw(st.sampled_from([(2, 2), (1, 2), (3, 3)]))
    if kernel[0] > side:
        kernel = (2, 2)
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    count = starts.size * 2 * channels * side * side
    values = np.array(draw(st.lists(st.sampled_from([-2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0]),
                                    min_size=count, max_size=count)))
    return starts, values.reshape(starts.size, 2, channels, side, side), kernel, stride


@given(pool_cases())
def test_fused_max_pool_equals_numpy(case):
    starts, rows, kernel, stride = case
    side = rows.shape[-1]
    out_h, out_w = (side - kernel[0]) // stride[0] + 1, (side - kernel[1]) // stride[1] + 1
    node = Node(id=9, kind="max_pool2d", inputs=(3,), shape=(rows.shape[2], out_h, out_w),
                attrs={"kernel_size": kernel, "stride": stride}, params={})

    plain, fused = fresh_sweep(starts), fresh_sweep(starts)
    expected = _max_pool(plain, node, rows.copy())
    got = _max_pool_fused(fused, node, rows.copy())

    assert state(fused) == state(plain)
    assert got.shape == expected.shape
    assert np.array_equal(got.view(np.int64), expected.view(np.int64))


def test_sweep_index_of_an_older_target():
    # Three generations: 1 segment, split into 2, then the second into 3.
    sweep = _Sweep(-2.0, 2.0, max_segments=100)
    sweep.split_at(np.array([0]), np.array([0.0]))
    sweep.split_at(np.array([1, 1]), np.array([0.5, 1.0]))
    assert [sweep.count(g) for g in range(3)] == [1, 2, 4]
    assert sweep.index(0, 1).tolist() == [0, 0]
    assert sweep.index(1, 2).tolist() == [0, 1, 1, 1]
    assert sweep.index(0, 2).tolist() == [0, 0, 0, 0]
    assert sweep.index(1).tolist() == [0, 1, 1, 1]


@st.composite
def transpose_cases(draw):
    channels, out_channels = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    height, width = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    # Padding may crop up to the whole kernel reach; output padding must stay below stride or dilation.
    padding = (draw(st.integers(0, dilation[0] * (kernel[0] - 1))), draw(st.integers(0, dilation[1] * (kernel[1] - 1))))
    output_padding = (draw(st.integers(0, max(stride[0], dilation[0]) - 1)),
                      draw(st.integers(0, max(stride[1], dilation[1]) - 1)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.normal(size=(draw(st.integers(1, 4)), channels, height, width))
    x[rng.random(x.shape) < 0.2] = -0.0
    weight = rng.normal(size=(channels, out_channels) + kernel)
    bias = rng.normal(size=out_channels) if draw(st.booleans()) else None
    return x, weight, stride, padding, output_padding, dilation, bias, draw(st.sampled_from(["all", "even"]))


@given(transpose_cases())
def test_fused_transposed_convolution_gives_the_reference_bits(case):
    # Overlapping taps (kernel wider than stride), cropping paddings, signed
    # zeros and both bias modes: the compiled scatter must add exactly as the
    # reference's slice additions and masked bias do.
    x, weight, stride, padding, output_padding, dilation, bias, bias_rows = case
    out_h = (x.shape[2] - 1) * stride[0] - 2 * padding[0] + dilation[0] * (weight.shape[2] - 1) + output_padding[0] + 1
    out_w = (x.shape[3] - 1) * stride[1] - 2 * padding[1] + dilation[1] * (weight.shape[3] - 1) + output_padding[1] + 1
    if out_h < 1 or out_w < 1:
        return
    want = conv_transpose2d(x, weight, stride, padding, output_padding, dilation)
    if bias is not None:
        mask = np.arange(x.shape[0]) % 2 == 0 if bias_rows == "even" else None
        want = _with_bias(want, bias.reshape(-1, 1, 1), mask)
    got = conv_transpose2d_fused(x, weight, stride, padding, output_padding, dilation, bias=bias, bias_rows=bias_rows)
    assert got.shape == want.shape
    assert np.array_equal(got.view(np.int64), want.view(np.int64))


@pytest.mark.skipif(not pointwise_compiled(), reason="the compiled element-wise passes are not built")
@given(segments_and_rows())
def test_every_compiled_path_equals_the_numba_passes(case):
    starts, rows, kind = case
    ends = np.append(starts[1:], 2.0)
    alpha, beta = rows[:, 0], rows[:, 1]
    want_scan = scan_roots(alpha, beta, starts, ends)
    parent = np.repeat(np.arange(starts.size), 2)[: starts.size]
    want_apply = apply_pointwise(alpha, beta, parent, starts, ends, kind, 0.1)
    for isa in pointwise_instruction_sets():
        got_scan = scan_pairs(np.ascontiguousarray(rows), starts, ends, isa=isa)
        for got, want in zip(got_scan, want_scan):
            assert np.array_equal(got, want), isa
        got_apply = apply_pairs(np.ascontiguousarray(rows), parent, starts, ends, kind, 0.1, isa=isa)
        for got, want in zip(got_apply, want_apply):
            assert got.shape == want.shape
            assert np.array_equal(np.ascontiguousarray(got).view(np.uint8), np.ascontiguousarray(want).view(np.uint8)), isa


@pytest.mark.skipif(not pointwise_compiled(), reason="the compiled element-wise passes are not built")
def test_compiled_passes_check_their_arguments():
    from dalverify.accel import _pointwise
    from dalverify.errors import InputError

    x = np.array([[[-1.5], [1.0]]])
    # Integer bounds are converted, not read as float64 bits.
    assert scan_pairs(x, np.array([1]), np.array([2]))[2].tolist() == [1.5]
    with pytest.raises(InputError, match="isa='sse'"):
        scan_pairs(x, np.array([1.0]), np.array([2.0]), isa="sse")
    with pytest.raises(InputError, match="C-contiguous float64"):
        scan_pairs(x.astype(np.float32), np.array([1.0]), np.array([2.0]))
    with pytest.raises(InputError, match="slope=nan"):
        apply_pairs(x, np.array([0]), np.array([1.0]), np.array([2.0]), "leaky_relu", float("nan"))
    with pytest.raises(ValueError, match="must lie in"):
        _pointwise.count_inside(bytearray(16), bytearray(8), bytearray(8), bytearray(8), 1, 2**60 + 1, 1)
    with pytest.raises(ValueError, match="isa must be"):
        _pointwise.count_inside(bytearray(16), bytearray(8), bytearray(8), bytearray(8), 1, 1, 7)


@pytest.mark.skipif(not pointwise_compiled(), reason="the compiled element-wise passes are not built")
def test_parent_aliasing_bound_is_safe():
    # The parent indices are copied before any bound is written.
    from dalverify.accel import _pointwise

    units = 1000
    x = np.zeros((1, 2, units))
    x[0, 0], x[0, 1] = -1.0, 1.0
    memory = bytearray(24)
    view = memoryview(memory)
    out = np.empty((2, 2, units))
    bits = np.empty((2, units), dtype=np.uint8)
    _pointwise.apply(x, view[0:16], np.zeros(2), np.ones(2), out, bits, view[8:24], 1, 2, units, 0, 0.0, 1)
    assert np.array_equal(out[0], out[1])
