"""dalverify: exact, certifiable selective p-values for diffusion-model anomaly regions.

The public API is small: :class:`DALTest` runs the whole test on an image
and a reference; :func:`selective_pvalue`, :func:`naive_pvalue` and
:func:`bonferroni_pvalue` compute p-values from a statistic and a truncation
set. Everything else is reachable through the subpackages.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str):
    # Imported lazily so that torch-free subpackages (graph, line, numerics,
    # certify) can be used without importing torch.
    if name in ("selective_pvalue", "naive_pvalue", "bonferroni_pvalue", "PValue"):
        from dalverify.methods import pvalues

        return getattr(pvalues, name)
    if name in ("DALTest", "TestResult"):
        from dalverify.methods import dal_test

        return getattr(dal_test, name)
    raise AttributeError(f"module 'dalverify' has no attribute {name!r}")


__all__ = ["DALTest", "TestResult", "PValue", "selective_pvalue", "naive_pvalue", "bonferroni_pvalue", "__version__"]
