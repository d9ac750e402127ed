"""Standardized non-Gaussian noise families at a given Wasserstein distance from N(0, 1).

Four one-parameter families, each shifted and scaled to mean 0 and
standard deviation 1:

=================  ==========================  ======================================
family             parameter                   Gaussian limit
=================  ==========================  ======================================
``skewnorm``       shape ``a > 0``             ``a = 0``
``emg``            ``K > 0`` (exponnorm)       ``K -> 0``
``gennorm``        shape ``beta`` in (1, 2)    ``beta = 2`` (heavier tails below 2)
``t``              degrees of freedom ``nu``   ``nu -> infinity``
=================  ==========================  ======================================

The 1-Wasserstein distance to the standard normal is
``W1 = integral |F(x) - Phi(x)| dx`` (computed by adaptive quadrature), and
:func:`parameter_for_distance` finds the family parameter that gives a
requested ``W1`` by Brent's method on a bracket over which ``W1`` grows
from near 0 to above the largest supported distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize, special, stats

from dalverify.errors import InputError

FAMILIES = ("skewnorm", "emg", "gennorm", "t")

#: Bracket of the family parameter searched by :func:`parameter_for_distance`,
#: ordered from the Gaussian end (W1 near 0) to the far end.
_BRACKETS: dict[str, tuple[float, float]] = {
    "skewnorm": (1e-6, 50.0),
    "emg": (1e-6, 20.0),
    "gennorm": (2.0 - 1e-9, 1.0),
    "t": (1e7, 2.5),
}

#: Absolute tolerance of Brent's method on the parameter. The tests check that
#: W1 at the parameter found is within 1e-4 of the target.
_PARAMETER_XTOL = 1e-12
#: Half-width of the central grid of W1 (in sd) and its number of points;
#: end of the logarithmic tail grids and their number of points.
_W1_CORE = 12.0
_W1_GRID = 40_001
_W1_FAR = 1e8
_W1_TAIL_GRID = 5_001


def _base(family: str, parameter: float) -> Any:
    if family == "skewnorm":
        return stats.skewnorm(parameter)
    if family == "emg":
        return stats.exponnorm(parameter)
    if family == "gennorm":
        return stats.gennorm(parameter)
    if family == "t":
        if not parameter > 2:
            raise InputError(f"t noise needs nu > 2 for a finite variance; got nu={parameter!r}")
        return stats.t(parameter)
    raise InputError(f"noise family {family!r} is unknown; use one of {FAMILIES}")


def _moments(family: str, parameter: float) -> tuple[float, float]:
    """Closed-form mean and standard deviation of the unstandardized family."""
    if family == "skewnorm":
        delta = parameter / math.sqrt(1.0 + parameter * parameter)
        mean = delta * math.sqrt(2.0 / math.pi)
        return mean, math.sqrt(1.0 - mean * mean)
    if family == "emg":
        return parameter, math.sqrt(1.0 + parameter * parameter)
    if family == "gennorm":
        log_var = math.lgamma(3.0 / parameter) - math.lgamma(1.0 / parameter)
        return 0.0, math.exp(0.5 * log_var)
    if family == "t":
        return 0.0, math.sqrt(parameter / (parameter - 2.0))
    raise InputError(f"noise family {family!r} is unknown; use one of {FAMILIES}")


@dataclass(frozen=True)
class StandardizedNoise:
    """One family member, shifted and scaled to mean 0 and variance 1.

    Attributes
    ----------
    family : str
        One of :data:`FAMILIES`.
    parameter : float
        The family parameter (see the module table).
    """

    family: str
    parameter: float

    @property
    def distribution(self) -> Any:
        """The standardized distribution as a frozen ``scipy.stats`` object."""
        mean, sd = _moments(self.family, float(self.parameter))
        base = _base(self.family, float(self.parameter))
        return base.dist(*base.args, loc=-mean / sd, scale=1.0 / sd)

    def cdf(self, x: Any) -> np.ndarray:
        """``P(Y <= x)``; skew-normal through Owen's T: ``F(x) = Phi(x) - 2 T(x, a)``."""
        if self.family == "skewnorm":
            mean, sd = _moments(self.family, float(self.parameter))
            z = mean + sd * np.asarray(x, dtype=np.float64)
            return stats.norm.cdf(z) - 2.0 * special.owens_t(z, float(self.parameter))
        return self.distribution.cdf(x)

    def sf(self, x: Any) -> np.ndarray:
        """``P(Y > x)``, without cancellation in the right tail."""
        if self.family == "skewnorm":
            mean, sd = _moments(self.family, float(self.parameter))
            z = mean + sd * np.asarray(x, dtype=np.float64)
            return stats.norm.sf(z) + 2.0 * special.owens_t(z, float(self.parameter))
        return self.distribution.sf(x)

    def pdf(self, x: Any) -> np.ndarray:
        return self.distribution.pdf(x)

    def ppf(self, u: Any) -> np.ndarray:
        return self.distribution.ppf(u)

    def sample(self, rng: np.random.Generator, size: Any) -> np.ndarray:
        """Independent draws (float64) from the standardized distribution."""
        return np.asarray(self.distribution.rvs(size=size, random_state=rng), dtype=np.float64)

    def wasserstein(self) -> float:
        """``W1`` to ``N(0, 1)``."""
        return wasserstein_to_normal(self.family, self.parameter)


