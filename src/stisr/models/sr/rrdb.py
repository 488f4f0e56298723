"""RRDB network (ESRGAN's generator, Wang et al., 2018) as trained in TextZoom Table 4.

TextZoom builds it from `src/model/esrgan.py` (`RRDBNet(scale_factor=2)`, arch `esrgan` in
`interfaces/base.py`; `src/model/rrdb.py` is an unused copy with a fixed x8 tail): conv3x3 (-> 64);
23 residual-in-residual dense blocks (3 dense blocks of 5 convs, growth 32, LeakyReLU 0.2,
residual scaling 0.2); conv3x3 + long skip; per x2 a nearest-neighbour upsampling + conv3x3 +
LeakyReLU; conv3x3 + LeakyReLU; conv3x3 back to the image channels. Parameter names match the
official module (`conv_first`, `RRDB_trunk.<i>.RDB<j>.conv<k>`, `trunk_conv`, `upconv<n>`,
`HRconv`, `conv_last`). The code feeds it RGB (`in_channels: 4` for RGBM).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from stisr.models.layers.config_utils import check_input, check_positive
from stisr.models.layers.upsample import interpolate_up, upsample_blocks
from stisr.models.objective import SRModel

RESIDUAL_SCALE = 0.2  # both inside the dense block and around the three of them (ESRGAN)


@dataclass
class RRDBConfig:
    """Defaults: ESRGAN's RRDBNet as TextZoom builds it (64 channels, 23 blocks, growth 32), RGB."""

    scale_factor: int = 2
    in_channels: int = 3
    channels: int = 64  # `nf`
    num_blocks: int = 23  # `nb`
    growth: int = 32  # `gc`

    def __post_init__(self) -> None:
        for name in ("scale_factor", "in_channels", "channels", "num_blocks", "growth"):
            check_positive(getattr(self, name), f"RRDBConfig.{name}")
        upsample_blocks(self.scale_factor)


class DenseBlock5C(nn.Module):
    """Five densely connected conv3x3; the fifth maps back to `channels`; residual x 0.2."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        for k in range(1, 5):
            conv = nn.Conv2d(channels + (k - 1) * growth, growth, 3, padding=1)
            setattr(self, f"conv{k}", conv)
        self.conv5 = nn.Conv2d(channels + 4 * growth, channels, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        feats = [x]
        for k in range(1, 5):
            feats.append(self.lrelu(getattr(self, f"conv{k}")(torch.cat(feats, 1))))
        return x + RESIDUAL_SCALE * self.conv5(torch.cat(feats, 1))


class ResidualInResidualDenseBlock(nn.Module):
    """Three dense blocks in a row, residual x 0.2 around them (ESRGAN's `RRDB`)."""

    def __init__(self, channels: int, growth: int) -> None:
        super().__init__()
        self.RDB1 = DenseBlock5C(channels, growth)
        self.RDB2 = DenseBlock5C(channels, growth)
        self.RDB3 = DenseBlock5C(channels, growth)

    def forward(self, x: Tensor) -> Tensor:
        return x + RESIDUAL_SCALE * self.RDB3(self.RDB2(self.RDB1(x)))


class RRDBNet(SRModel, nn.Module):
    """forward(lr: (B, in_channels, H, W)) -> (B, in_channels, sH, sW), unbounded."""

    def __init__(self, config: RRDBConfig | None = None) -> None:
        super().__init__()
        cfg = config or RRDBConfig()
        self.config = cfg
        self.scale_factor = cfg.scale_factor
        self.in_channels = cfg.in_channels
        ch = cfg.channels
        self.num_upsample = upsample_blocks(cfg.scale_factor)
        self.conv_first = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.RRDB_trunk = nn.Sequential(
            *(ResidualInResidualDenseBlock(ch, cfg.growth) for _ in range(cfg.num_blocks))
        )
        self.trunk_conv = nn.Conv2d(ch, ch, 3, padding=1)
        for n in range(1, self.num_upsample + 1):
            setattr(self, f"upconv{n}", nn.Conv2d(ch, ch, 3, padding=1))
        self.HRconv = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv_last = nn.Conv2d(ch, cfg.in_channels, 3, padding=1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, lr: Tensor) -> Tensor:
        check_input(lr, self.in_channels, "RRDBNet")
        feat = self.conv_first(lr)
        feat = feat + self.trunk_conv(self.RRDB_trunk(feat))
        for n in range(1, self.num_upsample + 1):
            feat = self.lrelu(getattr(self, f"upconv{n}")(interpolate_up(feat, 2)))
        return self.conv_last(self.lrelu(self.HRconv(feat)))
