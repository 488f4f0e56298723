"""Pieces of TATT (Ma, Liang, Zhang, CVPR 2022): the TP Interpreter, the TSSIM and the warp.

Layouts and attribute names follow mjq11302010044/TATT so `state_dict_G` loads strictly:

* `TPInterpreter` is `model/tsrn.py` `TPInterpreter` (l. 155-224) with `InfoTransformer`
  (`model/transformer_v2.py` l. 154-244): the text prior (B, classes, 1, T) is lifted by `fc_in` +
  PReLU, given sinusoidal positions (`pe`, a persistent (1, 5000, d) buffer, with dropout) and
  encoded by a post-norm self-attention encoder; the decoder's queries are the image features
  (block1's output, one per pixel of the 16x64 grid), whose positions are a learned embedding
  (`init_factor`) passed through a bidirectional GRU over the grid's columns (`gru_encoding`). The
  decoder layers only cross-attend (l. 806-833); the mean of the normed outputs of the decoder
  layers is the prior map (B, d, H, W). `fc_feature_in`, and each decoder layer's `self_attn` and
  `norm1`, are built but never used by the code; they exist so that its checkpoints load.
* `tri_ssim` is `utils/ssim_psnr.py` `_tri_ssim` (l. 99-128), the TSSIM of the TSC loss;
* `rotate_warp` is `interfaces/super_resolution.py` `torch_rotate_img` (l. 126-157), the random
  rotation with a jittered aspect ratio that both augments training and defines the TSC loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.models.layers.abinet_transformer import BCNDecoderLayer, TransformerEncoderLayer

SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2


class TATTPositionalEncoding(nn.Module):
    """Sinusoidal table `pe` (1, max_len, d_model) as the code stores it; forward(x (N, L, d))."""

    def __init__(self, d_model: int, dropout: float = 0.1, max_len: int = 5000) -> None:
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div[: d_model // 2])
        self.register_buffer("pe", pe.unsqueeze(0))  # persistent: in the code's checkpoints
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(x + self.pe[:, : x.shape[1]])


class PositionalEncoderLayer(TransformerEncoderLayer):
    """Post-norm encoder layer whose queries and keys get the positions added (DETR style)."""

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:  # type: ignore[override]
        qk = src + pos
        attn, _ = self.self_attn(qk, qk, src, need_weights=False)
        src = self.norm1(src + self.dropout1(attn))
        ff = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(ff))


class CrossOnlyDecoderLayer(BCNDecoderLayer):
    """The code's `TransformerDecoderLayer_TP`: cross-attention + FFN, positions on q and k.

    `self_attn` and `norm1` are built as in the code (its forward skips them), so the checkpoint's
    keys match; they get no gradients.
    """

    def __init__(self, d_model: int, nhead: int, d_inner: int, dropout: float) -> None:
        super().__init__(d_model, nhead, d_inner, dropout)
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm1 = nn.LayerNorm(d_model)

    def forward(  # type: ignore[override]
        self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor
    ) -> Tensor:
        attn, _ = self.multihead_attn(tgt + query_pos, memory + pos, memory, need_weights=False)
        tgt = self.norm2(tgt + self.dropout2(attn))
        ff = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(ff))


class TPEncoder(nn.Module):
    """`encoder.layers`; as the code's `TransformerEncoder` (l. 256-280) every layer reads its
    predecessor's output plus the encoder input again, so the first one sees twice the input."""

    def __init__(self, num_layers: int, d_model: int, nhead: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            PositionalEncoderLayer(d_model, nhead, d_model, dropout) for _ in range(num_layers)
        )

    def forward(self, src: Tensor, pos: Tensor) -> Tensor:
        out = src
        for layer in self.layers:
            out = layer(out + src, pos)
        return out


