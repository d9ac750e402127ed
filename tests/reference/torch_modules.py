"""Small torch modules shared by the export and walk tests."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class EveryKind(nn.Module):
    """One module using every exportable kind, with a constant timestep embedding."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.grouped = nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2)
        self.norm = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.avg = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
        self.up = nn.ConvTranspose2d(4, 4, 2, stride=2)
        self.nearest = nn.Upsample(scale_factor=2, mode="nearest")
        self.bilinear = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.leaky = nn.LeakyReLU(0.1)
        self.linear = nn.Linear(6 * 8 * 8, 5)
        self.embedding = nn.Parameter(torch.randn(20, 4))
        self.register_buffer("noise", torch.randn(1, 2, 8, 8))
        self.timestep = 7
        with torch.no_grad():
            self.norm.running_mean.uniform_(-1, 1)
            self.norm.running_var.uniform_(0.5, 2)

    def forward(self, x):
        h = self.norm(self.conv(x + 0.5 * self.noise)) + self.embedding[self.timestep].view(1, -1, 1, 1)
        h = F.relu(self.grouped(torch.relu(h)))
        down = self.pool(h)
        mixed = self.up(down) + self.nearest(F.avg_pool2d(h, 2)) - self.bilinear(self.avg(down))
        skip = torch.cat([mixed, x], dim=1)
        out = self.leaky(torch.abs(skip) - 2.0 * skip + F.leaky_relu(skip, 0.3)) / 3.0
        return self.linear(torch.flatten(out, 1))


class SmallUNet(nn.Module):
    """A ReLU U-Net with three concatenation skips."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        torch.manual_seed(2)
        w = width
        self.e1 = nn.Conv2d(1, w, 3, padding=1)
        self.e2 = nn.Conv2d(w, 2 * w, 3, padding=1)
        self.e3 = nn.Conv2d(2 * w, 2 * w, 3, padding=1)
        self.mid = nn.Conv2d(2 * w, 2 * w, 3, padding=1)
        self.u3 = nn.ConvTranspose2d(2 * w, 2 * w, 2, stride=2)
        self.d3 = nn.Conv2d(4 * w, 2 * w, 3, padding=1)
        self.u2 = nn.ConvTranspose2d(2 * w, w, 2, stride=2)
        self.d2 = nn.Conv2d(3 * w, w, 3, padding=1)
        self.u1 = nn.Upsample(scale_factor=2, mode="nearest")
        self.d1 = nn.Conv2d(2 * w, 1, 3, padding=1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        s1 = F.relu(self.e1(x))
        s2 = F.relu(self.e2(self.pool(s1)))
        s3 = F.relu(self.e3(self.pool(s2)))
        m = F.relu(self.mid(self.pool(s3)))
        h = F.relu(self.d3(torch.cat([self.u3(m), s3], dim=1)))
        h = F.relu(self.d2(torch.cat([self.u2(h), s2], dim=1)))
        return self.d1(torch.cat([self.u1(h), s1], dim=1))
