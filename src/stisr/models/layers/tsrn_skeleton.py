"""The skeleton the TSRN family shares (TSRN, TPGSR, TBSRN; TATT, LEMMA, C3-STISR, TG, PCAN).

TextZoom's `tsrn.py` layout, which the later codes copy: `block1` = conv9x9 + PReLU; `srb_nums`
blocks named `block2`..; `block{N+2}` = conv3x3 + BN; a long skip from `block1`; `block{N+3}` =
pixel-shuffle x2 blocks + conv9x9; tanh. A TPS-STN (`tps`, `stn_head`) rectifies the LR first.
The builders register the modules under the official names in the official order, so state dicts
map one to one and the random initialisation draws in the same order as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from stisr.models.layers.tps_stn import TPSSpatialTransformer, make_stn_head
from stisr.models.layers.upsample import upsample_tail


def add_head(model: nn.Module, in_channels: int, channels: int) -> None:
    model.block1 = nn.Sequential(
        nn.Conv2d(in_channels, channels, kernel_size=9, padding=4), nn.PReLU()
    )


def add_blocks(model: nn.Module, blocks: Sequence[nn.Module]) -> None:
    for i, block in enumerate(blocks):
        setattr(model, f"block{i + 2}", block)


def add_tail(model: nn.Module, cfg: Any, channels: int) -> None:
    """`block{N+2}` (conv3x3 + BN, closing the residual body) and `block{N+3}` (upsampling) from
    the config's `srb_nums`, `out_channels`, `scale_factor` and `activation`."""
    srb_nums, activation = cfg.srb_nums, cfg.activation
    mid = nn.Sequential(
        nn.Conv2d(channels, channels, kernel_size=3, padding=1), nn.BatchNorm2d(channels)
    )
    setattr(model, f"block{srb_nums + 2}", mid)
    tail = upsample_tail(channels, cfg.out_channels, cfg.scale_factor, activation)
    setattr(model, f"block{srb_nums + 3}", tail)


def add_stn(model: nn.Module, cfg: Any, head: type[nn.Module] | None = None) -> None:
    """`tps` + `stn_head` from the config's STN fields (a no-op when `use_stn` is off)."""
    if not cfg.use_stn:
        return
    model.tps = TPSSpatialTransformer(
        cfg.stn_output_size, cfg.num_control_points, cfg.tps_margins, cfg.tps_align_corners
    )
    args = (cfg.in_channels, cfg.num_control_points, cfg.stn_activation, cfg.stn_input_size)
    model.stn_head = head(*args) if head is not None else make_stn_head(*args)


def stn_active(model: nn.Module) -> bool:
    """Whether the STN rectifies the input in the current mode (the codes: training only)."""
    cfg = model.config
    return cfg.use_stn and (model.training or not cfg.stn_in_train_only)


def run_body(model: nn.Module, x: Tensor, srb_nums: int, *extra: Tensor) -> Tensor:
    """block1 -> the blocks (each also given `extra`, e.g. a text prior) -> mid -> skip -> tail."""
    shallow = model.block1(x)
    feat = shallow
    for i in range(srb_nums):
        feat = getattr(model, f"block{i + 2}")(feat, *extra)
    feat = getattr(model, f"block{srb_nums + 2}")(feat)
    return getattr(model, f"block{srb_nums + 3}")(shallow + feat)
