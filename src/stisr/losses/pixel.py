"""Pixel losses between an SR output and its HR target, both (B, C, H, W).

They use every channel they are given: with RGBM tensors the mask channel is part of the loss, as
in the TSRN code, whose L2 term compares all four channels. All reduce by the mean over elements,
so loss weights do not depend on the image size or batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def check_pair(sr: torch.Tensor, hr: torch.Tensor, name: str) -> None:
    """Raise a ValueError naming the loss when `sr` and `hr` cannot be compared element-wise."""
    if sr.dim() != 4 or sr.shape != hr.shape:
        raise ValueError(
            f"loss {name!r}: sr and hr must have the same (B, C, H, W) shape, "
            f"got {tuple(sr.shape)} and {tuple(hr.shape)}"
        )


def mse(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Mean squared error (the L2 loss of SRCNN, SRResNet and TSRN)."""
    check_pair(sr, hr, "mse")
    return F.mse_loss(sr, hr)


def l1(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (EDSR, RDN, ESRGAN's pixel term)."""
    check_pair(sr, hr, "l1")
    return F.l1_loss(sr, hr)


def charbonnier(sr: torch.Tensor, hr: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean of sqrt((sr - hr)^2 + eps^2): LapSRN's robust L1 (eps = 1e-3); equals eps when sr == hr.

    The TextZoom copy of LapSRN sums instead of averaging (same gradient direction, weight scaled
    by the number of elements); the mean keeps weights size-independent.
    """
    check_pair(sr, hr, "charbonnier")
    if eps <= 0:
        raise ValueError(f"loss 'charbonnier': eps must be > 0, got {eps}")
    diff = sr - hr
    return torch.sqrt(diff * diff + eps * eps).mean()


def tv(sr: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
    """Squared total variation of `sr` (a smoothness prior, SRResNet/SRGAN); `hr` is ignored.

    Mean of squared vertical neighbour differences plus mean of squared horizontal ones; a
    direction with a single row/column contributes 0.
    """
    if sr.dim() != 4:
        raise ValueError(f"loss 'tv': sr must be (B, C, H, W), got {tuple(sr.shape)}")
    total = sr.new_zeros(())
    if sr.shape[2] > 1:
        total = total + (sr[:, :, 1:, :] - sr[:, :, :-1, :]).pow(2).mean()
    if sr.shape[3] > 1:
        total = total + (sr[:, :, :, 1:] - sr[:, :, :, :-1]).pow(2).mean()
    return total


class MSELoss(nn.Module):
    """Module form of `mse`."""

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return mse(sr, hr)


class L1Loss(nn.Module):
    """Module form of `l1`."""

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return l1(sr, hr)


class CharbonnierLoss(nn.Module):
    """Module form of `charbonnier`."""

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"loss 'charbonnier': eps must be > 0, got {eps}")
        self.eps = float(eps)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return charbonnier(sr, hr, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class TotalVariationLoss(nn.Module):
    """Module form of `tv` (takes hr for a uniform signature, ignores it)."""

    def forward(self, sr: torch.Tensor, hr: torch.Tensor | None = None) -> torch.Tensor:
        return tv(sr, hr)
