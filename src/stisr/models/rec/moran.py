"""MORAN v2 (Luo et al., Pattern Recognition 2019) with the module layout of Canjie-Luo/MORAN_v2.

`MORAN(MORANConfig())` has the state-dict keys and shapes of the official
`MORAN(1, 37, 256, 32, 100, BidirDecoder=True)` (alphabet `0-9a-z` + `$`, i.e.
`len('0:1:...:z:$'.split(':')) == 37` output classes and 38 character-embedding rows), so the
released `demo.pth` loads with strict=True after `official_state_dict` (strip `module.`).

Parts (MORN and the ResNet in models/layers/moran_blocks.py): MORN (`MORN`), a fractional-offset
rectifier that predicts a vertical offset map and resamples the image; ASRN (`ASRN`): a 45-block
ResNet, two BiLSTMs and two GRU attention decoders (left-to-right and right-to-left). Class ids
0..35 are `0-9a-z`, 36 is `$` (end of word); a decoder reads `char_embeddings[id + 1]` of the
previous id, row 0 being the start token.

Input as the STISR code feeds it (docs/protocols.md, TextZoom `parse_moran_data`): first 3 channels,
bicubic to 32x100, luma 0.299/0.587/0.114 in [0, 1] (MORAN's own training normalizes to [-1, 1]:
`input_norm="symmetric"`). Inference is the official test path: MORN with one refinement pass,
greedy decoding for `max_len` (20) steps, prediction cut at the first `$`. TextZoom reads the
left-to-right decoder only (`decode_direction="l2r"`); MORAN's own validation keeps, per image, the
direction with the higher mean max-logit up to `$` (`"best"`).

Grid sampling uses align_corners=True: the code was written for torch 0.3, whose grid_sample and
bilinear upsampling map -1/1 to the corner pixel centres.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.charset import EVAL_CHARSET, Charset
from stisr.models.layers.aux_ctc import aux_ctc_loss
from stisr.models.layers.config_utils import (
    as_tuple,
    check_choice,
    check_positive,
    check_weight,
)
from stisr.models.layers.moran_blocks import MORN, ResNet
from stisr.models.layers.sequence import BidirectionalLSTM
from stisr.models.objective import Recognizer

LUMA = (0.299, 0.587, 0.114)
EOS_CHAR = "$"
ALPHABET = EVAL_CHARSET + EOS_CHAR  # MORAN's '0:1:...:z:$' without separators
OFFICIAL_MORN_WIDTHS = (64, 128, 64, 16)
OFFICIAL_CNN_WIDTHS = (32, 32, 64, 128, 256, 512)  # block0 .. block5
OFFICIAL_CNN_BLOCKS = (3, 4, 6, 6, 3)


@dataclass
class MORANConfig:
    """Defaults reproduce the official model; shrink widths/blocks/hidden for demo scales."""

    img_h: int = 32
    img_w: int = 100
    hidden: int = 256  # nh: BiLSTM and decoder width
    embedding_dim: int = 256  # character embeddings of the attention decoders
    morn_widths: tuple[int, ...] = OFFICIAL_MORN_WIDTHS
    cnn_widths: tuple[int, ...] = OFFICIAL_CNN_WIDTHS
    cnn_blocks: tuple[int, ...] = OFFICIAL_CNN_BLOCKS
    bidirectional_decoder: bool = True
    max_len: int = 20  # decoding steps at inference; training labels are cut to max_len - 1
    decode_direction: str = "l2r"  # "l2r" (TextZoom) | "best" (MORAN's validation)
    morn_refinements: int = 1  # extra MORN passes at inference (official `enhance=1`)
    input_norm: str = "unit"  # "unit": [0, 1] as TextZoom feeds it; "symmetric": [-1, 1]
    align_corners: bool = True
    # Weight of an auxiliary CTC loss on ASRN's BiLSTM features (models/layers/aux_ctc.py), per
    # token like the decoders' cross-entropy: a training aid for short CPU schedules. 0 = the
    # official model (no extra parameters).
    aux_ctc: float = 0.0

    def __post_init__(self) -> None:
        for name in ("img_w", "hidden", "embedding_dim", "max_len"):
            check_positive(getattr(self, name), f"MORANConfig.{name}")
        check_weight(self.aux_ctc, "MORANConfig.aux_ctc")
        if self.img_h != 32:
            raise ValueError(
                f"MORANConfig.img_h must be 32 (ASRN collapses 32 rows), got {self.img_h}"
            )
        if self.img_w < 16:
            raise ValueError(f"MORANConfig.img_w must be at least 16, got {self.img_w}")
        self.morn_widths = as_tuple(self.morn_widths, 4, int, "MORANConfig.morn_widths")
        self.cnn_widths = as_tuple(self.cnn_widths, 6, int, "MORANConfig.cnn_widths")
        self.cnn_blocks = as_tuple(self.cnn_blocks, 5, int, "MORANConfig.cnn_blocks")
        for w in (*self.morn_widths, *self.cnn_widths, *self.cnn_blocks):
            check_positive(w, "MORANConfig.morn_widths/cnn_widths/cnn_blocks")
        if isinstance(self.morn_refinements, bool) or self.morn_refinements not in range(0, 10):
            raise ValueError(
                f"MORANConfig.morn_refinements must be in 0..9, got {self.morn_refinements!r}"
            )
        check_choice(self.decode_direction, ("l2r", "best"), "MORANConfig.decode_direction")
        check_choice(self.input_norm, ("unit", "symmetric"), "MORANConfig.input_norm")
        if self.decode_direction == "best" and not self.bidirectional_decoder:
            raise ValueError("MORANConfig.decode_direction='best' needs bidirectional_decoder")


def official_state_dict(raw: Mapping[str, Any]) -> dict[str, Tensor]:
    """demo.pth (a DataParallel state dict) -> our keys: `module.` stripped."""
    if not isinstance(raw, Mapping):
        raise ValueError("MORAN checkpoint: expected a state-dict mapping")
    state = raw.get("state_dict", raw)
    return {k.replace("module.", "", 1): v for k, v in state.items()}


def frac_pickup(alpha: Tensor) -> Tensor:
    """Training-time jitter of attention (MORAN's fracPickup): one random position, one random
    fraction below 1/4 for the whole batch; positions 0 and the last leave alpha unchanged."""
    steps = alpha.shape[1]
    i = int(torch.rand(()).item() * steps)
    if i <= 0 or i >= steps - 1:
        return alpha
    return mix_neighbours(alpha, i, torch.rand(()).item() / 4.0)


def mix_neighbours(alpha: Tensor, i: int, beta: float) -> Tensor:
    """Move samples i-1 and i of (B, T) weights `beta` of a step towards each other (linear)."""
    left, right = alpha[:, i - 1], alpha[:, i]
    mixed = torch.stack([(1 - beta) * left + beta * right, beta * left + (1 - beta) * right], 1)
    return torch.cat([alpha[:, : i - 1], mixed, alpha[:, i + 1 :]], dim=1)


class AttentionCell(nn.Module):
    def __init__(self, input_size: int, hidden_size: int, num_embeddings: int) -> None:
        super().__init__()
        self.i2h = nn.Linear(input_size, hidden_size, bias=False)
        self.h2h = nn.Linear(hidden_size, hidden_size)
        self.score = nn.Linear(hidden_size, 1, bias=False)
        self.rnn = nn.GRUCell(input_size + num_embeddings, hidden_size)

    def forward(
        self, hidden: Tensor, feats: Tensor, feats_proj: Tensor, emb: Tensor, jitter: bool
    ) -> Tensor:
        """feats (T, B, C), feats_proj = i2h(feats), hidden (B, h), emb (B, E) -> new hidden."""
        emission = self.score(torch.tanh(feats_proj + self.h2h(hidden).unsqueeze(0))).squeeze(2)
        alpha = emission.softmax(dim=0).t()  # (B, T)
        if jitter:
            alpha = frac_pickup(alpha)
        context = torch.einsum("bt,tbc->bc", alpha, feats)
        return self.rnn(torch.cat([context, emb], dim=1), hidden)


class Attention(nn.Module):
    """GRU attention decoder; `char_embeddings[0]` is the start token, row id+1 is class id."""

    def __init__(
        self, input_size: int, hidden_size: int, num_classes: int, num_embeddings: int
    ) -> None:
        super().__init__()
        self.attention_cell = AttentionCell(input_size, hidden_size, num_embeddings)
        self.generator = nn.Linear(hidden_size, num_classes)
        self.char_embeddings = nn.Parameter(torch.randn(num_classes + 1, num_embeddings))
        self.hidden_size = hidden_size

    def teacher_forced(self, feats: Tensor, targets: Tensor, jitter: bool) -> Tensor:
        """feats (T, B, C), targets (B, L) class ids -> (B, L, classes) logits."""
        batch, steps = targets.shape
        inputs = torch.cat([targets.new_zeros(batch, 1), targets[:, :-1] + 1], dim=1)
        proj = self.attention_cell.i2h(feats)
        hidden = feats.new_zeros(batch, self.hidden_size)
        outs = []
        for i in range(steps):
            emb = self.char_embeddings[inputs[:, i]]
            hidden = self.attention_cell(hidden, feats, proj, emb, jitter)
            outs.append(hidden)
        return self.generator(torch.stack(outs, dim=1))

    def greedy(self, feats: Tensor, steps: int) -> Tensor:
        """(T, B, C) -> (B, steps, classes) logits, feeding back each step's argmax."""
        batch = feats.shape[1]
        proj = self.attention_cell.i2h(feats)
        hidden = feats.new_zeros(batch, self.hidden_size)
        prev = torch.zeros(batch, dtype=torch.long, device=feats.device)
        outs = []
        for _ in range(steps):
            hidden = self.attention_cell(hidden, feats, proj, self.char_embeddings[prev], False)
            logits = self.generator(hidden)
            outs.append(logits)
            prev = logits.argmax(dim=1) + 1
        return torch.stack(outs, dim=1)


class ASRN(nn.Module):
    def __init__(self, cfg: MORANConfig, in_ch: int, num_classes: int) -> None:
        super().__init__()
        self.cnn = ResNet(in_ch, cfg.cnn_widths, cfg.cnn_blocks)
        nh = cfg.hidden
        self.rnn = nn.Sequential(
            BidirectionalLSTM(cfg.cnn_widths[-1], nh, nh), BidirectionalLSTM(nh, nh, nh)
        )
        args = (nh, nh, num_classes, cfg.embedding_dim)
        if cfg.bidirectional_decoder:
            self.attentionL2R = Attention(*args)
            self.attentionR2L = Attention(*args)
        else:
            self.attention = Attention(*args)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", a=0)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def features(self, x: Tensor) -> Tensor:
        conv = self.cnn(x)
        if conv.shape[2] != 1:
            raise ValueError(f"ASRN: feature height must be 1, got {tuple(conv.shape)}")
        return self.rnn(conv.squeeze(2).permute(2, 0, 1).contiguous())  # (T, B, nh)

    def decoders(self) -> list[Attention]:
        if hasattr(self, "attentionL2R"):
            return [self.attentionL2R, self.attentionR2L]
        return [self.attention]


class MORAN(Recognizer, nn.Module):
    """forward(x: (B, 1, 32, W)) -> {"l2r": (B, max_len, 37) logits, "r2l": same, word reversed}."""

    def __init__(self, config: MORANConfig | None = None) -> None:
        super().__init__()
        cfg = config or MORANConfig()
        self.config = cfg
        self.charset = Charset()  # 0-9a-z; ids here are charset ids - 1, '$' is 36
        self.num_classes = len(ALPHABET)
        self.eos = ALPHABET.index(EOS_CHAR)
        self.MORN = MORN(1, cfg.morn_widths, (cfg.img_h, cfg.img_w), cfg.align_corners)
        self.ASRN = ASRN(cfg, 1, self.num_classes)
        # CTC classes: blank 0, then MORAN's 36 characters ('$' is not a CTC target).
        self.aux_ctc_head = nn.Linear(cfg.hidden, self.eos + 1) if cfg.aux_ctc > 0 else None

    def preprocess(self, rgb: Tensor) -> Tensor:
        """(B, 3|4, H, W) RGB(M) in [0, 1] -> luma (B, 1, 32, img_w)."""
        if rgb.dim() != 4 or rgb.shape[1] not in (3, 4):
            raise ValueError(f"MORAN.preprocess expects (B, 3|4, H, W), got {tuple(rgb.shape)}")
        size = (self.config.img_h, self.config.img_w)
        x = F.interpolate(rgb[:, :3].float(), size=size, mode="bicubic", align_corners=False)
        x = LUMA[0] * x[:, 0:1] + LUMA[1] * x[:, 1:2] + LUMA[2] * x[:, 2:3]
        if self.config.input_norm == "symmetric":
            x = (x - 0.5) / 0.5
        return x

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != 1:
            raise ValueError(f"MORAN expects (B, 1, H, W) input, got {tuple(x.shape)}")

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        self._check(x)
        rectified = self.MORN(x, self.config.morn_refinements)
        feats = self.ASRN.features(rectified)
        logits = [d.greedy(feats, self.config.max_len) for d in self.ASRN.decoders()]
        return dict(zip(("l2r", "r2l"), logits, strict=False))

    def _text(self, ids: list[int]) -> str:
        return "".join(ALPHABET[i] for i in ids).split(EOS_CHAR)[0]

    def decode(self, outputs: Mapping[str, Tensor]) -> list[str]:
        """Greedy ids cut at the first '$'; "best" keeps the direction with the higher mean
        max-logit over the word and its '$' (R2L words are reversed back)."""
        best0, ids0 = outputs["l2r"].detach().max(dim=2)
        words = [self._text(row) for row in ids0.tolist()]
        if self.config.decode_direction == "l2r":
            return words
        best1, ids1 = outputs["r2l"].detach().max(dim=2)
        out = []
        for b, (w0, row1) in enumerate(zip(words, ids1.tolist(), strict=True)):
            w1 = self._text(row1)
            s0 = best0[b, : len(w0) + 1].mean().item()
            s1 = best1[b, : len(w1) + 1].mean().item()
            out.append(w0 if s0 > s1 else w1[::-1])
        return out

    def encode_labels(self, labels: Sequence[str], device: torch.device) -> tuple[Tensor, Tensor]:
        """Raw strings -> (B, 2, L) ids (word + '$', reversed word + '$'), '$'-padded; lengths."""
        words = [self.charset.filter(s)[: self.config.max_len - 1] for s in labels]
        lengths = torch.tensor([len(w) + 1 for w in words], dtype=torch.long)
        targets = torch.full((len(words), 2, int(lengths.max())), self.eos, dtype=torch.long)
        for b, w in enumerate(words):
            for d, text in enumerate((w, w[::-1])):
                ids = [ALPHABET.index(c) for c in text]
                targets[b, d, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return targets.to(device), lengths.to(device)

    def text_loss(self, x: Tensor, labels: Sequence[str]) -> Tensor:
        """Cross-entropy averaged over every label+'$' token of both decoders (official
        `CrossEntropyLoss` over the concatenated L2R and R2L predictions). As in training the
        official model, MORN is skipped (plain resize) for half of the batches and attention gets
        the fractional pickup jitter; empty labels train a lone '$'."""
        self._check(x)
        if len(labels) != x.shape[0]:
            raise ValueError(f"MORAN.text_loss got {len(labels)} labels for {x.shape[0]} images")
        cfg = self.config
        if torch.rand(()).item() > 0.5:
            rectified = F.interpolate(
                x, size=(cfg.img_h, cfg.img_w), mode="bilinear", align_corners=cfg.align_corners
            )
        else:
            rectified = self.MORN(x, 0)
        feats = self.ASRN.features(rectified)
        targets, lengths = self.encode_labels(labels, x.device)
        mask = torch.arange(targets.shape[2], device=x.device).unsqueeze(0) < lengths.unsqueeze(1)
        losses = []
        for d, decoder in enumerate(self.ASRN.decoders()):
            logits = decoder.teacher_forced(feats, targets[:, d], jitter=True)
            losses.append(F.cross_entropy(logits[mask].float(), targets[:, d][mask]))
        loss = torch.stack(losses).mean()
        if self.aux_ctc_head is not None:
            rows = (targets[:, 0] + 1).tolist()  # class id + 1: blank is 0
            ids = [row[: n - 1] for row, n in zip(rows, lengths.tolist(), strict=True)]
            feats_btc = feats.transpose(0, 1)
            ctc = aux_ctc_loss(self.aux_ctc_head(feats_btc), ids, per_token=True)
            loss = loss + cfg.aux_ctc * ctc
        return loss
