"""Blocks of LEMMA (Guo et al., IJCAI 2023): the guidance generator (LEM + MAM) and the SR block
with its Adaptive Fusion Module.

Names and shapes follow csguoh/LEMMA so its `state_dict_G` loads one to one:

* `GuidanceGenerator` is `model/Position_aware_module.py`
  `Location_enhancement_Multimodal_alignment` (l. 259-331): `text_proj`, `vision_pos`,
  `text_pos`, `text_Encoder`, `text_decoder`, `sematic_decoder` (sic), `IN`, `select_pos`,
  `attn_conv`, `DWC`. `text_pos` and `select_pos` are sinusoidal tables the forward never reads;
  they are persistent buffers of the release, so they are built too. Switched-off parts are not
  built (module absent).
* `LEMMABlock` is `model/lemma.py` `RecurrentResidualBlockAffine` (l. 186-214) and
  `AdaptiveFusion` its `AffineModulate` (l. 18-64). The code's AdaFM is richer than Eq. 7: the
  guidance is batch-normalised first, each of the three 1x1 projections is conv-BN-PReLU-conv, the
  product X2 * score goes through one more conv-BN-PReLU-conv (`aggregation`) and the sum through
  a BN; the block adds a BN (`BN`) before its horizontal GRU. Kept as the code has it (the
  weights need it). The code's `GruBlock` has no 1x1 conv (l. 246-260): `RNNLine`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.models.layers.abinet_transformer import (
    BCNDecoderLayer,
    PositionalEncoding,
    TransformerEncoder,
)
from stisr.models.layers.activations import make_activation
from stisr.models.layers.recurrent import ALONG, keep_grad_layout

TEXT_POS_LEN = 40  # `text_pos` max_len in the code (unused table)


class RNNLine(nn.Module):
    """Bidirectional RNN along the rows (`width`) or columns (`height`) of (B, C, H, W), no 1x1
    conv in front (LEMMA's `GruBlock`; TSRN's has one)."""

    def __init__(self, channels: int, rnn: str = "gru") -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"RNNLine needs an even channel count, got {channels}")
        cls = nn.GRU if rnn == "gru" else nn.LSTM
        self.gru = cls(channels, channels // 2, bidirectional=True, batch_first=True)

    def forward(self, x: Tensor, along: str = "width") -> Tensor:
        if along not in ALONG:
            raise ValueError(f"RNNLine: along must be one of {ALONG}, got {along!r}")
        x = keep_grad_layout(x)
        b, c = x.shape[:2]
        seq = x.permute(0, 2, 3, 1) if along == "width" else x.permute(0, 3, 2, 1)
        _, lines, steps, _ = seq.shape
        out = self.gru(seq.reshape(b * lines, steps, c))[0].reshape(b, lines, steps, -1)
        return out.permute(0, 3, 1, 2) if along == "width" else out.permute(0, 3, 2, 1)


def _projection(c_in: int, c: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c, 1), nn.BatchNorm2d(c), nn.PReLU(), nn.Conv2d(c, c, 1))


class AdaptiveFusion(nn.Module):
    """AdaFM (Sec. 3.4): X3 + agg(X2 * sigmoid(MLP(GDWConv(X1)))), X_i 1x1 projections of
    [X_n; BN(X_G)]. The global depth-wise conv spans the whole LR map (the code's (16, 64)), so
    the channel score sees where the characters are rather than their average."""

    def __init__(self, channels: int, map_size: tuple[int, int]) -> None:
        super().__init__()
        c = channels
        self.BN = nn.BatchNorm2d(c)
        self.conv1x1_1 = _projection(2 * c, c)
        self.conv1x1_2 = _projection(2 * c, c)
        self.conv1x1_3 = _projection(2 * c, c)
        self.channel_attn = nn.Sequential(
            nn.Conv2d(c, c, kernel_size=map_size, groups=c),
            nn.Conv2d(c, c, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 1),
            nn.Sigmoid(),
        )
        self.aggregation = _projection(c, c)
        self.BN2 = nn.BatchNorm2d(c)

    def forward(self, feature: Tensor, guidance: Tensor) -> Tensor:
        cat = torch.cat([feature, self.BN(guidance)], dim=1)
        score = self.channel_attn(self.conv1x1_1(cat))  # (B, C, 1, 1)
        mixed = self.aggregation(score * self.conv1x1_2(cat))
        return self.BN2(self.conv1x1_3(cat) + mixed)


class ConcatFusion(nn.Module):
    """Fusion without AdaFM (Table 4 rows 1-3, "concatenate"): [X_n; X_G] -> 1x1 conv to C (the
    code's GRU has no 1x1 conv of its own to widen, so one is needed)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, feature: Tensor, guidance: Tensor) -> Tensor:
        return self.conv(torch.cat([feature, guidance], dim=1))


class LEMMABlock(nn.Module):
    """SRB with fusion: conv-BN-act-conv-BN, fuse X_G, vertical RNN, BN(skip), horizontal RNN."""

    def __init__(
        self,
        channels: int,
        map_size: tuple[int, int],
        rnn: str = "gru",
        activation: str = "mish",
        adafm: bool = True,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.gru1 = RNNLine(channels, rnn)
        self.prelu = make_activation(activation)  # `prelu` even for Mish, as in the code
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.gru2 = RNNLine(channels, rnn)
        if adafm:
            self.affine = AdaptiveFusion(channels, map_size)
        else:
            self.fuse = ConcatFusion(channels)
        self.BN = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor, guidance: Tensor) -> Tensor:
        residual = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))
        fusion = self.affine if hasattr(self, "affine") else self.fuse
        residual = self.gru1(fusion(residual, guidance), along="height")
        return self.gru2(self.BN(x + residual))


