"""Sub-pixel (pixel-shuffle) upsampling block of SRResNet and TSRN."""

from __future__ import annotations

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
