"""Transformer pieces of ABINet (Fang et al., CVPR 2021), shared with MATRN (Na et al., ECCV 2022).

The sinusoidal positional encoding, the post-norm encoder layer (the PyTorch 1.5 layer ABINet
vendors) and the BCN's cross-attention-only decoder layer, with the attribute names of
FangShancheng/ABINet `modules/` (transformer.py, model_language.py) so that the released
checkpoints load with strict=True; `PositionalEncoding.pe` is a persistent buffer there, hence
here too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PositionalEncoding(nn.Module):
    """Sinusoidal table `pe` (max_len, 1, d_model), added to (T, N, E) sequences."""

    def __init__(self, d_model: int, max_len: int, dropout: float = 0.0) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)
        self.register_buffer("pe", pe.unsqueeze(1))  # persistent: part of official checkpoints
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(x + self.pe[: x.shape[0]])


class TransformerEncoderLayer(nn.Module):
    """Post-norm self-attention + ReLU feed-forward (the PyTorch 1.5 layer ABINet vendors)."""

    def __init__(self, d_model: int, nhead: int, d_inner: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, d_inner)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_inner, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: Tensor) -> Tensor:
        attn, _ = self.self_attn(src, src, src, need_weights=False)
        src = self.norm1(src + self.dropout1(attn))
        ff = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(ff))


class TransformerEncoder(nn.Module):
    """A stack of encoder layers kept in `layers` (no final norm, as in the official code)."""

    def __init__(self, num_layers: int, d_model: int, nhead: int, d_inner: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d_model, nhead, d_inner, dropout) for _ in range(num_layers)
        )

    def forward(self, src: Tensor) -> Tensor:
        for layer in self.layers:
            src = layer(src)
        return src


class BCNDecoderLayer(nn.Module):
    """Cross-attention + feed-forward without self-attention (`use_self_attn: False`).

    The missing self-attention is why the official layer has only `norm2`/`norm3`.
    """

    def __init__(self, d_model: int, nhead: int, d_inner: int, dropout: float) -> None:
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, d_inner)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_inner, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def forward(
        self, tgt: Tensor, memory: Tensor, memory_mask: Tensor, key_padding_mask: Tensor
    ) -> Tensor:
        attn, _ = self.multihead_attn(
            tgt,
            memory,
            memory,
            attn_mask=memory_mask,
            key_padding_mask=key_padding_mask,
            need_weights=False,
        )
        tgt = self.norm2(tgt + self.dropout2(attn))
        ff = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ff))


class BCNDecoder(nn.Module):
    def __init__(self, num_layers: int, d_model: int, nhead: int, d_inner: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            BCNDecoderLayer(d_model, nhead, d_inner, dropout) for _ in range(num_layers)
        )

    def forward(self, tgt: Tensor, memory: Tensor, memory_mask: Tensor, padding: Tensor) -> Tensor:
        for layer in self.layers:
            tgt = layer(tgt, memory, memory_mask, padding)
        return tgt
