"""SRCNN (Dong et al., 2014) as configured in TextZoom (`src/model/srcnn.py`): a Table 4 baseline.

The LR image is enlarged by fixed interpolation (`nearest` in the TextZoom code, where the SRCNN
paper uses bicubic: `interpolation` switches), then conv9x9 (-> 64) + ReLU, conv1x1 (-> 32) + ReLU,
conv5x5 back to the image channels, no output activation. Parameter names match the official
module (`conv1`, `conv2`, `conv3`). The TextZoom code feeds it RGB (no mask channel; `in_channels:
4` for RGBM). Its optional STN is not built, as for SRResNet: the localization net gets the 16x64
LR and cannot run at that size.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from stisr.models.layers.config_utils import as_tuple, check_choice, check_input, check_positive
from stisr.models.layers.upsample import INTERPOLATION_MODES, interpolate_up, upsample_blocks
from stisr.models.objective import SRModel


@dataclass
class SRCNNConfig:
    """Defaults: the TextZoom SRCNN (9-1-5 kernels, 64 and 32 channels) on RGB input."""

    scale_factor: int = 2
    in_channels: int = 3
    widths: tuple[int, int] = (64, 32)
    interpolation: str = "nearest"

    def __post_init__(self) -> None:
        check_positive(self.scale_factor, "SRCNNConfig.scale_factor")
        check_positive(self.in_channels, "SRCNNConfig.in_channels")
        self.widths = as_tuple(self.widths, 2, int, "SRCNNConfig.widths")
        for w in self.widths:
            check_positive(w, "SRCNNConfig.widths")
        check_choice(self.interpolation, INTERPOLATION_MODES, "SRCNNConfig.interpolation")
        upsample_blocks(self.scale_factor)


class SRCNN(SRModel, nn.Module):
    """forward(lr: (B, in_channels, H, W)) -> (B, in_channels, sH, sW), unbounded."""

    def __init__(self, config: SRCNNConfig | None = None) -> None:
        super().__init__()
        cfg = config or SRCNNConfig()
        self.config = cfg
        self.scale_factor = cfg.scale_factor
        self.in_channels = cfg.in_channels
        w1, w2 = cfg.widths
        self.conv1 = nn.Conv2d(cfg.in_channels, w1, kernel_size=9, padding=4)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(w1, w2, kernel_size=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(w2, cfg.in_channels, kernel_size=5, padding=2)

    def forward(self, lr: Tensor) -> Tensor:
        check_input(lr, self.in_channels, "SRCNN")
        x = interpolate_up(lr, self.scale_factor, self.config.interpolation)
        return self.conv3(self.relu2(self.conv2(self.relu1(self.conv1(x)))))
