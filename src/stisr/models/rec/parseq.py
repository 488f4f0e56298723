"""PARSeq (Bautista & Atienza, ECCV 2022) with the parameter layout of baudm/parseq v1.0.0.

`PARSeq(PARSeqConfig())` has exactly the keys and shapes of the released `parseq-bb5792a6.pt`
(GitHub release baudm/parseq v1.0.0, a plain state dict): ViT encoder (patch 4x8 at 32x128, dim
384, depth 12, 6 heads), one two-stream decoder layer (12 heads), `head` (95 = EOS + 94 chars),
`text_embed` (97 = 94 chars + EOS/BOS/PAD) and `pos_queries` (26 = 25 chars + EOS).
`official_state_dict` takes that file (or a Lightning checkpoint of the newer code, whose keys sit
under `state_dict` with a `model.` prefix) and returns keys that load with strict=True.

Tokens: EOS 0, characters 1..94 in the order of `stisr.charset.FULL_CHARSET` (PARSeq's
94_full.yaml), BOS 95, PAD 96. Input as the STISR code feeds PARSeq (docs/protocols.md): RGB,
bicubic to 32x128, Normalize(0.5, 0.5) -> [-1, 1].

Inference (`forward`) is PARSeq's test-time decoding: autoregressive greedy decoding (`decode_ar`;
NAR with all queries at once otherwise) followed by `refine_iters` cloze refinement passes.

Training (`training_loss`) is permutation language modelling. Same as the official code: the
canonical left-to-right order, its mirror (with EOS given null context), and random permutations
with their mirrors, `perm_num` in all, shared by the batch; the loss is the token-weighted cross
entropy, EOS targets only in the first two orders. Simplification (documented): for sequences of
2-4 characters the random orders are drawn without replacement from the half of all orders that
is lexicographically smaller than its mirror, where the official code uses a hand-picked table
for 4 characters; either way each mirror pair is drawn at most once, with equal probability.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.charset import FULL_CHARSET, Charset
from stisr.models.layers.aux_ctc import aux_ctc_loss
from stisr.models.layers.config_utils import check_positive, check_weight
from stisr.models.layers.init import vit_init_
from stisr.models.layers.parseq_blocks import (
    TokenEmbedding,
    TwoStreamDecoder,
    TwoStreamDecoderLayer,
    VitEncoder,
)
from stisr.models.objective import Recognizer

EOS_ID = 0


@dataclass
class PARSeqConfig:
    """Defaults = the released `parseq` (base) model; `PARSEQ_TINY` shrinks it (the demo config is
    in params.yaml)."""

    img_h: int = 32
    img_w: int = 128
    patch_h: int = 4
    patch_w: int = 8
    embed_dim: int = 384
    enc_depth: int = 12
    enc_num_heads: int = 6
    enc_mlp_ratio: int = 4
    dec_depth: int = 1
    dec_num_heads: int = 12
    dec_mlp_ratio: int = 4
    dropout: float = 0.1
    max_label_length: int = 25
    charset: str = FULL_CHARSET  # token i+1 = charset[i]; ordering fixes the token ids
    decode_ar: bool = True
    refine_iters: int = 1
    ar_early_exit: bool = True  # stop AR decoding once every sequence has produced EOS
    perm_num: int = 6
    perm_forward: bool = True
    perm_mirrored: bool = True
    # Weight of an auxiliary CTC loss on the encoder's patch columns (mean over rows), per token
    # like the PLM loss (models/layers/aux_ctc.py): a training aid for short CPU schedules.
    # 0 = the official model (no extra parameters).
    aux_ctc: float = 0.0

    def __post_init__(self) -> None:
        check_weight(self.aux_ctc, "PARSeqConfig.aux_ctc")
        for name in (
            "img_h",
            "img_w",
            "patch_h",
            "patch_w",
            "embed_dim",
            "enc_depth",
            "enc_num_heads",
            "enc_mlp_ratio",
            "dec_depth",
            "dec_num_heads",
            "dec_mlp_ratio",
            "max_label_length",
            "perm_num",
        ):
            check_positive(getattr(self, name), f"PARSeqConfig.{name}")
        if self.img_h % self.patch_h or self.img_w % self.patch_w:
            raise ValueError(
                f"PARSeqConfig: image {self.img_h}x{self.img_w} is not divisible by the patch "
                f"{self.patch_h}x{self.patch_w}"
            )
        for heads in ("enc_num_heads", "dec_num_heads"):
            if self.embed_dim % getattr(self, heads):
                raise ValueError(
                    f"PARSeqConfig.embed_dim ({self.embed_dim}) must be divisible by "
                    f"{heads} ({getattr(self, heads)})"
                )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"PARSeqConfig.dropout must be in [0, 1), got {self.dropout}")
        if not isinstance(self.refine_iters, int) or self.refine_iters < 0:
            raise ValueError(f"PARSeqConfig.refine_iters must be >= 0, got {self.refine_iters!r}")
        if not self.charset:
            raise ValueError("PARSeqConfig.charset must not be empty")
        if self.perm_mirrored and self.perm_num % 2:
            raise ValueError(
                f"PARSeqConfig.perm_num must be even with perm_mirrored, got {self.perm_num}"
            )
        Charset(self.charset)  # rejects duplicate characters


# The released parseq_tiny (parseq_tiny-e7a21b54.pt) differs only in these fields.
PARSEQ_TINY: dict[str, Any] = {"embed_dim": 192, "enc_num_heads": 3, "dec_num_heads": 6}


def official_state_dict(raw: Mapping[str, Any]) -> dict[str, Tensor]:
    """Keys of `parseq-bb5792a6.pt` (or a strhub Lightning checkpoint) -> `PARSeq` keys.

    The v1.0.0 release is already a plain state dict with our names. Newer strhub code wraps the
    network as `model.*` inside a Lightning checkpoint (`state_dict`); `module.` comes from
    DataParallel. Non-tensor entries are rejected.
    """
    if "state_dict" in raw and isinstance(raw["state_dict"], Mapping):
        raw = raw["state_dict"]
    out: dict[str, Tensor] = {}
    for key, value in raw.items():
        name = key
        for prefix in ("module.", "model."):
            if name.startswith(prefix):
                name = name[len(prefix) :]
        if not isinstance(value, Tensor):
            raise ValueError(f"PARSeq checkpoint entry {key!r} is not a tensor ({type(value)})")
        out[name] = value
    return out


class PARSeq(Recognizer, nn.Module):
    """forward(x: (B, 3, 32, 128) in [-1, 1]) -> logits (B, L <= max_length + 1, charset + 1)."""

    def __init__(self, config: PARSeqConfig | None = None) -> None:
        super().__init__()
        cfg = config or PARSeqConfig()
        self.config = cfg
        self.charset = Charset(cfg.charset)
        num_chars = len(cfg.charset)
        self.bos_id = num_chars + 1
        self.pad_id = num_chars + 2
        dim = cfg.embed_dim
        self.encoder = VitEncoder(
            (cfg.img_h, cfg.img_w),
            (cfg.patch_h, cfg.patch_w),
            dim,
            cfg.enc_depth,
            cfg.enc_num_heads,
            cfg.enc_mlp_ratio,
        )
        layer = TwoStreamDecoderLayer(dim, cfg.dec_num_heads, dim * cfg.dec_mlp_ratio, cfg.dropout)
        self.decoder = TwoStreamDecoder(layer, cfg.dec_depth, dim)
        self.head = nn.Linear(dim, num_chars + 1)  # BOS and PAD are never predicted
        self.text_embed = TokenEmbedding(num_chars + 3, dim)
        self.pos_queries = nn.Parameter(torch.empty(1, cfg.max_label_length + 1, dim))
        self.dropout = nn.Dropout(cfg.dropout)
        # CTC over the patch columns; EOS (id 0) doubles as the blank.
        self.aux_ctc_head = nn.Linear(dim, num_chars + 1) if cfg.aux_ctc > 0 else None
        self._init_weights()

    def _init_weights(self) -> None:
        vit_init_(self, skip=self.encoder, embeddings=True)  # the encoder has its own (timm) init
        nn.init.trunc_normal_(self.pos_queries, std=0.02)

    # --- protocol -------------------------------------------------------------------------
    def preprocess(self, rgb: Tensor) -> Tensor:
        """(B, 3|4, H, W) RGB(M) in [0, 1] -> (B, 3, img_h, img_w) in [-1, 1]."""
        if rgb.dim() != 4 or rgb.shape[1] not in (3, 4):
            raise ValueError(f"PARSeq.preprocess expects (B, 3|4, H, W), got {tuple(rgb.shape)}")
        size = (self.config.img_h, self.config.img_w)
        x = F.interpolate(rgb[:, :3].float(), size=size, mode="bicubic", align_corners=False)
        return (x - 0.5) / 0.5

    def forward(self, x: Tensor, max_length: int | None = None) -> Tensor:
        self._check_input(x)
        cfg = self.config
        length = (
            cfg.max_label_length if max_length is None else min(max_length, cfg.max_label_length)
        )
        steps = length + 1  # + EOS
        batch = x.shape[0]
        memory = self.encoder(x)
        pos_queries = self._queries(steps, batch)
        # True = masked. The canonical (left-to-right) order is a causal mask.
        causal = torch.triu(torch.ones(steps, steps, dtype=torch.bool, device=x.device), 1)
        if cfg.decode_ar:
            logits = self._decode_ar(memory, pos_queries, causal, steps)
        else:
            tgt_in = torch.full((batch, 1), self.bos_id, dtype=torch.long, device=x.device)
            logits = self.head(self._decode(tgt_in, memory, query=pos_queries))
        if cfg.refine_iters:
            # Cloze mask: every position sees the whole context except the token it predicts.
            cloze = torch.triu(causal, 1) & ~torch.triu(causal, 2)
            bos = torch.full((batch, 1), self.bos_id, dtype=torch.long, device=x.device)
            for _ in range(cfg.refine_iters):
                tgt_in = torch.cat([bos, logits[:, :-1].argmax(-1)], dim=1)
                padding = (tgt_in == EOS_ID).cumsum(-1) > 0  # hide EOS and what follows
                n = tgt_in.shape[1]
                logits = self.head(
                    self._decode(
                        tgt_in,
                        memory,
                        content_mask=cloze[:n, :n],  # the official code aliases the two
                        padding_mask=padding,
                        query=pos_queries[:, :n],
                        query_mask=cloze[:n, :n],
                    )
                )
        return logits

    def decode(self, logits: Tensor) -> list[str]:
        """Greedy: argmax per position, cut at the first EOS."""
        out = []
        for ids in logits.detach().argmax(-1).tolist():
            if EOS_ID in ids:
                ids = ids[: ids.index(EOS_ID)]
            out.append(self.charset.decode(ids))
        return out

    def text_loss(self, x: Tensor, labels: Sequence[str]) -> Tensor:
        """Permutation language modelling loss (teacher forcing over `perm_num` orders)."""
        self._check_input(x)
        if len(labels) != x.shape[0]:
            raise ValueError(f"PARSeq.text_loss got {len(labels)} labels for {x.shape[0]}")
        tgt = self.encode_labels(labels, x.device)
        memory = self.encoder(x)
        perms = self.permutations(tgt.shape[1] - 2, x.device)
        tgt_in, tgt_out = tgt[:, :-1], tgt[:, 1:]
        padding = (tgt_in == self.pad_id) | (tgt_in == EOS_ID)  # nothing attends to EOS
        total = x.new_zeros(())
        weight = 0
        for i, perm in enumerate(perms):
            content_mask, query_mask = self.attention_masks(perm)
            n = int((tgt_out != self.pad_id).sum())
            if n:
                out = self._decode(tgt_in, memory, content_mask, padding, query_mask=query_mask)
                logits = self.head(out).flatten(end_dim=1)
                loss = F.cross_entropy(logits.float(), tgt_out.flatten(), ignore_index=self.pad_id)
                total = total + n * loss
                weight += n
            if i == 1:  # EOS is learnt from the canonical and the reversed order only
                tgt_out = torch.where(tgt_out == EOS_ID, self.pad_id, tgt_out)
        loss = total / max(weight, 1)
        if self.aux_ctc_head is not None:
            loss = loss + self._aux_ctc(memory, tgt)
        return loss

    def _aux_ctc(self, memory: Tensor, tgt: Tensor) -> Tensor:
        """Weighted CTC of the patch columns against the label ids, per label+EOS token."""
        cfg = self.config
        rows, cols = cfg.img_h // cfg.patch_h, cfg.img_w // cfg.patch_w
        columns = memory.unflatten(1, (rows, cols)).mean(dim=1)  # (B, cols, E)
        ids = [[t for t in seq[1:] if t not in (EOS_ID, self.pad_id)] for seq in tgt.tolist()]
        return cfg.aux_ctc * aux_ctc_loss(self.aux_ctc_head(columns), ids, per_token=True)

    # --- helpers --------------------------------------------------------------------------
    def encode_labels(self, labels: Sequence[str], device: torch.device) -> Tensor:
        """[BOS] ids [EOS] [PAD]...; labels filtered to the charset and cut to max length."""
        seqs = []
        for label in labels:
            text = self.charset.filter(label)[: self.config.max_label_length]
            seqs.append([self.bos_id, *self.charset.encode(text), EOS_ID])
        width = max(len(s) for s in seqs)
        padded = [s + [self.pad_id] * (width - len(s)) for s in seqs]
        return torch.tensor(padded, dtype=torch.long, device=device)

    def permutations(self, num_chars: int, device: torch.device) -> Tensor:
        """(P, num_chars + 2) position orders incl. BOS (first) and EOS (last), batch-shared."""
        cfg = self.config
        if num_chars <= 1:
            return torch.arange(num_chars + 2, device=device).unsqueeze(0)
        max_gen = cfg.perm_num // 2 if cfg.perm_mirrored else cfg.perm_num
        total = math.factorial(num_chars) // (2 if cfg.perm_mirrored else 1)
        num_gen = min(max_gen, total)
        perms = [torch.arange(num_chars)] if cfg.perm_forward else []
        extra = num_gen - len(perms)
        if num_chars < 5:
            # Small pools: sample without replacement (one member of each mirror pair).
            pool = [
                p
                for p in itertools.permutations(range(num_chars))
                if not cfg.perm_mirrored or p < p[::-1]
            ]
            if cfg.perm_forward:
                pool = pool[1:]  # the identity comes first in lexicographic order
            if extra > 0:
                pick = torch.randperm(len(pool))[:extra].tolist()
                perms.extend(torch.tensor(pool[j]) for j in pick)
        else:
            perms.extend(torch.randperm(num_chars) for _ in range(extra))
        stacked = torch.stack(perms)
        if cfg.perm_mirrored:
            stacked = torch.stack([stacked, stacked.flip(-1)], dim=1).reshape(-1, num_chars)
        bos = stacked.new_zeros(len(stacked), 1)
        eos = stacked.new_full((len(stacked), 1), num_chars + 1)
        stacked = torch.cat([bos, stacked + 1, eos], dim=1)
        if len(stacked) > 1:
            # Reverse order with EOS first: reversed context and null context for EOS.
            stacked[1, 1:] = num_chars + 1 - torch.arange(num_chars + 1)
        return stacked.to(device)

    @staticmethod
    def attention_masks(perm: Tensor) -> tuple[Tensor, Tensor]:
        """Boolean (True = masked) content and query masks for one order (PARSeq Sec. 3.3)."""
        rank = torch.empty_like(perm)
        rank[perm] = torch.arange(len(perm), device=perm.device)
        later = rank[None, :] > rank[:, None]  # key b comes after query a in the order
        content_mask = later[:-1, :-1]
        query_mask = (rank[None, :] >= rank[:, None])[1:, :-1]  # also hides the token itself
        return content_mask, query_mask

    def _decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        content_mask: Tensor | None = None,
        padding_mask: Tensor | None = None,
        query: Tensor | None = None,
        query_mask: Tensor | None = None,
    ) -> Tensor:
        batch, length = tgt.shape
        null_ctx = self.text_embed(tgt[:, :1])  # BOS: no position information
        content = self.pos_queries[:, : length - 1] + self.text_embed(tgt[:, 1:])
        content = self.dropout(torch.cat([null_ctx, content], dim=1))
        if query is None:
            query = self._queries(length, batch)
        query = self.dropout(query)
        return self.decoder(query, content, memory, query_mask, content_mask, padding_mask)

    def _queries(self, length: int, batch: int) -> Tensor:
        # repeat (a copy), not expand (a view): under no_grad a view of a parameter is not a
        # valid module input for torch's module tracker, which FlopCounterMode uses.
        return self.pos_queries[:, :length].repeat(batch, 1, 1)

    def _decode_ar(self, memory: Tensor, pos_queries: Tensor, causal: Tensor, steps: int) -> Tensor:
        batch = memory.shape[0]
        tgt_in = torch.full((batch, steps), self.pad_id, dtype=torch.long, device=memory.device)
        tgt_in[:, 0] = self.bos_id
        logits = []
        for i in range(steps):
            j = i + 1
            # One query at position i; causal masking makes earlier outputs final.
            out = self._decode(
                tgt_in[:, :j],
                memory,
                content_mask=causal[:j, :j],
                query=pos_queries[:, i:j],
                query_mask=causal[i:j, :j],
            )
            step_logits = self.head(out)
            logits.append(step_logits)
            if j < steps:
                tgt_in[:, j] = step_logits[:, 0].argmax(-1)
                if self.config.ar_early_exit and (tgt_in == EOS_ID).any(dim=-1).all():
                    break
        return torch.cat(logits, dim=1)

    def _check_input(self, x: Tensor) -> None:
        expected = (3, self.config.img_h, self.config.img_w)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"PARSeq expects (B, {expected[0]}, {expected[1]}, {expected[2]}) input, "
                f"got {tuple(x.shape)}; use preprocess() first"
            )
