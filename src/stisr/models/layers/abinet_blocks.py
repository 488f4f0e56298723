"""Vision and language models shared by ABINet (Fang et al., CVPR 2021) and MATRN (Na et al.,
ECCV 2022).

MATRN reuses ABINet's vision model and bidirectional cloze language model (BCN) unchanged, so
both recognizers are assembled from the pieces here and in `abinet_transformer.py`; their common
config and model base class are in models/rec/abinet_base.py. Attribute, buffer and
Sequential-index names follow FangShancheng/ABINet `modules/` (resnet.py, backbone.py,
attention.py, model_vision.py, model_language.py) so that the released checkpoints load with
strict=True.

Class 0 is the null/end token (37 classes with the official 36-character charset). Every sequence
has `max_length + 1` positions (the extra one for the end token). The `cfg` the modules take is an
`ABINetBaseConfig` (models/rec/abinet_base.py) or a subclass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from stisr.models.layers.abinet_transformer import (
    BCNDecoder,
    PositionalEncoding,
    TransformerEncoder,
)
from stisr.models.layers.init import he_fan_out_

NULL_LABEL = 0
# ResNet-45 (modules/resnet.py): stem width, then 5 stages of BasicBlocks; stages 1 and 3 halve
# the resolution, so the 32x128 input becomes an 8x32 feature map.
RESNET45_WIDTHS = (32, 32, 64, 128, 256, 512)
RESNET45_BLOCKS = (3, 4, 6, 6, 3)
RESNET45_STRIDES = (2, 1, 2, 1, 1)
FEATURE_STRIDE = 4


# ---------------------------------------------------------------------------------------------
# Vision model


class BasicBlock(nn.Module):
    """ResNet-45 block: 1x1 conv then a (strided) 3x3 conv, both without bias."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class ResNet45(nn.Module):
    def __init__(self, widths: Sequence[int], blocks: Sequence[int]) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        inplanes = widths[0]
        for i, (planes, n, stride) in enumerate(
            zip(widths[1:], blocks, RESNET45_STRIDES, strict=True), 1
        ):
            layers = [BasicBlock(inplanes, planes, stride)]
            layers += [BasicBlock(planes, planes) for _ in range(n - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*layers))
            inplanes = planes
        self._init_weights()

    def _init_weights(self) -> None:
        # He-normal over fan-out, as in the official resnet.py (matters when training from
        # scratch); its BatchNorm re-init (weight 1, bias 0) is torch's default already.
        he_fan_out_(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, 6):
            x = getattr(self, f"layer{i}")(x)
        return x


class ResTransformer(nn.Module):
    """ResNet-45 followed by a transformer encoder over the flattened 1/4-scale feature map."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        h, w = cfg.feature_size
        self.resnet = ResNet45(cfg.backbone_widths, cfg.backbone_blocks)
        self.pos_encoder = PositionalEncoding(cfg.d_model, h * w, cfg.dropout)
        self.transformer = TransformerEncoder(
            cfg.vision_layers, cfg.d_model, cfg.nhead, cfg.d_inner, cfg.dropout
        )

    def forward(self, images: Tensor) -> Tensor:
        feature = self.resnet(images)
        n, c, h, w = feature.shape
        seq = self.pos_encoder(feature.flatten(2).permute(2, 0, 1))  # (HW, N, E)
        seq = self.transformer(seq)
        return seq.permute(1, 2, 0).reshape(n, c, h, w)


def _encoder_layer(in_c: int, out_c: int, stride: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_c, out_c, 3, stride, 1), nn.BatchNorm2d(out_c), nn.ReLU(True))


def _decoder_layer(in_c: int, out_c: int, upsample: nn.Upsample) -> nn.Sequential:
    return nn.Sequential(
        upsample, nn.Conv2d(in_c, out_c, 3, 1, 1), nn.BatchNorm2d(out_c), nn.ReLU(True)
    )


class PositionAttention(nn.Module):
    """Queries = projected position encodings; keys = a small U-Net over the feature map."""

    def __init__(self, max_length: int, in_channels: int, num_channels: int, h: int, w: int):
        super().__init__()
        self.max_length = max_length
        strides = ((1, 2), (2, 2), (2, 2), (2, 2))
        widths = (in_channels, num_channels, num_channels, num_channels, num_channels)
        self.k_encoder = nn.Sequential(
            *(_encoder_layer(widths[i], widths[i + 1], s) for i, s in enumerate(strides))
        )
        ups = [nn.Upsample(scale_factor=2, mode="nearest") for _ in range(3)]
        ups.append(nn.Upsample(size=(h, w), mode="nearest"))
        outs = (num_channels, num_channels, num_channels, in_channels)
        self.k_decoder = nn.Sequential(
            *(_decoder_layer(num_channels, out, up) for out, up in zip(outs, ups, strict=True))
        )
        self.pos_encoder = PositionalEncoding(in_channels, max_length, 0.0)
        self.project = nn.Linear(in_channels, in_channels)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, E, H, W) -> attended vectors (N, T, E) and attention maps (N, T, H, W)."""
        n, e, h, w = x.shape
        k = x
        skips = []
        for layer in self.k_encoder:
            k = layer(k)
            skips.append(k)
        for i in range(len(self.k_decoder) - 1):
            k = self.k_decoder[i](k) + skips[len(self.k_decoder) - 2 - i]
        k = self.k_decoder[-1](k)
        q = self.project(self.pos_encoder.pe[: self.max_length, 0])  # (T, E), batch-independent
        scores = torch.einsum("te,nel->ntl", q, k.flatten(2)) / math.sqrt(e)
        scores = scores.softmax(dim=-1)  # (N, T, HW)
        vecs = torch.bmm(scores, x.flatten(2).transpose(1, 2))  # (N, T, E)
        return vecs, scores.view(n, -1, h, w)


