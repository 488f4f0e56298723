"""TSRN (Wang et al., "Scene Text Image Super-Resolution in the Wild", ECCV 2020).

Layout of the official TextZoom `src/model/tsrn.py`: block1 = conv9x9 + PReLU; `srb_nums`
Sequential Residual Blocks; conv3x3 + BN; long skip from block1; pixel-shuffle x2 blocks; conv9x9;
tanh. A TPS-STN (central alignment) rectifies the input first. Defaults follow the paper (BLSTM,
PReLU, STN always on); the public code's variant is `rnn="gru", activation="mish",
stn_in_train_only=True` (docs/protocols.md, quirks). Parameter names match the
official state dict.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from stisr.models.layers import tsrn_skeleton as skeleton
from stisr.models.layers.activations import ACTIVATIONS
from stisr.models.layers.config_utils import as_tuple, check_choice, check_count, check_positive
from stisr.models.layers.recurrent import RNN_TYPES, SequentialResidualBlock
from stisr.models.layers.tps_stn import tps_rectify
from stisr.models.layers.upsample import upsample_blocks
from stisr.models.objective import SRModel


@dataclass
class TSRNConfig:
    """TSRN hyper-parameters; `hidden_units` is the official knob: features have 2x its channels."""

    scale_factor: int = 2
    in_channels: int = 4  # RGBM
    out_channels: int = 4
    hidden_units: int = 32  # TextZoom `--hd_u` default; 64 feature channels
    srb_nums: int = 5
    rnn: str = "lstm"  # paper: BLSTM; code: bidirectional GRU
    activation: str = "prelu"  # SRB/upsampling activation; paper: PReLU (SRResNet); code: Mish
    use_stn: bool = True  # central alignment module (code flag `--STN`)
    stn_in_train_only: bool = False  # paper: always applied; code: only in training
    stn_input_size: tuple[int, int] = (32, 64)  # localization net input (TextZoom tps_inputsize)
    stn_output_size: tuple[int, int] = (16, 64)  # rectified LR size (height, width)
    num_control_points: int = 20
    tps_margins: tuple[float, float] = (0.05, 0.05)
    stn_activation: str = "none"
    stn_sample_resized: bool = True  # TextZoom samples the TPS from the 32x64 resized copy
    tps_align_corners: bool = True  # grid_sample semantics the original (torch<1.3) code had

    def __post_init__(self) -> None:
        for name in ("scale_factor", "in_channels", "out_channels", "hidden_units"):
            check_positive(getattr(self, name), f"TSRNConfig.{name}")
        check_count(self.srb_nums, "TSRNConfig.srb_nums")
        check_positive(self.num_control_points, "TSRNConfig.num_control_points")
        check_choice(self.rnn, RNN_TYPES, "TSRNConfig.rnn")
        check_choice(self.activation, ACTIVATIONS, "TSRNConfig.activation")
        check_choice(self.stn_activation, ("none", "sigmoid"), "TSRNConfig.stn_activation")
        self.stn_input_size = as_tuple(self.stn_input_size, 2, int, "TSRNConfig.stn_input_size")
        self.stn_output_size = as_tuple(self.stn_output_size, 2, int, "TSRNConfig.stn_output_size")
        self.tps_margins = as_tuple(self.tps_margins, 2, float, "TSRNConfig.tps_margins")
        upsample_blocks(self.scale_factor)  # validates the power of two


class TSRN(SRModel, nn.Module):
    """forward(lr: (B, in_channels, H, W)) -> (B, out_channels, 2H, 2W), tanh-bounded.

    The output is tanh as in the official code (so in (-1, 1) while targets are in [0, 1]).
    """

    def __init__(self, config: TSRNConfig | None = None) -> None:
        super().__init__()
        cfg = config or TSRNConfig()
        self.config = cfg
        self.scale_factor = cfg.scale_factor
        self.srb_nums = cfg.srb_nums
        channels = 2 * cfg.hidden_units
        skeleton.add_head(self, cfg.in_channels, channels)
        blocks = [
            SequentialResidualBlock(channels, cfg.rnn, cfg.activation) for _ in range(cfg.srb_nums)
        ]
        skeleton.add_blocks(self, blocks)
        skeleton.add_tail(self, cfg, channels)
        skeleton.add_stn(self, cfg)

    @property
    def stn_active(self) -> bool:
        """Whether forward() rectifies the input in the current train/eval mode."""
        return skeleton.stn_active(self)

    def forward(self, lr: Tensor) -> Tensor:
        if lr.dim() != 4 or lr.shape[1] != self.config.in_channels:
            raise ValueError(
                f"TSRN expects (B, {self.config.in_channels}, H, W) input, got {tuple(lr.shape)}"
            )
        x = lr
        if self.stn_active:
            x = tps_rectify(x, self.stn_head, self.tps, self.config.stn_sample_resized)
        return skeleton.run_body(self, x, self.srb_nums).tanh()
