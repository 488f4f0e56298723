"""PIL image -> float tensor, exactly as the TextZoom-derived code prepares its inputs.

The official loaders resize with PIL BICUBIC, apply torchvision's ``ToTensor`` (uint8 HWC ->
float CHW / 255, no mean/std) and optionally append a binary text mask. torchvision is not a
dependency, so ``ToTensor`` is re-implemented with numpy.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["pil_to_tensor", "rgbm", "text_mask", "to_tensor"]


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """ToTensor for 8-bit images: (C, H, W) float32 in [0, 1]; L gives one channel."""
    if img.mode not in ("RGB", "L", "RGBA", "LA", "CMYK"):
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    chw = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
    return torch.from_numpy(chw)


def text_mask(img: Image.Image) -> torch.Tensor:
    """(1, H, W) mask: 1 where the grey level is at most the image's mean grey, else 0.

    Grey is PIL ``convert('L')``. The official code keeps pixels with ``x <= mean`` (it zeroes
    ``x > mean``); that differs from a strict ``<`` only on pixels equal to the mean, e.g. a
    uniform image gives an all-ones mask.
    """
    grey = np.asarray(img.convert("L"), dtype=np.uint8)
    thres = grey.mean()
    mask = (grey <= thres).astype(np.float32)
    return torch.from_numpy(mask[None])


def rgbm(img: Image.Image) -> torch.Tensor:
    """(4, H, W) RGB + text mask in [0, 1] at the image's own size (the TSRN/TATT/LEMMA input)."""
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    return torch.cat((pil_to_tensor(rgb), text_mask(rgb)), dim=0)


def to_tensor(img: Image.Image, size: tuple[int, int], mask: bool) -> torch.Tensor:
    """Resize to ``size`` = (width, height) with PIL BICUBIC, then RGB (3) or RGBM (4) tensor."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be positive (width, height), got {size}")
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.BICUBIC)
    return rgbm(rgb) if mask else pil_to_tensor(rgb)
