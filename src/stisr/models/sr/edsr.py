"""EDSR (Lim et al., 2017) as configured in TextZoom (`src/model/edsr.py`): a Table 4 baseline.

Mean shift (subtract the DIV2K RGB mean); conv3x3 (-> 256); 32 residual blocks (conv-ReLU-conv,
no batch norm, branch x 0.1); conv3x3 + long skip; per x2 a conv3x3 (-> 4x channels) + pixel
shuffle, no activation; conv3x3 back to the image channels; add the mean back. No conv has a bias.
Parameter names match the official module (`sub_mean`, `conv_input`, `residual.<i>.conv1/2`,
`conv_mid`, `upscale.<2n>`, `conv_output`, `add_mean`). The code feeds it RGB; with `in_channels:
4` (RGBM) the mask channel is not shifted.

One quirk of the code is not copied: its N(0, 2 / (9 * out)) initialisation loop also overwrites
the frozen mean-shift convolutions (they are `nn.Conv2d` subclasses), so there they are random
colour mixings with zero bias. Here they stay the identity plus the mean, as EDSR intends.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.models.layers.config_utils import as_tuple, check_input, check_positive
from stisr.models.layers.init import he_fan_out_
from stisr.models.layers.residual import ResidualBlock
from stisr.models.layers.upsample import upsample_blocks
from stisr.models.objective import SRModel


@dataclass
class EDSRConfig:
    """Defaults: the TextZoom EDSR (256 channels, 32 blocks, residual scale 0.1) on RGB input."""

    scale_factor: int = 2
    in_channels: int = 3
    channels: int = 256
    num_blocks: int = 32
    res_scale: float = 0.1
    rgb_mean: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)  # DIV2K, as in the code

    def __post_init__(self) -> None:
        for name in ("scale_factor", "in_channels", "channels", "num_blocks"):
            check_positive(getattr(self, name), f"EDSRConfig.{name}")
        self.rgb_mean = as_tuple(self.rgb_mean, 3, float, "EDSRConfig.rgb_mean")
        if self.in_channels < 3:
            raise ValueError(f"EDSRConfig.in_channels must be >= 3 (RGB), got {self.in_channels}")
        upsample_blocks(self.scale_factor)


class MeanShift(nn.Module):
    """Frozen 1x1 convolution: identity plus `sign * mean` (keys `weight`, `bias` as the code's)."""

    def __init__(self, mean: Sequence[float], sign: float) -> None:
        super().__init__()
        channels = len(mean)
        eye = torch.eye(channels).view(channels, channels, 1, 1)
        self.weight = nn.Parameter(eye, requires_grad=False)
        shift = sign * torch.tensor(mean, dtype=torch.float32)
        self.bias = nn.Parameter(shift, requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias)


class EDSR(SRModel, nn.Module):
    """forward(lr: (B, in_channels, H, W)) -> (B, in_channels, sH, sW), unbounded."""

    def __init__(self, config: EDSRConfig | None = None) -> None:
        super().__init__()
        cfg = config or EDSRConfig()
        self.config = cfg
        self.scale_factor = cfg.scale_factor
        self.in_channels = cfg.in_channels
        ch = cfg.channels
        mean = (*cfg.rgb_mean, *(0.0,) * (cfg.in_channels - 3))  # the mask is not shifted
        self.sub_mean = MeanShift(mean, -1.0)
        self.conv_input = nn.Conv2d(cfg.in_channels, ch, 3, padding=1, bias=False)
        self.residual = nn.Sequential(
            *(
                ResidualBlock(ch, "relu", batch_norm=False, bias=False, res_scale=cfg.res_scale)
                for _ in range(cfg.num_blocks)
            )
        )
        self.conv_mid = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        upscale: list[nn.Module] = []
        for _ in range(upsample_blocks(cfg.scale_factor)):
            upscale += [nn.Conv2d(ch, 4 * ch, 3, padding=1, bias=False), nn.PixelShuffle(2)]
        self.upscale = nn.Sequential(*upscale)
        self.conv_output = nn.Conv2d(ch, cfg.in_channels, 3, padding=1, bias=False)
        self.add_mean = MeanShift(mean, 1.0)
        he_fan_out_(self)

    def forward(self, lr: Tensor) -> Tensor:
        check_input(lr, self.in_channels, "EDSR")
        feat = self.conv_input(self.sub_mean(lr))
        feat = feat + self.conv_mid(self.residual(feat))
        return self.add_mean(self.conv_output(self.upscale(feat)))
