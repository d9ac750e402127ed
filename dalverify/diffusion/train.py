"""Training of the noise predictor with the DDPM noise-prediction loss.

Each step draws a batch of images ``x``, timesteps ``t`` uniform on
``1..T`` and noise ``e ~ N(0, I)``, forms
``x_t = sqrt(abar_t) x + sqrt(1 - abar_t) e`` and minimises the mean squared
error between ``eps_theta(x_t, t)`` and ``e`` (Ho, Jain and Abbeel, NeurIPS
2020, their "simple" loss) with AdamW. All randomness comes from one seeded
``torch.Generator``, whose state is saved in checkpoints, so a run that is
interrupted and resumed gives the same weights as an uninterrupted run on
the same machine and torch version.

Training runs in float32; :func:`dalverify.diffusion.checkpoint.load_model`
returns float64 weights for the exact path.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from dalverify.diffusion.checkpoint import read_container, save_model, write_container
from dalverify.diffusion.data import load_images
from dalverify.diffusion.schedule import NoiseSchedule
from dalverify.diffusion.unet import UNet
from dalverify.errors import InputError

logger = logging.getLogger(__name__)

TRAINING_STATE_FORMAT = "dalverify-training-state"
#: Linear learning-rate warm-up length, in optimizer steps.
WARMUP_STEPS = 100
#: Gradient-norm clipping threshold.
MAX_GRAD_NORM = 1.0


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    Attributes
    ----------
    model
        The trained network (float32, eval mode): the EMA weights when EMA
        is on, the raw weights otherwise.
    step
        Number of optimizer steps done in total (including resumed ones).
    losses
        Loss of every step, in order.
    wall_seconds
        Wall time of this call (not of earlier, resumed runs).
    stopped_early
        True when ``max_seconds`` ended the run before ``steps``.
    """

    model: UNet
    step: int
    losses: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    stopped_early: bool = False

    @property
    def final_loss(self) -> float:
        """Mean loss of the last (up to) 200 steps; NaN when no step was done."""
        tail = self.losses[-200:]
        return float(np.mean(tail)) if tail else float("nan")


