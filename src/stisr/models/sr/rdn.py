"""RDN (Zhang et al., 2018) as configured in TextZoom (`src/model/rdn.py`): a Table 4 baseline.

conv3x3 (-> 64, kept for the global skip) and conv3x3; 3 residual dense blocks (6 densely
connected conv3x3 + ReLU of growth 32, 1x1 local fusion, local skip; no biases inside); global
feature fusion of all block outputs (1x1 then 3x3) + global skip; conv3x3 to s^2 x channels and one
pixel shuffle by s, no activation; conv3x3 back to the image channels. The code's RDN is much
smaller than the paper's (16 blocks of 8 layers). Parameter names match the official module
(`conv1`, `conv2`, `RDB<k>.dense_layers.<i>.conv`, `RDB<k>.conv_1x1`, `GFF_1x1`, `GFF_3x3`,
`conv_up`, `conv3`). The code feeds it RGB (`in_channels: 4` for RGBM).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.models.layers.config_utils import check_input, check_positive
from stisr.models.layers.upsample import upsample_blocks
from stisr.models.objective import SRModel


@dataclass
class RDNConfig:
    """Defaults: the TextZoom RDN (64 channels, 3 blocks of 6 layers, growth 32) on RGB input."""

    scale_factor: int = 2
    in_channels: int = 3
    channels: int = 64  # `nFeat`
    num_blocks: int = 3
    num_layers: int = 6  # `nDenselayer`
    growth: int = 32  # `growthRate`

    def __post_init__(self) -> None:
        names = ("scale_factor", "in_channels", "channels", "num_blocks", "num_layers", "growth")
        for name in names:
            check_positive(getattr(self, name), f"RDNConfig.{name}")
        upsample_blocks(self.scale_factor)


class DenseLayer(nn.Module):
    """cat(x, ReLU(conv3x3(x))): adds `growth` channels (the code's `make_dense`)."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, growth, kernel_size=3, padding=1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((x, F.relu(self.conv(x))), 1)


class ResidualDenseBlock(nn.Module):
    """x + conv1x1(dense layers(x)): local feature fusion and local residual learning."""

    def __init__(self, channels: int, num_layers: int, growth: int) -> None:
        super().__init__()
        self.dense_layers = nn.Sequential(
            *(DenseLayer(channels + i * growth, growth) for i in range(num_layers))
        )
        self.conv_1x1 = nn.Conv2d(channels + num_layers * growth, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_1x1(self.dense_layers(x))


class RDN(SRModel, nn.Module):
    """forward(lr: (B, in_channels, H, W)) -> (B, in_channels, sH, sW), unbounded."""

    def __init__(self, config: RDNConfig | None = None) -> None:
        super().__init__()
        cfg = config or RDNConfig()
        self.config = cfg
        self.scale_factor = cfg.scale_factor
        self.in_channels = cfg.in_channels
        ch, s = cfg.channels, cfg.scale_factor
        self.conv1 = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)
        for k in range(1, cfg.num_blocks + 1):
            setattr(self, f"RDB{k}", ResidualDenseBlock(ch, cfg.num_layers, cfg.growth))
        self.GFF_1x1 = nn.Conv2d(cfg.num_blocks * ch, ch, 1)
        self.GFF_3x3 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv_up = nn.Conv2d(ch, ch * s * s, 3, padding=1)
        self.upsample = nn.PixelShuffle(s)
        self.conv3 = nn.Conv2d(ch, cfg.in_channels, 3, padding=1)

    def forward(self, lr: Tensor) -> Tensor:
        check_input(lr, self.in_channels, "RDN")
        shallow = self.conv1(lr)
        feat = self.conv2(shallow)
        outs = []
        for k in range(1, self.config.num_blocks + 1):
            feat = getattr(self, f"RDB{k}")(feat)
            outs.append(feat)
        fused = self.GFF_3x3(self.GFF_1x1(torch.cat(outs, 1))) + shallow
        return self.conv3(self.upsample(self.conv_up(fused)))
