"""Building blocks of SVTR (Du et al., IJCAI 2022) with the structured names of PaddleOCR's
`ppocr/modeling/backbones/rec_svtrnet.py` (`patch_embed.proj.{i}.{conv,norm}`, `pos_embed`,
`blocks{1,2,3}.{i}.{norm1,mixer.qkv,mixer.proj,norm2,mlp.fc1,mlp.fc2}`,
`sub_sample{1,2}.{conv,norm}`, `last_conv`, `norm`).

Paddle defaults that differ from torch are reproduced: block LayerNorms use eps 1e-6 while the
patch-merging LayerNorm keeps Paddle's default 1e-5, and the final dropout is Paddle's
`downscale_in_infer` mode (no rescaling in training, x(1-p) at inference).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.models.layers.init import vit_init_

BLOCK_LN_EPS = 1e-6  # SVTRNet(epsilon=1e-6) for norm1/norm2/final norm
SUB_LN_EPS = 1e-5  # sub_norm = "nn.LayerNorm" built with Paddle's default epsilon


class ConvBNLayer(nn.Module):
    """Conv (with bias, as PaddleOCR's patch embedding passes bias_attr=None) + BN + GELU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=True)
        self.norm = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.norm(self.conv(x)))


class PatchEmbed(nn.Module):
    """Two stride-2 ConvBN layers ("POPE", sub_num=2): (B, 3, H, W) -> (B, H/4 * W/4, dim)."""

    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(ConvBNLayer(in_channels, dim // 2), ConvBNLayer(dim // 2, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


def local_attention_mask(hw: Sequence[int], kernel: Sequence[int]) -> Tensor:
    """(HW, HW) additive mask: 0 inside the kernel window around each query, -inf outside.

    Offsets follow the Paddle construction: rows -(k//2) .. k-1-k//2 (symmetric for odd k).
    """
    height, width = hw
    kh, kw = kernel
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy = ys[None, :] - ys[:, None]
    dx = xs[None, :] - xs[:, None]
    inside = (dy >= -(kh // 2)) & (dy <= kh - 1 - kh // 2)
    inside &= (dx >= -(kw // 2)) & (dx <= kw - 1 - kw // 2)
    mask = torch.zeros(height * width, height * width)
    return mask.masked_fill(~inside, float("-inf"))


class Attention(nn.Module):
    """Global or local (window-masked) multi-head self-attention; the mask is not a parameter."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mixer: str,
        hw: Sequence[int],
        local_kernel: Sequence[int],
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SVTR dim {dim} is not divisible by num_heads {num_heads}")
        if mixer not in ("Global", "Local"):
            raise ValueError(f"SVTR mixer must be 'Global' or 'Local', got {mixer!r}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.mixer = mixer
        mask = local_attention_mask(hw, local_kernel) if mixer == "Local" else None
        self.register_buffer("mask", mask, persistent=False)  # Paddle keeps it out of the params

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.mask is not None:
            attn = attn + self.mask.to(attn.dtype)
        attn = self.attn_drop(attn.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(batch, tokens, dim)
        return self.proj_drop(self.proj(out))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class DropPath(nn.Module):
    """Per-sample stochastic depth (identity at inference or with p = 0)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * torch.floor(keep + torch.rand(shape, dtype=x.dtype, device=x.device)) / keep


class Block(nn.Module):
    """`prenorm=False` (all released SVTR models) is the usual pre-LN residual block; PaddleOCR's
    `prenorm=True` normalizes after each residual sum instead."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mixer: str,
        hw: Sequence[int],
        local_kernel: Sequence[int],
        mlp_ratio: float,
        drop_path: float,
        prenorm: bool,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=BLOCK_LN_EPS)
        self.mixer = Attention(dim, num_heads, mixer, hw, local_kernel)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=BLOCK_LN_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.prenorm = prenorm

    def forward(self, x: Tensor) -> Tensor:
        if self.prenorm:
            x = self.norm1(x + self.drop_path(self.mixer(x)))
            return self.norm2(x + self.drop_path(self.mlp(x)))
        x = x + self.drop_path(self.mixer(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class SubSample(nn.Module):
    """Conv patch merging: 3x3 conv with stride (2, 1) halves the height, then LayerNorm."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=(2, 1), padding=1)
        self.norm = nn.LayerNorm(out_channels, eps=SUB_LN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x).flatten(2).transpose(1, 2))


class DownscaleInInferDropout(nn.Module):
    """Paddle `Dropout(mode="downscale_in_infer")`: x * mask in training, x * (1 - p) at test."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            if self.p == 0.0:
                return x
            return x * (torch.rand_like(x) >= self.p).to(x.dtype)
        return x * (1.0 - self.p)


class SVTRNet(nn.Module):
    """Backbone: (B, 3, img_h, img_w) -> (B, out_channels, 1, out_char_num).

    `cfg` is an `SVTRConfig` (models/rec/svtr.py), read for its backbone fields.
    """

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        dims, depth = cfg.embed_dim, cfg.depth
        self.embed_dim = dims
        self.hw = (cfg.img_h // 4, cfg.img_w // 4)
        self.patch_embed = PatchEmbed(3, dims[0])
        self.pos_embed = nn.Parameter(torch.zeros(1, self.hw[0] * self.hw[1], dims[0]))
        rates = torch.linspace(0, cfg.drop_path_rate, sum(depth)).tolist()
        mixers = ["Local"] * cfg.local_blocks + ["Global"] * (sum(depth) - cfg.local_blocks)
        stages = []
        start = 0
        for stage, (dim, n) in enumerate(zip(dims, depth, strict=True)):
            hw = (self.hw[0] // 2**stage, self.hw[1])
            blocks = [
                Block(
                    dim,
                    cfg.num_heads[stage],
                    mixers[start + i],
                    hw,
                    cfg.local_kernel,
                    cfg.mlp_ratio,
                    rates[start + i],
                    cfg.prenorm,
                )
                for i in range(n)
            ]
            stages.append(nn.ModuleList(blocks))
            start += n
        self.blocks1, self.blocks2, self.blocks3 = stages
        self.sub_sample1 = SubSample(dims[0], dims[1])
        self.sub_sample2 = SubSample(dims[1], dims[2])
        self.avg_pool = nn.AdaptiveAvgPool2d((1, cfg.out_char_num))
        self.last_conv = nn.Conv2d(dims[2], cfg.out_channels, 1, bias=False)
        self.dropout = DownscaleInInferDropout(cfg.last_drop)
        self.norm = None if cfg.prenorm else nn.LayerNorm(dims[2], eps=BLOCK_LN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        vit_init_(self, convs=True)

    def _to_map(self, x: Tensor, dim: int, height: int) -> Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], dim, height, self.hw[1])

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for blk in self.blocks1:
            x = blk(x)
        x = self.sub_sample1(self._to_map(x, self.embed_dim[0], self.hw[0]))
        for blk in self.blocks2:
            x = blk(x)
        x = self.sub_sample2(self._to_map(x, self.embed_dim[1], self.hw[0] // 2))
        for blk in self.blocks3:
            x = blk(x)
        if self.norm is not None:
            x = self.norm(x)
        x = self.avg_pool(self._to_map(x, self.embed_dim[2], self.hw[0] // 4))
        return self.dropout(F.hardswish(self.last_conv(x)))
