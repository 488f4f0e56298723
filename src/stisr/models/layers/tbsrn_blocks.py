"""TBSRN's building blocks (Scene Text Telescope, Chen et al., CVPR 2021).

Layout and attribute names of FudanVI/FudanOCR `scene-text-telescope/model/tbsrn.py` (and its
`stn_head.py`), so the released `state_dict_G` maps one to one:

* `FeatureEnhancer` (the paper's self-attention module): the residual feature map is concatenated
  with a 2D sinusoid position code of as many channels, flattened to a sequence, sent through one
  post-norm transformer layer (`multihead`, `mul_layernorm1`, `pff`, `mul_layernorm3`; 4 heads,
  feed-forward width = model width) and projected back (`linear`).
* `TBSRNBlock` (official `RecurrentResidualBlock`): conv-BN-Mish-conv-BN, the feature enhancer, a
  skip. It still builds TSRN's two row GRUs (`gru1`, `gru2`) that its forward never calls: the
  release contains them, so they stay.
* The STT code's localization net reads the 16x64 LR directly: `tps_stn.LowResSTNHead`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stisr.models.layers.activations import make_activation
from stisr.models.layers.recurrent import RecurrentLine
from stisr.models.layers.stt_blocks import (
    LayerNorm,
    MultiHeadedAttention,
    PositionwiseFeedForward,
    positional_encoding_2d,
)


class FeatureEnhancer(nn.Module):
    """(B, C, H, W) -> (B, C, H, W): self-attention over all H*W positions with a 2D position code.

    The official module hard-codes C = 64 and a 16x64 map (the LR size); the code is built here for
    the actual map size, which is the same tensor at 16x64.
    """

    def __init__(self, channels: int = 64, heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        d_model = 2 * channels
        self.channels = channels
        self.multihead = MultiHeadedAttention(heads, d_model, dropout)
        self.mul_layernorm1 = LayerNorm(d_model)
        self.pff = PositionwiseFeedForward(d_model, d_model, dropout)
        self.mul_layernorm3 = LayerNorm(d_model)
        self.linear = nn.Linear(d_model, channels)
        self._pe: dict[tuple, Tensor] = {}

    def position_code(self, height: int, width: int, like: Tensor) -> Tensor:
        """(C, H*W) position code on `like`'s device and dtype (cached per size)."""
        key = (height, width, like.device, like.dtype)
        if key not in self._pe:
            pe = positional_encoding_2d(self.channels, height, width)
            self._pe[key] = pe.view(self.channels, height * width).to(like)
        return self._pe[key]

    def forward(self, feat: Tensor) -> Tensor:
        b, c, h, w = feat.shape
        pe = self.position_code(h, w, feat).unsqueeze(0).expand(b, -1, -1)
        seq = feat.reshape(b, c, h * w)
        x = torch.cat([seq, pe], dim=1).transpose(1, 2)  # (B, HW, 2C): features, then code
        x = self.mul_layernorm1(x + self.multihead(x, x, x, need_weights=False)[0])
        x = self.mul_layernorm3(x + self.pff(x))
        return self.linear(x).transpose(1, 2).reshape(b, c, h, w)


class TBSRNBlock(nn.Module):
    """x + FeatureEnhancer(BN(conv(act(BN(conv(x)))))); `gru1`/`gru2` are built but unused."""

    def __init__(
        self, channels: int, heads: int = 4, dropout: float = 0.1, activation: str = "mish"
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.gru1 = RecurrentLine(channels, channels, "gru")  # unused, kept for the checkpoint
        self.prelu = make_activation(activation)  # named `prelu` though it is Mish, as official
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.gru2 = RecurrentLine(channels, channels, "gru")  # unused, kept for the checkpoint
        self.feature_enhancer = FeatureEnhancer(channels, heads, dropout)
        for p in self.parameters():  # the official block re-initialises every matrix this way
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, x: Tensor) -> Tensor:
        residual = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))
        return x + self.feature_enhancer(residual)
