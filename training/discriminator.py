"""StyleGAN2 residual discriminator (equalised learning rate, FIR-blurred downsampling, minibatch stddev).

Only used to train the built-in small generator (``training/train_gan.py``); the app never loads it.
Channel widths follow the generator's rule (:func:`inversion.stylegan2.channels_at`), so a
``Discriminator(128, channel_multiplier=0.5, max_channels=256)`` mirrors the generator of the same arguments.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from inversion.stylegan2 import EqualLinear, bias_leaky_relu, blur, channels_at, fir_kernel


class EqualConv2d(nn.Module):
    """Conv2d whose weight is scaled by ``1/sqrt(fan_in)`` at run time (equalised learning rate)."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, *, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size * kernel_size)
        self.stride, self.padding = stride, padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, (self.weight * self.scale).to(x.dtype), stride=self.stride, padding=self.padding)


class ConvLayer(nn.Module):
    """[FIR blur] -> equalised conv (stride 2 when downsampling) -> [bias + leaky ReLU * sqrt 2 | bias]."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, *, downsample: bool = False,
                 activate: bool = True, bias: bool = True, blur_taps: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.downsample = downsample
        if downsample:
            total = (len(blur_taps) - 2) + (kernel_size - 1)  # FIR support left after the stride-2 conv
            if total % 2:
                raise ValueError(f"blur taps {tuple(blur_taps)} and kernel {kernel_size} need asymmetric padding")
            self.register_buffer("kernel", fir_kernel(blur_taps), persistent=False)
            self.blur_pad = total // 2
        self.conv = EqualConv2d(in_ch, out_ch, kernel_size, stride=2 if downsample else 1,
                                padding=0 if downsample else kernel_size // 2)
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample:
            x = blur(x, self.kernel, self.blur_pad)
        x = self.conv(x)
        if self.activate:
            return bias_leaky_relu(x, self.bias.to(x.dtype)) if self.bias is not None else F.leaky_relu(x, 0.2) * math.sqrt(2)
        return x + self.bias.to(x.dtype).view(1, -1, 1, 1) if self.bias is not None else x


class ResBlock(nn.Module):
    """Two 3x3 convs (the second downsamples) plus a 1x1 downsampling skip, summed and scaled by 1/sqrt 2."""

    def __init__(self, in_ch: int, out_ch: int, *, blur_taps: Sequence[float] = (1, 3, 3, 1)) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_ch, in_ch, 3, blur_taps=blur_taps)
        self.conv2 = ConvLayer(in_ch, out_ch, 3, downsample=True, blur_taps=blur_taps)
        self.skip = ConvLayer(in_ch, out_ch, 1, downsample=True, activate=False, bias=False, blur_taps=blur_taps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) * (1 / math.sqrt(2))


def minibatch_stddev(x: torch.Tensor, *, group_size: int = 4, n_features: int = 1) -> torch.Tensor:
    """Append ``n_features`` channels holding the feature std over groups of samples (N, C, H, W) ->
    (N, C + n_features, H, W). Groups are strided (sample i is in group i % (N / g)); the group size is the
    largest g <= ``group_size`` dividing N. Computed in float32."""
    n, c, h, w = x.shape
    g = max(d for d in range(1, min(group_size, n) + 1) if n % d == 0)
    y = x.float().view(g, -1, n_features, c // n_features, h, w)
    y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()  # (N/g, F, C/F, H, W)
    y = y.mean(dim=(2, 3, 4)).view(-1, n_features, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y.to(x.dtype)], dim=1)


class Discriminator(nn.Module):
    """StyleGAN2 residual D: fromRGB 1x1, ResBlocks down to 4x4, minibatch stddev, 3x3 conv, two linears.
    images (N, 3, size, size) in [-1, 1] -> logits (N, 1)."""

    def __init__(self, size: int, *, channel_multiplier: float = 2, max_channels: int = 512,
                 blur_taps: Sequence[float] = (1, 3, 3, 1), stddev_group: int = 4) -> None:
        super().__init__()
        log_size = int(math.log2(size))
        if size < 8 or 2 ** log_size != size:
            raise ValueError(f"size must be a power of two >= 8, got {size}")
        self.size, self.channel_multiplier, self.max_channels = size, channel_multiplier, max_channels
        self.stddev_group = stddev_group
        ch = {2 ** i: channels_at(2 ** i, channel_multiplier=channel_multiplier, max_channels=max_channels)
              for i in range(2, log_size + 1)}
        self.from_rgb = ConvLayer(3, ch[size], 1)
        self.blocks = nn.Sequential(*[ResBlock(ch[2 ** i], ch[2 ** (i - 1)], blur_taps=blur_taps)
                                      for i in range(log_size, 2, -1)])
        self.final_conv = ConvLayer(ch[4] + 1, ch[4], 3)
        self.final_linear = EqualLinear(ch[4] * 16, ch[4], activate=True)
        self.final_out = EqualLinear(ch[4], 1)

    def config(self) -> dict:
        """Constructor arguments that rebuild this architecture."""
        return {"size": self.size, "channel_multiplier": self.channel_multiplier,
                "max_channels": self.max_channels, "stddev_group": self.stddev_group}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1:] != (3, self.size, self.size):
            raise ValueError(f"images must be (N, 3, {self.size}, {self.size}), got {tuple(images.shape)}")
        x = self.blocks(self.from_rgb(images))
        x = self.final_conv(minibatch_stddev(x, group_size=self.stddev_group))
        return self.final_out(self.final_linear(x.flatten(1)))