class TPDecoder(nn.Module):
    """`decoder.layers` + the shared final `norm`: the mean over layers of the normed outputs
    (`return_intermediate_dec=True` then `.mean(0)` in `TPInterpreter.forward`)."""

    def __init__(self, num_layers: int, d_model: int, nhead: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            CrossOnlyDecoderLayer(d_model, nhead, d_model, dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        outs = []
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos)
            outs.append(self.norm(tgt))
        return torch.stack(outs).mean(0)


class InfoTransformer(nn.Module):
    """The code's `InfoTransformer` (d_model = feed-forward width, xavier-initialised)."""

    def __init__(
        self,
        d_model: int,
        nhead: int,
        encoder_layers: int,
        decoder_layers: int,
        dropout: float,
        grid: tuple[int, int],
    ) -> None:
        super().__init__()
        self.encoder = TPEncoder(encoder_layers, d_model, nhead, dropout)
        self.decoder = TPDecoder(decoder_layers, d_model, nhead, dropout)
        rows = grid[0]
        self.gru_encoding = nn.GRU(
            d_model * rows, d_model * rows // 2, bidirectional=True, batch_first=True
        )
        self.grid = grid
        for p in self.parameters():  # `_reset_parameters` (l. 193-196)
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def query_positions(self, query: Tensor, batch: int, over_batch: bool) -> Tensor:
        """(H*W, d) learned embedding -> (H*W, B, d): a BiGRU along the W columns (each column's
        H x d values one step). `over_batch` reproduces the code, whose batch_first GRU gets
        (W, B, H*d), so it recurs over the batch samples and each sample's positions depend on
        its index in the batch (l. 215-221)."""
        rows, cols = self.grid
        d = query.shape[-1]
        columns = query.view(rows, cols, d).permute(1, 0, 2).reshape(cols, rows * d)
        if over_batch:
            seq, _ = self.gru_encoding(columns.unsqueeze(1).expand(cols, batch, rows * d))
        else:
            seq, _ = self.gru_encoding(columns.unsqueeze(0))  # one sequence of W steps
            seq = seq.transpose(0, 1)  # (W, 1, H*d)
        n = seq.shape[1]
        out = seq.reshape(cols, n, rows, d).permute(2, 0, 1, 3).reshape(rows * cols, n, d)
        return out.expand(rows * cols, batch, d)

    def forward(
        self, src: Tensor, pos: Tensor, query: Tensor, tgt: Tensor, over_batch: bool
    ) -> Tensor:
        """src, pos (T, B, d); query (H*W, d); tgt (H*W, B, d) -> (H*W, B, d)."""
        memory = self.encoder(src, pos)
        query_pos = self.query_positions(query, src.shape[1], over_batch)
        return self.decoder(tgt, memory, pos, query_pos)


class TPInterpreter(nn.Module):
    """forward(feature (B, d, H, W), prior (B, classes, 1, T)) -> prior map (B, d, H, W)."""

    def __init__(
        self,
        prior_channels: int,
        d_model: int,
        grid: Sequence[int] = (16, 64),
        nhead: int = 4,
        encoder_layers: int = 1,
        decoder_layers: int = 2,
        dropout: float = 0.1,
        pe_max_len: int = 5000,
        query_rnn_over_batch: bool = False,
    ) -> None:
        super().__init__()
        rows, cols = (int(v) for v in grid)
        self.grid = (rows, cols)
        self.query_rnn_over_batch = query_rnn_over_batch
        self.fc_in = nn.Linear(prior_channels, d_model)
        self.fc_feature_in = nn.Linear(d_model, d_model)  # unused by the code's forward
        self.activation = nn.PReLU()
        self.transformer = InfoTransformer(
            d_model, nhead, encoder_layers, decoder_layers, dropout, self.grid
        )
        self.pe = TATTPositionalEncoding(d_model, dropout, pe_max_len)
        self.init_factor = nn.Embedding(rows * cols, d_model)

    def forward(self, feature: Tensor, prior: Tensor) -> Tensor:
        b, c, h, w = feature.shape
        if (h, w) != self.grid:
            raise ValueError(f"TPInterpreter: feature grid {(h, w)} != the query grid {self.grid}")
        text = self.activation(self.fc_in(prior.squeeze(2).transpose(1, 2)))  # (B, T, d)
        pos = self.pe(torch.zeros_like(text)).transpose(0, 1)  # (T, B, d)
        tgt = feature.flatten(2).permute(2, 0, 1)  # (H*W, B, d): the image features decode
        out = self.transformer(
            text.transpose(0, 1), pos, self.init_factor.weight, tgt, self.query_rnn_over_batch
        )
        return out.permute(1, 2, 0).reshape(b, c, h, w)


def _gaussian_window(channels: int, size: int, sigma: float, like: Tensor) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    window = torch.outer(g, g).to(like)
    return window.expand(channels, 1, size, size).contiguous()


def tri_ssim(a: Tensor, b: Tensor, c: Tensor, window_size: int = 11, sigma: float = 1.5) -> Tensor:
    """TSSIM (the paper's Eq. for L_TSC): SSIM's terms over the three pairs of three images,
    zero-padded Gaussian statistics per channel, averaged over everything; 1 when a = b = c."""
    if not a.shape == b.shape == c.shape or a.dim() != 4:
        raise ValueError(
            f"tri_ssim: three (B, C, H, W) images of one shape expected, got "
            f"{tuple(a.shape)}, {tuple(b.shape)}, {tuple(c.shape)}"
        )
    ch = a.shape[1]
    window = _gaussian_window(ch, window_size, sigma, a)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(x, window, padding=window_size // 2, groups=ch)

    mu = [blur(x) for x in (a, b, c)]
    var = [blur(x * x) - m * m for x, m in zip((a, b, c), mu, strict=True)]
    pairs = ((0, 1), (1, 2), (2, 0))
    cov = [blur((a, b, c)[i] * (a, b, c)[j]) - mu[i] * mu[j] for i, j in pairs]
    num = (sum(mu[i] * mu[j] for i, j in pairs) + SSIM_C1) * (sum(cov) + SSIM_C2)
    den = (sum(m * m for m in mu) + SSIM_C1) * (sum(var) + SSIM_C2)
    return (num / den).mean()


def rotate_warp(images: Tensor, angles: Tensor, offsets: Tensor, jitter: float = 0.2) -> Tensor:
    """Rotate each image by `angles` (radians) about its centre, the aspect ratio H/W used to
    undo the normalised coordinates' anisotropy jittered by (2 * offsets - 1) * jitter (offsets in
    [0, 1]): a rotation when the offset is 0.5, a mild shear/scale otherwise. Bilinear, zeros
    outside, align_corners=False (the code's torch 1.8 defaults)."""
    n, _, h, w = images.shape
    ratio = h / w + (offsets.to(images) * 2 - 1) * jitter
    cos, sin = angles.to(images).cos(), angles.to(images).sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack([cos, sin * ratio, zero, -sin / ratio, cos, zero], dim=1).view(n, 2, 3)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


__all__ = [
    "CrossOnlyDecoderLayer",
    "InfoTransformer",
    "PositionalEncoderLayer",
    "TATTPositionalEncoding",
    "TPInterpreter",
    "rotate_warp",
    "tri_ssim",
]
