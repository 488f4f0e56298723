"""Sequence layers of the CTC/attention recognizers (CRNN, MORAN's ASRN).

`BidirectionalLSTM` keeps the attribute names `rnn` and `embedding` of crnn.pytorch's
`models/crnn.py` and of MORAN_v2's `models/asrn_res.py`, which define the same layer, so the
official state dicts of both models map one to one.
"""

from __future__ import annotations

from torch import Tensor, nn


class BidirectionalLSTM(nn.Module):
    """BLSTM + per-step linear: (T, B, n_in) -> (T, B, n_out)."""

    def __init__(self, n_in: int, n_hidden: int, n_out: int) -> None:
        super().__init__()
        # MORAN's official dropout=0.3 acts between stacked layers only; this LSTM has one layer.
        self.rnn = nn.LSTM(n_in, n_hidden, bidirectional=True)
        self.embedding = nn.Linear(n_hidden * 2, n_out)

    def forward(self, x: Tensor) -> Tensor:
        recurrent, _ = self.rnn(x)  # (T, B, 2h)
        return self.embedding(recurrent)