def wasserstein_to_normal(family: str, parameter: float) -> float:
    """1-Wasserstein distance ``integral |F(x) - Phi(x)| dx`` of the standardized member.

    On ``[-CORE, CORE]`` the integral is a trapezoid sum on a grid of step
    ``2 CORE / (_W1_GRID - 1)`` (error of order ``h^2`` times the number of
    crossings of ``F`` and ``Phi``, below 1e-6). Each tail from ``CORE`` to
    ``_W1_FAR`` is a trapezoid sum in ``u = log x`` (the integrand
    ``x |F - Phi|`` is smooth there: ``F - Phi`` keeps one sign). Beyond
    ``_W1_FAR`` the normal part is 0 in float64 and the family's part,
    ``E[(|X| - FAR)+]``, decays like ``FAR^(1 - nu)`` for Student-t (an
    estimate: about 1e-12 at the bracket end nu = 2.5), far below the
    distances searched; the other families have lighter tails.
    """
    dist = StandardizedNoise(family, float(parameter))
    grid = np.linspace(-_W1_CORE, _W1_CORE, _W1_GRID)
    gap = np.abs(dist.cdf(grid) - stats.norm.cdf(grid))
    total = float(np.sum((gap[1:] + gap[:-1]) * 0.5 * np.diff(grid)))
    u = np.linspace(math.log(_W1_CORE), math.log(_W1_FAR), _W1_TAIL_GRID)
    x = np.exp(u)
    for tail in (np.abs(dist.sf(x) - stats.norm.sf(x)), np.abs(dist.cdf(-x) - stats.norm.cdf(-x))):
        values = tail * x
        total += float(np.sum((values[1:] + values[:-1]) * 0.5 * np.diff(u)))
    return total


def parameter_for_distance(family: str, distance: float) -> float:
    """Find the family parameter whose standardized member is at ``W1 = distance`` from N(0, 1).

    Raises
    ------
    InputError
        If the family is unknown or ``distance`` lies outside what the
        family's bracket reaches.
    """
    if family not in FAMILIES:
        raise InputError(f"noise family {family!r} is unknown; use one of {FAMILIES}")
    distance = float(distance)
    if not (math.isfinite(distance) and distance > 0):
        raise InputError(f"distance={distance!r} must be a positive number")
    near, far = _BRACKETS[family]
    low, high = wasserstein_to_normal(family, near), wasserstein_to_normal(family, far)
    if not low < distance < high:
        raise InputError(
            f"distance={distance!r} is outside the range ({low:.3g}, {high:.3g}) that the {family} family "
            "reaches on its search bracket; choose a distance inside it"
        )
    return float(optimize.brentq(lambda p: wasserstein_to_normal(family, p) - distance, near, far,
                                 xtol=_PARAMETER_XTOL, rtol=4 * np.finfo(float).eps))


def noise_for_distance(family: str, distance: float) -> StandardizedNoise:
    """Return the standardized member at ``W1 = distance`` (``distance = 0``: the normal itself)."""
    if float(distance) == 0.0:
        return StandardizedNoise("normal", 0.0)
    return StandardizedNoise(family, parameter_for_distance(family, distance))


def standard_draws(noise: StandardizedNoise | None, rng: np.random.Generator, size: Any) -> np.ndarray:
    """Draw standardized noise: N(0, 1) when ``noise`` is None or the normal, else from ``noise``."""
    if noise is None or noise.family == "normal":
        return rng.standard_normal(size)
    return noise.sample(rng, size)
