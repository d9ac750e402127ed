"""The DAL-Test end to end on tiny reconstructions, against exact references."""

from __future__ import annotations

from fractions import Fraction

import mpmath
import numpy as np
import pytest
from scipy import stats

from dalverify.errors import CovarianceError, InputError
from dalverify.graph import GraphBuilder
from dalverify.methods.covariance import Dense, Isotropic
from dalverify.methods.dal_test import DALTest
from reference.exact_line import evaluate_exact, exact_breakpoints

SIDE = 4
N = SIDE * SIDE
LAMBDA = 0.75
#: The walk cuts at float64 roots ``-alpha / beta`` of ``r -+ lambda``; the
#: exact reference cuts at exact roots. ``alpha`` is a float64 sum of terms of
#: the size of the data, so its rounding error is a few ulps of that size
#: (one standard deviation of T, ``sd``), not of the root: a root near 0
#: can carry an absolute error of a few ulps of ``sd``. The bound below is
#: 64 ulps of ``max(|root|, sd)``, far below any piece width in these tests.
ROOT_ULPS = 64


def tiny_layers(seed: int) -> list[tuple]:
    """A dense ReLU reconstruction of a 4x4 image, followed by the residual x - D(x).

    Layers: dense 16 -> 6, ReLU, dense 6 -> 16 (this is D), then the input is
    appended and a last dense layer forms x - D(x).
    """
    rng = np.random.default_rng(seed)
    w1 = rng.integers(-4, 5, (6, N)) / 8
    b1 = rng.integers(-4, 5, 6) / 8
    w2 = rng.integers(-4, 5, (N, 6)) / 8
    residual = np.hstack([-np.eye(N), np.eye(N)])
    return [("dense", w1.tolist(), b1.tolist()), ("relu",), ("dense", w2.tolist(), [0.0] * N),
            ("concat", 0), ("dense", residual.tolist(), [0.0] * N)]


def tiny_graph(layers: list[tuple]):
    """The product's graph of D alone (input and output images 1x4x4)."""
    builder = GraphBuilder((1, SIDE, SIDE))
    flat = builder.reshape(0, (N,))
    hidden = builder.relu(builder.dense(flat, np.array(layers[0][1]), np.array(layers[0][2])))
    out = builder.dense(hidden, np.array(layers[2][1]))
    return builder.build(builder.reshape(out, (1, SIDE, SIDE)))


def filter_rows() -> list[list[Fraction]]:
    """3x3 averaging over in-image neighbours, as exact rows over the 16 pixels."""
    rows = []
    for i in range(SIDE):
        for j in range(SIDE):
            neighbours = [(p, q) for p in range(i - 1, i + 2) for q in range(j - 1, j + 2) if 0 <= p < SIDE and 0 <= q < SIDE]
            row = [Fraction(0)] * N
            for p, q in neighbours:
                row[p * SIDE + q] = Fraction(1, len(neighbours))
            rows.append(row)
    return rows


def exact_region(layers, a, b, z: Fraction) -> tuple[bool, ...]:
    residual = evaluate_exact(_fraction_layers(layers), [ai + bi * z for ai, bi in zip(a, b)])
    scores = [sum(w * r for w, r in zip(row, residual)) for row in filter_rows()]
    return tuple(abs(s) >= Fraction(LAMBDA) for s in scores)


def _fraction_layers(layers):
    out = []
    for layer in layers:
        if layer[0] == "dense":
            out.append(("dense", [[Fraction(w) for w in row] for row in layer[1]], [Fraction(c) for c in layer[2]]))
        else:
            out.append(layer)
    return out


def exact_truncation(layers, a, b, lo, hi, observed):
    """Exact Z within [lo, hi]: segments between exact breakpoints whose region is the observed one."""
    lam = Fraction(LAMBDA)
    cuts = [(row, -lam) for row in filter_rows()] + [(row, lam) for row in filter_rows()]
    points = exact_breakpoints(_fraction_layers(layers), a, b, Fraction(lo), Fraction(hi), cut_rows=cuts)
    segments = [(p, q) for p, q in zip(points, points[1:]) if exact_region(layers, a, b, (p + q) / 2) == observed]
    merged = []
    for p, q in segments:
        if merged and merged[-1][1] == p:
            merged[-1] = (merged[-1][0], q)
        else:
            merged.append((p, q))
    return merged


