"""Exception hierarchy of dalverify.

Every error raised on bad input names the offending value and the fix.
``InputError`` derives from ``ValueError`` so callers that already catch
``ValueError`` keep working.
"""

from __future__ import annotations


class DalverifyError(Exception):
    """Base class of every error that dalverify raises on purpose."""


class InputError(DalverifyError, ValueError):
    """Invalid user input: shapes, NaN or infinite pixels, thresholds, options."""


class CovarianceError(InputError):
    """A covariance matrix that is not symmetric positive definite."""


class NotPiecewiseLinearError(DalverifyError, TypeError):
    """A model contains parts that are not piecewise linear.

    ``offenders`` lists ``(qualified_name, description)`` pairs, one per
    offending module or operation, so that one error reports all of them.
    """

    def __init__(self, offenders: list[tuple[str, str]], hint: str = "") -> None:
        self.offenders = list(offenders)
        lines = [f"  - {name}: {what}" for name, what in self.offenders]
        message = (
            f"the model is not piecewise linear; {len(self.offenders)} part(s) "
            "cannot be exported:\n" + "\n".join(lines)
        )
        if hint:
            message += "\n" + hint
        super().__init__(message)


class GraphFileError(DalverifyError, ValueError):
    """A graph or model file that is missing, truncated or altered."""


class CertificateError(DalverifyError, ValueError):
    """A certificate that is malformed or fails a check."""


class TamperedError(CertificateError):
    """A hash recorded in a certificate does not match the data it names."""


class NumericalError(DalverifyError, ArithmeticError):
    """Two independent numerical routes disagree beyond their stated bounds."""