def train(
    model: UNet,
    images: np.ndarray,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    ema: float | None = 0.999,
    weight_decay: float = 1e-4,
    hflip: bool = False,
    schedule: NoiseSchedule | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    checkpoint_every: int = 500,
    resume: bool = True,
    max_seconds: float | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` in place to predict the noise added to ``images``.

    Parameters
    ----------
    model
        Network to train; its current weights are the starting point.
    images
        Float array ``(N, C, H, W)`` of normal images on a unit scale (for
        example standardized per image); the schedule assumes data of order 1.
    steps
        Total number of optimizer steps (counting resumed ones).
    batch_size, lr, weight_decay
        Batch size (images drawn with replacement), AdamW learning rate
        (after a linear warm-up of ``WARMUP_STEPS`` steps) and weight decay.
    seed
        Seed of the generator for batches, timesteps, noise and flips.
    ema
        Decay of the exponential moving average of the weights, or None for
        none. The effective decay at step ``n`` is ``min(ema, (1 + n) / (10 + n))``.
    hflip
        Flip each drawn image left-right with probability 1/2.
    schedule
        Noise schedule (default linear, ``T = model.num_steps``).
    checkpoint_path
        File for resumable training state, written every ``checkpoint_every``
        steps and at the end (same container as model files, no pickle).
    resume
        If the checkpoint file exists, continue from it. Its settings must
        match this call's (else InputError).
    max_seconds
        Stop (after saving the checkpoint) once this much wall time has passed.
    progress
        Show a tqdm progress bar with the running loss.

    Returns
    -------
    TrainResult
    """
    schedule = schedule or NoiseSchedule(num_steps=model.num_steps)
    if schedule.num_steps != model.num_steps:
        raise InputError(
            f"schedule has T={schedule.num_steps} but the model has tables for T={model.num_steps}"
        )
    images = np.asarray(images)
    if images.ndim != 4:
        raise InputError(f"images must have shape (N, C, H, W), got {images.shape}")
    model.check_image_shape(images.shape)
    if not np.all(np.isfinite(images)):
        raise InputError("training images contain NaN or infinite values")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("checkpoint_every", checkpoint_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive int, got {value!r}")
    if ema is not None and not 0.0 < ema < 1.0:
        raise InputError(f"ema must be in (0, 1) or None, got {ema!r}")

    data = torch.as_tensor(images, dtype=torch.float32)
    abar = torch.as_tensor(schedule.alpha_bar, dtype=torch.float32)
    settings = {
        "batch_size": batch_size,
        "lr": float(lr),
        "seed": int(seed),
        "ema": ema,
        "weight_decay": float(weight_decay),
        "hflip": bool(hflip),
        "schedule": schedule.params(),
        "num_images": int(data.shape[0]),
    }

    model.float().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    ema_model = copy.deepcopy(model).eval() if ema is not None else None
    generator = torch.Generator().manual_seed(int(seed))
    losses: list[float] = []
    start_step = 0

    if checkpoint_path is not None and resume and Path(checkpoint_path).exists():
        start_step, losses = _load_state(
            checkpoint_path, model, ema_model, optimizer, generator, settings
        )
        logger.info("resumed training from %s at step %d", checkpoint_path, start_step)

    started = time.perf_counter()
    stopped_early = False
    step = start_step
    bar = tqdm(total=steps, initial=start_step, disable=not progress, desc="train", unit="step")
    try:
        while step < steps:
            # 1. Draw the batch, timesteps and noise from the seeded generator.
            index = torch.randint(data.shape[0], (batch_size,), generator=generator)
            t = torch.randint(1, schedule.num_steps + 1, (batch_size,), generator=generator)
            noise = torch.randn((batch_size, *data.shape[1:]), generator=generator)
            flip = torch.rand(batch_size, generator=generator) < 0.5
            x0 = data[index]
            if hflip:
                x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)

            # 2. One AdamW step on the noise-prediction loss.
            scale = abar[t][:, None, None, None]
            x_t = scale.sqrt() * x0 + (1.0 - scale).sqrt() * noise
            loss = torch.mean((model(x_t, t) - noise) ** 2)
            for group in optimizer.param_groups:
                group["lr"] = lr * min(1.0, (step + 1) / WARMUP_STEPS)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
            optimizer.step()
            step += 1
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"training loss became {value} at step {step}; lower lr")
            losses.append(value)

            # 3. Exponential moving average of the weights.
            if ema_model is not None:
                decay = min(ema, (1.0 + step) / (10.0 + step))
                with torch.no_grad():
                    for avg, cur in zip(ema_model.parameters(), model.parameters()):
                        avg.mul_(decay).add_(cur, alpha=1.0 - decay)

            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-100:]):.4f}")
            if checkpoint_path is not None and step % checkpoint_every == 0:
                _save_state(checkpoint_path, model, ema_model, optimizer, generator, settings, step, losses)
            if max_seconds is not None and time.perf_counter() - started > max_seconds:
                stopped_early = step < steps
                break
    finally:
        bar.close()

    if checkpoint_path is not None and step > start_step:
        _save_state(checkpoint_path, model, ema_model, optimizer, generator, settings, step, losses)
    wall = time.perf_counter() - started
    final = ema_model if ema_model is not None else model
    final.eval()
    model.eval()
    logger.info("trained %d steps in %.1f s; mean loss of the last 200 steps %.4f",
                step - start_step, wall, float(np.mean(losses[-200:])) if losses else float("nan"))
    return TrainResult(final, step, losses, wall, stopped_early)


def train_from_paths(
    data: Any,
    size: int,
    out: str | os.PathLike,
    *,
    base_width: int = 8,
    depth: int = 3,
    pool: str = "max",
    upsample: str = "transpose",
    steps: int = 5000,
    batch_size: int = 32,
    lr: float = 2e-3,
    seed: int = 0,
    ema: float | None = 0.999,
    hflip: bool = False,
    channels: int | None = None,
    key: str | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    max_seconds: float | None = None,
    progress: bool = True,
) -> TrainResult:
    """Load images, build a :class:`UNet`, train it and save it as a ``.dalv`` file.

    ``data`` is anything :func:`dalverify.diffusion.data.load_images` accepts
    (array, ``.npy``, ``.npz``, PNG folder, NIfTI volume); images are
    resized to ``size x size`` and used as they are otherwise, so they
    should already be on a unit scale. The network weights are initialised
    from ``torch.manual_seed(seed)``. The saved file records the training
    settings, the number of images, the steps done and the final loss.
    """
    images = load_images(data, size=size, channels=channels, key=key)
    torch.manual_seed(seed)
    model = UNet(images.shape[1], base_width, depth, pool=pool, upsample=upsample)
    model.check_image_shape(images.shape)
    result = train(
        model, images, steps=steps, batch_size=batch_size, lr=lr, seed=seed, ema=ema,
        hflip=hflip, checkpoint_path=checkpoint_path, max_seconds=max_seconds, progress=progress,
    )
    extra = {
        "training": {
            "steps": result.step,
            "batch_size": batch_size,
            "lr": lr,
            "seed": seed,
            "ema": ema,
            "hflip": hflip,
            "num_images": int(images.shape[0]),
            "image_size": int(size),
            "final_loss": result.final_loss,
            "stopped_early": result.stopped_early,
        },
        "data": str(data) if not isinstance(data, np.ndarray) else "array",
    }
    save_model(out, result.model, extra=extra)
    return result


def _save_state(path, model, ema_model, optimizer, generator, settings, step, losses) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema_model is not None:
        tensors.update({f"ema.{k}": v for k, v in ema_model.state_dict().items()})
    opt_state = optimizer.state_dict()
    for index, state in opt_state["state"].items():
        for key, value in state.items():
            tensors[f"optimizer.{index}.{key}"] = torch.as_tensor(value)
    tensors["generator_state"] = generator.get_state()
    tensors["losses"] = torch.tensor(losses, dtype=torch.float64)
    groups = [{k: v for k, v in g.items()} for g in opt_state["param_groups"]]
    manifest = {
        "format": TRAINING_STATE_FORMAT,
        "version": 1,
        "config": model.config(),
        "settings": settings,
        "step": step,
        "param_groups": json.loads(json.dumps(groups)),
    }
    write_container(path, manifest, tensors)


def _load_state(path, model, ema_model, optimizer, generator, settings) -> tuple[int, list[float]]:
    manifest, tensors = read_container(path, TRAINING_STATE_FORMAT)
    where = repr(str(path))
    if manifest.get("config") != model.config():
        raise InputError(
            f"checkpoint {where} is for architecture {manifest.get('config')}, the model is "
            f"{model.config()}; delete the checkpoint or pass resume=False"
        )
    if manifest.get("settings") != json.loads(json.dumps(settings)):
        raise InputError(
            f"checkpoint {where} was written with settings {manifest.get('settings')}, this run "
            f"uses {settings}; use the same settings or pass resume=False"
        )
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    if ema_model is not None:
        ema_model.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": manifest["param_groups"]})
    generator.set_state(tensors["generator_state"])
    return int(manifest["step"]), [float(v) for v in tensors["losses"].tolist()]