class VisionOutput(NamedTuple):
    feature: Tensor  # (N, T, E) one vector per character position
    logits: Tensor  # (N, T, C)
    attn_scores: Tensor  # (N, T, H, W)
    backbone_feature: Tensor  # (N, E, H, W) what MATRN's multi-modal module reads


class BaseVision(nn.Module):
    def __init__(self, cfg: Any, num_classes: int) -> None:
        super().__init__()
        h, w = cfg.feature_size
        self.backbone = ResTransformer(cfg)
        self.attention = PositionAttention(
            cfg.max_length + 1, cfg.d_model, cfg.attention_channels, h, w
        )
        self.cls = nn.Linear(cfg.d_model, num_classes)

    def forward(self, images: Tensor) -> VisionOutput:
        features = self.backbone(images)
        vecs, scores = self.attention(features)
        return VisionOutput(vecs, self.cls(vecs), scores, features)


# ---------------------------------------------------------------------------------------------
# Language model


def padding_mask(lengths: Tensor, max_length: int) -> Tensor:
    """(N, T) bool, True at positions >= length (ignored as attention keys)."""
    grid = torch.arange(max_length, device=lengths.device).unsqueeze(0)
    return grid >= lengths.unsqueeze(-1)


def location_mask(size: int, device: torch.device) -> Tensor:
    """(T, T) bool mask, True on the diagonal: each position is hidden from itself (the cloze).

    The official code passes the same mask as a float -inf diagonal; bool keeps both masks of
    the attention call the same type.
    """
    return torch.eye(size, dtype=torch.bool, device=device)


class BCNLanguage(nn.Module):
    """Bidirectional cloze network: position queries attend to all other predicted tokens."""

    def __init__(self, cfg: Any, num_classes: int) -> None:
        super().__init__()
        self.max_length = cfg.max_length + 1
        self.detach = cfg.language_detach
        self.proj = nn.Linear(num_classes, cfg.d_model, bias=False)
        self.token_encoder = PositionalEncoding(cfg.d_model, self.max_length, cfg.dropout)
        self.pos_encoder = PositionalEncoding(cfg.d_model, self.max_length, 0.0)
        self.model = BCNDecoder(
            cfg.language_layers, cfg.d_model, cfg.nhead, cfg.d_inner, cfg.dropout
        )
        self.cls = nn.Linear(cfg.d_model, num_classes)

    def forward(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Token probabilities (N, T, C) + lengths (N,) -> features (N, T, E), logits (N, T, C)."""
        if self.detach:
            tokens = tokens.detach()
        embed = self.token_encoder(self.proj(tokens).permute(1, 0, 2))  # (T, N, E)
        query = self.pos_encoder(torch.zeros_like(embed))
        mask = padding_mask(lengths, self.max_length)
        out = self.model(query, embed, location_mask(self.max_length, tokens.device), mask)
        out = out.permute(1, 0, 2)
        return out, self.cls(out)


# ---------------------------------------------------------------------------------------------
# Decoding


def greedy_lengths(logits: Tensor) -> Tensor:
    """Index of the first end token + 1 per sample, or T when none is predicted."""
    is_null = logits.argmax(dim=-1) == NULL_LABEL  # (N, T)
    first = is_null.int().argmax(dim=-1)  # first True (argmax returns the first maximum)
    full = torch.full_like(first, logits.shape[1])
    return torch.where(is_null.any(dim=-1), first + 1, full)


def fusion_gate(w_att: nn.Linear, first: Tensor, second: Tensor) -> Tensor:
    """sigmoid(W [first; second]): the per-channel gate of ABINet's and MATRN's fusion."""
    return torch.sigmoid(w_att(torch.cat((first, second), dim=2)))
