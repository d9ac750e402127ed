"""The layer-major sweep returns the piece-by-piece numpy walk's partition, bit for bit.

The reference here is the numpy walk (one full pass per piece) with the same
kernel set, itself checked against exact rational breakpoints in
``test_line_exact.py``. The comparison covers ends, pattern digests, binding
units, cut signs and labels, for the reference kernels and, when numba is
installed, the fast ones.
Small ``max_segments`` values force the sweep to stop early and restart, which
is the path that bounds memory on large images.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dalverify.accel import fma_conv
from dalverify.accel.direct_conv import available
from dalverify.errors import InputError
from dalverify.export import export
from dalverify.line import walk_line
from dalverify.line.layer_major import default_max_segments, deferred_concats, folded_constants, walk_layer_major
from dalverify.line.numpy_backend import NumpyLineBackend
from dalverify.methods.covariance import Isotropic
from dalverify.methods.dal_test import DALTest, RegionCuts
from dalverify.methods.statistic import line_from_images
from dalverify.selection.event import LambdaCuts
from reference.exact_line import exact_breakpoints, to_fraction_layers
from reference.strategies import as_fractions, build_graph, tiny_networks
from reference.torch_modules import EveryKind, SmallUNet


KERNELS = ["reference"] + (["fast"] if available() else [])


def walk_reference(graph, a, b, lo, hi, kernels="reference", **options):
    """The piece-by-piece numpy walk with the given kernel set."""
    backend = NumpyLineBackend(graph, np.asarray(a), np.asarray(b), kernels=kernels)
    return walk_line(graph, np.asarray(a), np.asarray(b), lo, hi, backend=backend, **options)


def summary(partition):
    return [(p.lo, p.hi, p.pattern, p.end_units, p.signs, p.label, p.network_piece) for p in partition.pieces]


@pytest.fixture(scope="module")
def every_kind():
    return export(EveryKind().double().eval(), torch.zeros(1, 2, 8, 8, dtype=torch.float64))


@pytest.fixture(scope="module")
def small_unet():
    return export(SmallUNet(width=2).double().eval(), torch.zeros(1, 1, 16, 16, dtype=torch.float64))


@given(tiny_networks(), st.sampled_from([2, 3, 5, 1000]))
def test_tiny_networks_match_numpy_walk(case, max_segments):
    layers, a, b, _ = case
    graph = build_graph(layers, len(a))
    reference = walk_line(graph, np.array(a), np.array(b), -64.0, 64.0, backend="numpy")
    swept = walk_layer_major(graph, np.array(a), np.array(b), -64.0, 64.0, max_segments=max_segments, progress=False)
    swept.check_tiling()
    assert summary(swept) == summary(reference)
    assert swept.network_pieces == reference.network_pieces


@given(tiny_networks())
@settings(max_examples=20)
def test_tiny_networks_match_exact_breakpoints(case):
    layers, a, b, planted = case
    graph = build_graph(layers, len(a))
    swept = walk_line(graph, np.array(a), np.array(b), -64.0, 64.0, backend="layer")
    exact = exact_breakpoints(to_fraction_layers(layers), as_fractions(a), as_fractions(b), Fraction(-64), Fraction(64))
    got = swept.ends()
    assert len(got) == len(exact)
    if "narrow" not in planted:
        # Dyadic weights and lines: every float root is the correctly rounded exact one.
        assert [float(x) for x in exact] == got.tolist()


@given(tiny_networks(), st.sampled_from([2, 4, 1000]))
@settings(max_examples=20)
def test_unbounded_range(case, max_segments):
    layers, a, b, _ = case
    graph = build_graph(layers, len(a))
    reference = walk_line(graph, np.array(a), np.array(b), -math.inf, math.inf, backend="numpy")
    swept = walk_layer_major(graph, np.array(a), np.array(b), -math.inf, math.inf, max_segments=max_segments)
    assert summary(swept) == summary(reference)
    assert swept.pieces[0].lo == -math.inf
    assert swept.pieces[-1].hi == math.inf


@pytest.mark.parametrize("kernels", KERNELS)
@given(seed=st.integers(0, 2**32 - 1), max_segments=st.sampled_from([2, 7, 64]))
@settings(max_examples=10)
def test_every_kind_matches_numpy_walk(every_kind, kernels, seed, max_segments):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(2, 8, 8))
    b = rng.normal(size=(2, 8, 8))
    reference = walk_reference(every_kind, a, b, -0.5, 0.5, kernels, record_outputs=True)
    swept = walk_layer_major(every_kind, a, b, -0.5, 0.5, max_segments=max_segments, record_outputs=True,
                             kernels=kernels)
    assert len(reference.pieces) > 3
    assert summary(swept) == summary(reference)
    for (lo1, hi1, alpha1, beta1), (lo2, hi2, alpha2, beta2) in zip(swept.outputs, reference.outputs):
        assert (lo1, hi1) == (lo2, hi2)
        assert np.array_equal(alpha1, alpha2)
        assert np.array_equal(beta1, beta2)


@pytest.mark.skipif(not (available() and fma_conv.available()), reason="needs numba and the compiled convolution")
@given(seed=st.integers(0, 2**32 - 1), max_segments=st.sampled_from([2, 64]))
@settings(max_examples=5)
def test_fast_kernels_without_the_extension_match_numpy_walk(every_kind, seed, max_segments):
    # The "fast" set then convolves with numba and the sweep takes the
    # chunked path for convolutions; both walks must switch together.
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(2, 8, 8))
    b = rng.normal(size=(2, 8, 8))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fma_conv, "_fmaconv", None)
        reference = walk_reference(every_kind, a, b, -0.5, 0.5, "fast", record_outputs=True)
        swept = walk_layer_major(every_kind, a, b, -0.5, 0.5, max_segments=max_segments, record_outputs=True,
                                 kernels="fast")
    assert summary(swept) == summary(reference)
    for (_, _, alpha1, beta1), (_, _, alpha2, beta2) in zip(swept.outputs, reference.outputs):
        assert np.array_equal(alpha1, alpha2)
        assert np.array_equal(beta1, beta2)


@pytest.mark.parametrize("kernels", KERNELS)
@given(seed=st.integers(0, 2**32 - 1), max_segments=st.sampled_from([3, 16, 1000]))
@settings(max_examples=6)
def test_unet_with_region_cuts_matches_numpy_walk(small_unet, kernels, seed, max_segments):
    rng = np.random.default_rng(seed)
    image, reference_image = rng.normal(size=(2, 1, 16, 16))
    image[0, 4:8, 4:8] += 3.0
    covariance = Isotropic(1.0, 256)
    test = DALTest(small_unet, threshold=0.5, covariance=covariance, progress=False)
    region, _ = test.observed_region(image)
    if not region.any():
        return
    line = line_from_images(image, reference_image, region, covariance, 1.0)
    cuts = RegionCuts(line.a_image, line.b_image, LambdaCuts(0.5, (16, 16)), 3, "default", region)
    lo, hi = line.t_obs - 0.5 * line.sd, line.t_obs + 0.5 * line.sd
    reference = walk_reference(small_unet, line.a_image, line.b_image, lo, hi, kernels, cuts=cuts)
    swept = walk_layer_major(small_unet, line.a_image, line.b_image, lo, hi, cuts=cuts, max_segments=max_segments,
                             kernels=kernels)
    assert summary(swept) == summary(reference)
    assert any(p.label for p in swept.pieces)


def test_truncated_sweeps_restart_at_a_breakpoint(small_unet):
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(2, 1, 16, 16))
    whole = walk_layer_major(small_unet, a, b, -0.3, 0.3, max_segments=10_000)
    assert summary(whole) == summary(walk_reference(small_unet, a, b, -0.3, 0.3, "fast" if available() else "reference"))
    pieces = whole.network_pieces
    assert pieces > 20
    small = walk_layer_major(small_unet, a, b, -0.3, 0.3, max_segments=4)
    assert summary(small) == summary(whole)
    # Every restart point is an end of a piece with binding units, never an
    # artificial cut: the pieces are the same whatever the segment limit.
    assert all(p.end_units for p in small.pieces[:-1])


def test_max_pieces_and_bad_limit(small_unet):
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 1, 16, 16))
    with pytest.raises(InputError, match="max_pieces=3"):
        walk_line(small_unet, a, b, -1.0, 1.0, backend="layer", max_pieces=3)
    with pytest.raises(InputError, match="max_segments=1"):
        walk_layer_major(small_unet, a, b, -1.0, 1.0, max_segments=1)
    with pytest.raises(InputError, match="kernels='gpu'"):
        walk_layer_major(small_unet, a, b, -1.0, 1.0, kernels="gpu")


def test_default_segment_limit_follows_memory(small_unet):
    # SmallUNet(width=2) on 16x16: the widest node is the last concatenation,
    # 2 + 2 channels of 16 x 16, 1024 units.
    widest = max(node.size for node in small_unet.nodes)
    assert widest == 1024
    per_segment_floor = 16 * 7 * widest
    assert default_max_segments(small_unet, memory=per_segment_floor * 100) <= 100
    assert default_max_segments(small_unet, memory=1) == 2


def test_timings_count_segments_per_kind(small_unet):
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(2, 1, 16, 16))
    plain = walk_layer_major(small_unet, a, b, -0.2, 0.2)
    timings: dict[str, list[float]] = {}
    timed = walk_layer_major(small_unet, a, b, -0.2, 0.2, timings=timings)
    assert summary(timed) == summary(plain)

    # Every node kind of the graph appears once, with a non-negative time.
    kinds = {node.kind for node in small_unet.nodes[1:]}
    assert set(timings) == kinds
    assert all(seconds >= 0.0 for seconds, _ in timings.values())
    # The last node (the output) produces at least one segment per network piece.
    last_kind = small_unet.nodes[-1].kind
    count_last = sum(1 for node in small_unet.nodes[1:] if node.kind == last_kind)
    assert timings[last_kind][1] >= plain.network_pieces
    assert timings[last_kind][1] <= count_last * plain.network_pieces


def test_decoder_concatenations_are_deferred(small_unet):
    # Each decoder concatenation of the U-Net feeds one convolution only.
    deferred = deferred_concats(small_unet)
    concats = [node.id for node in small_unet.nodes if node.kind == "concat"]
    assert sorted(deferred) == concats
    for concat_id, conv_id in deferred.items():
        assert small_unet.nodes[conv_id].kind == "conv2d"
        assert list(small_unet.nodes[conv_id].inputs) == [concat_id]


def test_concatenation_read_by_other_kinds_is_built(every_kind):
    # EveryKind's concatenation is read by abs, leaky ReLU and a scaling, not by a convolution.
    assert any(node.kind == "concat" for node in every_kind.nodes)
    assert deferred_concats(every_kind) == {}


@pytest.fixture(scope="module")
def ddim_unet():
    from dalverify.diffusion.reconstruction import Reconstruction
    from dalverify.diffusion.unet import UNet

    torch.manual_seed(5)
    unet = UNet(1, 2, 2)
    with torch.no_grad():
        # The per-timestep biases start at zero; make them visible to the check.
        for name, parameter in unet.named_parameters():
            if "time_bias" in name:
                parameter.normal_()
    reconstruction = Reconstruction(unet, t_start=460, steps=2, eta=1.0, seed=5, image_shape=(1, 8, 8))
    return export(reconstruction, torch.zeros(1, 1, 8, 8, dtype=torch.float64))


@pytest.mark.parametrize("kernels", KERNELS)
@given(seed=st.integers(0, 2**32 - 1), max_segments=st.sampled_from([3, 1000]))
@settings(max_examples=5)
def test_ddim_unet_matches_numpy_walk(ddim_unet, kernels, seed, max_segments):
    # The unrolled reconstruction has time-embedding constants after its
    # convolutions and decoder concatenations: the compiled convolution
    # folds the first and reads the second in place.
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(2, 1, 8, 8))
    reference = walk_reference(ddim_unet, a, b, -0.3, 0.3, kernels, record_outputs=True)
    swept = walk_layer_major(ddim_unet, a, b, -0.3, 0.3, max_segments=max_segments, record_outputs=True,
                             kernels=kernels)
    assert len(reference.pieces) > 3
    assert summary(swept) == summary(reference)
    for (_, _, alpha1, beta1), (_, _, alpha2, beta2) in zip(swept.outputs, reference.outputs):
        assert np.array_equal(alpha1, alpha2)
        assert np.array_equal(beta1, beta2)


def test_time_embedding_constants_are_folded(ddim_unet):
    folded = folded_constants(ddim_unet)
    assert folded
    assert all(np.abs(ddim_unet.nodes[add_id].params["const"]).max() > 0 for add_id in folded.values())
    for conv_id, add_id in folded.items():
        assert ddim_unet.nodes[conv_id].kind == "conv2d"
        assert ddim_unet.nodes[add_id].kind == "add_const"
        assert list(ddim_unet.nodes[add_id].inputs) == [conv_id]
    assert deferred_concats(ddim_unet)


def test_sweep_keeps_only_the_output_at_the_end(ddim_unet):
    # Every value is dropped after its last reader, the inputs of deferred
    # concatenations included, so memory stays bounded by the live values.
    from dalverify.accel.direct_conv import conv_for
    from dalverify.line.layer_major import _plan, _sweep

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(2, 1, 8, 8))
    kernels = KERNELS[-1]
    conv = conv_for(kernels)
    last, deferred, folded = _plan(ddim_unet, conv)
    sweep = _sweep(ddim_unet, a, b, -0.3, 0.3, 1000, last, conv, kernels == "fast", None, deferred, folded)
    assert set(sweep.values) == {ddim_unet.output}


@pytest.mark.parametrize("max_segments", [3, 8, 40])
def test_shortened_sweeps_keep_the_partition(small_unet, max_segments, monkeypatch):
    # After the first sweep, each sweep covers a shortened range whose end is
    # not a breakpoint; its last segment is dropped and swept again. The
    # partition must stay the piece-by-piece walk's, outputs included.
    import dalverify.line.layer_major as layer_major

    ranges = []
    original = layer_major._sweep

    def recording(graph, a, b, lo, hi, *rest, **options):
        ranges.append((lo, hi))
        return original(graph, a, b, lo, hi, *rest, **options)

    monkeypatch.setattr(layer_major, "_sweep", recording)
    rng = np.random.default_rng(max_segments)
    a, b = rng.normal(size=(2, 1, 16, 16))
    reference = walk_reference(small_unet, a, b, -1.5, 1.5, record_outputs=True)
    swept = walk_layer_major(small_unet, a, b, -1.5, 1.5, max_segments=max_segments, record_outputs=True,
                             kernels="reference")
    assert any(end < 1.5 for _, end in ranges[1:])
    assert summary(swept) == summary(reference)
    for (lo1, hi1, alpha1, beta1), (lo2, hi2, alpha2, beta2) in zip(swept.outputs, reference.outputs):
        assert (lo1, hi1) == (lo2, hi2)
        assert np.array_equal(alpha1, alpha2)
        assert np.array_equal(beta1, beta2)
