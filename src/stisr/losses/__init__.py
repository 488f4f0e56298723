"""Named image losses and `build_loss`, which turns a spec's `losses: {name: weight}` into one loss.

Every loss takes `(sr, hr)` tensors of shape (B, C, H, W) and returns a scalar. `LOSSES` maps a
name to a factory (a Module class); keyword options for a factory come from `build_loss(...,
options={name: {...}})`, e.g. the feature extractor of `perceptual`. Recognition losses (CTC,
cross-entropy) belong to the recognizers' `loss(logits, labels)`, not to this registry.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from stisr.losses.gradient_profile import GradientProfileLoss, gradient_field, gradient_profile
from stisr.losses.perceptual import PerceptualLoss
from stisr.losses.pixel import (
    CharbonnierLoss,
    L1Loss,
    MSELoss,
    TotalVariationLoss,
    charbonnier,
    l1,
    mse,
    tv,
)
from stisr.losses.vgg import VGGFeatures, VGGFeaturesSpec

LOSSES: dict[str, Callable[..., nn.Module]] = {
    "mse": MSELoss,
    "l1": L1Loss,
    "charbonnier": CharbonnierLoss,
    "tv": TotalVariationLoss,
    "gradient_profile": GradientProfileLoss,
    "perceptual": PerceptualLoss,
}
# Losses that read a frozen network: loss name -> (factory keyword, asset role, default asset).
# The planner binds the role to the default asset unless the run spec's `assets:` names another.
LOSS_ASSETS: dict[str, tuple[str, str, str]] = {"perceptual": ("features", "vgg", "vgg16_features")}

__all__ = [
    "LOSSES",
    "LOSS_ASSETS",
    "CharbonnierLoss",
    "GradientProfileLoss",
    "L1Loss",
    "MSELoss",
    "PerceptualLoss",
    "TotalVariationLoss",
    "VGGFeatures",
    "VGGFeaturesSpec",
    "WeightedLoss",
    "build_loss",
    "charbonnier",
    "gradient_field",
    "gradient_profile",
    "l1",
    "mse",
    "tv",
]


class WeightedLoss(nn.Module):
    """Weighted sum of named losses; returns the total and the unweighted, detached parts."""

    def __init__(self, terms: Mapping[str, nn.Module], weights: Mapping[str, float]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = dict(weights)

    def forward(
        self, sr: torch.Tensor, hr: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total: torch.Tensor | None = None
        parts: dict[str, torch.Tensor] = {}
        for name, term in self.terms.items():
            value = term(sr, hr)
            parts[name] = value.detach()
            weighted = self.weights[name] * value
            total = weighted if total is None else total + weighted
        assert total is not None  # build_loss guarantees at least one term
        return total, parts

    def extra_repr(self) -> str:
        return f"weights={self.weights}"


def _unknown(names: list[str], what: str) -> KeyError:
    return KeyError(f"unknown loss name(s) {names} in {what}; valid names: {sorted(LOSSES)}")


def build_loss(
    weights: Mapping[str, float], options: Mapping[str, Mapping[str, Any]] | None = None
) -> WeightedLoss:
    """Build `(sr, hr) -> (total, {name: unweighted value})` from `{name: weight}`.

    Terms with weight 0 are dropped (not computed, not reported); weights must be finite and
    >= 0. `options[name]` are keyword arguments for that loss's factory, e.g.
    `options={"perceptual": {"features": extractor}}`. Returned parts are detached tensors, so
    logging them does not keep the graph; call `float()` when writing them out.
    """
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError(f"build_loss: weights must be a non-empty mapping, got {weights!r}")
    options = dict(options or {})
    unknown = sorted(set(weights) - set(LOSSES))
    if unknown:
        raise _unknown(unknown, "weights")
    unknown = sorted(set(options) - set(LOSSES))
    if unknown:
        raise _unknown(unknown, "options")
    terms: dict[str, nn.Module] = {}
    kept: dict[str, float] = {}
    for name, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise ValueError(f"loss {name!r}: weight must be a number, got {weight!r}")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"loss {name!r}: weight must be finite and >= 0, got {weight!r}")
        if weight == 0:
            continue
        kwargs = dict(options.get(name, {}))
        try:
            terms[name] = LOSSES[name](**kwargs)
        except TypeError as err:
            raise TypeError(f"loss {name!r}: cannot build with options {kwargs}: {err}") from err
        kept[name] = float(weight)
    if not terms:
        raise ValueError(f"build_loss: every weight is 0 in {dict(weights)}")
    return WeightedLoss(terms, kept)