def quadrature_pvalue(t_obs: float, sd: float, intervals) -> mpmath.mpf:
    """Symmetric selective p-value by numerical quadrature of the normal density (independent route)."""
    with mpmath.workdps(40):
        density = lambda t: mpmath.exp(-(t / sd) ** 2 / 2)  # noqa: E731
        total = extreme = mpmath.mpf(0)
        for lo, hi in intervals:
            lo, hi = mpmath.mpf(lo.numerator) / lo.denominator, mpmath.mpf(hi.numerator) / hi.denominator
            total += mpmath.quad(density, [lo, hi])
            for part_lo, part_hi in ((lo, min(hi, -abs(t_obs))), (max(lo, abs(t_obs)), hi)):
                if part_lo < part_hi:
                    extreme += mpmath.quad(density, [part_lo, part_hi])
        return extreme / total


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_truncation_set_matches_exact_scan(seed):
    layers = tiny_layers(seed)
    graph = tiny_graph(layers)
    rng = np.random.default_rng(100 + seed)
    x = rng.normal(size=(1, SIDE, SIDE))
    ref = rng.normal(size=(1, SIDE, SIDE))
    test = DALTest(graph, threshold=LAMBDA, covariance=Isotropic(1.0, N), search=8.0, backend="numpy", progress=False)
    result = test.run(x, ref)
    if result.status == "no_region":
        pytest.skip("no region for this draw")
    a = [Fraction(v) for v in result.line.a_image.ravel()]
    b = [Fraction(v) for v in result.line.b_image.ravel()]
    lo, hi = result.searched
    observed = tuple(result.region.ravel())
    expected = exact_truncation(layers, a, b, lo, hi, observed)

    got = result.truncation.intervals
    assert len(got) == len(expected)
    for (got_lo, got_hi), (want_lo, want_hi) in zip(got, expected):
        for g, w in ((got_lo, want_lo), (got_hi, want_hi)):
            assert abs(float(g) - float(w)) <= ROOT_ULPS * np.spacing(max(abs(float(w)), result.sd))

    want_p = quadrature_pvalue(result.t_obs, result.sd, expected)
    got_p = result.pvalues["selective"].value
    assert abs(got_p - want_p) <= 1e-9 * want_p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_overconditioned_inside_truncation(seed):
    layers = tiny_layers(seed)
    graph = tiny_graph(layers)
    rng = np.random.default_rng(200 + seed)
    test = DALTest(graph, threshold=LAMBDA, covariance=Isotropic(1.0, N), progress=False, backend="numpy")
    result = test.run(rng.normal(size=(1, SIDE, SIDE)), rng.normal(size=(1, SIDE, SIDE)))
    while result.status != "ok":
        result = test.run(rng.normal(size=(1, SIDE, SIDE)), rng.normal(size=(1, SIDE, SIDE)))
    over = result.overconditioned
    assert result.t_obs in over
    assert (over & result.truncation) == over
    assert float(result.pvalues["overconditioned"]) >= 0


def test_null_pvalues_are_uniform():
    # Under H0 (x and the reference both N(0, I)), selective and
    # over-conditioned p-values are uniform; the naive p-value ignores the
    # selection of large residuals and must fail the same test.
    layers = tiny_layers(7)
    graph = tiny_graph(layers)
    test = DALTest(graph, threshold=LAMBDA, covariance=Isotropic(1.0, N), search=10.0, backend="numpy", progress=False)
    rng = np.random.default_rng(2026)
    selective, over, naive = [], [], []
    while len(selective) < 800:
        result = test.run(rng.normal(size=(1, SIDE, SIDE)), rng.normal(size=(1, SIDE, SIDE)))
        if result.status != "ok":
            continue
        selective.append(float(result.pvalues["selective"]))
        over.append(float(result.pvalues["overconditioned"]))
        naive.append(float(result.pvalues["naive"]))
    assert stats.kstest(selective, "uniform").pvalue > 0.01
    assert stats.kstest(over, "uniform").pvalue > 0.01
    assert stats.kstest(naive, "uniform").pvalue < 1e-4


def test_empty_region_is_a_result():
    graph = tiny_graph(tiny_layers(0))
    result = DALTest(graph, threshold=1e6, covariance=Isotropic(1.0, N), progress=False).run(
        np.zeros((1, SIDE, SIDE)), np.zeros((1, SIDE, SIDE)))
    assert result.status == "no_region"
    assert result.pvalues == {}
    assert result.to_dict()["region_size"] == 0


def test_nan_pixel_is_rejected():
    graph = tiny_graph(tiny_layers(0))
    image = np.zeros((1, SIDE, SIDE))
    image[0, 1, 2] = np.nan
    with pytest.raises(InputError, match="NaN"):
        DALTest(graph, threshold=LAMBDA, covariance=Isotropic(1.0, N)).run(image, np.zeros_like(image))


def test_wrong_shape_is_rejected():
    graph = tiny_graph(tiny_layers(0))
    with pytest.raises(InputError, match="shape"):
        DALTest(graph, threshold=LAMBDA, covariance=Isotropic(1.0, N)).run(np.zeros((1, 5, 5)), np.zeros((1, 5, 5)))


def test_non_positive_definite_covariance_is_rejected():
    graph = tiny_graph(tiny_layers(1))
    matrix = np.eye(N)
    matrix[0, 0] = -1.0
    rng = np.random.default_rng(3)
    test = DALTest(graph, threshold=0.2, covariance=Dense(matrix), progress=False)
    with pytest.raises(CovarianceError):
        test.run(rng.normal(size=(1, SIDE, SIDE)), rng.normal(size=(1, SIDE, SIDE)))


