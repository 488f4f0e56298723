"""Switches that change how fast a step runs, never what it computes (within float rounding).

The engine applies them from the run's runtime settings (`params.yaml: train`): channels-last
memory for models and image batches; with CUDA also cuDNN autotuning, the fused Adam kernels and
pinned host memory. Each is tested on the CPU for equal results (tests/test_speed.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def channels_last_safe(model: nn.Module, device: str) -> bool:
    """False for a CPU model with a strided 1x1 convolution of at most 8 input channels.

    With channels-last, the CPU (oneDNN) backward of such a convolution segfaults now and then
    under torch 2.13 (measured: 4 or 8 -> 8 or 16 channels, stride 2, on 32x128 inputs; 12 and
    more input channels are fine): tiny test widths of ResNet backbones (ABINet's) hit it.
    """
    if device.startswith("cuda"):
        return True
    return not any(
        isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and max(m.stride) > 1
        and m.in_channels <= 8
        for m in model.modules()
    )  # fmt: skip


def prepare_model(model: nn.Module, device: str, channels_last: bool) -> nn.Module:
    """Move `model` to `device` in the chosen layout; with CUDA, let cuDNN pick its kernels."""
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
    return model.to(device=device, memory_format=memory_format(channels_last))


def to_device(batch: Mapping[str, Any], device: str, channels_last: bool = False) -> dict[str, Any]:
    """Tensors of `batch` on `device`; 4-D image tensors in the model's memory layout."""
    fmt = memory_format(channels_last)
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=True)
            if value.dim() == 4 and value.is_floating_point():
                value = value.contiguous(memory_format=fmt)
        out[key] = value
    return out


# Decoded training samples kept in memory (data/sample_cache.py): TextZoom's train set is about
# 360 MB as uint8 RGBM pairs; a larger set is cached up to this size and read from LMDB beyond.
DATA_CACHE_MB = 1024


def data_cache_mb(num_workers: int) -> float:
    """The loading process keeps what it decodes; with worker processes each would keep a copy."""
    return DATA_CACHE_MB if num_workers == 0 else 0


def fused_optimizer(device: str) -> bool:
    """The fused Adam/AdamW kernels exist for CUDA tensors only."""
    return device.startswith("cuda")


def pin_memory(device: str) -> bool:
    return device.startswith("cuda")
