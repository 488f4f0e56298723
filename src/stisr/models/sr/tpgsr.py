"""TPGSR (Ma, Guo, Zhang, "Text Prior Guided Scene Text Image Super-Resolution", TIP 2023).

A TP generator (a CRNN) reads the image and gives a text prior, its per-frame class
probabilities (T = 26 frames x 37 classes for the official CRNN at 32x100); the TP transformer lifts
the prior to a feature map that guides a TSRN-like SR branch; stage i's SR image is read again by
the next stage's generator (multi-stage TIP version). Facts from the public code
(mjq11302010044/TPGSR, `--arch tsrn_tl_cascade`, `interfaces/super_resolution.py`,
`model/tsrn.py` `TSRN_TL`):

* Every stage super-resolves the *LR* image; only the prior is re-estimated, from the previous SR
  output (stage 0 from the LR image). Gradients flow across stages (no detach).
* The generator input is `parse_crnn_data`: first 3 channels, bicubic to 32x100, luma, [0, 1] -
  exactly `CRNN.preprocess`. The generator is crnn.pytorch's `CRNN(32, 1, 37, 256)` initialised from
  `crnn.pth`, the project's `CRNN` layout, so a pretrained CRNN loads strictly
  (`load_tp_generators`). It trains with the SR branch (one Adam, one learning rate).
* Weight sharing: the paper shares the SR branch across stages and gives each stage its own
  generator (as quoted in TPGSR issue #4); the code's `--sr_share` without `--tpg_share` (the
  authors' command quoted there, with `--stu_iter=3`) does that: `share_sr=True, share_tpg=False`.
* `iterations=3` ("TPGSR-3", issue #19): that command's stage count, and the only one that fits
  IMAGE Table 1's 26.97M for TPGSR (one SR branch + three CRNN generators: 26.68M without the
  train-only STN, see tests/test_tpgsr.py); the public shell script trains one (`--stu_iter=1`).
* Loss (`training_loss`): sum over stages of the image loss of SR_i against HR plus
  `text_prior` x sum over stages of L_TP(prior_i, prior_HR) (`stisr.losses.text_prior`), where
  prior_HR is read from HR by a frozen copy of the pretrained CRNN (the code's `aster`, eval mode,
  not optimised): the asset `tp_teacher`. The code scales both sums by 100 (the engine's job).
* Code-only details as switches (defaults = paper, as `TSRN`): `rnn="gru"`, `activation="mish"`,
  `stn_in_train_only=True`, and `zero_prior_fraction=0.25`: in training the code zeroes the prior
  fed to the SR branch for the first quarter of every batch (`drop_vec`), not that of the TP loss.
  `CODE_VARIANT` collects them.

Checkpoints of the code: `model_best_{i}.pth` = `{'state_dict_G': SR branch, ...}` (one with
`--sr_share`), and each stage's generator as its own plain state dict `recognizer_best_{i}.pth`.
No attribute name of the generator appears in them; ours is `tpg` (the code's `--tpg` switch and
`TPG_init`), a ModuleList, with the SR branches in `sr`; `official_state_dict` maps the files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.losses.text_prior import text_prior_loss
from stisr.models.layers import tsrn_skeleton as skeleton
from stisr.models.layers.activations import ACTIVATIONS
from stisr.models.layers.config_utils import (
    as_tuple,
    check_choice,
    check_count,
    check_input,
    check_positive,
)
from stisr.models.layers.recurrent import RNN_TYPES
from stisr.models.layers.tpgsr_blocks import (
    TP_TRANSFORMER_WIDTHS,
    TextGuidedResidualBlock,
    TPTransformer,
)
from stisr.models.layers.tps_stn import tps_rectify
from stisr.models.layers.upsample import upsample_blocks
from stisr.models.objective import Batch, Context, Parts, SRModel, add_weighted
from stisr.models.rec.crnn import CRNN, CRNNConfig

# The public code's values of the paper-vs-code switches (`TPGSRConfig(**CODE_VARIANT)`).
CODE_VARIANT: dict[str, Any] = {
    "rnn": "gru",
    "activation": "mish",
    "stn_in_train_only": True,
    "zero_prior_fraction": 0.25,
}


@dataclass
class TPGSRConfig:
    """TPGSR hyper-parameters; `tpg` are CRNNConfig overrides of every stage's TP generator."""

    scale_factor: int = 2
    in_channels: int = 4  # RGBM (`--mask`)
    out_channels: int = 4
    hidden_units: int = 32  # `--hd_u`; features have 2x its channels
    srb_nums: int = 5  # `--srb`; every SRB is text-guided
    text_channels: int = 32  # `out_text_channels`: channels of the prior map
    tp_widths: tuple[int, int, int] = TP_TRANSFORMER_WIDTHS  # InfoGen's hidden widths
    rnn: str = "lstm"  # TSRN paper: BLSTM; code: bidirectional GRU
    activation: str = "prelu"  # SRB/upsampling activation; code: Mish
    use_stn: bool = True  # `--STN`
    stn_in_train_only: bool = False  # code: the TPS-STN runs only in training
    stn_input_size: tuple[int, int] = (16, 64)  # the code feeds the 16x64 LR to the STN head
    stn_output_size: tuple[int, int] = (16, 64)
    num_control_points: int = 20
    tps_margins: tuple[float, float] = (0.05, 0.05)
    stn_activation: str = "none"
    tps_align_corners: bool = True  # torch<1.3 grid_sample semantics
    iterations: int = 3  # stages (`--stu_iter`); TPGSR-3
    share_sr: bool = True  # `--sr_share`: one SR branch for all stages (paper)
    share_tpg: bool = False  # `--tpg_share`; paper: one generator per stage
    zero_prior_fraction: float = 0.0  # code: 0.25 (first quarter of each training batch)
    tpg: dict[str, Any] = field(default_factory=dict)  # CRNNConfig overrides

    def __post_init__(self) -> None:
        for name in ("scale_factor", "in_channels", "out_channels", "hidden_units"):
            check_positive(getattr(self, name), f"TPGSRConfig.{name}")
        for name in ("text_channels", "num_control_points", "iterations"):
            check_positive(getattr(self, name), f"TPGSRConfig.{name}")
        check_count(self.srb_nums, "TPGSRConfig.srb_nums")
        self.tp_widths = as_tuple(self.tp_widths, 3, int, "TPGSRConfig.tp_widths")
        for w in self.tp_widths:
            check_positive(w, "TPGSRConfig.tp_widths")
        check_choice(self.rnn, RNN_TYPES, "TPGSRConfig.rnn")
        check_choice(self.activation, ACTIVATIONS, "TPGSRConfig.activation")
        check_choice(self.stn_activation, ("none", "sigmoid"), "TPGSRConfig.stn_activation")
        self.stn_input_size = as_tuple(self.stn_input_size, 2, int, "TPGSRConfig.stn_input_size")
        self.stn_output_size = as_tuple(self.stn_output_size, 2, int, "TPGSRConfig.stn_output_size")
        self.tps_margins = as_tuple(self.tps_margins, 2, float, "TPGSRConfig.tps_margins")
        frac = self.zero_prior_fraction
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 <= frac < 1:
            raise ValueError(f"TPGSRConfig.zero_prior_fraction must be in [0, 1), got {frac!r}")
        if not isinstance(self.tpg, Mapping):
            raise ValueError(
                f"TPGSRConfig.tpg must be a mapping of CRNNConfig keys, got {self.tpg!r}"
            )
        self.tpg = dict(self.tpg)
        self.tpg_config()  # validates the overrides
        upsample_blocks(self.scale_factor)  # validates the power of two

    def tpg_config(self) -> CRNNConfig:
        """The CRNNConfig of the TP generators (the official CRNN unless overridden)."""
        try:
            return CRNNConfig(**self.tpg)
        except TypeError as err:
            raise ValueError(f"TPGSRConfig.tpg: {err}") from err

    @property
    def num_sr_branches(self) -> int:
        return 1 if self.share_sr else self.iterations

    @property
    def num_tp_generators(self) -> int:
        return 1 if self.share_tpg else self.iterations


