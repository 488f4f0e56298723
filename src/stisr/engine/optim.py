"""Optimizers, learning-rate schedules and EMA weights: the run settings the loop honours.

Schedules are pure functions of the step (multiplying each parameter group's own base LR), so a
resumed run follows the same curve with nothing extra in the checkpoint. Milestones are fractions
of the run, so a paper's "x0.5 after 400 of 500 epochs" keeps its shape at every scale.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

OPTIMIZERS = ("adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "multistep")


def build_optimizer(
    name: str,
    groups: Sequence[Mapping[str, Any]],
    *,
    betas: Sequence[float],
    weight_decay: float,
    fused: bool = False,
) -> torch.optim.Optimizer:
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {name!r}")
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    groups = [dict(g) for g in groups]
    for g in groups:
        g["initial_lr"] = g["lr"]  # what the schedule multiplies
    kwargs = {"fused": True} if fused else {}  # CUDA only (engine/speed.py)
    return cls(groups, betas=tuple(betas), weight_decay=weight_decay, **kwargs)


def lr_factor(
    schedule: str,
    step: int,
    n_steps: int,
    *,
    warmup_steps: int = 0,
    milestones: Iterable[float] = (),
    gamma: float = 0.1,
) -> float:
    """Multiplier of the base LR for the update made at `step` (0-based) of `n_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "multistep":
        passed = sum(step >= round(m * n_steps) for m in milestones)
        return gamma**passed
    if schedule == "cosine":
        progress = min(1.0, (step - warmup_steps) / max(1, n_steps - warmup_steps))
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"lr schedule must be one of {LR_SCHEDULES}, got {schedule!r}")


def set_lr(opt: torch.optim.Optimizer, factor: float) -> float:
    """Apply the factor to every group; returns the first group's LR (for the log)."""
    for g in opt.param_groups:
        g["lr"] = g["initial_lr"] * factor
    return float(opt.param_groups[0]["lr"])


class EMA:
    """Exponential moving average of a model's floating-point state (TCDM keeps only these).

    Integer buffers (e.g. BatchNorm's counter) are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1.0 - self.decay)
            else:
                self.shadow[k].copy_(v)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.shadow = {k: v.clone() for k, v in state.items()}
