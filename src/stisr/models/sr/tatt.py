"""TATT (Ma, Liang, Zhang, "A Text Attention Network for Spatial Deformation Robust Scene Text
Image Super-resolution", CVPR 2022).

A text-prior generator (TPG, a CRNN) reads the LR image and gives per-frame class probabilities;
the TP Interpreter (`stisr.models.layers.tatt_blocks`) lets the image features cross-attend to
that prior, globally, so a rotated or curved word still finds its characters; the resulting map
is concatenated into every SRB of a TSRN-style branch. A text structure consistency (TSC) loss
asks the SR of a deformed LR to match the deformed SR. Facts from mjq11302010044/TATT
(`train_TATT.sh`: `--arch tatt --STN --mask --use_distill --gradient --sr_share --stu_iter=1
--rotate_train=5 --tssim_loss`, lr 1e-3, batch 64; file:line below):

* SR branch `model/tsrn.py` `TSRN_TL_TRANS` (l. 576-692): block1, five `RecurrentResidualBlockTL
  (64, 64)` (the prior map has as many channels as the features: `out_text_channels=64`, the
  decoder's queries *are* block1's features), `infoGen` = TPInterpreter, block7, block8 (mish), the
  TPS-STN on the 16x64 LR in training only (l. 648). Our `sr` has exactly its `state_dict_G` keys.
* TPG (`interfaces/base.py` `CRNN_init` l. 712-744, `parse_crnn_data` l. 797-815): crnn.pytorch's
  `CRNN(32, 1, 37, 256)` from `crnn.pth` on bicubic 32x100 luma - our `CRNN` (`tpg`); a frozen copy
  (`aster`, eval) reads the HR image: asset `tp_teacher`. The SR branch gets the prior *detached*
  (`label_vecs_final.detach()`, `interfaces/super_resolution.py` l. 873, 911), so only the TP
  loss trains the TPG. One Adam for everything (`base.py` l. 496-563); `param_groups` gives the
  TPG its own group at the run optimizer's `tpg_lr` (default: the same lr, as the code). The code
  clips the SR branch's gradients at 0.25, not the TPG's (l. 1084): the engine's business.
* Training step (`super_resolution.py` l. 637-655, 782-915): every LR/HR pair is rotated by a
  random angle in [-5, 5] degrees with a jittered aspect ratio (`rotate_warp`, `deform_degrees`);
  SR(LR_d) against HR_d; the TP loss (`stisr.losses.text_prior`, TPGSR's L1 + KL) between the TPG
  on LR_d and the teacher on HR_d; the TSC loss 1 - TSSIM(D(SR(D^-1 LR_d)), SR(LR_d), HR_d), both
  SR passes guided by the same prior. The code's total is 100 (mse + 1e-4 gradient_profile) +
  100 TP + 10 (1 - TSSIM) (l. 879, 894, 913; `ImageLoss(gradient=True, loss_weight=[1, 1e-4])`,
  `base.py` l. 298). With the engine's x100 the weights are mse 1, gradient_profile 1e-4,
  `text_prior_kl` 1, `tsc` 0.1: the paper's L = L_SR + alpha L_TP + eta L_TSC with alpha = 1,
  eta = 0.1 as we recall it (the paper text is not among the shared texts).
* Code-only behaviour behind a switch (`CODE_VARIANT`): `query_rnn_over_batch` - the code's
  batch_first GRU over the query embedding recurs over the batch (see `InfoTransformer`).
  Where the paper is silent the defaults are the code's: GRUs, mish, STN in training only, and
  grid_sample with align_corners=False (the README's torch 1.8).

TCDM's runs (src/stisr/papers/tcdm.yaml) add `tpg_loss: ctc` (`text_prior_ctc`, CTC of the TPG
against the label) and `text_prior: ground_truth` (one-hot label prior over `text_alphabet` 37 or
63 classes, as stisr-tcdm `guided_diffusion/unet.py` `make_gt_txt_prior` l. 830-873 builds it).

Checkpoints: `model_best_acc_0.pth` = `{'state_dict_G': ...}` -> `sr.`, `recognizer_best_acc_0.pth`
(a plain CRNN state dict) -> `tpg.` (`official_state_dict`).

At demo scale (params.yaml) the width is cut to TSRN's demo width with one SR block; the specs'
runs read zoo/crnn as `tp_teacher` and start the TPG from it (`init_modules: {tpg: crnn}`).
"""

