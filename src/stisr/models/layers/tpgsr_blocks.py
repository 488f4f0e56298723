"""Blocks of TPGSR's SR branch (Ma et al., "Text Prior Guided Scene Text Image Super-Resolution").

Layouts and parameter names follow the public code (mjq11302010044/TPGSR `model/tsrn.py`,
`model/stn_head.py`) so its checkpoints map one to one:

* `TPTransformer` is the code's `InfoGen` (the paper's TP transformer): four transposed 3x3 convs
  (no bias) + BN + ReLU lift the (B, classes, 1, T) prior to a (B, text_channels, 1, 8T - 5) map,
  which the SR branch resizes to the image size;
* `TextGuidedResidualBlock` is `RecurrentResidualBlockTL`: TSRN's SRB whose vertical recurrence
  reads the residual concatenated with the prior map (`gru1` has `channels + text_channels` in);
* `LowResSTNHead` is TPGSR's localization net for 16-row inputs: the LR image goes to the STN head
  at 16x64 without resizing, so the fifth pooling halves only the width (kernel (1, 2)); the
  parameter shapes are those of the 32x64 head (flatten 256 x 1 x W/32).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.models.layers.activations import make_activation
from stisr.models.layers.recurrent import RecurrentLine
from stisr.models.layers.tps_stn import STNHead

# InfoGen's widths in the code (hard-coded there); configurable for small demo models.
TP_TRANSFORMER_WIDTHS = (512, 128, 64)


class TPTransformer(nn.Module):
    """(B, prior_channels, 1, T) text prior -> (B, out_channels, 1, 8T - 5) feature map.

    Strides 2, 2, 2 and (2, 1) with paddings 1, 1, 1 and (1, 0) (heights stay 1): 26 frames give
    203 columns. Attribute names `tconv1..4`, `bn1..4` are the code's.
    """

    def __init__(
        self,
        prior_channels: int = 37,
        out_channels: int = 32,
        widths: Sequence[int] = TP_TRANSFORMER_WIDTHS,
    ) -> None:
        super().__init__()
        w1, w2, w3 = (int(w) for w in widths)
        self.tconv1 = nn.ConvTranspose2d(prior_channels, w1, 3, 2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.tconv2 = nn.ConvTranspose2d(w1, w2, 3, 2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(w2)
        self.tconv3 = nn.ConvTranspose2d(w2, w3, 3, 2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(w3)
        self.tconv4 = nn.ConvTranspose2d(w3, out_channels, 3, (2, 1), padding=(1, 0), bias=False)
        self.bn4 = nn.BatchNorm2d(out_channels)

    def forward(self, prior: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.tconv1(prior)))
        x = F.relu(self.bn2(self.tconv2(x)))
        x = F.relu(self.bn3(self.tconv3(x)))
        return F.relu(self.bn4(self.tconv4(x)))


class TextGuidedResidualBlock(nn.Module):
    """SRB guided by the prior map: conv-BN-act-conv-BN, concat prior, vertical RNN, skip, RNN.

    Names as TSRN's SRB (`conv1`, `bn1`, `gru1`, `prelu`, `conv2`, `bn2`, `gru2`); only `gru1`'s
    1x1 conv is wider. The prior is fused only there, after the second BN, as in the code.
    """

    def __init__(
        self, channels: int, text_channels: int, rnn: str = "lstm", activation: str = "prelu"
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.gru1 = RecurrentLine(channels + text_channels, channels, rnn)
        self.prelu = make_activation(activation)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.gru2 = RecurrentLine(channels, channels, rnn)

    def forward(self, x: Tensor, prior_map: Tensor) -> Tensor:
        residual = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))
        fused = torch.cat([residual, prior_map], dim=1)
        residual = self.gru1(fused.transpose(-1, -2)).transpose(-1, -2)
        return self.gru2(x + residual)


class LowResSTNHead(STNHead):
    """STNHead for (16, W) inputs (TPGSR, TATT, LEMMA, C3 feed the 16x64 LR image directly).

    Built as the (32, W) head, whose parameters have the same shapes, with the last max-pool
    (index 9 of `stn_convnet`) halving only the width, as TPGSR's `stn_head.py`.
    """

    def __init__(
        self,
        in_channels: int,
        num_control_points: int = 20,
        activation: str = "none",
        input_size: Sequence[int] = (16, 64),
    ) -> None:
        height, width = (int(v) for v in input_size)
        if height != 16:
            raise ValueError(f"LowResSTNHead needs 16-row inputs, got input_size {input_size!r}")
        super().__init__(in_channels, num_control_points, activation, (32, width))
        self.stn_convnet[9] = nn.MaxPool2d(kernel_size=(1, 2), stride=(1, 2))
        self.input_size = (height, width)


def make_stn_head(
    in_channels: int, num_control_points: int, activation: str, input_size: Sequence[int]
) -> STNHead:
    """The localization net for `input_size`: the low-resolution variant for 16 rows."""
    if int(input_size[0]) == 16:
        return LowResSTNHead(in_channels, num_control_points, activation, input_size)
    return STNHead(in_channels, num_control_points, activation, input_size)
