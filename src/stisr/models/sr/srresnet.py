"""SRResNet as configured in TextZoom (`src/model/srresnet.py`): TSRN's baseline (ablation row 0).

conv9x9 + PReLU; `num_blocks` residual blocks (conv-BN-PReLU-conv-BN + skip); conv3x3 + BN;
long skip; pixel-shuffle x2 blocks with PReLU; conv9x9; tanh. Parameter names match the official
module (`block1`, `block2`.., `block{n+2}`, `block{n+3}`). TextZoom's optional STN is not built: its
SRResNet feeds the 16x64 LR straight to the localization net, which cannot run at that size.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from stisr.models.layers.config_utils import check_positive
from stisr.models.layers.residual import ResidualBlock
from stisr.models.layers.upsample import upsample_blocks, upsample_tail
from stisr.models.objective import SRModel


@dataclass
class SRResNetConfig:
    """Defaults: the TextZoom SRResNet (5 blocks, 64 channels) on RGBM input."""

    scale_factor: int = 2
    in_channels: int = 4
    out_channels: int = 4
    num_blocks: int = 5
    channels: int = 64

    def __post_init__(self) -> None:
        for name in ("scale_factor", "in_channels", "out_channels", "num_blocks", "channels"):
            check_positive(getattr(self, name), f"SRResNetConfig.{name}")
        upsample_blocks(self.scale_factor)


class SRResNet(SRModel, nn.Module):
    """forward(lr: (B, in_channels, H, W)) -> (B, out_channels, 2H, 2W), tanh-bounded."""

    def __init__(self, config: SRResNetConfig | None = None) -> None:
        super().__init__()
        cfg = config or SRResNetConfig()
        self.config = cfg
        self.scale_factor = cfg.scale_factor
        self.num_blocks = cfg.num_blocks
        ch = cfg.channels
        self.block1 = nn.Sequential(
            nn.Conv2d(cfg.in_channels, ch, kernel_size=9, padding=4), nn.PReLU()
        )
        for i in range(cfg.num_blocks):
            setattr(self, f"block{i + 2}", ResidualBlock(ch))
        setattr(
            self,
            f"block{cfg.num_blocks + 2}",
            nn.Sequential(nn.Conv2d(ch, ch, kernel_size=3, padding=1), nn.BatchNorm2d(ch)),
        )
        tail = upsample_tail(ch, cfg.out_channels, cfg.scale_factor, "prelu")
        setattr(self, f"block{cfg.num_blocks + 3}", tail)

    def forward(self, lr: Tensor) -> Tensor:
        if lr.dim() != 4 or lr.shape[1] != self.config.in_channels:
            raise ValueError(
                f"SRResNet expects (B, {self.config.in_channels}, H, W) input, "
                f"got {tuple(lr.shape)}"
            )
        shallow = self.block1(lr)
        feat = shallow
        for i in range(self.num_blocks + 1):
            feat = getattr(self, f"block{i + 2}")(feat)
        return getattr(self, f"block{self.num_blocks + 3}")(shallow + feat).tanh()