from __future__ import annotations

import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.charset import EVAL_CHARSET, Charset
from stisr.losses.text_prior import text_prior_loss
from stisr.models.layers import tsrn_skeleton as skeleton
from stisr.models.layers.activations import ACTIVATIONS
from stisr.models.layers.config_utils import as_tuple, check_choice, check_input, check_positive
from stisr.models.layers.recurrent import RNN_TYPES
from stisr.models.layers.tatt_blocks import TPInterpreter, rotate_warp, tri_ssim
from stisr.models.layers.tpgsr_blocks import TextGuidedResidualBlock
from stisr.models.layers.tps_stn import tps_rectify
from stisr.models.layers.upsample import upsample_blocks
from stisr.models.objective import Batch, Context, Parts, SRModel, add_weighted
from stisr.models.rec.crnn import CRNN, CRNNConfig

TP_LOSSES = {"kl": "text_prior_kl", "ctc": "text_prior_ctc"}
TEACHER = "tp_teacher"
# Ground-truth prior alphabets (class 0 = blank): TCDM's 37 (case-folded) and 63 classes.
GT_ALPHABETS = {37: EVAL_CHARSET, 63: string.digits + string.ascii_letters}
CODE_VARIANT: dict[str, Any] = {"query_rnn_over_batch": True}


@dataclass
class TATTConfig:
    """TATT hyper-parameters; `tpg` are CRNNConfig overrides of the text-prior generator."""

    scale_factor: int = 2
    in_channels: int = 4  # RGBM (`--mask`)
    out_channels: int = 4
    hidden_units: int = 32  # `--hd_u`: features, prior map and d_model have 2x its channels
    srb_nums: int = 5
    lr_size: tuple[int, int] = (16, 64)  # the query grid of the TP Interpreter
    rnn: str = "gru"
    activation: str = "mish"
    use_stn: bool = True
    stn_in_train_only: bool = True
    num_control_points: int = 20
    tps_margins: tuple[float, float] = (0.05, 0.05)
    stn_activation: str = "none"
    tps_align_corners: bool = False  # torch >= 1.3 grid_sample default
    nhead: int = 4
    encoder_layers: int = 1  # `t_encoder_num`
    decoder_layers: int = 2  # `t_decoder_num`
    dropout: float = 0.1
    pe_max_len: int = 5000
    query_rnn_over_batch: bool = False  # code: True (CODE_VARIANT)
    text_prior: str = "generator"  # | ground_truth (TCDM Table 2)
    text_alphabet: int = 37  # classes of the prior (blank included)
    max_text_len: int = 26  # frames of the ground-truth prior
    tpg_loss: str = "kl"  # kl: L1 + KL to the teacher (TATT) | ctc: against the label (TCDM)
    tpg: dict[str, Any] = field(default_factory=dict)  # CRNNConfig overrides
    deform_degrees: float = 5.0  # `--rotate_train`: training rotations in [-d, d] degrees
    deform_jitter: float = 0.2  # `off_range`: aspect-ratio jitter of the warp

    def __post_init__(self) -> None:
        for name in ("scale_factor", "in_channels", "out_channels", "hidden_units", "nhead"):
            check_positive(getattr(self, name), f"TATTConfig.{name}")
        for name in ("encoder_layers", "decoder_layers", "pe_max_len", "max_text_len"):
            check_positive(getattr(self, name), f"TATTConfig.{name}")
        check_positive(self.num_control_points, "TATTConfig.num_control_points")
        srb = self.srb_nums
        if isinstance(srb, bool) or not isinstance(srb, int) or srb < 0:
            raise ValueError(f"TATTConfig.srb_nums must be an integer >= 0, got {self.srb_nums!r}")
        self.lr_size = as_tuple(self.lr_size, 2, int, "TATTConfig.lr_size")
        self.tps_margins = as_tuple(self.tps_margins, 2, float, "TATTConfig.tps_margins")
        for name, choices in (
            ("rnn", RNN_TYPES),
            ("activation", ACTIVATIONS),
            ("stn_activation", ("none", "sigmoid")),
            ("text_prior", ("generator", "ground_truth")),
            ("tpg_loss", tuple(TP_LOSSES)),
        ):
            check_choice(getattr(self, name), choices, f"TATTConfig.{name}")
        if self.channels % self.nhead or (self.channels * self.lr_size[0]) % 2:
            raise ValueError("TATTConfig: 2*hidden_units must be divisible by nhead")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TATTConfig.dropout must be in [0, 1), got {self.dropout!r}")
        ratio = self.lr_size[0] / self.lr_size[1]
        if not 0 <= self.deform_degrees <= 180 or not 0 <= self.deform_jitter < ratio:
            raise ValueError(
                f"TATTConfig: deform_degrees must be in [0, 180] and deform_jitter in [0, H/W = "
                f"{ratio}), got {self.deform_degrees!r}, {self.deform_jitter!r}"
            )
        if not isinstance(self.tpg, Mapping):
            raise ValueError(f"TATTConfig.tpg must be a mapping, got {self.tpg!r}")
        self.tpg = dict(self.tpg)
        if self.text_prior == "generator":
            classes = self.tpg_config().num_classes
            if self.text_alphabet != classes:
                raise ValueError(
                    f"TATTConfig.text_alphabet ({self.text_alphabet}) must be the generator's "
                    f"{classes} classes"
                )
        elif self.text_alphabet not in GT_ALPHABETS:
            raise ValueError(
                f"TATTConfig.text_alphabet must be one of {sorted(GT_ALPHABETS)} with a "
                f"ground-truth prior, got {self.text_alphabet!r}"
            )
        upsample_blocks(self.scale_factor)

    @property
    def channels(self) -> int:
        return 2 * self.hidden_units

    @property
    def stn_input_size(self) -> tuple[int, int]:  # the code's STN reads the LR as is
        return self.lr_size

    @property
    def stn_output_size(self) -> tuple[int, int]:
        return self.lr_size

    def tpg_config(self) -> CRNNConfig:
        try:
            return CRNNConfig(**self.tpg)
        except TypeError as err:
            raise ValueError(f"TATTConfig.tpg: {err}") from err