class TPGSRBranch(nn.Module):
    """The code's `TSRN_TL`: forward(lr (B, C, h, w), prior (B, classes, 1, T) | None) -> SR.

    block1 = conv9x9 + PReLU; `srb_nums` text-guided SRBs; conv3x3 + BN; long skip; pixel-shuffle
    tail + conv9x9; tanh. `infoGen` turns the prior into a map, bilinearly resized (align_corners)
    to the (rectified) input size. A missing prior is all zeros, as in the code.
    """

    def __init__(self, cfg: TPGSRConfig, prior_channels: int, prior_frames: int) -> None:
        super().__init__()
        self.config = cfg
        self.srb_nums = cfg.srb_nums
        self.prior_shape = (prior_channels, 1, prior_frames)
        channels = 2 * cfg.hidden_units
        skeleton.add_head(self, cfg.in_channels, channels)
        blocks = [
            TextGuidedResidualBlock(channels, cfg.text_channels, cfg.rnn, cfg.activation)
            for _ in range(cfg.srb_nums)
        ]
        skeleton.add_blocks(self, blocks)
        self.infoGen = TPTransformer(prior_channels, cfg.text_channels, cfg.tp_widths)
        skeleton.add_tail(self, cfg, channels)
        skeleton.add_stn(self, cfg)

    @property
    def stn_active(self) -> bool:
        return skeleton.stn_active(self)

    def forward(self, lr: Tensor, prior: Tensor | None = None) -> Tensor:
        x = lr
        if self.stn_active:
            x = tps_rectify(x, self.stn_head, self.tps, True)
        if prior is None:
            prior = x.new_zeros(x.shape[0], *self.prior_shape)
        prior_map = self.infoGen(prior)
        prior_map = F.interpolate(prior_map, x.shape[-2:], mode="bilinear", align_corners=True)
        return skeleton.run_body(self, x, self.srb_nums, prior_map).tanh()


