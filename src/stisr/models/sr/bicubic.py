"""Parameter-free bicubic upsampling: the BICUBIC row of every STISR table."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from stisr.models.layers.config_utils import check_positive
from stisr.models.objective import SRModel


@dataclass
class BicubicConfig:
    """`align_corners=False` by default; TextZoom's own BICUBIC class passes True (switchable)."""

    scale_factor: int = 2
    align_corners: bool = False
    clamp: bool = True  # bicubic overshoots; keep outputs in the image range [0, 1]

    def __post_init__(self) -> None:
        check_positive(self.scale_factor, "BicubicConfig.scale_factor")


class Bicubic(SRModel, nn.Module):
    """forward(lr: (B, C, H, W)) -> (B, C, sH, sW); every channel (incl. a mask) is upsampled."""

    def __init__(self, config: BicubicConfig | None = None) -> None:
        super().__init__()
        self.config = config or BicubicConfig()
        self.scale_factor = self.config.scale_factor

    def forward(self, lr: Tensor) -> Tensor:
        if lr.dim() != 4:
            raise ValueError(f"Bicubic expects a (B, C, H, W) input, got {tuple(lr.shape)}")
        out = F.interpolate(
            lr,
            scale_factor=self.scale_factor,
            mode="bicubic",
            align_corners=self.config.align_corners,
        )
        return out.clamp(0.0, 1.0) if self.config.clamp else out
