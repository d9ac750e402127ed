"""Tests at the edge of the named tolerances not covered elsewhere.

Edge tests of the other tolerances sit beside their users:
``PVALUE_PRECISION_RTOL`` in test_pvalues.py, ``COVARIANCE_PIVOT_FACTOR`` in
test_covariance.py, ``LINE_RECONSTRUCTION_ULPS`` in test_statistic.py, the
``CROSSCHECK_*`` values in test_crosscheck.py and ``LINE_RECOMPUTE_RTOL`` in
test_certify_mutations.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dalverify.accel.torch_backend import evaluate_torch
from dalverify.certify.piece_check import LPCrossCheck
from dalverify.export import export
from dalverify.graph import Graph, Node, evaluate
from dalverify.tolerances import EVALUATOR_ATOL_SCALE, EVALUATOR_RTOL, LP_END_RTOL


def within_evaluator_tolerance(got, want) -> bool:
    scale = EVALUATOR_ATOL_SCALE * max(1.0, float(np.abs(want).max()))
    return bool(np.all(np.abs(got - want) <= EVALUATOR_RTOL * np.abs(want) + scale))


@pytest.fixture(scope="module")
def unet_graph():
    from test_graph_export import SmallUNet

    module = SmallUNet().double().eval()
    return module, export(module, torch.zeros(1, 1, 16, 16, dtype=torch.float64))


def test_evaluators_agree_far_inside_tolerance(unet_graph):
    module, graph = unet_graph
    x = np.random.default_rng(0).normal(size=(4, 1, 16, 16))
    with torch.no_grad():
        want = module(torch.as_tensor(x)).numpy()
    worst = max(float(np.max(np.abs(out - want))) for out in (evaluate(graph, x), evaluate_torch(graph, x, "cpu")))
    # The stated margin: rounding differences stay three orders below the tolerance.
    assert worst <= 1e-3 * EVALUATOR_RTOL * max(1.0, float(np.abs(want).max()))


def test_evaluator_tolerance_catches_one_changed_weight(unet_graph):
    module, graph = unet_graph
    x = np.random.default_rng(1).normal(size=(2, 1, 16, 16))
    with torch.no_grad():
        want = module(torch.as_tensor(x)).numpy()
    conv = next(node for node in graph.nodes if node.kind == "conv2d")
    weight = np.array(conv.params["weight"])
    weight.flat[0] *= 1 + 1e-6
    changed = Node(conv.id, conv.kind, conv.inputs, conv.shape, conv.attrs, dict(conv.params, weight=weight), conv.name)
    nodes = tuple(changed if node.id == conv.id else node for node in graph.nodes)
    altered = Graph(nodes, graph.output, graph.metadata)
    assert within_evaluator_tolerance(evaluate(graph, x), want)
    assert not within_evaluator_tolerance(evaluate(altered, x), want)


def lp_failures(claimed_hi: float) -> list[str]:
    # Constraints z - 1 >= 0 and 3 - z >= 0: the piece is [1, 3].
    check = LPCrossCheck()
    alpha, beta, sign = np.array([-1.0, 3.0]), np.array([1.0, -1.0]), np.array([1.0, 1.0])
    check.check(0, alpha, beta, sign, 1.0, claimed_hi)
    return check.summary.failures


def test_lp_end_tolerance_edge():
    assert lp_failures(3.0) == []
    assert lp_failures(3.0 * (1 + 0.5 * LP_END_RTOL)) == []
    failures = lp_failures(3.0 * (1 + 2 * LP_END_RTOL))
    assert len(failures) == 1
    assert "differs from the proven end" in failures[0]
