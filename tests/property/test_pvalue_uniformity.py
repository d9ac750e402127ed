"""Selective p-values are uniform under the null; the naive one is not.

Draws of ``T ~ N(0, sd^2)`` truncated to a fixed, asymmetric union ``Z``
are made by rejection from numpy's normal generator at a fixed seed, and
the p-values are compared with the uniform distribution by a
Kolmogorov-Smirnov test (scipy).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dalverify.methods.pvalues import naive_pvalue, selective_pvalue

SD = 2.5
INF = float("inf")
# Standardized union, chosen so that selection biases |T| away from the
# middle except for one short band around 0.
Z_STANDARD = [(-INF, -1.8), (-0.3, 0.2), (1.5, 2.6), (3.1, INF)]
Z = [(lo * SD, hi * SD) for lo, hi in Z_STANDARD]
DRAWS = 2000
SEED = 20240611


def truncated_draws(count, seed):
    """Draw ``count`` values of N(0, SD^2) conditioned on Z, by rejection."""
    rng = np.random.default_rng(seed)
    kept = []
    while len(kept) < count:
        batch = rng.standard_normal(4 * count) * SD
        inside = np.zeros(batch.shape, dtype=bool)
        for lo, hi in Z:
            inside |= (batch >= lo) & (batch <= hi)
        kept.extend(batch[inside].tolist())
    return kept[:count]


@pytest.fixture(scope="module")
def draws():
    return truncated_draws(DRAWS, SEED)


@pytest.mark.parametrize("two_sided", ["symmetric", "equal-tailed"])
def test_selective_pvalue_uniform_under_null(draws, two_sided):
    pvalues = [float(selective_pvalue(t, SD, Z, two_sided=two_sided, dps=20)) for t in draws]
    result = stats.kstest(pvalues, "uniform")
    assert result.pvalue > 1e-3, f"{two_sided}: KS statistic {result.statistic:.4f}, p = {result.pvalue:.2e}"
    assert min(pvalues) > 0
    assert max(pvalues) <= 1


def test_forms_differ_on_asymmetric_union(draws):
    # The two forms must not coincide here, or the second test would add nothing.
    t = draws[0]
    symmetric = selective_pvalue(t, SD, Z, two_sided="symmetric", dps=20)
    equal_tailed = selective_pvalue(t, SD, Z, two_sided="equal-tailed", dps=20)
    assert abs(float(symmetric) - float(equal_tailed)) > 1e-3


def test_naive_pvalue_not_uniform_under_selection(draws):
    pvalues = [float(naive_pvalue(t, SD, dps=20)) for t in draws[:500]]
    result = stats.kstest(pvalues, "uniform")
    assert result.pvalue < 1e-6, f"naive p-values passed KS: statistic {result.statistic:.4f}"