class TPGSROutput(NamedTuple):
    """Per-stage results: SR images and the (T, B, classes) priors each SR image was guided by."""

    sr_stages: list[Tensor]
    priors: list[Tensor]


class TPGSR(SRModel, nn.Module):
    """forward(lr (B, 4, h, w)) -> the last stage's SR (B, 4, 2h, 2w); `run_stages` gives all."""

    objective_losses: ClassVar[frozenset[str]] = frozenset({"text_prior"})

    def __init__(self, config: TPGSRConfig | None = None) -> None:
        super().__init__()
        cfg = config or TPGSRConfig()
        self.config = cfg
        self.scale_factor = cfg.scale_factor
        tpg_cfg = cfg.tpg_config()
        self.tpg = nn.ModuleList(CRNN(tpg_cfg) for _ in range(cfg.num_tp_generators))
        # CRNN frames: two 2x2 poolings, then width +1 twice and -1 once: 26 at width 100.
        self.prior_frames = tpg_cfg.img_w // 2 // 2 + 1
        self.sr = nn.ModuleList(
            TPGSRBranch(cfg, tpg_cfg.num_classes, self.prior_frames)
            for _ in range(cfg.num_sr_branches)
        )

    @classmethod
    def needed_assets(cls, weights: Mapping[str, float]) -> frozenset[str]:
        """The TP loss reads the HR prior from a frozen pretrained CRNN (`tp_teacher`)."""
        return (
            frozenset({"tp_teacher"}) if float(weights.get("text_prior", 0.0)) > 0 else frozenset()
        )

    def load_tp_generators(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load one CRNN state dict strictly into every stage's generator (the code initialises
        each from `crnn.pth`)."""
        for tpg in self.tpg:
            tpg.load_state_dict(state_dict, strict=True)

    def text_prior(self, images: Tensor, stage: int = 0) -> Tensor:
        """(B, 3|4, H, W) images -> stage's prior (T, B, classes): softmax of the CRNN logits."""
        tpg = self.tpg[0 if self.config.share_tpg else stage]
        return tpg(tpg.preprocess(images[:, :3])).float().softmax(dim=-1)

    def _keep_mask(self, batch: int, device: torch.device) -> Tensor | None:
        """(B, 1, 1, 1) mask that zeroes the prior of the first `zero_prior_fraction` of a batch."""
        dropped = int(batch * self.config.zero_prior_fraction)
        if not self.training or dropped == 0:
            return None
        keep = torch.ones(batch, 1, 1, 1, device=device)
        keep[:dropped] = 0.0
        return keep

    def run_stages(self, lr: Tensor) -> TPGSROutput:
        check_input(lr, self.config.in_channels, "TPGSR")
        keep = self._keep_mask(lr.shape[0], lr.device)
        images, srs, priors = lr, [], []
        for i in range(self.config.iterations):
            prior = self.text_prior(images, i)
            priors.append(prior)
            fed = prior.permute(1, 2, 0).unsqueeze(2).to(lr.dtype)  # (B, classes, 1, T)
            if keep is not None:
                fed = fed * keep.to(fed.dtype)
            images = self.sr[0 if self.config.share_sr else i](lr, fed)
            srs.append(images)
        return TPGSROutput(srs, priors)

    def forward(self, lr: Tensor) -> Tensor:
        return self.run_stages(lr).sr_stages[-1]

    @torch.no_grad()
    def hr_prior(self, teacher: nn.Module, hr: Tensor) -> Tensor:
        """The frozen recognizer's prior of the HR image (its own preprocessing if it has one)."""
        preprocess = getattr(teacher, "preprocess", None) or self.tpg[0].preprocess
        return teacher(preprocess(hr[:, :3])).float().softmax(dim=-1)

    def training_loss(self, batch: Batch, ctx: Context) -> tuple[Tensor, Parts]:
        """Sum over stages of the image losses + `text_prior` x sum over stages of L_TP."""
        if ctx.image_loss is None:
            raise ValueError("TPGSR: the run has no image loss to train with")
        out = self.run_stages(self.sr_input(batch))
        hr = batch["hr"]
        total: Tensor | None = None
        parts: Parts = {}
        for sr in out.sr_stages:
            stage_total, stage_parts = ctx.image_loss(sr, hr[:, : sr.shape[1]].to(sr))
            total = stage_total if total is None else total + stage_total
            for name, value in stage_parts.items():
                parts[name] = parts[name] + value if name in parts else value
        weight = ctx.weight("text_prior")
        if weight > 0:
            target = self.hr_prior(ctx.asset("tp_teacher"), hr.to(out.priors[0].device))
            if target.shape != out.priors[0].shape:
                raise ValueError(
                    f"TPGSR: tp_teacher gives priors of shape {tuple(target.shape)}, the TP "
                    f"generators {tuple(out.priors[0].shape)} (T, B, classes must agree)"
                )
            tp = torch.stack([text_prior_loss(p, target) for p in out.priors]).sum()
            total = add_weighted(total, parts, "text_prior", tp, weight)
        assert total is not None
        return total, parts

    @torch.no_grad()
    def infer(self, batch: Batch, ctx: Context | None = None) -> dict[str, Any]:
        out = self.run_stages(self.sr_input(batch))
        return {"sr": out.sr_stages[-1], "sr_stages": out.sr_stages, "text_prior": out.priors}


