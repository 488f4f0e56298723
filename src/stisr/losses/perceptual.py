"""Perceptual (feature) loss: MSE between features of SR and HR from a caller-given extractor.

The extractor is an argument because where it comes from depends on the data source: ImageNet VGG
weights on official data, seeded random ones without network (`stisr.losses.vgg.VGGFeaturesSpec`
builds both, frozen). The module holds it as a submodule so `.to(device)` moves it; freezing its
parameters and its eval mode are the builder's job. HR features are computed without gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stisr.losses.pixel import check_pair


class PerceptualLoss(nn.Module):
    """MSE between `features(sr[:, :channels])` and `features(hr[:, :channels])`."""

    def __init__(self, features: nn.Module, channels: int = 3) -> None:
        super().__init__()
        if not isinstance(features, nn.Module):
            raise TypeError(
                "loss 'perceptual': `features` must be an nn.Module feature extractor, "
                f"got {type(features).__name__}"
            )
        if channels < 1:
            raise ValueError(f"loss 'perceptual': channels must be >= 1, got {channels}")
        self.features = features
        self.channels = int(channels)

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        check_pair(sr, hr, "perceptual")
        f_sr = self.features(sr[:, : self.channels])
        with torch.no_grad():
            f_hr = self.features(hr[:, : self.channels])
        return F.mse_loss(f_sr, f_hr)
