"""DDIM reconstruction ``D(x)`` with fixed noise, as one float64 torch module.

``D`` noises an image to timestep ``T'`` and denoises it back in ``k`` DDIM
steps (Song, Meng and Ermon, "Denoising Diffusion Implicit Models", ICLR
2021), with every noise vector drawn once from a seeded generator and then
kept fixed. With ``tau_0 = 0 < tau_1 < ... < tau_k = T'``:

- ``x_{T'} = sqrt(abar_{T'}) x + sqrt(1 - abar_{T'}) e_0``
- for ``i = k, ..., 1``, ``t = tau_i``, ``s = tau_{i-1}``, ``eps = eps_theta(x_t, t)``:

  - ``sigma = eta sqrt((1 - abar_s) / (1 - abar_t)) sqrt(1 - abar_t / abar_s)``
  - ``x_s = c1 x_t + c2 eps + sigma e_i`` with ``c1 = sqrt(abar_s) / sqrt(abar_t)`` and
    ``c2 = sqrt(1 - abar_s - sigma^2) - sqrt(abar_s) sqrt(1 - abar_t) / sqrt(abar_t)``

- ``D(x) = x_0``.

The step is the usual ``x_s = sqrt(abar_s) f + sqrt(1 - abar_s - sigma^2) eps + sigma e_i``
with ``f = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)``, regrouped so that it
is visibly affine in ``(x_t, eps)``; ``proofs/ddim_affine.md`` derives the
identity. Since ``eps_theta(., t)`` is piecewise linear for a fixed ``t``,
``D`` is piecewise linear in ``x``.

The forward pass uses only module calls, ``torch.cat``, ``+``, ``*`` by
python floats and indexing of buffers and parameters with constant ints,
so ``torch.fx.symbolic_trace`` unrolls it into one affine + ReLU graph.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from dalverify.diffusion.schedule import NoiseSchedule, tau_sequence
from dalverify.errors import InputError

logger = logging.getLogger(__name__)


def ddim_coefficients(
    alpha_bar: np.ndarray, taus: list[int], eta: float
) -> list[tuple[int, float, float, float]]:
    """Return ``(t, c1, c2, sigma)`` for each DDIM step, from ``t = tau_k`` down to ``tau_1``.

    All arithmetic is float64 (python floats) on the float64 schedule.
    ``sigma`` is exactly ``0.0`` whenever ``abar_s = 1`` (the last step).

    Raises
    ------
    InputError
        If ``1 - abar_s - sigma^2`` is negative (only possible for ``eta > 1``).
    """
    steps = []
    for i in range(len(taus) - 1, 0, -1):
        t, s = taus[i], taus[i - 1]
        abar_t, abar_s = float(alpha_bar[t]), float(alpha_bar[s])
        sigma = eta * math.sqrt((1.0 - abar_s) / (1.0 - abar_t)) * math.sqrt(1.0 - abar_t / abar_s)
        direction_var = 1.0 - abar_s - sigma * sigma
        if direction_var < 0.0:
            raise InputError(
                f"eta={eta} makes 1 - abar_s - sigma^2 = {direction_var!r} negative at "
                f"t={t}, s={s}; use 0 <= eta <= 1"
            )
        c1 = math.sqrt(abar_s) / math.sqrt(abar_t)
        c2 = math.sqrt(direction_var) - math.sqrt(abar_s) * math.sqrt(1.0 - abar_t) / math.sqrt(abar_t)
        steps.append((t, c1, c2, sigma))
    return steps


class Reconstruction(nn.Module):
    """Reconstruction ``D(x)`` by DDIM with fixed seeded noise, in float64.

    Parameters
    ----------
    model
        Noise predictor ``model(x, t)`` taking a python-int timestep, for
        example :class:`dalverify.diffusion.unet.UNet`. It is deep-copied,
        converted to float64 and put in eval mode; the caller's module is
        left unchanged.
    t_start
        ``T'``, the timestep the image is noised to (default 460).
    steps
        ``k``, the number of DDIM steps (default 5).
    eta
        Stochasticity of DDIM, ``0 <= eta <= 1`` (default 1: DDPM-like
        variance on every step but the last).
    seed
        Seed of the ``torch.Generator`` that draws ``e_0, ..., e_k``.
    image_shape
        ``(C, H, W)`` of the images; fixes the shape of the noise buffer.
    schedule
        Noise schedule (default: linear, ``T = 1000``, 1e-4 to 2e-2). Its
        ``num_steps`` must equal the model's ``num_steps`` when the model has one.

    Notes
    -----
    The noise is a registered buffer ``noise`` of shape ``(k + 1, C, H, W)``:
    ``noise[0]`` is ``e_0``, ``noise[i]`` is ``e_i`` used in the step that
    leaves ``tau_i``. It is drawn by ``torch.randn`` in float64 from
    ``torch.Generator().manual_seed(seed)`` and is reproducible for a fixed
    torch version.
    """

    def __init__(
        self,
        model: nn.Module,
        t_start: int = 460,
        steps: int = 5,
        eta: float = 1.0,
        seed: int = 0,
        image_shape: tuple[int, int, int] = (1, 64, 64),
        *,
        schedule: NoiseSchedule | None = None,
    ) -> None:
        super().__init__()
        schedule = schedule or NoiseSchedule()
        model_steps = getattr(model, "num_steps", None)
        if model_steps is not None and model_steps != schedule.num_steps:
            raise InputError(
                f"the model has timestep tables for T={model_steps}, the schedule has "
                f"T={schedule.num_steps}; use the schedule the model was trained with"
            )
        eta = float(eta)
        if not (0.0 <= eta <= 1.0):
            raise InputError(f"eta must be in [0, 1], got {eta!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed must be a non-negative int, got {seed!r}")
        image_shape = tuple(int(s) for s in image_shape)
        if hasattr(model, "check_image_shape"):
            image_shape = tuple(model.check_image_shape(image_shape))
        elif len(image_shape) != 3:
            raise InputError(f"image_shape must be (C, H, W), got {image_shape}")

        self.taus = tau_sequence(t_start, steps, schedule.num_steps)
        self.t_start = int(t_start)
        self.steps = int(steps)
        self.eta = eta
        self.seed = int(seed)
        self.image_shape = image_shape
        self.schedule = schedule

        alpha_bar = schedule.alpha_bar
        abar_start = float(alpha_bar[self.t_start])
        self._input_scale = math.sqrt(abar_start)
        self._noise_scale = math.sqrt(1.0 - abar_start)
        # One entry per DDIM step: (timestep t, c1, c2, sigma, index of e_i).
        self._step_plan = tuple(
            (t, c1, c2, sigma, self.steps - j)
            for j, (t, c1, c2, sigma) in enumerate(ddim_coefficients(alpha_bar, self.taus, eta))
        )

        self.model = copy.deepcopy(model).to(torch.float64).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        generator = torch.Generator().manual_seed(self.seed)
        noise = torch.randn((self.steps + 1, *image_shape), generator=generator, dtype=torch.float64)
        self.register_buffer("noise", noise)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``D(x)`` for a float64 batch ``x`` of shape ``(B, C, H, W)``."""
        x_t = self._input_scale * x + self._noise_scale * self.noise[0]
        for t, c1, c2, sigma, noise_index in self._step_plan:
            eps = self.model(x_t, t)
            x_t = c1 * x_t + c2 * eps
            if sigma != 0.0:
                x_t = x_t + sigma * self.noise[noise_index]
        return x_t

    def step_coefficients(self) -> list[dict[str, float]]:
        """Return the per-step constants ``t, s, c1, c2, sigma`` in the order they are applied."""
        return [
            {"t": t, "s": self.taus[index - 1], "c1": c1, "c2": c2, "sigma": sigma}
            for t, c1, c2, sigma, index in self._step_plan
        ]

    def settings(self) -> dict[str, Any]:
        """Return the JSON-serialisable settings that define ``D`` apart from the weights.

        Contains ``t_start``, ``steps``, ``eta``, ``seed``, ``image_shape``,
        ``taus``, the schedule parameters, the torch version that drew the
        noise and the sha256 of the noise buffer (float64, C order).
        """
        noise_bytes = np.ascontiguousarray(self.noise.detach().cpu().numpy()).tobytes()
        return {
            "t_start": self.t_start,
            "steps": self.steps,
            "eta": self.eta,
            "seed": self.seed,
            "image_shape": list(self.image_shape),
            "taus": list(self.taus),
            "schedule": self.schedule.params(),
            "torch_version": torch.__version__,
            "noise_sha256": hashlib.sha256(noise_bytes).hexdigest(),
        }
