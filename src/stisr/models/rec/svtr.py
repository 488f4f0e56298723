"""SVTR (Du et al., IJCAI 2022) + CTC, with the parameter layout of PaddleOCR's SVTR models.

Which variant IMAGE Table 1 uses (22.70M params, 1.90G FLOPs, 37-class CTC head): counting the
four PaddleOCR variants at 32x100 with a 37-class CTC head and no STN gives Tiny 4,167,845 (dims
64/128/256, depths 3/6/3), Small 8,472,069 (96/192/256, 3/6/6), Base 22,695,333 (128/256/384,
3/6/9) and Large 38,857,829 (192/256/512, 3/9/9): only SVTR-Base matches 22.70M (the tests
re-derive these). The defaults are therefore SVTR-Base at 32x100 without the TPS rectifier (the
STN alone adds 1.85M, which IMAGE's count excludes). FLOPs: at 32x100 SVTR-Base costs 1.557 GMACs
(1.479 without the attention matmuls); at 32x128 (`img_w=128`, 22,702,501 params, also 22.70M)
its convolutions + linear layers cost 1.892 GMACs, i.e. IMAGE's 1.90G is best explained by a
32x128 input and a thop-style counter that skips the attention matmuls.

The released English SVTR-Base (`rec_svtr_base_none_ctc_en_train.tar`, file
`best_accuracy.pdparams`) is the same network with an STN (`Transform: STN_ON`, 64x256 input
rectified to 48x160) and `out_char_num` 40: build it with `SVTR_BASE_EN_RELEASE`. These release
settings come from the yml shipped inside the tar (not in the PaddleOCR repository; only the
Tiny config, `configs/rec/rec_svtrnet.yml`, is): check them against that yml on download.
`official_state_dict` converts a PaddlePaddle state dict (name -> numpy array, as `read_pdparams`
loads a `.pdparams` file) to our keys:
  * `StructuredToParameterName@@` (Paddle's table structured name -> static parameter name such
    as `linear_3.w_0`) is dropped; if the keys are static names, the table renames them first;
  * BatchNorm `_mean` / `_variance` -> `running_mean` / `running_var` (+ `num_batches_tracked`);
  * 2-D `.weight`s are Linear weights stored [in, out] by Paddle -> transposed to [out, in];
  * all other names (`backbone.*`, `head.fc.*`, `transform.stn_head.*`) are identical.

Input as PaddleOCR feeds SVTR: cv2 BGR channel order, resize to the network input, (x/255 - 0.5)
/ 0.5 -> [-1, 1]. Output: (B, T, 37) logits, greedy CTC with blank 0 and `0-9a-z` (1..36).
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.charset import Charset
from stisr.models.layers.config_utils import as_tuple, check_positive
from stisr.models.layers.svtr_blocks import SVTRNet
from stisr.models.layers.tps_stn import STNHead, TPSSpatialTransformer, tps_rectify
from stisr.models.objective import Recognizer

PADDLE_TABLE_KEY = "StructuredToParameterName@@"
_STATIC_NAME = re.compile(r"^[A-Za-z0-9_]+_\d+\.(w|b)_\d+$")


@dataclass
class SVTRConfig:
    """Defaults = SVTR-Base at 32x100 without STN (IMAGE Table 1); see `SVTR_VARIANTS`."""

    img_h: int = 32  # backbone input (after the STN when `stn`)
    img_w: int = 100
    embed_dim: tuple[int, ...] = (128, 256, 384)
    depth: tuple[int, ...] = (3, 6, 9)
    num_heads: tuple[int, ...] = (4, 8, 12)
    local_blocks: int = 8  # the first N blocks use local (7x11 window) attention, the rest global
    local_kernel: tuple[int, ...] = (7, 11)
    mlp_ratio: int = 4
    out_channels: int = 256  # last_conv width
    out_char_num: int = 25  # CTC time steps
    num_classes: int = 37  # blank + 0-9a-z
    prenorm: bool = False
    drop_path_rate: float = 0.1
    last_drop: float = 0.1
    stn: bool = False
    stn_input_size: tuple[int, ...] = (32, 64)
    input_size: tuple[int, ...] | None = None  # preprocess resize; None -> (img_h, img_w)
    bgr: bool = True  # PaddleOCR decodes images with cv2 (BGR)

    def __post_init__(self) -> None:
        for name in ("img_h", "img_w", "mlp_ratio", "out_channels", "out_char_num"):
            check_positive(getattr(self, name), f"SVTRConfig.{name}")
        self.embed_dim = as_tuple(self.embed_dim, 3, int, "SVTRConfig.embed_dim")
        self.depth = as_tuple(self.depth, 3, int, "SVTRConfig.depth")
        self.num_heads = as_tuple(self.num_heads, 3, int, "SVTRConfig.num_heads")
        self.local_kernel = as_tuple(self.local_kernel, 2, int, "SVTRConfig.local_kernel")
        self.stn_input_size = as_tuple(self.stn_input_size, 2, int, "SVTRConfig.stn_input_size")
        if self.input_size is not None:
            self.input_size = as_tuple(self.input_size, 2, int, "SVTRConfig.input_size")
        for dim, heads in zip(self.embed_dim, self.num_heads, strict=True):
            check_positive(dim, "SVTRConfig.embed_dim")
            check_positive(heads, "SVTRConfig.num_heads")
            if dim % heads:
                raise ValueError(f"SVTRConfig.embed_dim {dim} is not divisible by {heads} heads")
        for d in self.depth:
            check_positive(d, "SVTRConfig.depth")
        if self.embed_dim[0] % 2:
            raise ValueError(f"SVTRConfig.embed_dim[0] must be even, got {self.embed_dim[0]}")
        if self.img_h % 16 or self.img_w % 4:
            raise ValueError(
                f"SVTRConfig: img_h must be a multiple of 16 and img_w of 4, "
                f"got {self.img_h}x{self.img_w}"
            )
        if not 0 <= self.local_blocks <= sum(self.depth):
            raise ValueError(
                f"SVTRConfig.local_blocks must be in [0, {sum(self.depth)}], "
                f"got {self.local_blocks}"
            )
        expected = Charset().num_classes
        if self.num_classes != expected:
            raise ValueError(
                f"SVTRConfig.num_classes must be {expected} (CTC blank + 0-9a-z), "
                f"got {self.num_classes}"
            )
        for name in ("drop_path_rate", "last_drop"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"SVTRConfig.{name} must be in [0, 1)")


# PaddleOCR's four SVTR sizes (configs of the released English models, backbone part).
SVTR_VARIANTS: dict[str, dict[str, Any]] = {
    "tiny": {
        "embed_dim": (64, 128, 256),
        "depth": (3, 6, 3),
        "num_heads": (2, 4, 8),
        "local_blocks": 6,
        "out_channels": 192,
    },
    "small": {
        "embed_dim": (96, 192, 256),
        "depth": (3, 6, 6),
        "num_heads": (3, 6, 8),
        "local_blocks": 8,
        "out_channels": 192,
    },
    "base": {
        "embed_dim": (128, 256, 384),
        "depth": (3, 6, 9),
        "num_heads": (4, 8, 12),
        "local_blocks": 8,
        "out_channels": 256,
    },
    "large": {
        "embed_dim": (192, 256, 512),
        "depth": (3, 9, 9),
        "num_heads": (6, 8, 16),
        "local_blocks": 10,
        "out_channels": 384,
    },
}
# rec_svtr_base_none_ctc_en_train: STN_ON (32x64 localization input) -> 48x160, 40 time steps.
SVTR_BASE_EN_RELEASE: dict[str, Any] = {
    **SVTR_VARIANTS["base"],
    "img_h": 48,
    "img_w": 160,
    "out_char_num": 40,
    "stn": True,
    "input_size": (64, 256),
}
# CPU demo scale (~0.3M parameters, ~30M MACs at 32x100, close to the CRNN demo's 39M).
SVTR_DEMO: dict[str, Any] = {
    "embed_dim": (32, 64, 96),
    "depth": (1, 2, 2),
    "num_heads": (2, 2, 4),
    "local_blocks": 2,
    "out_channels": 96,
    "drop_path_rate": 0.0,
}


def _as_tensor(key: str, value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value
    try:
        return torch.from_numpy(np.ascontiguousarray(np.asarray(value)))
    except (TypeError, ValueError) as err:
        raise ValueError(f"SVTR checkpoint entry {key!r} is not an array: {err}") from None


def read_pdparams(path: str | Path) -> dict[str, Any]:
    """The contents of a Paddle `.pdparams` file (a pickle of numpy arrays) without Paddle.

    Only for trusted files (pickle). `torch.load` cannot read them: they are not torch archives.
    """
    try:
        with open(path, "rb") as f:
            data = pickle.load(f, encoding="latin1")
    except (OSError, pickle.UnpicklingError, EOFError) as err:
        raise ValueError(f"cannot read Paddle parameters from {path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a Paddle state dict (got {type(data).__name__})")
    return data


def official_state_dict(raw: Mapping[str, Any]) -> dict[str, Tensor]:
    """A PaddleOCR SVTR state dict (`best_accuracy.pdparams` contents) -> `SVTR` keys."""
    params = dict(raw)
    table = params.pop(PADDLE_TABLE_KEY, None)
    static = [k for k in params if _STATIC_NAME.match(k)]
    if static:
        if not isinstance(table, Mapping):
            raise ValueError(
                f"SVTR checkpoint uses static Paddle parameter names (e.g. {static[0]!r}) and "
                f"has no {PADDLE_TABLE_KEY!r} table to map them to structured names"
            )
        inverse = {v: k for k, v in table.items()}
        missing = [k for k in params if k not in inverse]
        if missing:
            raise ValueError(f"SVTR checkpoint: no structured name for {missing[:3]}")
        params = {inverse[k]: v for k, v in params.items()}
    out: dict[str, Tensor] = {}
    for key, value in params.items():
        tensor = _as_tensor(key, value)
        name = key
        if name.endswith("._mean"):
            name = name[: -len("._mean")] + ".running_mean"
            out[name[: -len(".running_mean")] + ".num_batches_tracked"] = torch.tensor(0)
        elif name.endswith("._variance"):
            name = name[: -len("._variance")] + ".running_var"
        elif name.endswith(".weight") and tensor.dim() == 2:
            tensor = tensor.t().contiguous()  # Paddle Linear weights are [in, out]
        out[name] = tensor
    return out


class STNTransform(nn.Module):
    """PaddleOCR `STN_ON`: localization net on a 32x64 copy, TPS sampling from the input."""

    def __init__(self, cfg: SVTRConfig, num_control_points: int = 20) -> None:
        super().__init__()
        self.stn_head = STNHead(3, num_control_points, "none", cfg.stn_input_size)
        self.tps = TPSSpatialTransformer((cfg.img_h, cfg.img_w), num_control_points, (0.05, 0.05))
        # Paddle keeps the precomputed TPS matrices out of the checkpoint: make them transient.
        for name, buf in list(self.tps.named_buffers(recurse=False)):
            self.tps.register_buffer(name, buf, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return tps_rectify(x, self.stn_head, self.tps, sample_resized=False)


class CTCHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)
        bound = in_channels**-0.5  # Paddle: Uniform(-1/sqrt(k), 1/sqrt(k)) for weight and bias
        nn.init.uniform_(self.fc.weight, -bound, bound)
        nn.init.uniform_(self.fc.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x)


class SVTR(Recognizer, nn.Module):
    """forward(x: (B, 3, H_in, W_in) in [-1, 1]) -> logits (B, out_char_num, 37)."""

    def __init__(self, config: SVTRConfig | None = None) -> None:
        super().__init__()
        cfg = config or SVTRConfig()
        self.config = cfg
        self.charset = Charset()
        self.transform = STNTransform(cfg) if cfg.stn else None
        self.backbone = SVTRNet(cfg)
        self.head = CTCHead(cfg.out_channels, cfg.num_classes)

    @property
    def input_size(self) -> tuple[int, int]:
        size = self.config.input_size or (self.config.img_h, self.config.img_w)
        return (size[0], size[1])

    def preprocess(self, rgb: Tensor) -> Tensor:
        """(B, 3|4, H, W) RGB(M) in [0, 1] -> (B, 3, *input_size) BGR in [-1, 1]."""
        if rgb.dim() != 4 or rgb.shape[1] not in (3, 4):
            raise ValueError(f"SVTR.preprocess expects (B, 3|4, H, W), got {tuple(rgb.shape)}")
        x = F.interpolate(
            rgb[:, :3].float(), size=self.input_size, mode="bicubic", align_corners=False
        )
        if self.config.bgr:
            x = x.flip(1)
        return (x - 0.5) / 0.5

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != self.input_size:
            raise ValueError(
                f"SVTR expects (B, 3, {self.input_size[0]}, {self.input_size[1]}) input, "
                f"got {tuple(x.shape)}; use preprocess() first"
            )
        if self.transform is not None:
            x = self.transform(x)
        elif tuple(x.shape[2:]) != (self.config.img_h, self.config.img_w):
            x = F.interpolate(
                x, size=(self.config.img_h, self.config.img_w), mode="bicubic", align_corners=False
            )
        feat = self.backbone(x)  # (B, C, 1, T)
        return self.head(feat.squeeze(2).transpose(1, 2))

    def decode(self, logits: Tensor) -> list[str]:
        """Greedy CTC (collapse repeats, drop blanks) of (B, T, C) logits."""
        return [self.charset.ctc_greedy(p) for p in logits.detach().argmax(-1).tolist()]

    def text_loss(self, x: Tensor, labels: Sequence[str]) -> Tensor:
        """PaddleOCR's CTCLoss: per-sample CTC (summed over the label), averaged over the batch.

        Labels are filtered to 0-9a-z and cut to `out_char_num`; empty labels are valid (all
        blank) and impossible alignments are zeroed (`zero_infinity`).
        """
        logits = self(x)
        batch, steps, _ = logits.shape
        if len(labels) != batch:
            raise ValueError(f"SVTR.text_loss got {len(labels)} labels for {batch}")
        encoded = [
            self.charset.encode(self.charset.filter(s)[: self.config.out_char_num]) for s in labels
        ]
        lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
        targets = torch.tensor([i for e in encoded for i in e], dtype=torch.long)
        log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, C)
        per_sample = F.ctc_loss(
            log_probs,
            targets.to(logits.device),
            torch.full((batch,), steps, dtype=torch.long),
            lengths,
            blank=0,
            reduction="none",
            zero_infinity=True,
        )
        return per_sample.mean()


# Recognizer-module conventions used by `stisr.engine.recognize.load_official`:
OFFICIAL_CONFIG = SVTR_BASE_EN_RELEASE  # the released weights' architecture


def read_official_file(path: str | Path) -> dict[str, Any]:
    """The release as fetched: a `.pdparams` file, or the extracted folder holding one."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.rglob("best_accuracy.pdparams")) or sorted(path.rglob("*.pdparams"))
        if not found:
            raise FileNotFoundError(f"no .pdparams file under {path}")
        path = found[0]
    return read_pdparams(path)
