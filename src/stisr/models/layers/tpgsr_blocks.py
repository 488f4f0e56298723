"""Blocks of TPGSR's SR branch (Ma et al., "Text Prior Guided Scene Text Image Super-Resolution").

Layouts and parameter names follow the public code (mjq11302010044/TPGSR `model/tsrn.py`,
`model/stn_head.py`) so its checkpoints map one to one:

* `TPTransformer` is the code's `InfoGen` (the paper's TP transformer): four transposed 3x3 convs
  (no bias) + BN + ReLU lift the (B, classes, 1, T) prior to a (B, text_channels, 1, 8T - 5) map,
  which the SR branch resizes to the image size;
* `TextGuidedResidualBlock` is `RecurrentResidualBlockTL`: TSRN's SRB whose vertical recurrence
  reads the residual concatenated with the prior map (`gru1` has `channels + text_channels` in);
* the localization net for the 16x64 LR fed as is is `tps_stn.LowResSTNHead` (shared with STT).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stisr.models.layers.activations import make_activation
from stisr.models.layers.recurrent import RecurrentLine

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
        residual = self.gru1(fused, along="height")
        return self.gru2(x + residual)
