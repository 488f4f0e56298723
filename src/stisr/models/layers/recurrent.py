"""Recurrent blocks of TSRN: a bidirectional RNN over rows and the Sequential Residual Block.

Module and parameter names follow TextZoom's `src/model/tsrn.py` (`GruBlock` -> `RecurrentLine`
with `conv1` and `gru`; `RecurrentResidualBlock` -> `SequentialResidualBlock` with `conv1`, `bn1`,
`gru1`, `prelu`, `conv2`, `bn2`, `gru2`) so the official state dicts map one to one. The names are
kept for the LSTM variant too (the paper's BLSTM), where only the tensor shapes differ.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stisr.models.layers.activations import make_activation

RNN_TYPES = ("lstm", "gru")
ALONG = ("width", "height")


def layout_of(x: Tensor) -> torch.memory_format:
    """channels_last when `x` is laid out so (and not also plain contiguous), else contiguous."""
    if (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


class _KeepGradLayout(torch.autograd.Function):
    """Identity whose backward hands on the gradient in the memory layout of the input."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.layout = layout_of(x)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad.contiguous(memory_format=ctx.layout)


def keep_grad_layout(x: Tensor) -> Tensor:
    """Before a transpose: the gradient coming back through it would reach the conv/BN below in
    a transposed layout, which their backward kernels handle several times slower."""
    return _KeepGradLayout.apply(x)


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

    def forward(self, x: Tensor, along: str = "width") -> Tensor:
        """Recur along `width` (every row, TextZoom's GruBlock) or `height` (every column: the
        official code's GruBlock on the transposed map)."""
        if along not in ALONG:
            raise ValueError(f"RecurrentLine: along must be one of {ALONG}, got {along!r}")
        x = keep_grad_layout(x)
        b, c = x.shape[:2]
        # (B * lines, T, C), batch first: free for rows of a channels-last map (measured faster
        # than time-major for the LSTM, the same for the GRU)
        seq = x.permute(0, 2, 3, 1) if along == "width" else x.permute(0, 3, 2, 1)
        _, lines, steps, _ = seq.shape
        seq = seq.reshape(b * lines, steps, c)
        # cuDNN wants the module's own flat weights: fold conv1 on the CPU only
        out = self.gru(self._project(seq))[0] if x.is_cuda else self._folded_rnn(seq)
        out = out.reshape(b, lines, steps, -1)
        return out.permute(0, 3, 1, 2) if along == "width" else out.permute(0, 3, 2, 1)

    def _project(self, seq: Tensor) -> Tensor:
        """conv1 (a 1x1 conv) applied to (N, T, C) sequences."""
        weight = self.conv1.weight.flatten(1)
        return torch.nn.functional.linear(seq, weight, self.conv1.bias)

    def _folded_rnn(self, seq: Tensor) -> Tensor:
        """The RNN with conv1 folded into its input weights, W_ih @ W_conv and W_ih b_conv + b_ih.

        The same function as conv1 then the RNN; on a CPU it skips one (N, W, C) GEMM and its
        copy per call, the RNN's input projection absorbing the 1x1 conv.
        """
        rnn, conv_w, conv_b = self.gru, self.conv1.weight.flatten(1), self.conv1.bias
        weights: list[Tensor] = []
        for suffix in ("_l0", "_l0_reverse"):
            w_ih = getattr(rnn, "weight_ih" + suffix)
            b_ih = getattr(rnn, "bias_ih" + suffix)
            weights += [
                w_ih @ conv_w,
                getattr(rnn, "weight_hh" + suffix),
                b_ih if conv_b is None else torch.addmv(b_ih, w_ih, conv_b),
                getattr(rnn, "bias_hh" + suffix),
            ]
        h0 = seq.new_zeros(2, seq.shape[0], rnn.hidden_size)
        # (input, hx, weights, has_biases, layers, dropout, train, bidirectional, batch_first)
        if isinstance(rnn, nn.LSTM):
            out = torch.lstm(seq, (h0, h0), weights, True, 1, 0.0, self.training, True, True)
        else:
            out = torch.gru(seq, h0, weights, True, 1, 0.0, self.training, True, True)
        return out[0]


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
        residual = self.gru1(residual, along="height")
        return self.gru2(x + residual)
