"""Cross-checking another tool's selective-inference result against dalverify.

:func:`compare` sets another tool's truncation intervals and p-values beside
a :class:`~dalverify.methods.dal_test.TestResult` and diagnoses every
difference; :func:`from_sicore` converts a sicore or si4onnx result to the
input format. The command ``dalverify crosscheck`` is in
:mod:`dalverify.crosscheck.cli`.
"""

from dalverify.crosscheck.compare import (
    FORMAT,
    FORMAT_VERSION,
    CrosscheckReport,
    Diagnosis,
    TheirResult,
    compare,
    from_sicore,
    normalize_their,
)

__all__ = ["FORMAT", "FORMAT_VERSION", "CrosscheckReport", "Diagnosis", "TheirResult", "compare", "from_sicore",
           "normalize_their"]