class QKVDecoderLayer(BCNDecoderLayer):
    """Cross-attention + feed-forward with separate key and value (`TransformerDecoderLayer_QKV`,
    model/transformer.py l. 951-991): h' = LN(MHA(q, k, v) + q), h = LN(MLP(h') + h') (Eq. 6)."""

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:  # type: ignore[override]
        attn, _ = self.multihead_attn(query, key, value, need_weights=False)
        x = self.norm2(query + self.dropout2(attn))
        ff = self.linear2(self.dropout(F.relu(self.linear1(x))))
        return self.norm3(x + self.dropout3(ff))


class QKVDecoder(nn.Module):
    """A stack of `QKVDecoderLayer`s in `layers`; every layer reads the same key and value."""

    def __init__(self, num_layers: int, d_model: int, nhead: int, d_inner: int, dropout: float):
        super().__init__()
        self.layers = nn.ModuleList(
            QKVDecoderLayer(d_model, nhead, d_inner, dropout) for _ in range(num_layers)
        )

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        for layer in self.layers:
            query = layer(query, key, value)
        return query


def compress_attention(attn: Tensor, lengths: Tensor) -> Tensor:
    """h_score (Eq. 1): max over the first L maps of (N, T, H, W) -> (N, 1, H, W).

    L counts the end token, as the code's padding mask from `pt_lengths` does (l. 303-304)."""
    steps = torch.arange(attn.shape[1], device=attn.device)
    valid = (steps[None] < lengths[:, None]).to(attn.dtype)
    return (attn * valid[:, :, None, None]).amax(dim=1, keepdim=True)


