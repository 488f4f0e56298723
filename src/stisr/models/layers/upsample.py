"""Upsampling: the sub-pixel (pixel-shuffle) block of SRResNet and TSRN, and fixed interpolation."""

from __future__ import annotations

import torch
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


def subpixel_conv_weight(weight: Tensor, scale: int) -> tuple[Tensor, int]:
    """The LR-grid kernel equal to `weight` applied after PixelShuffle(`scale`).

    conv_k(pixel_shuffle(x), W) == pixel_shuffle(conv_K(x, W')) for odd k, 'same' padding, with
    W' of shape (O*r*r, C*r*r, K, K), K = 2*ceil((k//2)/r) + 1: output phase (py, px) reads input
    phase (sy, sx) at LR offset t where the HR tap is d = r*t + s - p. Returns (W', padding).
    """
    out_ch, in_ch, k, k2 = weight.shape
    if k != k2 or k % 2 == 0:
        raise ValueError(f"subpixel_conv_weight needs an odd square kernel, got {k}x{k2}")
    r, pad = scale, k // 2
    half = (pad + r - 1) // r
    taps = torch.arange(-half, half + 1, device=weight.device)
    phase = torch.arange(r, device=weight.device)
    hr_tap = r * taps.view(1, 1, -1) + phase.view(1, r, 1) - phase.view(r, 1, 1)  # [p, s, t]
    valid = (hr_tap >= -pad) & (hr_tap <= pad)
    index = (hr_tap + pad).clamp(0, k - 1)
    size = (r, r, r, r, 2 * half + 1, 2 * half + 1)  # py, px, sy, sx, ty, tx
    iy = index.view(r, 1, r, 1, -1, 1).expand(size)
    ix = index.view(1, r, 1, r, 1, -1).expand(size)
    mask = valid.view(r, 1, r, 1, -1, 1) & valid.view(1, r, 1, r, 1, -1)
    gathered = weight[:, :, iy, ix] * mask.to(weight.dtype)  # (O, C, py, px, sy, sx, ty, tx)
    gathered = gathered.permute(0, 2, 3, 1, 4, 5, 6, 7)
    return gathered.reshape(out_ch * r * r, in_ch * r * r, 2 * half + 1, 2 * half + 1), half


def _commutes_with_shuffle(activation: nn.Module) -> bool:
    """Elementwise activations commute with PixelShuffle; a per-channel PReLU does not."""
    return not isinstance(activation, nn.PReLU) or activation.num_parameters == 1


class UpsampleTail(nn.Sequential):
    """UpsampleBlock x n, then a conv to the output channels (TextZoom's `block{N+3}`).

    Same modules, names and function as the plain `nn.Sequential`; the forward runs the final
    conv on the LR grid of the last block (see `subpixel_conv_weight`) and shuffles once at the
    end, which does the same arithmetic on 4x fewer pixels with 4x more channels: on a CPU the
    9x9 conv with 4 output channels at 32x128 was the slowest layer of a TSRN step.
    """

    def forward(self, x: Tensor) -> Tensor:
        *blocks, last_block, conv = list(self)
        for block in blocks:
            x = block(x)
        if not (
            isinstance(last_block, UpsampleBlock)
            and isinstance(conv, nn.Conv2d)
            and conv.groups == 1
            and conv.stride == (1, 1)
            and conv.dilation == (1, 1)
            and conv.padding == (conv.kernel_size[0] // 2,) * 2
            and _commutes_with_shuffle(last_block.prelu)
        ):
            return conv(last_block(x))
        r = last_block.pixel_shuffle.upscale_factor
        x = last_block.prelu(last_block.conv(x))
        weight, padding = subpixel_conv_weight(conv.weight, r)
        bias = None if conv.bias is None else conv.bias.repeat_interleave(r * r)
        return F.pixel_shuffle(F.conv2d(x, weight, bias, padding=padding), r)


def upsample_tail(
    channels: int, out_channels: int, scale_factor: int, activation: str
) -> UpsampleTail:
    """x2 blocks up to `scale_factor`, then the conv9x9 to `out_channels` (TSRN, SRResNet)."""
    blocks = [UpsampleBlock(channels, 2, activation) for _ in range(upsample_blocks(scale_factor))]
    return UpsampleTail(*blocks, nn.Conv2d(channels, out_channels, kernel_size=9, padding=4))


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
