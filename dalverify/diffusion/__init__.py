"""Diffusion model (torch): noise schedule, piecewise-linear U-Net, training, DDIM reconstruction.

- :mod:`~dalverify.diffusion.schedule`: linear ``beta`` schedule, ``abar_t``, DDIM timesteps.
- :mod:`~dalverify.diffusion.unet`: the U-Net noise predictor ``eps_theta(x, t)``.
- :mod:`~dalverify.diffusion.reconstruction`: ``D(x)`` with fixed seeded noise, float64.
- :mod:`~dalverify.diffusion.train`: noise-prediction training with resumable checkpoints.
- :mod:`~dalverify.diffusion.checkpoint`: ``.dalv`` model files (zip of JSON + safetensors).
- :mod:`~dalverify.diffusion.data`: loading stacks of normal images.
"""

from dalverify.diffusion.checkpoint import load_model, save_model
from dalverify.diffusion.data import load_images, resize_image, robust_standardize
from dalverify.diffusion.reconstruction import Reconstruction, ddim_coefficients
from dalverify.diffusion.schedule import NoiseSchedule, alpha_bar, linear_schedule, tau_sequence
from dalverify.diffusion.train import TrainResult, train, train_from_paths
from dalverify.diffusion.unet import UNet, build_unet

__all__ = [
    "NoiseSchedule",
    "Reconstruction",
    "TrainResult",
    "UNet",
    "alpha_bar",
    "build_unet",
    "ddim_coefficients",
    "linear_schedule",
    "load_images",
    "load_model",
    "resize_image",
    "robust_standardize",
    "save_model",
    "tau_sequence",
    "train",
    "train_from_paths",
]
