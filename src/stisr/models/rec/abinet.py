"""ABINet (Fang et al., CVPR 2021): vision model + BCN language model + gated alignment, iterated.

`ABINet(ABINetConfig())` has the state-dict keys and shapes of the official
`modules.model_abinet_iter.ABINetIterModel` built from `configs/train_abinet.yaml`
(ResNet-45 + 3 transformer layers, position attention, 4-layer BCN, 3 iterations; 36,738,703
parameters), so the released `best-train-abinet.pth` loads with strict=True after
`official_state_dict` (its weights are under the key `model`).

Input as the STISR code feeds it (docs/protocols.md): bicubic to 32x128, RGB normalized with the
ImageNet mean/std. Classes: 0 = end token, then `a-z1-90` (official charset_36.txt); 25 characters
+ 1 end position. Inference returns the last alignment logits, as the official evaluation does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from stisr.models.layers.abinet_blocks import BaseVision, BCNLanguage, fusion_gate, greedy_lengths
from stisr.models.rec.abinet_base import (
    ABINetBaseConfig,
    ABINetFamily,
    sequence_cross_entropy,
    unwrap_official,
)


@dataclass
class ABINetConfig(ABINetBaseConfig):
    """Defaults reproduce the official model; shrink widths/depths for a demo scale."""


class BaseAlignment(nn.Module):
    """Gate between language and vision features per position (official `BaseAlignment`)."""

    def __init__(self, d_model: int, num_classes: int) -> None:
        super().__init__()
        self.w_att = nn.Linear(2 * d_model, d_model)
        self.cls = nn.Linear(d_model, num_classes)

    def forward(self, l_feature: Tensor, v_feature: Tensor) -> Tensor:
        gate = fusion_gate(self.w_att, l_feature, v_feature)
        return self.cls(gate * v_feature + (1 - gate) * l_feature)


class ABINetOutputs(NamedTuple):
    vision: Tensor  # (N, T, C)
    language: list[Tensor]  # one (N, T, C) per iteration
    alignment: list[Tensor]  # one (N, T, C) per iteration; the last is the prediction
    attn_scores: Tensor  # (N, T, H, W) vision attention maps
    backbone_feature: Tensor  # (N, E, H, W) the vision backbone's output


class ABINet(ABINetFamily):
    """forward(x: (B, 3, 32, 128)) -> final alignment logits (B, 26, 37)."""

    def __init__(self, config: ABINetConfig | None = None) -> None:
        cfg = config or ABINetConfig()
        super().__init__(cfg)
        self.vision = BaseVision(cfg, self.num_classes)
        self.language = BCNLanguage(cfg, self.num_classes)
        self.alignment = BaseAlignment(cfg.d_model, self.num_classes)

    def forward_all(self, x: Tensor) -> ABINetOutputs:
        """Every branch of every iteration (what the loss and distillation methods read)."""
        self.check_input(x)
        v = self.vision(x)
        logits = v.logits
        all_l, all_a = [], []
        for _ in range(self.config.iter_size):
            lengths = greedy_lengths(logits).clamp(2, self.max_length)
            l_feature, l_logits = self.language(torch.softmax(logits, dim=-1), lengths)
            logits = self.alignment(l_feature, v.feature)
            all_l.append(l_logits)
            all_a.append(logits)
        return ABINetOutputs(v.logits, all_l, all_a, v.attn_scores, v.backbone_feature)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_all(x).alignment[-1]

    def text_loss(self, x: Tensor, labels: Sequence[str]) -> Tensor:
        """Official MultiLosses: CE(vision) + CE(language, all iters) + CE(alignment, all iters).

        Each term averages over the label characters plus the end token; labels are lower-cased,
        filtered to the charset and truncated to `max_length`, so empty labels train the end token.
        """
        if len(labels) != x.shape[0]:
            raise ValueError(f"ABINet.text_loss got {len(labels)} labels for {x.shape[0]} images")
        out = self.forward_all(x)
        targets, lengths = self.encode_targets(labels, x.device)
        return (
            sequence_cross_entropy([out.vision], targets, lengths)
            + sequence_cross_entropy(out.language, targets, lengths)
            + sequence_cross_entropy(out.alignment, targets, lengths)
            + self.aux_ctc_term(out.backbone_feature, targets, lengths)
        )


def official_state_dict(raw: Any) -> dict[str, Tensor]:
    """`torch.load("best-train-abinet.pth")` -> a state dict for `ABINet()` (strict=True).

    Takes the `model` sub-dict (fastai's `{"model": ..., "opt": ...}`) and strips a DataParallel
    `module.` prefix; key names are otherwise identical to the official ones.
    """
    return unwrap_official(raw, ("vision.", "language.", "alignment."), "ABINet checkpoint")
