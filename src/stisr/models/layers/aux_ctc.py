"""Auxiliary CTC loss on a recognizer's encoder features (joint CTC-attention, Kim et al. 2017).

A training aid for attention recognizers on short CPU schedules: CTC aligns the encoder features
with the characters early, so the attention decoder starts reading the image instead of only a
word prior. At demo scale on embedded data ASTER, MORAN, ABINet, MATRN and PARSeq all stayed at
0% for 800-3,000 steps without it (embedded ASTER: 13.7% at 3,000 steps with it). Off, with no
extra parameters, in the official configurations; inference never uses it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def aux_ctc_loss(
    logits: Tensor, labels: Sequence[Sequence[int]], per_token: bool = False
) -> Tensor:
    """logits (B, T, n + 1) with blank 0; labels: character ids 1..n per sample.

    Summed over the batch and divided by its size (per sample, like ASTER's summed token loss),
    or with `per_token` also by the mean label length + 1 (per label + end token, like the
    token-mean cross-entropies of MORAN, ABINet, MATRN and PARSeq). A label that cannot fit T
    frames contributes 0 (`zero_infinity`).
    """
    if logits.shape[0] != len(labels):
        raise ValueError(f"aux_ctc_loss got {len(labels)} labels for {logits.shape[0]} samples")
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, C)
    flat = [i for ids in labels for i in ids]
    targets = torch.tensor(flat, dtype=torch.long, device=logits.device)
    target_lengths = torch.tensor([len(ids) for ids in labels], dtype=torch.long)
    input_lengths = torch.full((len(labels),), logits.shape[1], dtype=torch.long)
    loss = F.ctc_loss(
        log_probs, targets, input_lengths, target_lengths, reduction="sum", zero_infinity=True
    )
    loss = loss / len(labels)
    if per_token:
        loss = loss / (sum(len(ids) + 1 for ids in labels) / len(labels))
    return loss
