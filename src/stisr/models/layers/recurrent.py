"""Recurrent blocks of TSRN: a bidirectional RNN over rows and the Sequential Residual Block.

Module and parameter names follow TextZoom's `src/model/tsrn.py` (`GruBlock` -> `RecurrentLine`
with `conv1` and `gru`; `RecurrentResidualBlock` -> `SequentialResidualBlock` with `conv1`, `bn1`,
`gru1`, `prelu`, `conv2`, `bn2`, `gru2`) so the official state dicts map one to one. The names are
kept for the LSTM variant too (the paper's BLSTM), where only the tensor shapes differ.
"""

from __future__ import annotations

from torch import Tensor, nn

from stisr.models.layers.activations import make_activation

RNN_TYPES = ("lstm", "gru")


class RecurrentLine(nn.Module):
    """1x1 conv, then a bidirectional RNN along the width of every row (B, C, H, W) -> same."""

    def __init__(self, in_channels: int, out_channels: int, rnn: str = "gru") -> None:
        super().__init__()
        if out_channels % 2:
            raise ValueError(f"RecurrentLine needs an even out_channels, got {out_channels}")
        if rnn not in RNN_TYPES:
            raise ValueError(f"unknown rnn {rnn!r}; expected one of {RNN_TYPES}")
        rnn_cls = nn.LSTM if rnn == "lstm" else nn.GRU
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=1, padding=0)
        self.gru = rnn_cls(out_channels, out_channels // 2, bidirectional=True, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(b * h, w, c)
        rows, _ = self.gru(rows)
        return rows.reshape(b, h, w, c).permute(0, 3, 1, 2)


class SequentialResidualBlock(nn.Module):
    """TSRN's SRB: conv-BN-act-conv-BN, a vertical RNN on the residual, skip, a horizontal RNN.

    The order (vertical recurrence on the residual branch, horizontal recurrence after the skip
    addition) is the official code's; the paper only says both directions are used.
    """

    def __init__(self, channels: int, rnn: str = "lstm", activation: str = "prelu") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.gru1 = RecurrentLine(channels, channels, rnn)
        self.prelu = make_activation(activation)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)
        self.gru2 = RecurrentLine(channels, channels, rnn)

    def forward(self, x: Tensor) -> Tensor:
        residual = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))
        residual = self.gru1(residual.transpose(-1, -2)).transpose(-1, -2)
        return self.gru2(x + residual)
