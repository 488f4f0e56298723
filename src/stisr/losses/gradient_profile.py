"""TSRN's gradient profile loss L_GP (TextZoom, ECCV 2020), as defined by the public TextZoom code.

The gradient field of an image is, per channel and pixel, the magnitude of the central
differences: sqrt(((x[i, j+1] - x[i, j-1]) / 2)^2 + ((x[i-1, j] - x[i+1, j]) / 2)^2 + eps), with
zero padding outside the image (so the image border reads as an edge against black, in SR and HR
alike) and eps = 1e-6 inside the root, which keeps the gradient finite on flat regions. The loss
is the mean absolute difference between the fields of SR and HR over the first three (RGB)
channels: the mask channel of RGBM tensors is excluded, as in the TSRN code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stisr.losses.pixel import check_pair

GP_EPS = 1e-6


def gradient_field(x: torch.Tensor, eps: float = GP_EPS) -> torch.Tensor:
    """Per-channel central-difference gradient magnitude of (B, C, H, W) `x`, same shape."""
    if x.dim() != 4:
        raise ValueError(f"gradient_field: x must be (B, C, H, W), got {tuple(x.shape)}")
    padded = F.pad(x, (1, 1, 1, 1))  # zeros around the image
    right = padded[:, :, 1:-1, 2:]
    left = padded[:, :, 1:-1, :-2]
    up = padded[:, :, :-2, 1:-1]
    down = padded[:, :, 2:, 1:-1]
    gx = (right - left) * 0.5
    gy = (up - down) * 0.5
    return torch.sqrt(gx * gx + gy * gy + eps)


def gradient_profile(sr: torch.Tensor, hr: torch.Tensor, eps: float = GP_EPS) -> torch.Tensor:
    """L1 distance between the gradient fields of the RGB channels of `sr` and `hr`."""
    check_pair(sr, hr, "gradient_profile")
    return F.l1_loss(gradient_field(sr[:, :3], eps), gradient_field(hr[:, :3], eps))


class GradientProfileLoss(nn.Module):
    """Module form of `gradient_profile` (TSRN weight 1e-4 next to L2 weight 1)."""

    def __init__(self, eps: float = GP_EPS) -> None:
        super().__init__()
        if eps < 0:
            raise ValueError(f"loss 'gradient_profile': eps must be >= 0, got {eps}")
        self.eps = float(eps)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return gradient_profile(sr, hr, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"
