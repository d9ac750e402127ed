"""Noise schedule of the DDPM and the DDIM timestep sequence.

The forward (noising) process adds Gaussian noise in ``T`` steps with
variances ``beta_1, ..., beta_T``; after ``t`` steps an image ``x`` becomes
``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) e`` with ``e ~ N(0, I)`` and
``abar_t = prod_{s=1..t} (1 - beta_s)``. By convention ``abar_0 = 1``
(no noise). The default schedule is the linear one of Ho, Jain and Abbeel,
"Denoising Diffusion Probabilistic Models" (NeurIPS 2020): ``T = 1000`` and
``beta_t`` evenly spaced from ``1e-4`` (``t = 1``) to ``2e-2`` (``t = T``).

All values are float64 numpy arrays indexed by the timestep itself, so
``alpha_bar[t]`` is ``abar_t`` and ``betas[0]`` is an unused ``0.0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dalverify.errors import InputError

#: Number of diffusion steps of the default schedule.
DEFAULT_T = 1000
#: ``beta_1`` of the default linear schedule.
DEFAULT_BETA_START = 1e-4
#: ``beta_T`` of the default linear schedule.
DEFAULT_BETA_END = 2e-2


@dataclass(frozen=True)
class NoiseSchedule:
    """Linear variance schedule ``beta_t``, ``t = 1..num_steps``.

    Parameters
    ----------
    num_steps
        ``T``, the number of diffusion steps (at least 2).
    beta_start, beta_end
        ``beta_1`` and ``beta_T``, with ``0 < beta_start <= beta_end < 1``.
    """

    num_steps: int = DEFAULT_T
    beta_start: float = DEFAULT_BETA_START
    beta_end: float = DEFAULT_BETA_END

    def __post_init__(self) -> None:
        if isinstance(self.num_steps, bool) or not isinstance(self.num_steps, (int, np.integer)):
            raise InputError(f"num_steps must be an int, got {self.num_steps!r}")
        if self.num_steps < 2:
            raise InputError(f"num_steps must be at least 2, got {self.num_steps}")
        start, end = float(self.beta_start), float(self.beta_end)
        if not (0.0 < start <= end < 1.0):
            raise InputError(
                f"need 0 < beta_start <= beta_end < 1, got beta_start={start!r}, "
                f"beta_end={end!r}"
            )
        object.__setattr__(self, "num_steps", int(self.num_steps))
        object.__setattr__(self, "beta_start", start)
        object.__setattr__(self, "beta_end", end)

    @property
    def name(self) -> str:
        """Name of the schedule family (``"linear"``)."""
        return "linear"

    @property
    def betas(self) -> np.ndarray:
        """Float64 array of length ``T + 1``: ``betas[t] = beta_t``, ``betas[0] = 0``.

        ``beta_t = beta_start + (t - 1) * (beta_end - beta_start) / (T - 1)``,
        the values of ``torch.linspace(beta_start, beta_end, T)`` up to the
        last bit (each is within one float64 rounding of the exact value).
        """
        out = np.zeros(self.num_steps + 1, dtype=np.float64)
        out[1:] = np.linspace(self.beta_start, self.beta_end, self.num_steps, dtype=np.float64)
        return out

    @property
    def alpha_bar(self) -> np.ndarray:
        """Float64 array of length ``T + 1``: ``abar_t = prod_{s<=t} (1 - beta_s)``, ``abar_0 = 1``.

        The cumulative product accumulates at most ``T`` roundings, so the
        relative error is below ``2 T 2^-53`` (about ``2.2e-13`` for ``T = 1000``).
        """
        return np.cumprod(1.0 - self.betas)

    def params(self) -> dict[str, Any]:
        """Return the JSON-serialisable description used in settings digests."""
        return {
            "name": self.name,
            "num_steps": self.num_steps,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
        }


def linear_schedule(
    num_steps: int = DEFAULT_T,
    beta_start: float = DEFAULT_BETA_START,
    beta_end: float = DEFAULT_BETA_END,
) -> NoiseSchedule:
    """Return the linear schedule (defaults: ``T = 1000``, ``beta`` from 1e-4 to 2e-2)."""
    return NoiseSchedule(num_steps, beta_start, beta_end)


def alpha_bar(schedule: NoiseSchedule | None = None) -> np.ndarray:
    """Return ``abar_t`` for ``t = 0..T`` as float64 (default schedule if none is given)."""
    return (schedule or NoiseSchedule()).alpha_bar


def tau_sequence(t_start: int, steps: int, num_steps: int = DEFAULT_T) -> list[int]:
    """Return the DDIM timesteps ``tau_0 = 0 < tau_1 < ... < tau_k = t_start``.

    ``tau_i = floor(i * t_start / steps)`` computed in integer arithmetic, so
    there is no rounding convention to choose (``round`` would be ambiguous:
    at ``t_start = 300, steps = 8``, ``i = 1`` gives ``37.5``).

    Parameters
    ----------
    t_start
        ``T'``, the timestep the reconstruction starts from, ``1 <= T' <= T``.
    steps
        ``k``, the number of DDIM steps, ``1 <= k <= T'`` (so that the
        sequence is strictly increasing).
    num_steps
        ``T`` of the schedule, the upper bound for ``t_start``.

    Returns
    -------
    list of int
        ``k + 1`` timesteps, in increasing order.

    Raises
    ------
    InputError
        If an argument is not an int or is out of range.
    """
    for name, value in (("t_start", t_start), ("steps", steps), ("num_steps", num_steps)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise InputError(f"{name} must be an int, got {value!r}")
    t_start, steps, num_steps = int(t_start), int(steps), int(num_steps)
    if not 1 <= t_start <= num_steps:
        raise InputError(f"t_start must be in 1..{num_steps}, got {t_start}")
    if not 1 <= steps <= t_start:
        raise InputError(
            f"steps must be in 1..t_start={t_start} so that the timesteps are distinct, "
            f"got {steps}"
        )
    return [(i * t_start) // steps for i in range(steps + 1)]