def test_invalid_options_are_rejected():
    graph = tiny_graph(tiny_layers(0))
    with pytest.raises(InputError, match="threshold|lambda"):
        DALTest(graph, threshold=-1.0, covariance=Isotropic(1.0, N))
    with pytest.raises(InputError, match="two_sided"):
        DALTest(graph, threshold=1.0, covariance=Isotropic(1.0, N), two_sided="left")
    with pytest.raises(InputError, match="search"):
        DALTest(graph, threshold=1.0, covariance=Isotropic(1.0, N), search="nowhere")


def test_adaptive_enclosure_contains_whole_line_pvalue():
    graph = tiny_graph(tiny_layers(2))
    rng = np.random.default_rng(9)
    x, ref = rng.normal(size=(1, SIDE, SIDE)), rng.normal(size=(1, SIDE, SIDE))
    x[0, 1, 1] += 3.0  # a clear anomaly, so that a region is selected
    adaptive = DALTest(graph, threshold=LAMBDA, covariance=Isotropic(1.0, N), relative_width=1e-12, backend="numpy",
                       progress=False).run(x, ref)
    whole = DALTest(graph, threshold=LAMBDA, covariance=Isotropic(1.0, N), search="whole", backend="numpy",
                    progress=False).run(x, ref)
    assert adaptive.status == "ok"
    lo, hi = adaptive.pvalues["selective"].enclosure
    assert adaptive.enclosure_width <= 1e-12
    assert whole.searched == (-np.inf, np.inf)
    exact = whole.pvalues["selective"].value
    assert lo <= exact <= hi


@pytest.mark.parametrize("search", ["adaptive", "whole"])
def test_two_workers_give_same_partition(search):
    rng = np.random.default_rng(11)
    builder = GraphBuilder((1, 8, 8))
    hidden = builder.relu(builder.conv2d(0, rng.normal(size=(3, 1, 3, 3)) / 3, rng.normal(size=3) / 4, padding=1))
    graph = builder.build(builder.conv2d(hidden, rng.normal(size=(1, 3, 3, 3)) / 4, padding=1))
    x, ref = rng.normal(size=(1, 8, 8)), rng.normal(size=(1, 8, 8))
    x[0, 3:5, 3:5] += 3.0
    results = [DALTest(graph, threshold=1.0, covariance=Isotropic(1.0, 64), search=search, workers=workers,
                       progress=False).run(x, ref) for workers in (1, 2)]
    serial, parallel = (result.partition for result in results)
    assert [(p.lo, p.hi, p.pattern, p.signs, p.label) for p in serial.pieces] == [
        (p.lo, p.hi, p.pattern, p.signs, p.label) for p in parallel.pieces
    ]
    assert serial.network_pieces == parallel.network_pieces
    assert results[0].pvalues["selective"].value == results[1].pvalues["selective"].value


@pytest.mark.parametrize("seed, decided_below", [(2, True), (3, False)])
def test_early_stop_decides_at_level(seed, decided_below):
    graph = tiny_graph(tiny_layers(2))
    rng = np.random.default_rng(seed)
    x, ref = rng.normal(size=(1, SIDE, SIDE)), rng.normal(size=(1, SIDE, SIDE))
    x[0, 0:2, 0:2] += 3.0
    options = dict(threshold=LAMBDA, covariance=Isotropic(1.0, N), backend="numpy", progress=False)
    # A width target far below reach, so that only the decision can stop the search.
    early = DALTest(graph, decide_at=0.05, relative_width=1e-15, **options).run(x, ref)
    full = DALTest(graph, search="whole", **options).run(x, ref)
    assert early.status == "ok"
    assert early.stopped_early
    assert early.to_dict()["stopped_early"] is True
    lo, hi = early.pvalues["selective"].enclosure
    exact = full.pvalues["selective"].value
    # The enclosure answers the question and contains the whole-line p-value.
    assert (hi < 0.05) if decided_below else (lo >= 0.05)
    assert lo <= exact <= hi
    assert (exact < 0.05) == decided_below
    assert early.pieces < full.pieces


def test_early_stop_needs_adaptive_search_and_a_level():
    graph = tiny_graph(tiny_layers(0))
    with pytest.raises(InputError, match="decide_at=0.05 needs search='adaptive'"):
        DALTest(graph, threshold=1.0, covariance=Isotropic(1.0, N), search="whole", decide_at=0.05)
    with pytest.raises(InputError, match="decide_at=1.5"):
        DALTest(graph, threshold=1.0, covariance=Isotropic(1.0, N), decide_at=1.5)
    assert DALTest(graph, threshold=1.0, covariance=Isotropic(1.0, N)).settings()["decide_at"] is None
