"""The transformer recognizer of Scene Text Telescope's text-focus loss (Chen et al., CVPR 2021).

Layout of FudanVI/FudanOCR `scene-text-telescope/loss/transformer.py` (`Transformer()`, released as
`pretrain_transformer.pth`, saved through DataParallel): a ResNet encoder (`encoder.cnn`: stem
conv 1->64 + 2x2 pool, conv 64->128, 2x2 pool, then four stages of BasicBlocks [1, 2, 5, 3] of
widths 256, 256, 512, 512, each followed by a 3x3 conv + BN + ReLU, the last one widening to 1024)
turns a 32x128 grey image into an 8x32 map; one post-norm decoder layer (`decoder`: causal
self-attention, cross-attention over the 256 map positions, feed-forward 2048; 16 heads) reads the
word embedding (512, scaled by sqrt(512)) concatenated with a 512-d sinusoid position code
(`pe.pe`, a saved buffer of 5000 rows); `generator_word.proj` gives 37 classes. With defaults the
state dict has the official keys and shapes, so the release loads strictly after
`official_state_dict`; the official model has 62,314,951 parameters.

Alphabet `-0123456789abcdefghijklmnopqrstuvwxyz`: class 0 (`-`) is the start token, the end token
and the padding, classes 1..36 are 0-9a-z, i.e. `stisr.charset.Charset()`. Teacher forcing as the
text-focus loss encodes labels: input `[0, c1, ..., cn]`, target `[c1, ..., cn, 0]`, batch padded
with 0 to the longest label + 1. Input as that loss feeds it: luma of the first 3 channels
(0.299/0.587/0.114) at 32x128, values left in [0, 1] (no normalization).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.charset import Charset, normalize_label
from stisr.models.layers.config_utils import as_tuple, check_positive
from stisr.models.layers.stt_blocks import (
    LayerNorm,
    MultiHeadedAttention,
    PositionwiseFeedForward,
    sinusoid_table,
)
from stisr.models.objective import Recognizer

ALPHABET = "-0123456789abcdefghijklmnopqrstuvwxyz"  # official `alphabet`; '-' = start/end/pad
CHARSET = Charset()  # same indices: 0 reserved ('-'), 1..36 = 0-9a-z
LUMA = (0.299, 0.587, 0.114)


@dataclass
class STTTransformerConfig:
    """Defaults are the released model; shrink widths/heads for demo scales."""

    img_h: int = 32
    img_w: int = 128
    in_channels: int = 1  # 1: luma grey (official); 3: RGB
    embed_dim: int = 512  # word embedding and position code each; decoder width is twice this
    heads: int = 16
    ff_dim: int = 2048
    encoder_widths: tuple[int, ...] = (64, 128, 256, 256, 512, 512)  # conv1, conv2, layer1..4
    encoder_blocks: tuple[int, ...] = (1, 2, 5, 3)
    dropout: float = 0.1
    max_positions: int = 5000  # rows of the saved position table `pe.pe`
    max_len: int = 25  # greedy decoding stops after this many characters

    def __post_init__(self) -> None:
        for name in ("img_h", "img_w", "embed_dim", "heads", "ff_dim", "max_positions", "max_len"):
            check_positive(getattr(self, name), f"STTTransformerConfig.{name}")
        if self.in_channels not in (1, 3):
            raise ValueError(
                f"STTTransformerConfig.in_channels must be 1 or 3, got {self.in_channels}"
            )
        if self.img_h % 4 or self.img_w % 4:
            raise ValueError(
                "STTTransformerConfig.img_h/img_w must be multiples of 4 (two 2x2 pools), "
                f"got {self.img_h}x{self.img_w}"
            )
        if self.embed_dim % 2 or (2 * self.embed_dim) % self.heads:
            raise ValueError(
                f"STTTransformerConfig: embed_dim {self.embed_dim} must be even and 2*embed_dim "
                f"divisible by heads {self.heads}"
            )
        self.encoder_widths = as_tuple(
            self.encoder_widths, 6, int, "STTTransformerConfig.encoder_widths"
        )
        self.encoder_blocks = as_tuple(
            self.encoder_blocks, 4, int, "STTTransformerConfig.encoder_blocks"
        )
        for v in (*self.encoder_widths, *self.encoder_blocks):
            check_positive(v, "STTTransformerConfig.encoder_widths/encoder_blocks")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"STTTransformerConfig.dropout must be in [0, 1), got {self.dropout}")

    @property
    def d_model(self) -> int:
        return 2 * self.embed_dim


def teacher_forcing_tensors(
    labels: Sequence[str], device: torch.device | str | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Labels -> (inputs (B, T), targets (B, T), lengths (B,)); T = longest label + 1.

    Labels are lower-cased and cut to 0-9a-z first (the official `str_filt(label, 'lower')`);
    `lengths` count the end token, so targets[b, :lengths[b]] are the supervised steps.
    """
    ids = [CHARSET.encode(normalize_label(s)) for s in labels]
    lengths = torch.tensor([len(e) + 1 for e in ids], dtype=torch.long)
    steps = int(lengths.max()) if ids else 1
    inputs = torch.zeros(len(ids), steps, dtype=torch.long)
    targets = torch.zeros(len(ids), steps, dtype=torch.long)
    for b, e in enumerate(ids):
        if e:
            row = torch.tensor(e, dtype=torch.long)
            inputs[b, 1 : len(e) + 1] = row
            targets[b, : len(e)] = row
    return inputs.to(device), targets.to(device), lengths.to(device)


