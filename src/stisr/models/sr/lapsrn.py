"""LapSRN (Lai et al., 2017) as configured in TextZoom (`src/model/lapsrn.py`): a Table 4 baseline.

conv3x3 (-> 64) + LeakyReLU 0.2; per x2 level a feature branch (10 conv3x3 + LeakyReLU, then a
4x4 stride-2 transposed conv + LeakyReLU) and an image branch (4x4 stride-2 transposed conv of
the previous image) plus a conv3x3 residual from the features; no biases. Parameter names match
the official module (`conv_input`, `convt_F<n>.0.cov_block.<i>`, `convt_I<n>`, `convt_R<n>`).

Two differences from the code, neither changing what the network computes at x2: the code always
builds two levels (x4) and uses only the first at x2, so its x2 checkpoints carry an unused
`convt_*2` level (436,048 parameters); here `log2(scale_factor)` levels are built. The code copies
the bilinear kernel into every (in, out) channel pair of each transposed conv, which sums the
channels; here each channel starts as its own bilinear upsampler, as the LapSRN paper's
single-channel bilinear initialisation intends. The code feeds it RGB (`in_channels: 4` for RGBM);
its optional STN is not built (see srcnn.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from stisr.models.layers.config_utils import check_input, check_positive
from stisr.models.layers.init import he_fan_out_
from stisr.models.layers.upsample import upsample_blocks
from stisr.models.objective import SRModel


@dataclass
class LapSRNConfig:
    """Defaults: the TextZoom LapSRN (64 channels, 10 convs per level) on RGB input."""

    scale_factor: int = 2
    in_channels: int = 3
    channels: int = 64
    depth: int = 10  # conv3x3 layers per level before its transposed conv

    def __post_init__(self) -> None:
        for name in ("scale_factor", "in_channels", "channels", "depth"):
            check_positive(getattr(self, name), f"LapSRNConfig.{name}")
        upsample_blocks(self.scale_factor)


def bilinear_kernel(size: int) -> Tensor:
    """The (size, size) bilinear interpolation kernel of a stride size // 2 transposed conv."""
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(size, dtype=torch.float32) - center).abs() / factor
    return ramp[:, None] * ramp[None, :]


def upsampler(channels_in: int, channels_out: int) -> nn.ConvTranspose2d:
    """x2 transposed conv (4x4, stride 2, padding 1, no bias), each channel bilinear at first."""
    conv = nn.ConvTranspose2d(channels_in, channels_out, 4, stride=2, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for c in range(min(channels_in, channels_out)):
            conv.weight[c, c] = bilinear_kernel(4)
    return conv


class FeatureLevel(nn.Module):
    """`depth` x (conv3x3 + LeakyReLU), then a x2 transposed conv + LeakyReLU (`_Conv_Block`)."""

    def __init__(self, channels: int, depth: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(depth):
            layers += [
                nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers += [upsampler(channels, channels), nn.LeakyReLU(0.2, inplace=True)]
        self.cov_block = nn.Sequential(*layers)  # sic: the official attribute name

    def forward(self, x: Tensor) -> Tensor:
        return self.cov_block(x)


class LapSRN(SRModel, nn.Module):
    """forward(lr: (B, in_channels, H, W)) -> (B, in_channels, sH, sW), unbounded."""

    def __init__(self, config: LapSRNConfig | None = None) -> None:
        super().__init__()
        cfg = config or LapSRNConfig()
        self.config = cfg
        self.scale_factor = cfg.scale_factor
        self.in_channels = cfg.in_channels
        self.levels = upsample_blocks(cfg.scale_factor)
        ch, img = cfg.channels, cfg.in_channels
        self.conv_input = nn.Conv2d(img, ch, 3, padding=1, bias=False)
        self.relu = nn.LeakyReLU(0.2, inplace=True)
        for n in range(1, self.levels + 1):
            setattr(self, f"convt_I{n}", upsampler(img, img))
            setattr(self, f"convt_R{n}", nn.Conv2d(ch, img, 3, padding=1, bias=False))
            setattr(self, f"convt_F{n}", nn.Sequential(FeatureLevel(ch, cfg.depth)))
        he_fan_out_(self)

    def forward(self, lr: Tensor) -> Tensor:
        check_input(lr, self.in_channels, "LapSRN")
        feat, image = self.relu(self.conv_input(lr)), lr
        for n in range(1, self.levels + 1):
            feat = getattr(self, f"convt_F{n}")(feat)
            image = getattr(self, f"convt_I{n}")(image) + getattr(self, f"convt_R{n}")(feat)
        return image
