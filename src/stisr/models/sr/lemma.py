"""LEMMA (Guo, Dai, Meng, Xia, "Towards Robust Scene Text Image Super-resolution via Explicit
Location Enhancement", IJCAI 2023).

A guide recognizer (ABINet) reads the (rectified) LR image; its attention maps locate the
characters (LEM: compression, expansion, Top-K selection, pixel-to-region), its text distribution
is aligned with the selected features both ways (MAM), and the resulting guidance X_G is fused
into every SR block (AdaFM) of a TSRN-style branch. Layout of csguoh/LEMMA `model/lemma.py`
(`LEMMA(scale_factor=2, width=128, height=32, STN=True, srb_nums=5, mask=True,
hidden_units=32)`, main.py defaults) with `position_prior` (the guide, `PositionAwareModule`) and
`guidanceGen` (LEM + MAM, `stisr.models.layers.lemma_blocks`); the release's `state_dict_G` loads
strictly after `official_state_dict`.

Facts from the code (file:line of csguoh/LEMMA):

* Guide input (`model/lemma.py` l. 141-143): first 3 channels of the rectified LR, detached,
  bicubic x2 (align_corners=True), ImageNet mean/std. The guide is ABINet's vision model + one
  pass of its language model - no alignment head (`Position_aware_module.py` l. 227-255): its
  attention maps (8x32, bicubic x2 to the 16x64 LR grid), the *language* logits (raw, fed to
  `text_proj`) and the language lengths clamped to [2, 26] (they count the end token).
  `ABINetGuide` is the repository's ABINet without `alignment`; a full ABINet state dict (an
  ABINet run, `best-train-abinet.pth`) still loads strictly, the alignment keys being dropped.
* MAM sizes (l. 262-266, 280): d_model 64 (= SR channels), 4 heads, feed-forward 64, 2 text
  encoder layers, 3 layers per alignment level, dropout 0.1, Top-K 500 of 16x64.
* Fine-tuning loss (`loss/text_focus_loss.py` l. 594-596): CE of the vision logits + CE of the
  language logits against the label padded with the end token to 26 positions, averaged over all
  positions. The code feeds softmax outputs to CrossEntropyLoss (a softmax twice); the paper's
  plain CE is the default here, `finetune_softmax=True` gives the code's. The text-focus losses
  (STT transformer, asset `stt`) are `stisr.losses.text_focus`, read on the first 3 channels.
  The code's total = mse + 0.5 (10 att + 5e-4 content) + 0.01 ft, x100, grad-clip 0.25 (engine).
* Optimizer (`interfaces/base.py` l. 156-169): `position_prior` at `--lr_position` 1e-4, the rest
  at 1e-3: `param_groups` with the run optimizer's `guide_lr`.
* SR branch: mish activations and GRUs (l. 193, 226, 250); the TPS-STN only in training mode
  (l. 137, `stn_in_train_only=True` for the code; default: the paper's always-on STN).

Ablation switches (all default on, spec src/stisr/papers/lemma.yaml): see `LEMMAConfig`. Our
readings where the paper is silent: `lem_char_attn` off -> X_pos = X_I (no IN, no product);
pixel-to-region belongs to the feature selection (off with it); `alignment="none"` -> the text
features (after the encoder) interpolated over the LR grid, no LEM built; `use_mam` off -> X_G =
the (selected, zero elsewhere) X'_pos; CRNN guide -> `ctc_band_maps`, CTC as its fine-tuning loss.

At demo scale (params.yaml) the widths are cut and the ablations are warm-started from the
shared demo `lemma/lemma` run (spec `warm_start`), both listed under the tables as deviations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.losses.text_focus import text_focus_losses
from stisr.models.layers import tsrn_skeleton as skeleton
from stisr.models.layers.abinet_blocks import greedy_lengths
from stisr.models.layers.activations import ACTIVATIONS
from stisr.models.layers.config_utils import (
    as_tuple,
    check_choice,
    check_count,
    check_input,
    check_positive,
)
from stisr.models.layers.lemma_blocks import (
    GuidanceGenerator,
    LEMMABlock,
    compress_attention,
    ctc_band_maps,
)
from stisr.models.layers.recurrent import RNN_TYPES
from stisr.models.layers.tps_stn import tps_rectify
from stisr.models.layers.upsample import upsample_blocks
from stisr.models.objective import Batch, Context, Parts, SRModel, add_weighted
from stisr.models.rec.abinet import ABINet, ABINetConfig
from stisr.models.rec.crnn import CRNN, CRNNConfig

TEXT_FOCUS_LOSSES = ("text_focus_attention", "text_focus_content")
STT_ASSET = "stt"
GUIDES = ("abinet", "crnn")
ALIGNMENTS = ("bidirectional", "unidirectional", "none")
GUIDE_LR_RATIO = 0.1  # paper: 1e-4 for ABINet vs 1e-3, when the run gives no guide_lr
# The public code's values of the paper-vs-code switches (`LEMMAConfig(**CODE_VARIANT)`).
CODE_VARIANT: dict[str, Any] = {"stn_in_train_only": True, "finetune_softmax": True}


@dataclass
class LEMMAConfig:
    """LEMMA hyper-parameters; `abinet_guide` / `crnn_guide` are the overrides of the guide's
    config (ABINetConfig / CRNNConfig), one per choice so that a scale can set both."""

    scale_factor: int = 2
    in_channels: int = 4  # RGBM (`--mask`)
    out_channels: int = 4
    hidden_units: int = 32  # features (and d_model of the MAM) have 2x its channels
    srb_nums: int = 5
    lr_size: tuple[int, int] = (16, 64)  # the AdaFM's global conv and the PE span this grid
    rnn: str = "gru"
    activation: str = "mish"
    use_stn: bool = True
    stn_in_train_only: bool = False  # code: the TPS-STN runs only in training
    num_control_points: int = 20
    tps_margins: tuple[float, float] = (0.05, 0.05)
    stn_activation: str = "none"
    tps_align_corners: bool = True
    guide_recognizer: str = "abinet"  # abinet (paper) | crnn (Sec. 4.6)
    abinet_guide: dict[str, Any] = field(default_factory=dict)
    crnn_guide: dict[str, Any] = field(default_factory=dict)
    nhead: int = 4
    d_inner: int = 64
    text_layers: int = 2  # nEncoder
    align_layers: int = 3  # nDecoder, per alignment level
    dropout: float = 0.1
    expansion_widths: tuple[int, int] = (32, 64)  # attn_conv 1 -> 32 -> 64 -> C
    top_k: int = 500
    use_lem: bool = True  # off: all LEM parts off (Table 1 row 1)
    lem_char_attn: bool = True  # compression -> expansion -> IN(X_I) x h_pos (Eqs. 1-3)
    lem_expansion_conv: bool = True  # off: h_pos = h_score (Table 7)
    lem_feat_select: bool = True  # Top-K of h_score (Eq. 4); off: all positions
    lem_pixel_to_region: bool = True  # 3x3 conv before the gathering (Eq. 5)
    use_mam: bool = True  # off: X_G = the selected X'_pos (Table 4 row 2)
    alignment: str = "bidirectional"  # | unidirectional | none (Table 2)
    match_params: bool = False  # UDA with 2x layers: BDA's parameter count (Sec. 4.4)
    use_adafm: bool = True  # off: concatenation + 1x1 conv (Table 4)
    finetune_softmax: bool = False  # code: softmax before the fine-tuning CE

    def __post_init__(self) -> None:
        for name in ("scale_factor", "in_channels", "out_channels", "hidden_units", "nhead"):
            check_positive(getattr(self, name), f"LEMMAConfig.{name}")
        for name in ("d_inner", "text_layers", "align_layers", "top_k", "num_control_points"):
            check_positive(getattr(self, name), f"LEMMAConfig.{name}")
        check_count(self.srb_nums, "LEMMAConfig.srb_nums")
        self.lr_size = as_tuple(self.lr_size, 2, int, "LEMMAConfig.lr_size")
        self.tps_margins = as_tuple(self.tps_margins, 2, float, "LEMMAConfig.tps_margins")
        self.expansion_widths = as_tuple(
            self.expansion_widths, 2, int, "LEMMAConfig.expansion_widths"
        )
        for name, value, choices in (
            ("rnn", self.rnn, RNN_TYPES),
            ("activation", self.activation, ACTIVATIONS),
            ("stn_activation", self.stn_activation, ("none", "sigmoid")),
            ("guide_recognizer", self.guide_recognizer, GUIDES),
            ("alignment", self.alignment, ALIGNMENTS),
        ):
            check_choice(value, choices, f"LEMMAConfig.{name}")
        if self.channels % self.nhead:
            raise ValueError(
                f"LEMMAConfig: 2*hidden_units must be divisible by nhead ({self.nhead})"
            )
        if self.top_k > self.lr_size[0] * self.lr_size[1]:
            raise ValueError(f"LEMMAConfig.top_k ({self.top_k}) exceeds the {self.lr_size} grid")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LEMMAConfig.dropout must be in [0, 1), got {self.dropout!r}")
        for name in ("abinet_guide", "crnn_guide"):
            if not isinstance(getattr(self, name), Mapping):
                raise ValueError(
                    f"LEMMAConfig.{name} must be a mapping, got {getattr(self, name)!r}"
                )
            setattr(self, name, dict(getattr(self, name)))
        self.guide_config()  # validates the overrides of the chosen guide
        upsample_blocks(self.scale_factor)

    @property
    def channels(self) -> int:
        return 2 * self.hidden_units

    @property
    def stn_input_size(self) -> tuple[int, int]:  # the code's head reads the LR itself
        return self.lr_size

    @property
    def stn_output_size(self) -> tuple[int, int]:
        return self.lr_size

    @property
    def second_level_layers(self) -> int:
        uda = self.alignment == "unidirectional" and self.match_params
        return 2 * self.align_layers if uda else self.align_layers

    @property
    def lem_parts(self) -> dict[str, bool]:
        """Which LEM parts are built: none without LEM, or when nothing reads X_S (NoA)."""
        lem = self.use_lem and not (self.use_mam and self.alignment == "none")
        attn, select = lem and self.lem_char_attn, lem and self.lem_feat_select
        return {
            "char_attn": attn,
            "expansion_conv": attn and self.lem_expansion_conv,
            "feat_select": select,
            "pixel_to_region": select and self.lem_pixel_to_region,
        }

    def guide_config(self) -> ABINetConfig | CRNNConfig:
        abinet = self.guide_recognizer == "abinet"
        cls, name = (ABINetConfig, "abinet_guide") if abinet else (CRNNConfig, "crnn_guide")
        try:
            return cls(**getattr(self, name))
        except TypeError as err:
            raise ValueError(f"LEMMAConfig.{name}: {err}") from err


class ABINetGuide(ABINet):
    """ABINet's vision model + one language pass (the code's `PositionAwareModule`).

    `alignment` is not built; a full ABINet state dict loads strictly, its alignment keys dropped.
    """

    def __init__(self, config: ABINetConfig | None = None) -> None:
        super().__init__(config)
        del self.alignment
        self.register_load_state_dict_pre_hook(_drop_alignment)

    def forward_guide(self, x: Tensor) -> tuple[Any, Tensor, Tensor]:
        """x (N, 3, img_h, img_w) normalised -> vision output, language logits, lengths."""
        self.check_input(x)
        v = self.vision(x)
        lengths = greedy_lengths(v.logits).clamp(2, self.max_length)
        _, logits = self.language(torch.softmax(v.logits, dim=-1), lengths)
        return v, logits, greedy_lengths(logits).clamp(2, self.max_length)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_guide(x)[1]

    def forward_all(self, x: Tensor) -> Any:
        raise NotImplementedError("ABINetGuide has no alignment head; use forward_guide")


def _drop_alignment(module: nn.Module, state: dict, prefix: str, *_: Any) -> None:
    for key in [k for k in state if k.startswith(prefix + "alignment.")]:
        del state[key]


class GuideOutput(NamedTuple):
    attn: Tensor  # (N, T, h, w) attention maps on the LR grid
    score: Tensor  # (N, 1, h, w) h_score
    text_logits: Tensor  # (N, T, classes) what the MAM reads
    logits: list[Tensor]  # what the fine-tuning loss reads (ABINet: vision, language)


class LEMMAOutput(NamedTuple):
    sr: Tensor
    guide: GuideOutput | None


class LEMMA(SRModel, nn.Module):
    """forward(lr (B, 4, 16, 64)) -> SR (B, 4, 32, 128), tanh-bounded; `run` gives the guide too."""

    objective_losses: ClassVar[frozenset[str]] = frozenset({*TEXT_FOCUS_LOSSES, "finetune_ce"})
    optimizer_options: ClassVar[frozenset[str]] = frozenset({"guide_lr"})

    def __init__(self, config: LEMMAConfig | None = None) -> None:
        super().__init__()
        cfg = config or LEMMAConfig()
        self.config = cfg
        self.scale_factor = cfg.scale_factor
        self.in_channels = cfg.in_channels
        self.srb_nums = cfg.srb_nums
        c = cfg.channels
        skeleton.add_head(self, cfg.in_channels, c)
        blocks = [
            LEMMABlock(c, cfg.lr_size, cfg.rnn, cfg.activation, cfg.use_adafm)
            for _ in range(cfg.srb_nums)
        ]
        skeleton.add_blocks(self, blocks)
        skeleton.add_tail(self, cfg, c)
        skeleton.add_stn(self, cfg)
        guide_cfg = cfg.guide_config()
        if isinstance(guide_cfg, ABINetConfig):
            self.position_prior: nn.Module = ABINetGuide(guide_cfg)
        else:
            self.position_prior = CRNN(guide_cfg)
        self.guidanceGen = GuidanceGenerator(cfg, self.position_prior.charset.num_classes)

    @property
    def stn_active(self) -> bool:
        return skeleton.stn_active(self)

    @property
    def needs_guide(self) -> bool:
        """Whether the guidance reads the recognizer (not with neither LEM nor MAM)."""
        return self.config.use_mam or any(self.config.lem_parts.values())

    @classmethod
    def needed_assets(cls, weights: Mapping[str, float]) -> frozenset[str]:
        on = any(float(weights.get(name, 0.0)) > 0 for name in TEXT_FOCUS_LOSSES)
        return frozenset({STT_ASSET}) if on else frozenset()

    def read_guide(self, x: Tensor) -> GuideOutput:
        """The guide on the (rectified) LR: attention maps, h_score (Eq. 1), text logits."""
        guide, size = self.position_prior, self.config.lr_size
        rgb = x[:, :3].detach().float()
        if isinstance(guide, ABINetGuide):
            gc = guide.config
            img = F.interpolate(rgb, (gc.img_h, gc.img_w), mode="bicubic", align_corners=True)
            v, logits, lengths = guide.forward_guide((img - guide._mean) / guide._std)
            attn = F.interpolate(v.attn_scores, size, mode="bicubic", align_corners=True)
            return GuideOutput(attn, compress_attention(attn, lengths), logits, [v.logits, logits])
        logits = guide(guide.preprocess(rgb))  # CRNN: (T, N, C)
        attn, score = ctc_band_maps(logits.float().softmax(dim=-1), size)
        return GuideOutput(attn, score, logits.transpose(0, 1), [logits])

    def run(self, lr: Tensor, with_guide: bool = False) -> LEMMAOutput:
        check_input(lr, self.config.in_channels, "LEMMA")
        if tuple(lr.shape[-2:]) != self.config.lr_size:
            raise ValueError(f"LEMMA expects {self.config.lr_size} inputs, got {tuple(lr.shape)}")
        x = tps_rectify(lr, self.stn_head, self.tps, False) if self.stn_active else lr
        guide = self.read_guide(x) if (with_guide or self.needs_guide) else None
        shallow = self.block1(x)
        if self.needs_guide:
            assert guide is not None
            guidance = self.guidanceGen(shallow, guide.attn, guide.score, guide.text_logits)
        else:  # Table 4 row 1: no LEM, no MAM - the shallow feature itself
            guidance = shallow
        feat = shallow
        for i in range(self.srb_nums):
            feat = getattr(self, f"block{i + 2}")(feat, guidance)
        feat = getattr(self, f"block{self.srb_nums + 2}")(feat)
        sr = getattr(self, f"block{self.srb_nums + 3}")(shallow + feat).tanh()
        return LEMMAOutput(sr, guide)

    def forward(self, lr: Tensor) -> Tensor:
        return self.run(lr).sr

    def param_groups(self, lr: float, options: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The guide at `guide_lr` (code: `--lr_position`), everything else at `lr`."""
        guide_ids = {id(p) for p in self.position_prior.parameters()}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in guide_ids]
        guide = [p for p in self.position_prior.parameters() if p.requires_grad]
        guide_lr = float(options.get("guide_lr", GUIDE_LR_RATIO * lr))
        return [{"params": rest, "lr": lr}, {"params": guide, "lr": guide_lr}]

    def finetune_loss(self, guide: GuideOutput, labels: Sequence[str]) -> Tensor:
        """L_ft (Eq. 10) of the guide on the LR: sum of CEs over all positions (ABINet), CTC
        (CRNN). `finetune_softmax` applies the code's extra softmax."""
        recognizer = self.position_prior
        if isinstance(recognizer, CRNN):
            return recognizer.loss(guide.logits[0], labels)
        targets, _ = recognizer.encode_targets(labels, guide.text_logits.device)
        total = guide.text_logits.new_zeros(())
        for logits in guide.logits:
            flat = logits.float().flatten(0, 1)
            if self.config.finetune_softmax:
                flat = flat.softmax(dim=-1)
            total = total + F.cross_entropy(flat, targets.flatten())
        return total

    def training_loss(self, batch: Batch, ctx: Context) -> tuple[Tensor, Parts]:
        """Image losses + text-focus losses (STT) + `finetune_ce` x L_ft (Eq. 11)."""
        w_ft = ctx.weight("finetune_ce")
        out = self.run(self.sr_input(batch), with_guide=w_ft > 0)
        sr = out.sr
        hr = batch["hr"][:, : sr.shape[1]].to(sr)
        labels = list(batch["label"])
        total: Tensor | None = None
        parts: Parts = {}
        if ctx.image_loss is not None:
            total, image_parts = ctx.image_loss(sr, hr)
            parts.update(image_parts)
        w_att, w_content = (ctx.weight(name) for name in TEXT_FOCUS_LOSSES)
        if w_att > 0 or w_content > 0:
            stt = ctx.asset(STT_ASSET)
            attention, content = text_focus_losses(stt, sr[:, :3], hr[:, :3], labels)
            if w_att > 0:
                total = add_weighted(total, parts, TEXT_FOCUS_LOSSES[0], attention, w_att)
            if w_content > 0:
                total = add_weighted(total, parts, TEXT_FOCUS_LOSSES[1], content, w_content)
        if w_ft > 0:
            assert out.guide is not None
            ft = self.finetune_loss(out.guide, labels)
            total = add_weighted(total, parts, "finetune_ce", ft, w_ft)
        if total is None:
            raise ValueError("LEMMA: the run has no loss with a positive weight")
        return total, parts

    @torch.no_grad()
    def infer(self, batch: Batch, ctx: Context | None = None) -> dict[str, Any]:
        return {"sr": self.run(self.sr_input(batch)).sr}


def official_state_dict(raw: Mapping[str, Any]) -> dict[str, Tensor]:
    """The code's checkpoint (`{'state_dict_G': ..., ...}`) -> our keys, `module.` stripped."""
    state: Any = raw.get("state_dict_G", raw) if isinstance(raw, Mapping) else raw
    if not isinstance(state, Mapping):
        raise ValueError("LEMMA checkpoint: expected a dict with a 'state_dict_G' mapping")
    return {k.removeprefix("module."): v for k, v in state.items()}


__all__ = [
    "CODE_VARIANT",
    "LEMMA",
    "ABINetGuide",
    "GuideOutput",
    "LEMMAConfig",
    "LEMMAOutput",
    "official_state_dict",
]
