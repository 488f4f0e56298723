"""Validation helpers for model configs (YAML gives lists where configs want tuples) and inputs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor


def as_tuple(value: Any, length: int, kind: type, where: str) -> tuple:
    """`value` as a tuple of `length` items of `kind`; ValueError naming `where` otherwise."""
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != length:
        raise ValueError(f"{where} must be a sequence of {length} {kind.__name__}s, got {value!r}")
    allowed = (int,) if kind is int else (int, float)
    if any(isinstance(v, bool) or not isinstance(v, allowed) for v in value):
        raise ValueError(f"{where} must contain {kind.__name__}s, got {value!r}")
    return tuple(kind(v) for v in value)


def check_choice(value: Any, choices: Sequence[str], where: str) -> None:
    """ValueError naming `where` when `value` is not one of `choices`."""
    if value not in choices:
        raise ValueError(f"{where} must be one of {tuple(choices)}, got {value!r}")


def check_positive(value: Any, where: str) -> None:
    """ValueError naming `where` unless `value` is a positive int."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{where} must be a positive integer, got {value!r}")


def check_count(value: Any, where: str) -> None:
    """ValueError naming `where` unless `value` is an int >= 0 (e.g. a number of blocks)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where} must be an integer >= 0, got {value!r}")


def check_weight(value: Any, where: str) -> None:
    """ValueError naming `where` unless `value` is a number >= 0 (a loss weight)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{where} must be a number >= 0, got {value!r}")


def check_input(x: Tensor, channels: int, model: str) -> None:
    """ValueError naming the model unless `x` is a (B, channels, H, W) batch."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"{model} expects (B, {channels}, H, W) input, got {tuple(x.shape)}")
