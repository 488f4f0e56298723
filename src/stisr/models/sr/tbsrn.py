"""TBSRN, the SR network of Scene Text Telescope (Chen, Li, Xue, CVPR 2021), and its objective.

Layout of FudanVI/FudanOCR `scene-text-telescope/model/tbsrn.py` (`TBSRN(scale_factor=2, width=128,
height=32, STN=True, srb_nums=5, hidden_units=32)`, the README's `--STN --text_focus` command):
TPS-STN (`stn_head`, `tps`) on the 16x64 LR; `block1` = conv9x9 + PReLU; `srb_nums` TBSRN blocks
(conv-BN-Mish-conv-BN + the self-attention module with a 2D position code, see
`stisr.models.layers.tbsrn_blocks`); conv3x3 + BN; long skip from block1; pixel-shuffle x2 blocks
(Mish) + conv9x9; tanh. Parameter names match the official state dict, including modules the
forward never calls but the release saves: each block's two GRUs (`gru1`, `gru2`) and a stray
conv3x3 3->3 + BN (`conv`, `bn`). The code has 3,210,335 parameters (RGB, STN).

Paper vs code (switches, defaults = paper where it says something):

* `stn_in_train_only=False`: the paper's pipeline rectifies every LR image with the STN first;
  the code applies it only in training mode (`if self.stn and self.training`): set True to
  evaluate the release as its authors did.
* `in_channels=3`: the README trains without `--mask`, so the public model is RGB (in = out = 3);
  4 gives TSRN's RGBM variant (`--mask`).
* `activation="mish"` (residual and upsampling blocks): the code's choice, no paper/code
  difference known; a switch for ablations.
* `tps_align_corners=True`: the grid_sample of torch<1.3 the code was written for (the same code
  under a newer torch samples with False; users report STT numbers not matched above torch 1.2).

Objective (`training_loss`): the run's image losses (official: MSE on every output channel) plus
`text_focus_attention` x position-aware loss + `text_focus_content` x content-aware loss
(`stisr.losses.text_focus`; official weights 10 and 0.0005), read by the frozen STT transformer
(asset `stt`) from the first 3 channels of SR and HR as the code does. The code multiplies the
total by 100 and clips gradients at 0.25 (the engine's business).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from stisr.losses.text_focus import text_focus_losses
from stisr.models.layers import tsrn_skeleton as skeleton
from stisr.models.layers.activations import ACTIVATIONS
from stisr.models.layers.config_utils import (
    as_tuple,
    check_choice,
    check_count,
    check_input,
    check_positive,
)
from stisr.models.layers.tbsrn_blocks import TBSRNBlock
from stisr.models.layers.tps_stn import tps_rectify
from stisr.models.layers.upsample import upsample_blocks
from stisr.models.objective import Batch, Context, Parts, SRModel, add_weighted

TEXT_FOCUS_LOSSES = ("text_focus_attention", "text_focus_content")
STT_ASSET = "stt"


@dataclass
class TBSRNConfig:
    """TBSRN hyper-parameters; features have 2 x `hidden_units` channels (official `--hd_u`)."""

    scale_factor: int = 2
    in_channels: int = 3  # official command: RGB (no --mask)
    out_channels: int = 3
    hidden_units: int = 32  # 64 feature channels; the attention runs on 128 = 64 + 64 (code)
    srb_nums: int = 5
    heads: int = 4
    dropout: float = 0.1  # attention probabilities and feed-forward, training mode only
    activation: str = "mish"
    use_stn: bool = True  # code flag `--STN`, on in the README
    stn_in_train_only: bool = False  # paper: always applied; code: only in training
    stn_input_size: tuple[int, int] = (16, 64)  # the STT head reads the LR itself
    stn_output_size: tuple[int, int] = (16, 64)
    num_control_points: int = 20
    tps_margins: tuple[float, float] = (0.05, 0.05)
    stn_activation: str = "none"
    tps_align_corners: bool = True  # grid_sample of the torch<1.3 the code was written for

    def __post_init__(self) -> None:
        for name in ("scale_factor", "in_channels", "out_channels", "hidden_units", "heads"):
            check_positive(getattr(self, name), f"TBSRNConfig.{name}")
        check_count(self.srb_nums, "TBSRNConfig.srb_nums")
        if self.hidden_units % 2 or (4 * self.hidden_units) % self.heads:
            raise ValueError(
                f"TBSRNConfig.hidden_units must be even (2D position code) and 4*hidden_units "
                f"divisible by heads, got hidden_units={self.hidden_units}, heads={self.heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TBSRNConfig.dropout must be in [0, 1), got {self.dropout}")
        check_positive(self.num_control_points, "TBSRNConfig.num_control_points")
        check_choice(self.activation, ACTIVATIONS, "TBSRNConfig.activation")
        check_choice(self.stn_activation, ("none", "sigmoid"), "TBSRNConfig.stn_activation")
        self.stn_input_size = as_tuple(self.stn_input_size, 2, int, "TBSRNConfig.stn_input_size")
        self.stn_output_size = as_tuple(self.stn_output_size, 2, int, "TBSRNConfig.stn_output_size")
        self.tps_margins = as_tuple(self.tps_margins, 2, float, "TBSRNConfig.tps_margins")
        upsample_blocks(self.scale_factor)  # validates the power of two


class TBSRN(SRModel, nn.Module):
    """forward(lr: (B, in_channels, H, W)) -> (B, out_channels, 2H, 2W), tanh-bounded."""

    objective_losses: ClassVar[frozenset[str]] = frozenset(TEXT_FOCUS_LOSSES)

    def __init__(self, config: TBSRNConfig | None = None) -> None:
        super().__init__()
        cfg = config or TBSRNConfig()
        self.config = cfg
        self.scale_factor = cfg.scale_factor
        self.in_channels = cfg.in_channels
        self.srb_nums = cfg.srb_nums
        channels = 2 * cfg.hidden_units
        # Built and saved by the official __init__ (conv 3->3 + BN), never used by its forward.
        self.conv = nn.Conv2d(3, 3, 3, 1, 1)
        self.bn = nn.BatchNorm2d(3)
        skeleton.add_head(self, cfg.in_channels, channels)
        blocks = [
            TBSRNBlock(channels, cfg.heads, cfg.dropout, cfg.activation)
            for _ in range(cfg.srb_nums)
        ]
        skeleton.add_blocks(self, blocks)
        skeleton.add_tail(self, cfg, channels)
        skeleton.add_stn(self, cfg)  # at 16x64 the head reads the LR itself (the STT code's head)

    @property
    def stn_active(self) -> bool:
        """Whether forward() rectifies the input in the current train/eval mode."""
        return skeleton.stn_active(self)

    def forward(self, lr: Tensor) -> Tensor:
        check_input(lr, self.config.in_channels, "TBSRN")
        x = lr
        if self.stn_active:
            # At 16x64 the head reads the LR itself and the TPS samples it (official); other
            # sizes are resized for the head only.
            x = tps_rectify(x, self.stn_head, self.tps, sample_resized=False)
        return skeleton.run_body(self, x, self.srb_nums).tanh()

    @classmethod
    def needed_assets(cls, weights: Mapping[str, float]) -> frozenset[str]:
        """The STT transformer, when a text-focus loss has a positive weight."""
        on = any(float(weights.get(name, 0.0)) > 0 for name in TEXT_FOCUS_LOSSES)
        return frozenset({STT_ASSET}) if on else frozenset()

    def training_loss(self, batch: Batch, ctx: Context) -> tuple[Tensor, Parts]:
        """Image losses (SR vs HR) + weighted position- and content-aware text-focus losses."""
        sr = self(self.sr_input(batch))
        hr = batch["hr"][:, : sr.shape[1]].to(sr)
        total: Tensor | None = None
        parts: Parts = {}
        if ctx.image_loss is not None:
            total, image_parts = ctx.image_loss(sr, hr)
            parts.update(image_parts)
        w_att, w_content = (ctx.weight(name) for name in TEXT_FOCUS_LOSSES)
        if w_att > 0 or w_content > 0:
            attention, content = text_focus_losses(
                ctx.asset(STT_ASSET), sr[:, :3], hr[:, :3], list(batch["label"])
            )
            if w_att > 0:
                total = add_weighted(total, parts, TEXT_FOCUS_LOSSES[0], attention, w_att)
            if w_content > 0:
                total = add_weighted(total, parts, TEXT_FOCUS_LOSSES[1], content, w_content)
        if total is None:
            raise ValueError("TBSRN: the run has neither an image loss nor a text-focus weight")
        return total, parts


def official_state_dict(raw: Mapping[str, Any]) -> dict[str, Tensor]:
    """STT's checkpoint (`{'state_dict_G': ..., 'info': ...}`) -> our keys, `module.` stripped."""
    state: Any = raw.get("state_dict_G", raw) if isinstance(raw, Mapping) else raw
    if not isinstance(state, Mapping):
        raise ValueError("TBSRN checkpoint: expected a dict with a 'state_dict_G' mapping")
    return {k.removeprefix("module."): v for k, v in state.items()}
