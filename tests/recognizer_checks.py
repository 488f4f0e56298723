"""Checks shared by the recognizer tests."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def fit_losses(model: nn.Module, x: Tensor, labels: Sequence[str], steps: int, lr: float):
    """Adam steps on `training_loss`; every loss must be finite. Returns the loss per step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = model.text_loss(x, list(labels))
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
