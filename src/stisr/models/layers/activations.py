"""Named activations, so configs can switch the paper's PReLU for the code's Mish."""

from __future__ import annotations

from torch import nn

ACTIVATIONS = ("prelu", "mish", "relu")


def make_activation(name: str) -> nn.Module:
    """A fresh activation module; PReLU has one shared learnable slope (torch default)."""
    if name == "prelu":
        return nn.PReLU()
    if name == "mish":
        return nn.Mish()
    if name == "relu":
        return nn.ReLU(inplace=True)
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS}")
