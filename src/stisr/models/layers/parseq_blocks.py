"""Building blocks of PARSeq (Bautista & Atienza, ECCV 2022) with the names of baudm/parseq v1.0.0.

The encoder is a timm `VisionTransformer` without class token or head (pos-embedding only for the
patch tokens); the decoder is PARSeq's pre-LN two-stream (XLNet-style) layer. Attribute names are
those of the official modules so that the released state dict maps one to one:
`patch_embed.proj`, `pos_embed`, `blocks.{i}.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}`,
`norm` (encoder) and `layers.{i}.{self_attn,cross_attn,linear1,linear2,norm1,norm2,norm_q,norm_c}`,
`norm` (decoder).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.models.layers.init import vit_init_

VIT_LN_EPS = 1e-6  # timm VisionTransformer's norm_layer = partial(LayerNorm, eps=1e-6)


class VitAttention(nn.Module):
    """timm `Attention`: fused qkv projection, explicit softmax(QK^T * scale) V.

    The explicit matmuls (instead of scaled_dot_product_attention) keep FLOP counting complete:
    FlopCounterMode does not see the CPU SDPA kernel.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q @ k.transpose(-2, -1)) * self.scale
        out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class VitMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class VitBlock(nn.Module):
    """Pre-LN transformer block (no dropout / drop-path: PARSeq trains its ViT without them)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=VIT_LN_EPS)
        self.attn = VitAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=VIT_LN_EPS)
        self.mlp = VitMlp(dim, dim * mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping (patch_h x patch_w) patches -> tokens in row-major order."""

    def __init__(self, patch: tuple[int, int], in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VitEncoder(nn.Module):
    """Returns all patch tokens after the final LayerNorm: (B, H/ph * W/pw, dim)."""

    def __init__(
        self,
        img_size: tuple[int, int],
        patch: tuple[int, int],
        dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: int,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        num_patches = (img_size[0] // patch[0]) * (img_size[1] // patch[1])
        self.patch_embed = PatchEmbed(patch, in_channels, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, dim))
        self.blocks = nn.Sequential(*[VitBlock(dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=VIT_LN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        vit_init_(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x) + self.pos_embed
        return self.norm(self.blocks(x))


class TwoStreamDecoderLayer(nn.Module):
    """PARSeq's pre-LN decoder layer; the query stream and (optionally) the content stream share
    the weights. `memory` is expected LayerNorm'd (the ViT output is)."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_c = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def _stream(
        self,
        tgt: Tensor,
        tgt_norm: Tensor,
        kv: Tensor,
        memory: Tensor,
        mask: Tensor | None,
        key_padding_mask: Tensor | None,
    ) -> Tensor:
        out = self.self_attn(tgt_norm, kv, kv, attn_mask=mask, key_padding_mask=key_padding_mask)
        tgt = tgt + self.dropout1(out[0])
        out = self.cross_attn(self.norm1(tgt), memory, memory)
        tgt = tgt + self.dropout2(out[0])
        ffn = self.linear2(self.dropout(F.gelu(self.linear1(self.norm2(tgt)))))
        return tgt + self.dropout3(ffn)

    def forward(
        self,
        query: Tensor,
        content: Tensor,
        memory: Tensor,
        query_mask: Tensor | None,
        content_mask: Tensor | None,
        padding_mask: Tensor | None,
        update_content: bool,
    ) -> tuple[Tensor, Tensor]:
        query_norm = self.norm_q(query)
        content_norm = self.norm_c(content)
        query = self._stream(query, query_norm, content_norm, memory, query_mask, padding_mask)
        if update_content:
            content = self._stream(
                content, content_norm, content_norm, memory, content_mask, padding_mask
            )
        return query, content


class TwoStreamDecoder(nn.Module):
    """Stack of two-stream layers; the last layer skips the (unused) content update."""

    def __init__(self, layer: TwoStreamDecoderLayer, num_layers: int, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([copy.deepcopy(layer) for _ in range(num_layers)])
        self.norm = nn.LayerNorm(dim)

    def forward(
        self,
        query: Tensor,
        content: Tensor,
        memory: Tensor,
        query_mask: Tensor | None = None,
        content_mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
    ) -> Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            query, content = layer(
                query, content, memory, query_mask, content_mask, padding_mask, i < last
            )
        return self.norm(query)


class TokenEmbedding(nn.Module):
    """Embedding scaled by sqrt(dim) (PARSeq `TokenEmbedding`; parameter `embedding.weight`)."""

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_tokens, dim)
        self.scale = math.sqrt(dim)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.scale * self.embedding(tokens)
