"""CRNN (Shi et al., TPAMI 2017) with the exact module layout of meijieru/crnn.pytorch.

`CRNN(CRNNConfig())` has the same state-dict keys and shapes as the official
`CRNN(imgH=32, nc=1, nclass=37, nh=256)`, so the released `crnn.pth` loads with strict=True.
Class 0 is the CTC blank and classes 1..36 are `0-9a-z` (official alphabet
`-0123456789abcdefghijklmnopqrstuvwxyz`), which is `stisr.charset.Charset()`.

Input as the STISR code feeds it (docs/protocols.md): first 3 channels, bicubic resize to 32x100,
luma 0.299/0.587/0.114, values left in [0, 1] without normalization or clamping. crnn.pytorch's own
training and demo normalize to [-1, 1] instead; `input_norm="symmetric"` selects that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.charset import Charset, normalize_label
from stisr.models.layers.config_utils import as_tuple, check_choice, check_positive
from stisr.models.layers.sequence import BidirectionalLSTM
from stisr.models.objective import Recognizer

# Per-layer (kernel, padding) and the layers with BatchNorm (crnn.pytorch models/crnn.py).
_KERNELS = (3, 3, 3, 3, 3, 3, 2)
_PADDINGS = (1, 1, 1, 1, 1, 1, 0)
_BATCHNORM = (2, 4, 6)
# pooling{i} after conv{layer}: 2x2/2 twice, then 2x2 with stride (2, 1) and padding (0, 1) twice.
# Maps conv index -> (pooling index, (kernel, stride, padding)).
_POOLS = {
    0: (0, ((2, 2), (2, 2), (0, 0))),
    1: (1, ((2, 2), (2, 2), (0, 0))),
    3: (2, ((2, 2), (2, 1), (0, 1))),
    5: (3, ((2, 2), (2, 1), (0, 1))),
}
LUMA = (0.299, 0.587, 0.114)
OFFICIAL_WIDTHS = (64, 128, 256, 256, 512, 512, 512)


@dataclass
class CRNNConfig:
    """Defaults reproduce the official model; shrink `cnn_widths`/`hidden` for demo scales."""

    img_h: int = 32
    img_w: int = 100
    in_channels: int = 1  # 1: luma grey (official); 3: RGB
    num_classes: int = 37  # blank + 36 (must match Charset())
    hidden: int = 256
    cnn_widths: tuple[int, ...] = OFFICIAL_WIDTHS
    leaky_relu: bool = False
    input_norm: str = "unit"  # "unit": [0, 1] as TextZoom feeds it; "symmetric": [-1, 1]

    def __post_init__(self) -> None:
        for name in ("img_h", "img_w", "in_channels", "num_classes", "hidden"):
            check_positive(getattr(self, name), f"CRNNConfig.{name}")
        if self.img_h != 32:
            # The 4 poolings + the final 2x2 conv collapse exactly 32 rows to 1.
            raise ValueError(f"CRNNConfig.img_h must be 32, got {self.img_h}")
        if self.in_channels not in (1, 3):
            raise ValueError(f"CRNNConfig.in_channels must be 1 or 3, got {self.in_channels}")
        expected = Charset().num_classes
        if self.num_classes != expected:
            raise ValueError(
                f"CRNNConfig.num_classes must be {expected} (CTC blank + 0-9a-z), "
                f"got {self.num_classes}"
            )
        self.cnn_widths = as_tuple(self.cnn_widths, 7, int, "CRNNConfig.cnn_widths")
        for w in self.cnn_widths:
            check_positive(w, "CRNNConfig.cnn_widths")
        check_choice(self.input_norm, ("unit", "symmetric"), "CRNNConfig.input_norm")


def _build_cnn(in_channels: int, widths: Sequence[int], leaky: bool) -> nn.Sequential:
    cnn = nn.Sequential()
    prev = in_channels
    for i, (width, k, p) in enumerate(zip(widths, _KERNELS, _PADDINGS, strict=True)):
        cnn.add_module(f"conv{i}", nn.Conv2d(prev, width, k, 1, p))
        if i in _BATCHNORM:
            cnn.add_module(f"batchnorm{i}", nn.BatchNorm2d(width))
        relu = nn.LeakyReLU(0.2, inplace=True) if leaky else nn.ReLU(inplace=True)
        cnn.add_module(f"relu{i}", relu)
        if i in _POOLS:
            idx, (kernel, stride, padding) = _POOLS[i]
            cnn.add_module(f"pooling{idx}", nn.MaxPool2d(kernel, stride, padding))
        prev = width
    return cnn


class CRNN(Recognizer, nn.Module):
    """forward(x: (B, in_channels, 32, W)) -> logits (T, B, classes); T = W/4 + 1 (26 at W=100)."""

    def __init__(self, config: CRNNConfig | None = None) -> None:
        super().__init__()
        cfg = config or CRNNConfig()
        self.config = cfg
        self.charset = Charset()
        self.cnn = _build_cnn(cfg.in_channels, cfg.cnn_widths, cfg.leaky_relu)
        self.rnn = nn.Sequential(
            BidirectionalLSTM(cfg.cnn_widths[-1], cfg.hidden, cfg.hidden),
            BidirectionalLSTM(cfg.hidden, cfg.hidden, cfg.num_classes),
        )

    def preprocess(self, rgb: Tensor) -> Tensor:
        """(B, 3|4, H, W) RGB(M) in [0, 1] -> the network input (B, in_channels, 32, img_w)."""
        if rgb.dim() != 4 or rgb.shape[1] not in (3, 4):
            raise ValueError(f"CRNN.preprocess expects (B, 3|4, H, W), got {tuple(rgb.shape)}")
        size = (self.config.img_h, self.config.img_w)
        x = F.interpolate(rgb[:, :3].float(), size=size, mode="bicubic", align_corners=False)
        if self.config.in_channels == 1:
            r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
            x = LUMA[0] * r + LUMA[1] * g + LUMA[2] * b
        if self.config.input_norm == "symmetric":
            x = (x - 0.5) / 0.5
        return x

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.config.in_channels or x.shape[2] != self.config.img_h:
            raise ValueError(
                f"CRNN expects (B, {self.config.in_channels}, {self.config.img_h}, W) input, "
                f"got {tuple(x.shape)}; use preprocess() first"
            )
        conv = self.cnn(x)  # (B, C, 1, T)
        seq = conv.squeeze(2).permute(2, 0, 1)  # (T, B, C)
        return self.rnn(seq)

    def decode(self, logits: Tensor) -> list[str]:
        """Greedy CTC (collapse repeats, drop blanks) of (T, B, C) logits."""
        best = logits.detach().argmax(dim=2).t().tolist()  # (B, T)
        return [self.charset.ctc_greedy(path) for path in best]

    def text_loss(self, x: Tensor, labels: Sequence[str]) -> Tensor:
        """The recognizer protocol's training entry point (CTC needs no teacher forcing)."""
        return self.loss(self(x), labels)

    def loss(self, logits: Tensor, labels: Sequence[str]) -> Tensor:
        """Mean CTC loss (per-sample loss / max(len, 1)); labels are normalized to 0-9a-z first.

        Empty labels are valid (the target is all blanks); labels longer than T give an infinite
        CTC cost, which is zeroed (`zero_infinity`) rather than poisoning the batch.
        """
        steps, batch, _ = logits.shape
        if len(labels) != batch:
            raise ValueError(f"CRNN.loss got {len(labels)} labels for a batch of {batch}")
        encoded = [self.charset.encode(normalize_label(s)) for s in labels]
        lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
        flat = [i for e in encoded for i in e]
        targets = torch.tensor(flat, dtype=torch.long, device=logits.device)
        log_probs = logits.float().log_softmax(dim=2)
        input_lengths = torch.full((batch,), steps, dtype=torch.long)
        per_sample = F.ctc_loss(
            log_probs,
            targets,
            input_lengths,
            lengths,
            blank=0,
            reduction="none",
            zero_infinity=True,
        )
        return (per_sample / lengths.clamp(min=1).to(per_sample)).mean()


def official_state_dict(raw: dict) -> dict:
    """crnn.pytorch's `crnn.pth` (a plain state dict) -> our keys: strip DataParallel `module.`."""
    state = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
    return {k.removeprefix("module."): v for k, v in state.items()}