def official_state_dict(raw: Mapping[str, Any]) -> dict[str, Tensor]:
    """`pretrain_transformer.pth` -> our keys: unwrap a wrapper dict, strip `module.`."""
    state: Any = raw
    for key in ("state_dict", "model", "state_dict_G"):
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise ValueError("STT transformer checkpoint: expected a state-dict mapping")
    return {k.removeprefix("module."): v for k, v in state.items()}


class BasicBlock(nn.Module):
    """3x3 conv-BN-ReLU-3x3 conv-BN + skip (a 3x3 conv + BN `downsample` when widths differ)."""

    def __init__(self, inplanes: int, planes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = (
            nn.Sequential(nn.Conv2d(inplanes, planes, 3, 1, 1), nn.BatchNorm2d(planes))
            if inplanes != planes
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(out + skip)


def _conv_bn(inplanes: int, planes: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(inplanes, planes, 3, 1, 1), nn.BatchNorm2d(planes)


class STTResNet(nn.Module):
    """(B, C, H, W) -> (B, out, H/4, W/4); names as the official `ResNet` (`encoder.cnn`)."""

    def __init__(
        self, in_channels: int, widths: Sequence[int], blocks: Sequence[int], out: int
    ) -> None:
        super().__init__()
        w0, w1, w2, w3, w4, w5 = widths
        self.conv1, self.bn1 = _conv_bn(in_channels, w0)
        self.conv2, self.bn2 = _conv_bn(w0, w1)
        stages = ((w1, w2), (w2, w3), (w3, w4), (w4, w5))
        for i, ((cin, cout), n) in enumerate(zip(stages, blocks, strict=True), start=1):
            layers = [BasicBlock(cin, cout)] + [BasicBlock(cout, cout) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            prefix = f"layer{i}_conv" if i < 4 else "layer4_conv2"
            conv, bn = _conv_bn(cout, cout if i < 4 else out)
            setattr(self, prefix, conv)
            setattr(self, f"{prefix}_bn" if i == 4 else f"layer{i}_bn", bn)

    def forward(self, x: Tensor) -> Tensor:
        # The official module builds six 2x2 pools; its forward uses only these two.
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            conv = getattr(self, f"layer{i}_conv" if i < 4 else "layer4_conv2")
            bn = getattr(self, f"layer{i}_bn" if i < 4 else "layer4_conv2_bn")
            x = F.relu(bn(conv(x)))
        return x


class _Encoder(nn.Module):
    def __init__(self, cnn: STTResNet) -> None:
        super().__init__()
        self.cnn = cnn


class _Embeddings(nn.Module):
    def __init__(self, dim: int, vocab: int) -> None:
        super().__init__()
        self.lut = nn.Embedding(vocab, dim)


class _PositionalEncoding(nn.Module):
    def __init__(self, dim: int, dropout: float, rows: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("pe", sinusoid_table(rows, dim).unsqueeze(0))  # saved, as official


class _Generator(nn.Module):
    def __init__(self, dim: int, vocab: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, vocab)


class STTDecoder(nn.Module):
    """One post-norm layer: causal self-attention, cross-attention (its map is returned), FFN."""

    def __init__(self, d_model: int, heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        self.mask_multihead = MultiHeadedAttention(heads, d_model, dropout)
        self.mul_layernorm1 = LayerNorm(d_model)
        self.multihead = MultiHeadedAttention(heads, d_model, dropout)
        self.mul_layernorm2 = LayerNorm(d_model)
        self.pff = PositionwiseFeedForward(d_model, ff_dim, dropout)
        self.mul_layernorm3 = LayerNorm(d_model)

    def forward(self, text: Tensor, memory: Tensor) -> tuple[Tensor, Tensor]:
        steps = text.shape[1]
        causal = torch.ones(steps, steps, dtype=torch.bool, device=text.device).tril()
        x = self.mul_layernorm1(text + self.mask_multihead(text, text, text, causal)[0])
        aligned, attn = self.multihead(x, memory, memory)
        x = self.mul_layernorm2(x + aligned)
        x = self.mul_layernorm3(x + self.pff(x))
        assert attn is not None
        return x, attn


class STTTransformer(Recognizer, nn.Module):
    """forward(x: (B, in_channels, H, W)) -> greedy per-step logits (B, L, 37); see module doc."""

    def __init__(self, config: STTTransformerConfig | None = None) -> None:
        super().__init__()
        cfg = config or STTTransformerConfig()
        self.config = cfg
        self.charset = CHARSET
        self.num_classes = len(ALPHABET)
        self.embedding_word = _Embeddings(cfg.embed_dim, self.num_classes)
        self.pe = _PositionalEncoding(cfg.embed_dim, cfg.dropout, cfg.max_positions)
        cnn = STTResNet(cfg.in_channels, cfg.encoder_widths, cfg.encoder_blocks, cfg.d_model)
        self.encoder = _Encoder(cnn)
        self.decoder = STTDecoder(cfg.d_model, cfg.heads, cfg.ff_dim, cfg.dropout)
        self.generator_word = _Generator(cfg.d_model, self.num_classes)
        for p in self.parameters():  # the official model's initialisation
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        # Optional (37, 37) confusion weights of the text-focus content loss (not saved): set by
        # whoever loads the official `confuse.pkl`, see stisr.losses.text_focus.
        self.confusion_weights: Tensor | None
        self.register_buffer("confusion_weights", None, persistent=False)

    def set_confusion_weights(self, table: Tensor | None) -> None:
        """Attach the content loss's (37, 37) weight table (None: plain cross-entropy)."""
        if table is not None and tuple(table.shape) != (self.num_classes, self.num_classes):
            raise ValueError(f"confusion weights must be (37, 37), got {tuple(table.shape)}")
        self.confusion_weights = None if table is None else table.detach().float()

    def preprocess(self, rgb: Tensor) -> Tensor:
        """(B, 3|4, H, W) RGB(M) in [0, 1] -> (B, in_channels, img_h, img_w), [0, 1].

        TextZoom SR/HR images are already 32x128, so the official input is only the luma; other
        sizes are resized bicubically first (as the repository's other recognizers do).
        """
        if rgb.dim() != 4 or rgb.shape[1] not in (3, 4):
            raise ValueError(
                f"STTTransformer.preprocess expects (B, 3|4, H, W), got {tuple(rgb.shape)}"
            )
        x = rgb[:, :3].float()
        size = (self.config.img_h, self.config.img_w)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
        if self.config.in_channels == 1:
            x = LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3]
        return x

    def encode(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> the decoder's memory (B, H/4 * W/4, d_model)."""
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != cfg.in_channels or x.shape[2] % 4 or x.shape[3] % 4:
            raise ValueError(
                f"STTTransformer expects (B, {cfg.in_channels}, H, W) input with H, W multiples "
                f"of 4, got {tuple(x.shape)}; use preprocess() first"
            )
        return self.encoder.cnn(x).flatten(2).transpose(1, 2)

    def decode_steps(self, memory: Tensor, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Token ids (B, T) -> (logits (B, T, 37), cross-attention maps (B, heads, T, HW))."""
        cfg = self.config
        steps = inputs.shape[1]
        if steps > cfg.max_positions:
            raise ValueError(f"{steps} decoding steps exceed max_positions={cfg.max_positions}")
        words = self.embedding_word.lut(inputs) * math.sqrt(cfg.embed_dim)
        position = self.pe.pe[:, :steps].to(words.dtype).expand(inputs.shape[0], -1, -1)
        text = torch.cat([words, self.pe.dropout(position)], dim=2)
        out, attn = self.decoder(text, memory)
        return self.generator_word.proj(out), attn

    def forward_teacher(self, x: Tensor, labels: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Teacher forcing on the labels -> (char logits (B, T, 37), attention (B, heads, T, HW)).

        T is the longest label + 1 (the end step); steps past a label's end are padding.
        """
        if len(labels) != x.shape[0]:
            raise ValueError(f"STTTransformer got {len(labels)} labels for {x.shape[0]} images")
        inputs, _, _ = teacher_forcing_tensors(labels, x.device)
        return self.decode_steps(self.encode(x), inputs)

    def forward(self, x: Tensor) -> Tensor:
        """Greedy decoding from the start token until every word emitted the end token.

        The repository has no inference code for this model (the text-focus loss only uses
        teacher forcing); this re-runs the decoder on the growing prefix, at most max_len + 1 steps.
        """
        memory = self.encode(x)
        inputs = torch.zeros(x.shape[0], 1, dtype=torch.long, device=x.device)
        ended = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        logits: list[Tensor] = []
        for step in range(self.config.max_len + 1):
            last = self.decode_steps(memory, inputs)[0][:, -1]
            logits.append(last)
            nxt = last.argmax(dim=-1)
            ended |= nxt == 0
            if bool(ended.all()) or step == self.config.max_len:
                break
            inputs = torch.cat([inputs, nxt.unsqueeze(1)], dim=1)
        return torch.stack(logits, dim=1)

    def decode(self, logits: Tensor) -> list[str]:
        """(B, L, 37) step logits -> text up to the first end token (class 0)."""
        out = []
        for row in logits.detach().argmax(dim=-1).tolist():
            ids = row[: row.index(0)] if 0 in row else row
            out.append(self.charset.decode(ids))
        return out

    def text_loss(self, x: Tensor, labels: Sequence[str]) -> Tensor:
        """Teacher-forced cross-entropy over every label step and end token, mean per step.

        The training code of the release is not public; this is the reduction the text-focus loss
        uses (one mean over all characters of the batch).
        """
        logits, _ = self.forward_teacher(x, labels)
        _, targets, lengths = teacher_forcing_tensors(labels, x.device)
        valid = torch.arange(targets.shape[1], device=x.device)[None] < lengths[:, None]
        return F.cross_entropy(logits[valid].float(), targets[valid])
