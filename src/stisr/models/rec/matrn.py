"""MATRN (Na et al., ECCV 2022): ABINet's vision and language models + a multi-modal transformer.

`MATRN(MATRNConfig())` has the state-dict keys and shapes of the official
`modules.model_matrn_iter.MATRN` built from byeonghu-na/MATRN `configs/train_matrn.yaml`
(44,158,489 parameters), so the released `best-train-matrn.pth` loads with strict=True after
`official_state_dict` (weights under the key `model`).

Each iteration adds spatial position (vision attention maps x sinusoids) to the language features,
hides the visual features of one random character during training, runs a transformer over the
concatenated [visual; semantic] sequence, reads characters from both halves (position attention
for the visual half) and fuses them with a gate. Input and charset are ABINet's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from stisr.models.layers.abinet_blocks import (
    BaseVision,
    BCNLanguage,
    PositionAttention,
    fusion_gate,
    greedy_lengths,
)
from stisr.models.layers.abinet_transformer import PositionalEncoding, TransformerEncoder
from stisr.models.layers.config_utils import check_choice, check_positive
from stisr.models.rec.abinet_base import (
    ABINetBaseConfig,
    ABINetFamily,
    sequence_cross_entropy,
    unwrap_official,
)

BRANCHES = ("final", "semantic", "visual")


@dataclass
class MATRNConfig(ABINetBaseConfig):
    """Defaults reproduce the official model; the extra fields configure the multi-modal part."""

    sv_layers: int = 2  # multi-modal transformer layers (`alignment.num_layers`)
    mask_example_prob: float = 0.9  # chance a training sample gets visual features hidden
    mask_candidate_prob: float = 0.9  # chance each of the top-attended positions is hidden
    num_vis_mask: int = 10  # top-attended positions considered for hiding
    # The official loss weighs every multi-modal output (visual, semantic, fused) by
    # 3 x alignment.loss_weight (the module returns `loss_weight * 3`).
    alignment_loss_weight: float = 3.0
    output_branch: str = "final"  # `test_bh`: which multi-modal output forward() returns

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self.sv_layers, "MATRNConfig.sv_layers")
        check_positive(self.num_vis_mask, "MATRNConfig.num_vis_mask")
        for name in ("mask_example_prob", "mask_candidate_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"MATRNConfig.{name} must be in [0, 1], got {value!r}")
            setattr(self, name, float(value))
        weight = self.alignment_loss_weight
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ValueError(f"MATRNConfig.alignment_loss_weight must be >= 0, got {weight!r}")
        self.alignment_loss_weight = float(weight)
        check_choice(self.output_branch, BRANCHES, "MATRNConfig.output_branch")


class SemanticVisual(nn.Module):
    """Official `BaseSemanticVisual_backbone_feature` (attribute names kept)."""

    def __init__(self, cfg: MATRNConfig, num_classes: int) -> None:
        super().__init__()
        h, w = cfg.feature_size
        self.cfg = cfg
        self.v_token = nn.Parameter(torch.empty(1, cfg.d_model).uniform_(-0.001, 0.001))
        self.model1 = TransformerEncoder(
            cfg.sv_layers, cfg.d_model, cfg.nhead, cfg.d_inner, cfg.dropout
        )
        self.pos_encoder_tfm = PositionalEncoding(cfg.d_model, h * w, 0.0)
        self.model2_vis = PositionAttention(
            cfg.max_length + 1, cfg.d_model, cfg.attention_channels, h, w
        )
        self.cls_vis = nn.Linear(cfg.d_model, num_classes)
        self.cls_sem = nn.Linear(cfg.d_model, num_classes)
        self.w_att = nn.Linear(2 * cfg.d_model, cfg.d_model)
        self.cls = nn.Linear(cfg.d_model, num_classes)

    def hide_character(self, v_seq: Tensor, v_attn: Tensor, lengths: Tensor) -> Tensor:
        """Replace the positions most attended by one random character with `v_token`.

        v_seq (HW, N, E), v_attn (N, T, HW), lengths (N,) language lengths clamped to >= 2.
        Torch's generator replaces the official numpy draws, so seeding torch reproduces runs.
        """
        n, device = v_attn.shape[0], v_attn.device
        chosen = torch.rand(n, device=device) <= self.cfg.mask_example_prob
        char = (torch.rand(n, device=device) * lengths.to(device)).long()
        char = torch.minimum(char, lengths.to(device) - 1)
        rows = v_attn[torch.arange(n, device=device), char]  # (N, HW)
        top = rows.topk(min(self.cfg.num_vis_mask, rows.shape[1]), dim=1).indices
        keep = torch.rand(top.shape, device=device) <= self.cfg.mask_candidate_prob
        keep &= chosen.unsqueeze(1)
        hidden = torch.zeros_like(rows, dtype=torch.bool).scatter_(1, top, keep)  # (N, HW)
        token = self.v_token.to(v_seq.dtype).view(1, 1, -1)
        return torch.where(hidden.t().unsqueeze(-1), token, v_seq)

    def forward(
        self, l_feature: Tensor, v_feature: Tensor, lengths: Tensor, v_attn: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """-> visual-branch, semantic-branch and fused logits, each (N, T, C)."""
        n, e, h, w = v_feature.shape
        v_attn = v_attn.flatten(2)  # (N, T, HW)
        v_seq = v_feature.flatten(2).permute(2, 0, 1)  # (HW, N, E)
        if self.training:
            v_seq = self.hide_character(v_seq, v_attn, lengths)
        # Spatial position of each character = its attention-weighted sinusoid of the map.
        base_pos = torch.matmul(v_attn, self.pos_encoder_tfm.pe[: h * w, 0])  # (N, T, E)
        l_seq = (l_feature + base_pos).permute(1, 0, 2)  # (T, N, E)
        sv = self.model1(torch.cat((v_seq, l_seq), dim=0))
        v_out = sv[: h * w].permute(1, 2, 0).reshape(n, e, h, w)
        v_vecs, _ = self.model2_vis(v_out)  # (N, T, E)
        s_vecs = sv[h * w :].permute(1, 0, 2)  # (N, T, E)
        gate = fusion_gate(self.w_att, v_vecs, s_vecs)
        fused = gate * v_vecs + (1 - gate) * s_vecs
        return self.cls_vis(v_vecs), self.cls_sem(s_vecs), self.cls(fused)


class MATRNOutputs(NamedTuple):
    vision: Tensor  # (N, T, C)
    language: list[Tensor]  # one per iteration
    visual: list[Tensor]  # multi-modal visual branch, one per iteration
    semantic: list[Tensor]  # multi-modal semantic branch, one per iteration
    final: list[Tensor]  # fused output, one per iteration; the last is the prediction
    attn_scores: Tensor  # (N, T, H, W) vision attention maps
    backbone_feature: Tensor  # (N, E, H, W) the vision backbone's output


class MATRN(ABINetFamily):
    """forward(x: (B, 3, 32, 128)) -> logits (B, 26, 37) of `output_branch` (default fused)."""

    def __init__(self, config: MATRNConfig | None = None) -> None:
        cfg = config or MATRNConfig()
        super().__init__(cfg)
        self.vision = BaseVision(cfg, self.num_classes)
        self.language = BCNLanguage(cfg, self.num_classes)
        self.semantic_visual = SemanticVisual(cfg, self.num_classes)

    def forward_all(self, x: Tensor) -> MATRNOutputs:
        """Every branch of every iteration (what the loss and distillation methods read)."""
        self.check_input(x)
        v = self.vision(x)
        v_attn = v.attn_scores.detach()
        logits = v.logits
        outs: dict[str, list[Tensor]] = {k: [] for k in ("language", "visual", "semantic", "final")}
        for _ in range(self.config.iter_size):
            lengths = greedy_lengths(logits).clamp(2, self.max_length)
            l_feature, l_logits = self.language(torch.softmax(logits, dim=-1), lengths)
            l_lengths = greedy_lengths(l_logits).clamp(2, self.max_length)
            vis, sem, logits = self.semantic_visual(
                l_feature, v.backbone_feature, l_lengths, v_attn
            )
            for key, value in zip(outs, (l_logits, vis, sem, logits), strict=True):
                outs[key].append(value)
        return MATRNOutputs(
            v.logits, **outs, attn_scores=v.attn_scores, backbone_feature=v.backbone_feature
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.forward_all(x)
        return getattr(out, self.config.output_branch)[-1]

    def text_loss(self, x: Tensor, labels: Sequence[str]) -> Tensor:
        """Official MultiLosses: CE(vision) + CE(language) + 3 * CE(visual, semantic, fused).

        Averages are over the label characters plus the end token and over all iterations.
        """
        if len(labels) != x.shape[0]:
            raise ValueError(f"MATRN.text_loss got {len(labels)} labels for {x.shape[0]} images")
        out = self.forward_all(x)
        targets, lengths = self.encode_targets(labels, x.device)
        multi_modal = [*out.visual, *out.semantic, *out.final]
        return (
            sequence_cross_entropy([out.vision], targets, lengths)
            + sequence_cross_entropy(out.language, targets, lengths)
            + self.config.alignment_loss_weight
            * sequence_cross_entropy(multi_modal, targets, lengths)
            + self.aux_ctc_term(out.backbone_feature, targets, lengths)
        )


def official_state_dict(raw: Any) -> dict[str, Tensor]:
    """`torch.load("best-train-matrn.pth")` -> a state dict for `MATRN()` (strict=True).

    Takes the `model` sub-dict and strips a DataParallel `module.` prefix; names are unchanged.
    """
    return unwrap_official(raw, ("vision.", "language.", "semantic_visual."), "MATRN checkpoint")
