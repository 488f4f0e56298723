"""ASTER (Shi et al., TPAMI 2019) with the exact module layout of ayumiymk/aster.pytorch.

`ASTER(ASTERConfig())` has the state-dict keys and shapes of the official
`ModelBuilder(arch="ResNet_ASTER", rec_num_classes=97, sDim=512, attDim=512, max_len_labels=100,
STN_ON=True)` with `--with_lstm` (the model TextZoom's `Aster_init` builds), so the released
`demo.pth.tar` loads with strict=True after `official_state_dict` (take `state_dict`, strip any
DataParallel `module.`).

Parts: TPS rectifier (`stn_head` + `tps`, shared with TSRN in `layers/tps_stn.py`; the STN reads a
bilinear 32x64 copy, the TPS samples a 32x100 image from the full-size input), a 45-block ResNet +
2-layer BiLSTM encoder (`encoder`), and a GRU attention decoder (`decoder.decoder`).

Classes (aster.pytorch `ALLCASES_SYMBOLS` = TextZoom `all`): the 94 printable characters
`stisr.charset.FULL_CHARSET` at ids 0..93, then EOS 94, PADDING 95, UNKNOWN 96; the decoder's start
token is id 97 (one extra embedding row).

Input as the STISR code feeds it (docs/protocols.md): RGB scaled to [-1, 1] at the size it comes
in (32x128 SR/HR, 16x64 LR); `input_size` resizes first. Inference runs the official beam search
(width 5, up to 100 steps): it keeps the first `beam_width` hypotheses that end with EOS (in step
order, best first within a step, as the official backtracking does) and returns the best of them
by summed log-probability; it stops as soon as every sample has them. Predictions are lower-cased
alphanumeric like TextZoom's `get_str_list`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.charset import EVAL_CHARSET, FULL_CHARSET, Charset, normalize_label
from stisr.models.layers.aux_ctc import aux_ctc_loss
from stisr.models.layers.config_utils import (
    as_tuple,
    check_choice,
    check_positive,
    check_weight,
)
from stisr.models.layers.tps_stn import STNHead, TPSSpatialTransformer, tps_rectify
from stisr.models.objective import Recognizer

# Stride of the first block of encoder.layer1..layer5 (height, width): 32 rows collapse to 1.
_STRIDES = ((2, 2), (2, 2), (2, 1), (2, 1), (2, 1))
_VOCABS = {"all": FULL_CHARSET, "lower": EVAL_CHARSET}
OFFICIAL_WIDTHS = (32, 32, 64, 128, 256, 512)  # layer0 .. layer5
OFFICIAL_BLOCKS = (3, 4, 6, 6, 3)  # AsterBlocks in layer1 .. layer5


@dataclass
class ASTERConfig:
    """Defaults reproduce the official model; shrink widths/blocks/dims for demo scales."""

    widths: tuple[int, ...] = OFFICIAL_WIDTHS
    blocks: tuple[int, ...] = OFFICIAL_BLOCKS
    with_lstm: bool = True
    lstm_hidden: int = 256
    s_dim: int = 512  # decoder GRU state (sDim)
    att_dim: int = 512  # attention and target-embedding width (attDim)
    max_len: int = 100  # decoding steps (and the longest label + EOS in training)
    beam_width: int = 5  # 1 = greedy
    voc_type: str = "all"  # "all": 94 printable chars (official); "lower": 0-9a-z
    use_stn: bool = True
    num_control_points: int = 20
    stn_input_size: tuple[int, int] = (32, 64)
    tps_output_size: tuple[int, int] = (32, 100)
    tps_margins: tuple[float, float] = (0.05, 0.05)
    stn_activation: str = "none"
    align_corners: bool = True  # TPS grid_sample as under torch<1.3, which ASTER was trained with
    input_size: tuple[int, int] | None = None  # None: read the image at its size (STISR code)
    # Weight of an auxiliary CTC loss on the encoder features (models/layers/aux_ctc.py): a
    # training aid for short CPU schedules. 0 = the official model (no extra parameters).
    aux_ctc: float = 0.0

    def __post_init__(self) -> None:
        self.widths = as_tuple(self.widths, 6, int, "ASTERConfig.widths")
        self.blocks = as_tuple(self.blocks, 5, int, "ASTERConfig.blocks")
        for name in ("lstm_hidden", "s_dim", "att_dim", "max_len", "beam_width"):
            check_positive(getattr(self, name), f"ASTERConfig.{name}")
        for w in (*self.widths, *self.blocks):
            check_positive(w, "ASTERConfig.widths/blocks")
        check_weight(self.aux_ctc, "ASTERConfig.aux_ctc")
        check_choice(self.voc_type, tuple(_VOCABS), "ASTERConfig.voc_type")
        check_choice(self.stn_activation, ("none", "sigmoid"), "ASTERConfig.stn_activation")
        self.stn_input_size = as_tuple(self.stn_input_size, 2, int, "ASTERConfig.stn_input_size")
        self.tps_output_size = as_tuple(self.tps_output_size, 2, int, "ASTERConfig.tps_output_size")
        self.tps_margins = as_tuple(self.tps_margins, 2, float, "ASTERConfig.tps_margins")
        if self.input_size is not None:
            self.input_size = as_tuple(self.input_size, 2, int, "ASTERConfig.input_size")
        if self.tps_output_size[0] != 32:
            raise ValueError(
                "ASTERConfig.tps_output_size height must be 32 (the encoder collapses 32 rows), "
                f"got {self.tps_output_size}"
            )
        if not self.use_stn and self.input_size is not None and self.input_size[0] not in (16, 32):
            raise ValueError(
                "ASTERConfig.input_size height must be 32, or 16 (TSRN's ReIm: the last "
                f"vertical stride becomes 1), without the STN; got {self.input_size}"
            )

    @property
    def encoder_height(self) -> int:
        """Rows the encoder reads: 32, except a 16-row `input_size` without the STN."""
        return self.input_size[0] if self.input_size and not self.use_stn else 32


def official_state_dict(raw: Mapping[str, Any]) -> dict[str, Tensor]:
    """demo.pth.tar (`{"state_dict": ..., ...}`) -> our keys: the sub-dict, `module.` stripped."""
    state = raw.get("state_dict", raw) if isinstance(raw, Mapping) else raw
    if not isinstance(state, Mapping):
        raise ValueError("ASTER checkpoint: expected a dict with a 'state_dict' mapping")
    return {k.removeprefix("module."): v for k, v in state.items()}


class AsterBlock(nn.Module):
    """1x1 (strided) conv -> 3x3 conv residual block (names as in resnet_aster.py)."""

    def __init__(self, in_ch: int, out_ch: int, stride: tuple[int, int], downsample: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = (
            nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
            if downsample
            else None
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(out + residual)


class ResNetASTER(nn.Module):
    """(B, 3, 32, W) -> (B, W/4, C) features (BiLSTM outputs when `with_lstm`); with
    `in_height` 16 the last block keeps the height, so 16 rows collapse the same way (the
    parameters are unchanged)."""

    def __init__(
        self,
        widths: Sequence[int],
        blocks: Sequence[int],
        lstm_hidden: int | None,
        in_height: int = 32,
    ):
        super().__init__()
        self.layer0 = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        prev = widths[0]
        strides = _STRIDES if in_height == 32 else (*_STRIDES[:-1], (1, 1))
        for i, (width, n, stride) in enumerate(zip(widths[1:], blocks, strides, strict=True)):
            layers = [AsterBlock(prev, width, stride, downsample=True)]
            layers += [AsterBlock(width, width, (1, 1), downsample=False) for _ in range(n - 1)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            prev = width
        self.rnn = (
            nn.LSTM(prev, lstm_hidden, num_layers=2, bidirectional=True, batch_first=True)
            if lstm_hidden
            else None
        )
        self.out_planes = 2 * lstm_hidden if lstm_hidden else prev
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        for i in range(6):
            x = getattr(self, f"layer{i}")(x)
        feats = x.squeeze(2).transpose(1, 2)  # (B, T, C)
        if self.rnn is not None:
            feats, _ = self.rnn(feats)
        return feats


class AttentionUnit(nn.Module):
    """Additive attention: w^T tanh(W_s s + W_x x)."""

    def __init__(self, s_dim: int, x_dim: int, att_dim: int) -> None:
        super().__init__()
        self.sEmbed = nn.Linear(s_dim, att_dim)
        self.xEmbed = nn.Linear(x_dim, att_dim)
        self.wEmbed = nn.Linear(att_dim, 1)

    def forward(self, x_proj: Tensor, state: Tensor) -> Tensor:
        """x_proj (N, T, att) = xEmbed(features), computed once per image; state (N, s)."""
        scores = self.wEmbed(torch.tanh(x_proj + self.sEmbed(state).unsqueeze(1)))
        return scores.squeeze(2).softmax(dim=1)


class DecoderUnit(nn.Module):
    """One decoding step: attend, then GRU over [embedding(previous id), context] -> logits."""

    def __init__(self, s_dim: int, x_dim: int, num_classes: int, att_dim: int) -> None:
        super().__init__()
        self.attention_unit = AttentionUnit(s_dim, x_dim, att_dim)
        self.tgt_embedding = nn.Embedding(num_classes + 1, att_dim)  # last row: start token
        self.gru = nn.GRU(x_dim + att_dim, s_dim, batch_first=True)
        self.fc = nn.Linear(s_dim, num_classes)

    def forward(
        self, feats: Tensor, x_proj: Tensor, state: Tensor, y_prev: Tensor
    ) -> tuple[Tensor, Tensor]:
        """state (1, N, s) -> (logits (N, classes), new state (1, N, s))."""
        alpha = self.attention_unit(x_proj, state[0])
        context = torch.bmm(alpha.unsqueeze(1), feats).squeeze(1)
        step_in = torch.cat([self.tgt_embedding(y_prev), context], dim=1).unsqueeze(1)
        out, state = self.gru(step_in, state)
        return self.fc(out.squeeze(1)), state


class AttentionRecognitionHead(nn.Module):
    """Holds the decoder step under the official attribute name `decoder`."""

    def __init__(self, num_classes: int, in_planes: int, s_dim: int, att_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.s_dim = s_dim
        self.decoder = DecoderUnit(s_dim, in_planes, num_classes, att_dim)

    def teacher_forced(self, feats: Tensor, targets: Tensor) -> Tensor:
        """(B, T, C) features, (B, L) targets -> (B, L, classes); step 0 reads the start id."""
        batch, steps = targets.shape
        x_proj = self.decoder.attention_unit.xEmbed(feats)
        state = feats.new_zeros(1, batch, self.s_dim)
        start = targets.new_full((batch, 1), self.num_classes)
        inputs = torch.cat([start, targets[:, :-1]], dim=1)
        outputs = []
        for i in range(steps):
            logits, state = self.decoder(feats, x_proj, state, inputs[:, i])
            outputs.append(logits)
        return torch.stack(outputs, dim=1)

    def beam_search(self, feats: Tensor, beam_width: int, max_len: int, eos: int) -> Tensor:
        """Best EOS-terminated id sequence per sample, (B, L) padded with EOS (see module doc)."""
        batch, k, classes = feats.shape[0], beam_width, self.num_classes
        feats = feats.repeat_interleave(k, dim=0)  # sample-major: AABBCC
        x_proj = self.decoder.attention_unit.xEmbed(feats)
        state = feats.new_zeros(1, batch * k, self.s_dim)
        scores = feats.new_full((batch, k), -math.inf)
        scores[:, 0] = 0.0
        y_prev = torch.full((batch * k,), classes, dtype=torch.long, device=feats.device)
        seqs = y_prev.new_zeros(batch * k, 0)
        offsets = torch.arange(batch, device=feats.device).unsqueeze(1) * k
        finished: list[list[tuple[float, Tensor]]] = [[] for _ in range(batch)]
        for _ in range(max_len):
            logits, state = self.decoder(feats, x_proj, state, y_prev)
            total = scores.reshape(-1, 1) + logits.float().log_softmax(dim=1)
            top, idx = total.view(batch, k * classes).topk(k, dim=1)  # sorted, best first
            parents = (idx // classes + offsets).view(-1)
            y_prev = (idx % classes).view(-1)
            seqs = torch.cat([seqs[parents], y_prev.unsqueeze(1)], dim=1)
            state = state[:, parents]
            ended = (y_prev == eos).view(batch, k)
            for b, j in ended.nonzero().tolist():
                if len(finished[b]) < k:
                    finished[b].append((top[b, j].item(), seqs[b * k + j]))
            scores = top.masked_fill(ended, -math.inf)
            if all(len(f) >= k for f in finished):
                break
        best = []
        for b in range(batch):
            candidates = list(finished[b])
            alive = [j for j in range(k) if math.isfinite(scores[b, j].item())]
            for j in alive[: k - len(candidates)]:  # max_len reached: unfinished beams compete
                candidates.append((scores[b, j].item(), seqs[b * k + j]))
            best.append(max(candidates, key=lambda c: c[0])[1])
        length = max(len(s) for s in best)
        out = seqs.new_full((batch, length), eos)
        for b, s in enumerate(best):
            out[b, : len(s)] = s
        return out


class ASTER(Recognizer, nn.Module):
    """forward(x: (B, 3, H, W) in [-1, 1]) -> (B, L) predicted class ids (EOS-padded)."""

    def __init__(self, config: ASTERConfig | None = None) -> None:
        super().__init__()
        cfg = config or ASTERConfig()
        self.config = cfg
        self.chars = _VOCABS[cfg.voc_type]
        self.charset = Charset(self.chars)
        n = len(self.chars)
        self.eos, self.padding, self.unknown = n, n + 1, n + 2
        self.num_classes = n + 3
        self.encoder = ResNetASTER(
            cfg.widths, cfg.blocks, cfg.lstm_hidden if cfg.with_lstm else None, cfg.encoder_height
        )
        self.decoder = AttentionRecognitionHead(
            self.num_classes, self.encoder.out_planes, cfg.s_dim, cfg.att_dim
        )
        self.aux_ctc_head = nn.Linear(self.encoder.out_planes, n + 1) if cfg.aux_ctc > 0 else None
        if cfg.use_stn:
            self.tps = TPSSpatialTransformer(
                cfg.tps_output_size, cfg.num_control_points, cfg.tps_margins, cfg.align_corners
            )
            self.stn_head = STNHead(
                3, cfg.num_control_points, cfg.stn_activation, cfg.stn_input_size
            )

    def preprocess(self, rgb: Tensor) -> Tensor:
        """(B, 3|4, H, W) RGB(M) in [0, 1] -> RGB in [-1, 1] (resized only if `input_size`)."""
        if rgb.dim() != 4 or rgb.shape[1] not in (3, 4):
            raise ValueError(f"ASTER.preprocess expects (B, 3|4, H, W), got {tuple(rgb.shape)}")
        x = rgb[:, :3].float()
        size = self.config.input_size or (
            None if self.config.use_stn else self.config.tps_output_size
        )
        if size is not None and tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
        return x * 2.0 - 1.0

    def encode(self, x: Tensor) -> Tensor:
        """Rectify (if STN) and encode: (B, 3, H, W) -> (B, T, C)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ASTER expects (B, 3, H, W) input, got {tuple(x.shape)}")
        if self.config.use_stn:
            x = tps_rectify(x, self.stn_head, self.tps, sample_resized=False)
        elif x.shape[2] != self.config.encoder_height:
            raise ValueError(
                f"ASTER without STN needs {self.config.encoder_height}-row inputs, got "
                f"{tuple(x.shape)}; use preprocess()"
            )
        return self.encoder(x).contiguous()

    def forward(self, x: Tensor) -> Tensor:
        feats = self.encode(x)
        cfg = self.config
        return self.decoder.beam_search(feats, cfg.beam_width, cfg.max_len, self.eos)

    def decode(self, ids: Tensor) -> list[str]:
        """Ids up to the first EOS, special ids dropped, lower-cased alphanumeric."""
        out = []
        for row in ids.tolist():
            chars = []
            for i in row:
                if i == self.eos:
                    break
                if i < len(self.chars):
                    chars.append(self.chars[i])
            out.append(normalize_label("".join(chars)))
        return out

    def encode_labels(self, labels: Sequence[str], device: torch.device) -> tuple[Tensor, Tensor]:
        """Raw strings -> (B, L) ids with EOS then PADDING, and lengths (label + EOS)."""
        ids = [
            [i - 1 for i in self.charset.encode(self.charset.filter(s)[: self.config.max_len - 1])]
            for s in labels
        ]
        lengths = torch.tensor([len(e) + 1 for e in ids], dtype=torch.long, device=device)
        targets = torch.full((len(ids), int(lengths.max())), self.padding, dtype=torch.long)
        for b, e in enumerate(ids):
            targets[b, : len(e) + 1] = torch.tensor([*e, self.eos], dtype=torch.long)
        return targets.to(device), lengths

    def text_loss(self, x: Tensor, labels: Sequence[str]) -> Tensor:
        """Teacher-forced sequence cross-entropy summed over label+EOS steps, / batch size.

        Labels are filtered to the model's alphabet and cut to `max_len - 1` characters; an empty
        label trains a lone EOS.
        """
        if len(labels) != x.shape[0]:
            raise ValueError(f"ASTER.text_loss got {len(labels)} labels for {x.shape[0]} images")
        feats = self.encode(x)
        targets, lengths = self.encode_labels(labels, x.device)
        logits = self.decoder.teacher_forced(feats, targets)
        steps = torch.arange(targets.shape[1], device=x.device)
        mask = (steps.unsqueeze(0) < lengths.unsqueeze(1)).to(logits.dtype)
        nll = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
        loss = (nll * mask).sum() / x.shape[0]
        if self.aux_ctc_head is not None:
            rows = zip(targets.tolist(), lengths.tolist(), strict=True)
            ids = [[i + 1 for i in row[: n - 1]] for row, n in rows]  # chars only; blank = 0
            loss = loss + self.config.aux_ctc * aux_ctc_loss(self.aux_ctc_head(feats), ids)
        return loss
