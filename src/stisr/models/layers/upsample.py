"""Upsampling: the sub-pixel (pixel-shuffle) block of SRResNet and TSRN, and fixed interpolation."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from stisr.models.layers.activations import make_activation


class UpsampleBlock(nn.Module):
    """conv3x3 (C -> C*r^2) -> PixelShuffle(r) -> activation; attribute names as in TextZoom."""

    def __init__(self, channels: int, scale: int = 2, activation: str = "prelu") -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * scale**2, kernel_size=3, padding=1)
        self.pixel_shuffle = nn.PixelShuffle(scale)
        self.prelu = make_activation(activation)  # named `prelu` even for Mish, as in TextZoom

    def forward(self, x: Tensor) -> Tensor:
        return self.prelu(self.pixel_shuffle(self.conv(x)))


def upsample_blocks(scale_factor: int) -> int:
    """Number of x2 blocks for a power-of-two scale factor."""
    if scale_factor < 2 or scale_factor & (scale_factor - 1):
        raise ValueError(f"scale_factor must be a power of two >= 2, got {scale_factor}")
    return scale_factor.bit_length() - 1


INTERPOLATION_MODES = ("nearest", "bilinear", "bicubic")


def interpolate_up(x: Tensor, scale_factor: int, mode: str = "nearest") -> Tensor:
    """Fixed (parameter-free) upsampling; TextZoom's SRCNN, VDSR and RRDB all use `nearest`."""
    align = False if mode in ("bilinear", "bicubic") else None
    return F.interpolate(x, scale_factor=scale_factor, mode=mode, align_corners=align)