def _unwrap(raw: Any, key: str) -> dict[str, Tensor]:
    state = raw.get(key, raw) if isinstance(raw, Mapping) else raw
    if not isinstance(state, Mapping):
        raise ValueError(f"TPGSR checkpoint: expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [value]
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    raise ValueError(f"TPGSR checkpoint: expected a checkpoint or a list of them, got {value!r}")


def official_state_dict(raw: Mapping[str, Any]) -> dict[str, Tensor]:
    """The code's checkpoint files -> our state dict (strip `module.`, unwrap `state_dict_G`).

    `raw` is `{"sr": model_best_0.pth [, model_best_1.pth, ...], "tpg": [recognizer_best_0.pth,
    recognizer_best_1.pth, ...]}` (loaded objects, in stage order; a single SR checkpoint may be
    given alone). SR checkpoint i goes to `sr.{i}.`, generator i to `tpg.{i}.`.
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"TPGSR checkpoint: expected a mapping, got {type(raw).__name__}")
    if "state_dict_G" in raw:
        sr_list, tpg_list = [raw], []
    elif "sr" in raw or "tpg" in raw:
        sr_list, tpg_list = _as_list(raw.get("sr", [])), _as_list(raw.get("tpg", []))
    else:
        raise ValueError("TPGSR checkpoint: expected 'state_dict_G' or {'sr': ..., 'tpg': ...}")
    state: dict[str, Tensor] = {}
    for i, ckpt in enumerate(sr_list):
        state.update({f"sr.{i}.{k}": v for k, v in _unwrap(ckpt, "state_dict_G").items()})
    for i, sd in enumerate(tpg_list):
        state.update({f"tpg.{i}.{k}": v for k, v in _unwrap(sd, "state_dict").items()})
    return state


def official_files(config: TPGSRConfig | None = None) -> dict[str, list[str]]:
    """Names of the code's checkpoint files for `config` (what `official_state_dict` expects)."""
    cfg = config or TPGSRConfig()
    return {
        "sr": [f"model_best_{i}.pth" for i in range(cfg.num_sr_branches)],
        "tpg": [f"recognizer_best_{i}.pth" for i in range(cfg.num_tp_generators)],
    }


__all__ = [
    "CODE_VARIANT",
    "TPGSR",
    "TPGSRBranch",
    "TPGSRConfig",
    "TPGSROutput",
    "official_files",
    "official_state_dict",
]