def ctc_band_maps(probs: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Pseudo attention maps of a CTC recognizer (CRNN): frame t owns a band of columns.

    The paper does not say how LEM gets h_attn from CRNN (Sec. 4.6); our reading: (N, T, H, W)
    maps uniform over frame t's columns (each sums to 1), and h_score = the frame's non-blank
    probability 1 - p(blank) at its columns. `probs` (T, N, C) softmax, class 0 = blank.
    """
    steps, n, _ = probs.shape
    h, w = size
    owner = ((torch.arange(w, device=probs.device) + 0.5) * steps / w).long().clamp(max=steps - 1)
    band = F.one_hot(owner, steps).t().to(probs.dtype)  # (T, W)
    maps = band / (h * band.sum(1, keepdim=True).clamp(min=1))
    maps = maps[None, :, None, :].expand(n, steps, h, w)
    score = (1 - probs[:, :, 0]).t()[:, owner]  # (N, W)
    return maps, score[:, None, None, :].expand(n, 1, h, w)


class GuidanceGenerator(nn.Module):
    """LEM (Sec. 3.2) + MAM (Sec. 3.3): X_I, h_attn, h_score, text logits -> guidance X_G.

    `cfg` is a `LEMMAConfig` (its derived `lem_parts` say which LEM parts are on). Shapes: X_I
    (N, C, H, W), h_attn (N, T, H, W), h_score (N, 1, H, W), text logits (N, T, classes).
    """

    def __init__(self, cfg: Any, num_classes: int) -> None:
        super().__init__()
        c, (h, w) = cfg.channels, cfg.lr_size
        parts = cfg.lem_parts
        self.char_attn, self.expansion = parts["char_attn"], parts["expansion_conv"]
        self.select, self.pixel_to_region = parts["feat_select"], parts["pixel_to_region"]
        self.top_k = cfg.top_k if self.select else h * w
        self.use_mam = cfg.use_mam
        self.alignment = cfg.alignment if cfg.use_mam else None
        drop, heads, inner = cfg.dropout, cfg.nhead, cfg.d_inner
        if self.use_mam:
            self.text_proj = nn.Linear(num_classes, c, bias=False)
            self.vision_pos = PositionalEncoding(c, h * w, drop)
            self.text_pos = PositionalEncoding(c, TEXT_POS_LEN, drop)  # built, unused (code)
            self.text_Encoder = TransformerEncoder(cfg.text_layers, c, heads, inner, drop)
            if self.alignment == "bidirectional":
                self.text_decoder = QKVDecoder(cfg.align_layers, c, heads, inner, drop)
            if self.alignment != "none":
                self.sematic_decoder = QKVDecoder(cfg.second_level_layers, c, heads, inner, drop)
        if self.char_attn:
            self.IN = nn.InstanceNorm2d(c)
        if self.select:
            self.select_pos = PositionalEncoding(c, self.top_k, drop)  # built, unused (code)
        if self.expansion:
            w1, w2 = cfg.expansion_widths
            self.attn_conv = nn.Sequential(
                nn.Conv2d(1, w1, 3, 1, 1, bias=False),
                nn.BatchNorm2d(w1),
                nn.PReLU(),
                nn.Conv2d(w1, w2, 3, 1, 1, bias=False),
                nn.BatchNorm2d(w2),
                nn.PReLU(),
                nn.Conv2d(w2, c, 3, 1, 1, bias=False),
            )
        if self.pixel_to_region:
            self.DWC = nn.Conv2d(c, c, 3, 1, 1)  # a full 3x3 conv despite the code's name
        for p in self.parameters():  # the code's _reset_parameters (l. 295-298)
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def enhance(self, feat: Tensor, score: Tensor) -> Tensor:
        """X'_pos: IN(X_I) x h_pos (Eqs. 2-3), then pixel-to-region (Eq. 5); X_I when off."""
        n, c, h, w = feat.shape
        x = feat
        if self.char_attn:
            if self.expansion:
                weight = self.attn_conv(score).flatten(2).softmax(dim=-1).view(n, c, h, w)
            else:
                weight = score  # Table 7 "no ExpsConv": h_score itself
            x = self.IN(feat) * weight
        return self.DWC(x) if self.pixel_to_region else x

    def forward(self, feat: Tensor, attn: Tensor, score: Tensor, text_logits: Tensor) -> Tensor:
        n, c, h, w = feat.shape
        seq = self.enhance(feat, score).flatten(2).permute(2, 0, 1)  # (HW, N, C)
        idx = keep = None
        if self.select:  # Top-K of h_score (Eq. 4); the rest is zero padding (Sec. 3.3)
            idx = score.flatten(1).topk(self.top_k, dim=1).indices  # (N, K)
            keep = torch.zeros(n, h * w, dtype=torch.bool, device=feat.device)
            keep = keep.scatter(1, idx, True).t().unsqueeze(-1)  # (HW, N, 1)
        if not self.use_mam:  # Table 4 "LEM only": the scattered X_S is the guidance
            out = seq if keep is None else seq * keep
            return out.permute(1, 2, 0).reshape(n, c, h, w)
        v_pos = self.vision_pos(torch.zeros_like(seq))
        seq = seq + v_pos
        # Semantic extraction; the text positions are the PE seen through the attention maps
        # (MATRN-style, l. 322-325).
        text = self.text_proj(text_logits.to(seq.dtype)).permute(1, 0, 2)  # (T, N, C)
        t_pos = torch.bmm(attn.flatten(2).to(seq.dtype), v_pos.transpose(0, 1))
        text = self.text_Encoder(text + t_pos.permute(1, 0, 2))
        if self.alignment == "none":  # Table 2 NoA: text features spread over the map
            grid = text.permute(1, 2, 0).unsqueeze(2)  # (N, C, 1, T)
            return F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=True)
        if self.alignment == "bidirectional":  # first level: h_text queries X_S -> h_key
            selected = seq if idx is None else seq.gather(0, idx.t()[..., None].expand(-1, -1, c))
            key = self.text_decoder(text, selected, selected)
        else:  # UDA: h_text as key and value (TATT)
            key = text
        query = seq if keep is None else seq * keep
        out = self.sematic_decoder(query, key, text)  # second level: X_S queries h_key
        return out.permute(1, 2, 0).reshape(n, c, h, w)
