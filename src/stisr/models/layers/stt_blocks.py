"""Transformer pieces shared by TBSRN and the STT recognizer (Scene Text Telescope, CVPR 2021).

Both networks of FudanVI/FudanOCR `scene-text-telescope/` (`model/tbsrn.py`, `loss/transformer.py`)
define the same three modules in the style of the Annotated Transformer, and the released weights
use their attribute names, so these keep them: `LayerNorm` (`a_2`, `b_2`; unbiased std, eps added
to the std, not the variance), `MultiHeadedAttention` (`linears.0-3` for query/key/value/output,
plus a `compress_attention_linear` that the forward never calls but the checkpoints contain) and
`PositionwiseFeedForward` (`w_1`, `w_2`). The sinusoid tables follow the same code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm(nn.Module):
    """a_2 * (x - mean) / (std + eps) + b_2 over the last dim, std unbiased (the official norm)."""

    def __init__(self, features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.a_2 = nn.Parameter(torch.ones(features))
        self.b_2 = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.a_2 * (x - mean) / (std + self.eps) + self.b_2


class MultiHeadedAttention(nn.Module):
    """Scaled dot-product attention with `heads` heads over d_model features.

    forward(query (B, Tq, D), key/value (B, Tk, D), mask) -> (out (B, Tq, D), attention
    (B, heads, Tq, Tk) or None). `mask` is a boolean (Tq, Tk) or (B, Tq, Tk) tensor, True where
    attending is allowed. Dropout acts on the attention probabilities (training mode only). With
    `need_weights=False` the fused kernel is used (same maths; TBSRN attends over 1024 positions
    and never reads the map).
    """

    def __init__(self, heads: int, d_model: int, dropout: float = 0.1) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by {heads} heads")
        self.heads = heads
        self.d_k = d_model // heads
        self.linears = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(4))
        self.dropout = nn.Dropout(p=dropout)
        # Built (and saved) by the official module, never used in its forward.
        self.compress_attention_linear = nn.Linear(heads, 1)

    def _split(self, layer: nn.Module, x: Tensor) -> Tensor:
        return layer(x).view(x.shape[0], -1, self.heads, self.d_k).transpose(1, 2)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        mask: Tensor | None = None,
        need_weights: bool = True,
    ) -> tuple[Tensor, Tensor | None]:
        batch = query.shape[0]
        q = self._split(self.linears[0], query)
        k = self._split(self.linears[1], key)
        v = self._split(self.linears[2], value)
        if mask is not None and mask.dim() == 3:
            mask = mask.unsqueeze(1)  # same mask for every head
        attn: Tensor | None = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.d_k)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            attn = scores.softmax(dim=-1)
            out = self.dropout(attn) @ v
        else:
            p = self.dropout.p if self.training else 0.0
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = out.transpose(1, 2).reshape(batch, -1, self.heads * self.d_k)
        return self.linears[3](out), attn


class PositionwiseFeedForward(nn.Module):
    """w_2(dropout(relu(w_1(x))))."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(self.dropout(F.relu(self.w_1(x))))


def sinusoid_table(length: int, dim: int) -> Tensor:
    """(length, dim) table: sin at even, cos at odd features, wavelengths 10000^(2i/dim)."""
    if dim % 2:
        raise ValueError(f"sinusoid_table needs an even dim, got {dim}")
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)
    return table


def positional_encoding_2d(channels: int, height: int, width: int) -> Tensor:
    """(channels, height, width) 2D sinusoid code of TBSRN's self-attention module.

    The first half of the channels encodes the column (sin/cos interleaved), the second half the
    row, with the 1D frequencies of a `channels / 2` table (`positionalencoding2d` in tbsrn.py).
    """
    if channels % 4:
        raise ValueError(f"positional_encoding_2d needs channels divisible by 4, got {channels}")
    half = channels // 2
    div = torch.exp(torch.arange(0, half, 2, dtype=torch.float32) * -(math.log(10000.0) / half))
    cols = torch.arange(width, dtype=torch.float32).unsqueeze(1) * div  # (W, half/2)
    rows = torch.arange(height, dtype=torch.float32).unsqueeze(1) * div  # (H, half/2)
    pe = torch.zeros(channels, height, width)
    pe[0:half:2] = torch.sin(cols).t().unsqueeze(1).expand(-1, height, -1)
    pe[1:half:2] = torch.cos(cols).t().unsqueeze(1).expand(-1, height, -1)
    pe[half::2] = torch.sin(rows).t().unsqueeze(2).expand(-1, -1, width)
    pe[half + 1 :: 2] = torch.cos(rows).t().unsqueeze(2).expand(-1, -1, width)
    return pe
