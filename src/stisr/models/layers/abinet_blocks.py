"""Building blocks shared by ABINet (Fang et al., CVPR 2021) and MATRN (Na et al., ECCV 2022).

MATRN reuses ABINet's vision model and bidirectional cloze language model (BCN) unchanged, so
both recognizers are assembled from the pieces here. Attribute, buffer and Sequential-index names
follow FangShancheng/ABINet `modules/` (resnet.py, backbone.py, attention.py, model_vision.py,
model_language.py, transformer.py) so that the released checkpoints load with strict=True;
`PositionalEncoding.pe` is a persistent buffer there, hence here too.

Both models read the 36-character charset file of the official code, whose order is
`a-z` then `1-9` then `0`, with the null/end token at class 0 (37 classes). Every sequence has
`max_length + 1` positions (the extra one for the end token).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.charset import Charset
from stisr.models.layers.aux_ctc import aux_ctc_loss
from stisr.models.layers.config_utils import as_tuple, check_positive, check_weight
from stisr.models.layers.init import he_fan_out_
from stisr.models.objective import Recognizer

# data/charset_36.txt of the official repositories: line i holds the character of class i + 1.
ABINET_CHARS = "abcdefghijklmnopqrstuvwxyz1234567890"
NULL_LABEL = 0
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ResNet-45 (modules/resnet.py): stem width, then 5 stages of BasicBlocks; stages 1 and 3 halve
# the resolution, so the 32x128 input becomes an 8x32 feature map.
RESNET45_WIDTHS = (32, 32, 64, 128, 256, 512)
RESNET45_BLOCKS = (3, 4, 6, 6, 3)
RESNET45_STRIDES = (2, 1, 2, 1, 1)
FEATURE_STRIDE = 4


@dataclass
class ABINetBaseConfig:
    """Fields common to ABINet and MATRN; defaults are the official `train_abinet.yaml` model."""

    img_h: int = 32
    img_w: int = 128
    max_length: int = 25  # characters; the models predict max_length + 1 positions
    d_model: int = 512
    nhead: int = 8
    d_inner: int = 2048
    dropout: float = 0.1
    backbone_widths: tuple[int, ...] = RESNET45_WIDTHS  # stem + 5 stages; last == d_model
    backbone_blocks: tuple[int, ...] = RESNET45_BLOCKS
    vision_layers: int = 3  # transformer layers after the ResNet (`backbone_ln`)
    attention_channels: int = 64  # width of the position attention's key U-Net
    language_layers: int = 4
    language_detach: bool = True  # no gradient from the language model into the vision model
    iter_size: int = 3  # rounds of language-model refinement
    # Weight of an auxiliary CTC loss on the vision backbone's column features (mean over rows),
    # per token like the cross-entropies (models/layers/aux_ctc.py): a training aid for short CPU
    # schedules. 0 = the official model (no extra parameters).
    aux_ctc: float = 0.0

    def __post_init__(self) -> None:
        name = type(self).__name__
        check_weight(self.aux_ctc, f"{name}.aux_ctc")
        for field in (
            "img_h",
            "img_w",
            "max_length",
            "d_model",
            "nhead",
            "d_inner",
            "vision_layers",
            "attention_channels",
            "language_layers",
            "iter_size",
        ):
            check_positive(getattr(self, field), f"{name}.{field}")
        # The position attention's key U-Net halves the 1/4-scale map 3x in height and 4x in
        # width and adds the skip connections back, which needs these multiples.
        if self.img_h % 32 or self.img_w % 64:
            raise ValueError(
                f"{name}.img_h must be a multiple of 32 and img_w a multiple of 64, "
                f"got {self.img_h}x{self.img_w}"
            )
        if self.d_model % self.nhead:
            raise ValueError(f"{name}.d_model ({self.d_model}) must be divisible by nhead")
        if isinstance(self.dropout, bool) or not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"{name}.dropout must be in [0, 1), got {self.dropout!r}")
        self.dropout = float(self.dropout)
        self.backbone_widths = as_tuple(self.backbone_widths, 6, int, f"{name}.backbone_widths")
        self.backbone_blocks = as_tuple(self.backbone_blocks, 5, int, f"{name}.backbone_blocks")
        for w in (*self.backbone_widths, *self.backbone_blocks):
            check_positive(w, f"{name}.backbone_widths/backbone_blocks")
        if self.backbone_widths[-1] != self.d_model:
            raise ValueError(
                f"{name}.backbone_widths[-1] ({self.backbone_widths[-1]}) must equal d_model "
                f"({self.d_model}): the transformer reads the ResNet output directly"
            )

    @property
    def feature_size(self) -> tuple[int, int]:
        return self.img_h // FEATURE_STRIDE, self.img_w // FEATURE_STRIDE


# ---------------------------------------------------------------------------------------------
# Generic pieces


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

    def __init__(self, cfg: ABINetBaseConfig) -> None:
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
    def __init__(self, cfg: ABINetBaseConfig, num_classes: int) -> None:
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

    def __init__(self, cfg: ABINetBaseConfig, num_classes: int) -> None:
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
# Decoding, targets, loss, checkpoints


def greedy_lengths(logits: Tensor) -> Tensor:
    """Index of the first end token + 1 per sample, or T when none is predicted."""
    is_null = logits.argmax(dim=-1) == NULL_LABEL  # (N, T)
    first = is_null.int().argmax(dim=-1)  # first True (argmax returns the first maximum)
    full = torch.full_like(first, logits.shape[1])
    return torch.where(is_null.any(dim=-1), first + 1, full)


def fusion_gate(w_att: nn.Linear, first: Tensor, second: Tensor) -> Tensor:
    """sigmoid(W [first; second]): the per-channel gate of ABINet's and MATRN's fusion."""
    return torch.sigmoid(w_att(torch.cat((first, second), dim=2)))


def sequence_cross_entropy(outputs: Sequence[Tensor], targets: Tensor, lengths: Tensor) -> Tensor:
    """Mean cross entropy over the first `length` positions of every output (N, T, C).

    The official MultiLosses concatenates the outputs of all iterations along the batch before
    averaging; every output shares the same valid positions, so this is the same mean.
    """
    logits = torch.stack(list(outputs))  # (K, N, T, C)
    valid = padding_mask(lengths, targets.shape[1]).logical_not()  # (N, T)
    picked = logits[:, valid]  # (K, M, C)
    gold = targets[valid].expand(logits.shape[0], -1)
    return F.cross_entropy(picked.flatten(0, 1).float(), gold.flatten())


def unwrap_official(raw: Any, required_prefixes: Sequence[str], where: str) -> dict[str, Tensor]:
    """The `model` (or `state_dict`) sub-dict of a release file, `module.` prefixes removed.

    Checks the top-level sub-models so that a pretrain-vision or pretrain-language file, whose keys
    lack the `vision.`/`language.` prefixes, fails with a clear message instead of a key list.
    """
    if not isinstance(raw, Mapping):
        raise TypeError(f"{where}: expected a dict loaded from the release file, got {type(raw)}")
    state: Any = raw
    for key in ("model", "state_dict"):
        if isinstance(raw.get(key), Mapping):
            state = raw[key]
            break
    out: dict[str, Tensor] = {}
    for k, v in state.items():
        if not isinstance(v, Tensor):
            raise ValueError(f"{where}: entry {k!r} is not a tensor; not a model state dict")
        out[k[len("module.") :] if k.startswith("module.") else k] = v
    for prefix in required_prefixes:
        if not any(k.startswith(prefix) for k in out):
            raise ValueError(
                f"{where}: no '{prefix}*' keys; this is a partial checkpoint (pretrain-vision, "
                f"pretrain-language) or another model's, not the full model"
            )
    return out


class ABINetFamily(Recognizer, nn.Module):
    """Preprocessing, decoding and label encoding shared by ABINet and MATRN."""

    def __init__(self, cfg: ABINetBaseConfig) -> None:
        super().__init__()
        self.config = cfg
        self.charset = Charset(ABINET_CHARS)
        self.max_length = cfg.max_length + 1
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), False)
        # CTC over the backbone columns; the end token (class 0) doubles as the blank.
        self.aux_ctc_head = (
            nn.Linear(cfg.d_model, self.charset.num_classes) if cfg.aux_ctc > 0 else None
        )

    @property
    def num_classes(self) -> int:
        return self.charset.num_classes

    def preprocess(self, rgb: Tensor) -> Tensor:
        """(B, 3|4, H, W) RGB(M) in [0, 1] -> bicubic to img_h x img_w, ImageNet mean/std."""
        if rgb.dim() != 4 or rgb.shape[1] not in (3, 4):
            name = type(self).__name__
            raise ValueError(f"{name}.preprocess expects (B, 3|4, H, W), got {tuple(rgb.shape)}")
        size = (self.config.img_h, self.config.img_w)
        x = F.interpolate(rgb[:, :3].float(), size=size, mode="bicubic", align_corners=False)
        return (x - self._mean) / self._std

    def check_input(self, x: Tensor) -> None:
        expected = (3, self.config.img_h, self.config.img_w)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"{type(self).__name__} expects (B, {', '.join(map(str, expected))}) input, got "
                f"{tuple(x.shape)}; use preprocess() first"
            )

    def decode(self, logits: Tensor) -> list[str]:
        """Greedy: argmax per position, text up to the first end token."""
        best = logits.detach().argmax(dim=-1).tolist()
        texts = []
        for row in best:
            end = row.index(NULL_LABEL) if NULL_LABEL in row else len(row)
            texts.append(self.charset.decode(row[:end]))
        return texts

    def aux_ctc_term(self, backbone_feature: Tensor, targets: Tensor, lengths: Tensor) -> Tensor:
        """Weighted auxiliary CTC on (N, E, H, W) backbone features (0 when switched off)."""
        if self.aux_ctc_head is None:
            return backbone_feature.new_zeros(())
        columns = backbone_feature.mean(dim=2).transpose(1, 2)  # (N, W, E)
        ids = [row[: n - 1] for row, n in zip(targets.tolist(), lengths.tolist(), strict=True)]
        return self.config.aux_ctc * aux_ctc_loss(self.aux_ctc_head(columns), ids, per_token=True)

    def encode_targets(self, labels: Sequence[str], device: torch.device) -> tuple[Tensor, Tensor]:
        """Class targets (N, T) padded with the end token and lengths (N,) counting it."""
        rows = [
            self.charset.encode(self.charset.filter(s)[: self.config.max_length]) for s in labels
        ]
        targets = torch.full((len(rows), self.max_length), NULL_LABEL, dtype=torch.long)
        for i, row in enumerate(rows):
            targets[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        lengths = torch.tensor([len(r) + 1 for r in rows], dtype=torch.long)
        return targets.to(device), lengths.to(device)
