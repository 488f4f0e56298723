"""VDSR (Kim et al., 2016) as configured in TextZoom (`src/model/vdsr.py`): a Table 4 baseline.

The LR image is enlarged by fixed interpolation (`nearest` in the TextZoom code; the VDSR paper
uses bicubic), then a 20-layer plain CNN predicts the residual to that image: conv3x3 (-> 64) +
ReLU, `num_layers` = 18 conv3x3 + ReLU blocks, conv3x3 back to the image channels; no biases.
Weights start from N(0, 2 / (9 * out_channels)) as in the code. Parameter names match the official
module (`input`, `residual_layer.<i>.conv`, `output`). The code feeds it RGB (`in_channels: 4` for
RGBM); its optional STN is not built (see srcnn.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from stisr.models.layers.config_utils import check_choice, check_input, check_positive
from stisr.models.layers.init import he_fan_out_
from stisr.models.layers.upsample import INTERPOLATION_MODES, interpolate_up, upsample_blocks
from stisr.models.objective import SRModel


@dataclass
class VDSRConfig:
    """Defaults: the TextZoom VDSR (64 channels, 18 middle layers) on RGB input."""

    scale_factor: int = 2
    in_channels: int = 3
    channels: int = 64
    num_layers: int = 18
    interpolation: str = "nearest"

    def __post_init__(self) -> None:
        for name in ("scale_factor", "in_channels", "channels", "num_layers"):
            check_positive(getattr(self, name), f"VDSRConfig.{name}")
        check_choice(self.interpolation, INTERPOLATION_MODES, "VDSRConfig.interpolation")
        upsample_blocks(self.scale_factor)


class ConvReLU(nn.Module):
    """conv3x3 (no bias) + ReLU: one middle layer of VDSR."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv(x))


class VDSR(SRModel, nn.Module):
    """forward(lr: (B, in_channels, H, W)) -> (B, in_channels, sH, sW): interpolation + residual."""

    def __init__(self, config: VDSRConfig | None = None) -> None:
        super().__init__()
        cfg = config or VDSRConfig()
        self.config = cfg
        self.scale_factor = cfg.scale_factor
        self.in_channels = cfg.in_channels
        ch = cfg.channels
        self.residual_layer = nn.Sequential(*(ConvReLU(ch) for _ in range(cfg.num_layers)))
        self.input = nn.Conv2d(cfg.in_channels, ch, kernel_size=3, padding=1, bias=False)
        self.output = nn.Conv2d(ch, cfg.in_channels, kernel_size=3, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        he_fan_out_(self)

    def forward(self, lr: Tensor) -> Tensor:
        check_input(lr, self.in_channels, "VDSR")
        x = interpolate_up(lr, self.scale_factor, self.config.interpolation)
        return x + self.output(self.residual_layer(self.relu(self.input(x))))
