"""Checkpoints: atomic writes and the one on-disk layout of a trained model.

`model.pt` = {"model": registry name, "config": dict, "state_dict": ..., "run": id, "task": ...};
`checkpoints/last.pt` adds the optimizer, scheduler, step and RNG states needed to resume.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stisr.atomic_io import atomic_path
from stisr.models.registry import build_model


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same folder, then rename: readers never see half a file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint on CPU; a truncated or foreign file gets an error naming it."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except Exception as err:  # torch raises several types for corrupt files
        raise ValueError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, Mapping) or "state_dict" not in ckpt:
        raise ValueError(f"{path}: not a stisr checkpoint (no 'state_dict' key)")
    return dict(ckpt)


def model_payload(model: nn.Module, name: str, config: Mapping, **meta: Any) -> dict[str, Any]:
    return {"model": name, "config": dict(config), "state_dict": model.state_dict(), **meta}


def load_model(path: Path) -> nn.Module:
    """Rebuild a model from `model.pt` through the registry and load its weights strictly."""
    ckpt = load_checkpoint(path)
    for key in ("model", "config"):
        if key not in ckpt:
            raise ValueError(f"{path}: checkpoint lacks '{key}'")
    model = build_model(ckpt["model"], ckpt["config"])
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model
