"""A U-Net noise predictor built only from piecewise-linear parts.

For a fixed timestep ``t`` the map ``x_t -> eps_theta(x_t, t)`` is piecewise
linear: it is made of 3x3 convolutions, ReLU, max or average pooling,
transposed convolutions or nearest/bilinear upsampling, and channel
concatenation. The timestep enters only through a learned table of
per-channel biases, one row per timestep and one table per resolution block,
added to the output of the block's first convolution. The bias does not
depend on the image, so it is a constant once ``t`` is fixed.

Layout for depth ``d`` and base width ``w`` (``c_l = w * 2**l``)::

    encoder l = 0..d-1:  block(c_{l-1} -> c_l)  -> skip_l -> pool(2)
    bottleneck:          block(c_{d-1} -> c_d)
    decoder l = d-1..0:  up(c_{l+1} -> c') -> cat(up, skip_l) -> block(-> c_l)
    head:                conv3x3(c_0 -> channels)

where ``block(a -> b)`` is ``relu(conv3x3(relu(conv3x3(x) + bias_t)))``.
There are ``d`` skip connections.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from dalverify.errors import InputError
from dalverify.diffusion.schedule import DEFAULT_T

logger = logging.getLogger(__name__)

#: Smallest and largest image side accepted by :class:`UNet`.
MIN_SIZE = 8
MAX_SIZE = 128

_POOLS = ("max", "avg")
_UPSAMPLES = ("transpose", "nearest", "bilinear")


class TimeBlock(nn.Module):
    """Two 3x3 convolutions with ReLU; a per-timestep channel bias after the first.

    ``time_bias`` has shape ``(T + 1, out_channels, 1, 1)`` so that
    ``time_bias[t]`` broadcasts over a ``(B, C, H, W)`` batch without a
    reshape; indexed with a tensor of ``B`` timesteps it gives one bias per
    sample, of shape ``(B, C, 1, 1)``.
    """

    def __init__(self, in_channels: int, out_channels: int, num_steps: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.time_bias = nn.Parameter(torch.zeros(num_steps + 1, out_channels, 1, 1))
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        h = self.relu1(self.conv1(x) + self.time_bias[t])
        return self.relu2(self.conv2(h))


class UNet(nn.Module):
    """Piecewise-linear U-Net noise predictor ``eps_theta(x, t)``.

    Parameters
    ----------
    channels
        Image channels, 1 (greyscale, MRI) or 3 (RGB).
    base_width
        Channels of the first block, doubled at every level (default 8).
    depth
        Number of pooling steps and skip connections, 1 to 4 (default 3).
    pool
        ``"max"`` (``nn.MaxPool2d(2)``, default) or ``"avg"`` (``nn.AvgPool2d(2)``).
    upsample
        ``"transpose"`` (``nn.ConvTranspose2d(kernel_size=2, stride=2)``,
        default), ``"nearest"`` or ``"bilinear"`` (``nn.Upsample``, scale 2,
        ``align_corners=False``).
    num_steps
        ``T`` of the noise schedule: the timestep tables have ``T + 1`` rows.

    Notes
    -----
    ``forward(x, t)`` takes ``t`` as a python int for the exact path: under
    ``torch.fx.symbolic_trace`` it becomes a constant, and each timestep
    table is indexed with that constant. During training ``t`` may be an
    integer tensor of shape ``(B,)``, one timestep per sample.
    """

    def __init__(
        self,
        channels: int = 1,
        base_width: int = 8,
        depth: int = 3,
        *,
        pool: str = "max",
        upsample: str = "transpose",
        num_steps: int = DEFAULT_T,
    ) -> None:
        super().__init__()
        _check_int("channels", channels, allowed=(1, 3))
        _check_int("base_width", base_width, low=1, high=256)
        _check_int("depth", depth, low=1, high=4)
        _check_int("num_steps", num_steps, low=2, high=100_000)
        if pool not in _POOLS:
            raise InputError(f"pool must be one of {_POOLS}, got {pool!r}")
        if upsample not in _UPSAMPLES:
            raise InputError(f"upsample must be one of {_UPSAMPLES}, got {upsample!r}")
        self.channels = int(channels)
        self.base_width = int(base_width)
        self.depth = int(depth)
        self.pool_kind = pool
        self.upsample_kind = upsample
        self.num_steps = int(num_steps)

        widths = [self.base_width * 2**level for level in range(self.depth + 1)]

        self.down_blocks = nn.ModuleList()
        self.pools = nn.ModuleList()
        in_ch = self.channels
        for level in range(self.depth):
            self.down_blocks.append(TimeBlock(in_ch, widths[level], self.num_steps))
            self.pools.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
            in_ch = widths[level]
        self.middle = TimeBlock(in_ch, widths[self.depth], self.num_steps)

        # Decoder modules are stored from the deepest level to the shallowest,
        # the order in which forward() uses them.
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for level in reversed(range(self.depth)):
            below = widths[level + 1]
            if upsample == "transpose":
                self.ups.append(nn.ConvTranspose2d(below, widths[level], kernel_size=2, stride=2))
                up_ch = widths[level]
            else:
                align = None if upsample == "nearest" else False
                self.ups.append(nn.Upsample(scale_factor=2, mode=upsample, align_corners=align))
                up_ch = below
            self.up_blocks.append(TimeBlock(up_ch + widths[level], widths[level], self.num_steps))
        self.head = nn.Conv2d(widths[0], self.channels, kernel_size=3, padding=1)

    def config(self) -> dict[str, Any]:
        """Return the constructor arguments; ``UNet(**model.config())`` rebuilds the architecture."""
        return {
            "channels": self.channels,
            "base_width": self.base_width,
            "depth": self.depth,
            "pool": self.pool_kind,
            "upsample": self.upsample_kind,
            "num_steps": self.num_steps,
        }

    def check_image_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """Validate an image shape ``(C, H, W)`` (or ``(B, C, H, W)``) for this network.

        Returns
        -------
        tuple of int
            ``(C, H, W)``.

        Raises
        ------
        InputError
            If ``C`` differs from ``channels`` or a side is outside
            ``8..128`` or not divisible by ``2**depth``.
        """
        shape = tuple(int(s) for s in shape)
        if len(shape) == 4:
            shape = shape[1:]
        if len(shape) != 3:
            raise InputError(f"image shape must be (C, H, W) or (B, C, H, W), got {shape}")
        c, h, w = shape
        if c != self.channels:
            raise InputError(
                f"the network expects {self.channels} channel(s), the image has {c}; "
                f"build the UNet with channels={c} or convert the images"
            )
        factor = 2**self.depth
        for name, side in (("height", h), ("width", w)):
            if not MIN_SIZE <= side <= MAX_SIZE:
                raise InputError(
                    f"image {name} {side} is outside {MIN_SIZE}..{MAX_SIZE}; resize the images"
                )
            if side % factor:
                raise InputError(
                    f"image {name} {side} is not divisible by 2**depth = {factor}; "
                    f"resize to a multiple of {factor} or lower depth"
                )
        return c, h, w

    def forward(self, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """Predict the noise in ``x`` at timestep ``t``.

        Parameters
        ----------
        x
            Batch ``(B, C, H, W)``.
        t
            A python int in ``0..T`` (exact path, traceable), or an integer
            tensor of shape ``(B,)`` (training).
        """
        if isinstance(t, int) and not 0 <= t <= self.num_steps:
            raise InputError(f"timestep t must be in 0..{self.num_steps}, got {t}")

        skips = []
        h = x
        for block, pool in zip(self.down_blocks, self.pools):
            h = block(h, t)
            skips.append(h)
            h = pool(h)
        h = self.middle(h, t)
        for up, block, skip in zip(self.ups, self.up_blocks, reversed(skips)):
            h = block(torch.cat([up(h), skip], dim=1), t)
        return self.head(h)


def build_unet(config: dict[str, Any]) -> UNet:
    """Build a :class:`UNet` from a configuration dict (as returned by ``UNet.config``).

    Raises
    ------
    InputError
        If the dict has unknown keys or invalid values.
    """
    known = {"channels", "base_width", "depth", "pool", "upsample", "num_steps"}
    unknown = sorted(set(config) - known)
    if unknown:
        raise InputError(f"unknown UNet configuration keys {unknown}; known keys: {sorted(known)}")
    return UNet(**config)


def _check_int(
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    allowed: tuple[int, ...] | None = None,
) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{name} must be an int, got {value!r}")
    if allowed is not None and value not in allowed:
        raise InputError(f"{name} must be one of {allowed}, got {value}")
    if low is not None and value < low or high is not None and value > high:
        raise InputError(f"{name} must be in {low}..{high}, got {value}")