class TATTBranch(nn.Module):
    """The code's `TSRN_TL_TRANS`: forward(lr (B, C, 16, 64), prior (B, classes, 1, T)) -> SR."""

    def __init__(self, cfg: TATTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.srb_nums = cfg.srb_nums
        c = cfg.channels
        skeleton.add_head(self, cfg.in_channels, c)
        blocks = [
            TextGuidedResidualBlock(c, c, cfg.rnn, cfg.activation) for _ in range(cfg.srb_nums)
        ]
        skeleton.add_blocks(self, blocks)
        self.infoGen = TPInterpreter(
            cfg.text_alphabet, c, cfg.lr_size, cfg.nhead, cfg.encoder_layers, cfg.decoder_layers,
            cfg.dropout, cfg.pe_max_len, cfg.query_rnn_over_batch,
        )  # fmt: skip
        skeleton.add_tail(self, cfg, c)
        skeleton.add_stn(self, cfg)

    @property
    def stn_active(self) -> bool:
        return skeleton.stn_active(self)

    def forward(self, lr: Tensor, prior: Tensor) -> Tensor:
        x = tps_rectify(lr, self.stn_head, self.tps, True) if self.stn_active else lr
        shallow = self.block1(x)
        prior_map = self.infoGen(shallow, prior)
        feat = shallow
        for i in range(self.srb_nums):
            feat = getattr(self, f"block{i + 2}")(feat, prior_map)
        feat = getattr(self, f"block{self.srb_nums + 2}")(feat)
        return getattr(self, f"block{self.srb_nums + 3}")(shallow + feat).tanh()


def ground_truth_prior(
    labels: Sequence[str], chars: str, length: int = 26, device: torch.device | str = "cpu"
) -> Tensor:
    """One-hot (T, B, 1 + len(chars)) prior of the labels, class 0 = blank. Characters outside
    `chars` are dropped (case folded for a caseless alphabet); a word of n in (1, T) characters
    gets (T - n - 1) // n blanks after each character and a trailing blank, then blanks to T
    (TCDM's "equal intervals"); longer words are cut to T."""
    charset = Charset(chars)
    rows = []
    for label in labels:
        idx = charset.encode(charset.filter(label))[:length]
        n = len(idx)
        if 1 < n < length:
            gap = (length - n - 1) // n
            spaced = [idx[0]]
            for i in [*idx[1:], 0]:
                spaced += [0] * gap + [i]
            idx = spaced
        rows.append(idx + [0] * (length - len(idx)))
    one_hot = F.one_hot(torch.tensor(rows, dtype=torch.long), charset.num_classes).float()
    return one_hot.transpose(0, 1).to(device)


def _as_input(prior: Tensor, dtype: torch.dtype) -> Tensor:
    """(T, B, classes) probabilities -> the branch's (B, classes, 1, T), detached (code l. 873)."""
    return prior.detach().permute(1, 2, 0).unsqueeze(2).to(dtype)


class TATT(SRModel, nn.Module):
    """forward(lr (B, 4, 16, 64), labels=None) -> SR (B, 4, 32, 128), tanh-bounded."""

    objective_losses: ClassVar[frozenset[str]] = frozenset({"tsc", *TP_LOSSES.values()})
    optimizer_options: ClassVar[frozenset[str]] = frozenset({"tpg_lr"})

    def __init__(self, config: TATTConfig | None = None) -> None:
        super().__init__()
        cfg = config or TATTConfig()
        self.config = cfg
        self.scale_factor = cfg.scale_factor
        self.in_channels = cfg.in_channels
        self.tpg: CRNN | None = CRNN(cfg.tpg_config()) if cfg.text_prior == "generator" else None
        self.sr = TATTBranch(cfg)

    @classmethod
    def needed_assets(cls, weights: Mapping[str, float]) -> frozenset[str]:
        """The KL TP loss reads the HR prior from a frozen pretrained CRNN (`tp_teacher`)."""
        return frozenset({TEACHER}) if float(weights.get(TP_LOSSES["kl"], 0.0)) > 0 else frozenset()

    def param_groups(self, lr: float, options: Mapping[str, Any]) -> list[dict[str, Any]]:
        """SR branch at `lr`, the TPG at `tpg_lr` (default `lr`: the code's single Adam)."""
        sr = [p for p in self.sr.parameters() if p.requires_grad]
        if self.tpg is None:
            return [{"params": sr, "lr": lr}]
        tpg = [p for p in self.tpg.parameters() if p.requires_grad]
        return [{"params": sr, "lr": lr}, {"params": tpg, "lr": float(options.get("tpg_lr", lr))}]

    def text_prior(
        self, lr: Tensor, labels: Sequence[str] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """(T, B, classes) prior probabilities and the TPG's logits (None for a label prior)."""
        if self.tpg is None:
            if labels is None or len(labels) != lr.shape[0]:
                raise ValueError("TATT: a ground-truth text prior needs one label per image")
            chars = GT_ALPHABETS[self.config.text_alphabet]
            return ground_truth_prior(labels, chars, self.config.max_text_len, lr.device), None
        logits = self.tpg(self.tpg.preprocess(lr[:, :3]))
        return logits.float().softmax(dim=-1), logits

    def forward_inputs(self, batch: Batch) -> tuple[Any, ...]:
        lr = self.sr_input(batch)
        return (lr,) if self.tpg is not None else (lr, list(batch["label"]))

    def _check(self, lr: Tensor) -> None:
        check_input(lr, self.config.in_channels, "TATT")
        if tuple(lr.shape[-2:]) != self.config.lr_size:
            raise ValueError(f"TATT expects {self.config.lr_size} inputs, got {tuple(lr.shape)}")

    def forward(self, lr: Tensor, labels: Sequence[str] | None = None) -> Tensor:
        self._check(lr)
        prior, _ = self.text_prior(lr, labels)
        return self.sr(lr, _as_input(prior, lr.dtype))

    def deform(self, lr: Tensor) -> tuple[Tensor, Tensor]:
        """Random (angles, offsets) per sample: the code's rotations in [-d, d] degrees."""
        n = lr.shape[0]
        degrees = (torch.rand(n, device=lr.device) * 2 - 1) * self.config.deform_degrees
        return degrees * (math.pi / 180.0), torch.rand(n, device=lr.device)

    def tp_loss(
        self, prior: Tensor, logits: Tensor | None, hr: Tensor, labels: Sequence[str], ctx: Context
    ) -> tuple[str, Tensor] | None:
        """The configured TP loss (name, value) of the TPG, None when its weight is zero."""
        name = TP_LOSSES[self.config.tpg_loss]
        other = next(n for n in TP_LOSSES.values() if n != name)
        if ctx.weight(other) > 0:
            raise ValueError(f"TATT: loss {other!r} needs tpg_loss {other.rsplit('_', 1)[1]!r}")
        if ctx.weight(name) <= 0:
            return None
        if self.tpg is None or logits is None:
            raise ValueError(f"TATT: {name!r} trains a generator; this TATT reads the label prior")
        if name == TP_LOSSES["ctc"]:
            return name, self.tpg.loss(logits, labels)
        teacher = ctx.asset(TEACHER)
        preprocess = getattr(teacher, "preprocess", None) or self.tpg.preprocess
        with torch.no_grad():
            target = teacher(preprocess(hr[:, :3])).float().softmax(dim=-1)
        if target.shape != prior.shape:
            raise ValueError(
                f"TATT: {TEACHER} gives priors of shape {tuple(target.shape)}, the TPG "
                f"{tuple(prior.shape)} (T, B, classes must agree)"
            )
        return name, text_prior_loss(prior, target)

    def training_loss(self, batch: Batch, ctx: Context) -> tuple[Tensor, Parts]:
        """Image losses on the deformed pair + the TP loss + `tsc` x (1 - TSSIM)."""
        lr = self.sr_input(batch)
        self._check(lr)
        hr = batch["hr"].to(lr.device)
        labels = list(batch["label"]) if "label" in batch else []
        cfg = self.config
        angles, offsets = self.deform(lr)
        if cfg.deform_degrees > 0:
            lr_d = rotate_warp(lr, angles, offsets, cfg.deform_jitter)
            hr_d = rotate_warp(hr, angles, offsets, cfg.deform_jitter)
        else:
            lr_d, hr_d = lr, hr
        prior, logits = self.text_prior(lr_d, labels or None)
        fed = _as_input(prior, lr.dtype)
        sr = self.sr(lr_d, fed)
        target = hr_d[:, : sr.shape[1]].to(sr)
        total: Tensor | None = None
        parts: Parts = {}
        if ctx.image_loss is not None:
            total, image_parts = ctx.image_loss(sr, target)
            parts.update(image_parts)
        tp = self.tp_loss(prior, logits, hr_d, labels, ctx)
        if tp is not None:
            total = add_weighted(total, parts, tp[0], tp[1], ctx.weight(tp[0]))
        if ctx.weight("tsc") > 0:
            lr_back = rotate_warp(lr_d, -angles, offsets, cfg.deform_jitter)
            sr_back = self.sr(lr_back, fed)
            sr_again = rotate_warp(sr_back, angles, offsets, cfg.deform_jitter)
            tsc = 1.0 - tri_ssim(sr_again.float(), sr.float(), target.float())
            total = add_weighted(total, parts, "tsc", tsc, ctx.weight("tsc"))
        if total is None:
            raise ValueError("TATT: the run has no loss with a positive weight")
        return total, parts

    @torch.no_grad()
    def infer(self, batch: Batch, ctx: Context | None = None) -> dict[str, Any]:
        lr = self.sr_input(batch)
        self._check(lr)
        labels = list(batch["label"]) if self.tpg is None else None
        prior, _ = self.text_prior(lr, labels)
        return {"sr": self.sr(lr, _as_input(prior, lr.dtype)), "text_prior": prior}


def _unwrap(raw: Any, key: str) -> dict[str, Tensor]:
    state = raw.get(key, raw) if isinstance(raw, Mapping) else raw
    if not isinstance(state, Mapping):
        raise ValueError(f"TATT checkpoint: expected a state dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v for k, v in state.items()}


def official_state_dict(raw: Mapping[str, Any]) -> dict[str, Tensor]:
    """`{"sr": model_best_acc_0.pth, "tpg": recognizer_best_acc_0.pth}` (loaded objects; the SR
    checkpoint may be given alone) -> our keys: `sr.` + state_dict_G, `tpg.` + the CRNN's."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"TATT checkpoint: expected a mapping, got {type(raw).__name__}")
    if "state_dict_G" in raw:
        raw = {"sr": raw}
    elif "sr" not in raw and "tpg" not in raw:
        raise ValueError("TATT checkpoint: expected 'state_dict_G' or {'sr': ..., 'tpg': ...}")
    state = {f"sr.{k}": v for k, v in _unwrap(raw.get("sr", {}), "state_dict_G").items()}
    state.update({f"tpg.{k}": v for k, v in _unwrap(raw.get("tpg", {}), "state_dict").items()})
    return state


OFFICIAL_FILES = {"sr": "model_best_acc_0.pth", "tpg": "recognizer_best_acc_0.pth"}

__all__ = [
    "CODE_VARIANT",
    "OFFICIAL_FILES",
    "TATT",
    "TATTBranch",
    "TATTConfig",
    "ground_truth_prior",
    "official_state_dict",
]
