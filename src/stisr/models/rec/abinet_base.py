"""The config and model base class shared by ABINet (Fang et al., CVPR 2021) and MATRN (Na et
al., ECCV 2022), with their loss and checkpoint helpers (models/rec/abinet.py, models/rec/matrn.py).

Both models read the 36-character charset file of the official code, whose order is
`a-z` then `1-9` then `0`, with the null/end token at class 0 (37 classes). Every sequence has
`max_length + 1` positions (the extra one for the end token). The layers they are built from are
in models/layers/abinet_blocks.py and models/layers/abinet_transformer.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.charset import Charset
from stisr.models.layers.abinet_blocks import (
    FEATURE_STRIDE,
    NULL_LABEL,
    RESNET45_BLOCKS,
    RESNET45_WIDTHS,
    padding_mask,
)
from stisr.models.layers.aux_ctc import aux_ctc_loss
from stisr.models.layers.config_utils import as_tuple, check_positive, check_weight
from stisr.models.objective import Recognizer

# data/charset_36.txt of the official repositories: line i holds the character of class i + 1.
ABINET_CHARS = "abcdefghijklmnopqrstuvwxyz1234567890"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


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
# Loss, checkpoints, model base class


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
