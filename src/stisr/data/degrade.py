"""Named, seeded low-resolution (LR) pipelines.

The papers build their LR test images in different ways, and the public code draws the random
parameters from global, unseeded generators (docs/protocols.md). Here every pipeline
is a pure function of the image and a ``numpy.random.Generator``, so a seed fixes the output.

Pipelines (``PIPELINES``):

* ``bicubic``: plain PIL bicubic downscale (x1/2 by default), the TextZoom loader's resize.
* ``blur_noise``: the STR-benchmark degradation of LEMMA (``variant="lemma"``, its supplementary
  C.2 and public code: Gaussian pre-blur, shot/read noise, Gaussian or bilateral noise reduction,
  unsharp masking) or KD-LTR (``variant="kdltr"``, its supplementary F: eight imgaug blurs/noise,
  each applied with p=0.25 in random order). Both keep the size of the (already small) input; pass
  ``scale`` to shrink as well.
* ``bsrgan``: BSRGAN-like shuffled blur/downsample/noise/JPEG.
* ``realesrgan``: Real-ESRGAN-like second-order blur/resize/noise/JPEG plus final sinc/JPEG.
* ``camera``: the degradation behind the embedded TextZoom-like pairs (defocus, motion blur, optical
  x2 downscale, sensor noise, JPEG, illumination change and a slight LR/HR misalignment), with a
  ``strength`` in [0, 1].

``bsrgan`` and ``realesrgan`` live in :mod:`stisr.data.degrade_blind`, the image operations in
:mod:`stisr.data.degrade_ops`; this module holds the papers' own pipelines and the registry.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

from stisr.data.degrade_blind import bsrgan, realesrgan
from stisr.data.degrade_ops import (
    as_float,
    as_pil,
    as_uint8,
    disk_kernel,
    filter,
    gaussian_noise,
    jpeg,
    motion_kernel,
    resize,
    target_size,
)

__all__ = [
    "PIPELINES",
    "degrade",
    "is_small",
    "sample_rng",
    "bicubic",
    "blur_noise",
    "bsrgan",
    "realesrgan",
    "camera",
]

Pipeline = Callable[..., Image.Image]

# --------------------------------------------------------------------------------------------
# Pipelines


def bicubic(img: Image.Image, rng: np.random.Generator, scale: float = 0.5) -> Image.Image:
    """PIL bicubic resize by ``scale``; ``rng`` is unused (kept for the common signature)."""
    del rng
    return img.convert("RGB").resize(target_size(img, scale), Image.BICUBIC)


def _lemma_degradation(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    # Pre-blur: Gaussian, kernel 3 or 5, sigma in [5, 6].
    k = int(rng.choice([3, 5]))
    out = cv2.GaussianBlur(arr, (k, k), float(rng.uniform(5.0, 6.0)))
    # Shot + read noise (variance shot*I + read, on the 0..255 scale) with p = 0.8, except
    # on near-white images.
    if rng.random() > 0.2:
        shot, read = rng.uniform(0, 0.005), rng.uniform(0, 0.015)
        if out.mean() <= 252.0:
            std = np.sqrt(shot * out + read)
            out = np.clip(out + rng.normal(0.0, 1.0, out.shape) * std, 0, 255)
    out8 = as_uint8(out)
    # Noise reduction: Gaussian (p = 0.7) or bilateral.
    if rng.random() < 0.7:
        k = int(rng.choice([3, 5]))
        out8 = cv2.GaussianBlur(out8, (k, k), float(rng.uniform(2.0, 3.0)))
    else:
        sc, ss = float(rng.uniform(70, 80)), float(rng.uniform(70, 80))
        out8 = cv2.bilateralFilter(out8, 7, sc, ss)
    # Unsharp masking: kernel 3 or 5, sigma in [2, 3], gain in [3, 4].
    out = out8.astype(np.float32)
    k = int(rng.choice([3, 5]))
    low = cv2.GaussianBlur(out, (k, k), float(rng.uniform(2.0, 3.0)))
    return np.clip(out + (out - low) * float(rng.uniform(3.0, 4.0)), 0, 255)


def _superpixels(arr: np.ndarray, rng: np.random.Generator, n: int, p_replace: float):
    """A few k-means iterations on (x, y, colour): segments replaced by their mean colour."""
    h, w = arr.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    spatial = 255.0 / max(h, w)
    feats = np.concatenate(
        [arr.reshape(-1, 3), (xx * spatial).reshape(-1, 1), (yy * spatial).reshape(-1, 1)], 1
    )
    centers = feats[rng.choice(len(feats), size=min(n, len(feats)), replace=False)]
    for _ in range(5):
        d = ((feats[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
        assign = d.argmin(1)
        for c in range(len(centers)):
            members = feats[assign == c]
            if len(members):
                centers[c] = members.mean(0)
    out = arr.reshape(-1, 3).copy()
    for c in range(len(centers)):
        if rng.random() < p_replace:
            sel = assign == c
            if sel.any():
                out[sel] = out[sel].mean(0)
    return out.reshape(arr.shape)


def _kdltr_degradation(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    def gaussian(a: np.ndarray) -> np.ndarray:
        sigma = float(rng.uniform(0.0, 3.0))
        return cv2.GaussianBlur(a, (0, 0), sigma) if sigma > 0.01 else a

    def average(a: np.ndarray) -> np.ndarray:
        k = int(rng.integers(1, 6))
        return cv2.blur(a, (k, k)) if k > 1 else a

    def median(a: np.ndarray) -> np.ndarray:
        return cv2.medianBlur(as_uint8(a), int(rng.choice([3, 5, 7]))).astype(np.float32)

    def bilateral(a: np.ndarray) -> np.ndarray:
        d = int(rng.integers(3, 10))
        sc, ss = float(rng.uniform(10, 250)), float(rng.uniform(10, 250))
        return cv2.bilateralFilter(as_uint8(a), d, sc, ss).astype(np.float32)

    def motion(a: np.ndarray) -> np.ndarray:
        return filter(a, motion_kernel(3.0, float(rng.uniform(0, 360))))

    def mean_shift(a: np.ndarray) -> np.ndarray:
        sp, sr = float(rng.uniform(5, 40)), float(rng.uniform(5, 40))
        return cv2.pyrMeanShiftFiltering(as_uint8(a), sp, sr).astype(np.float32)

    def superpixels(a: np.ndarray) -> np.ndarray:
        return _superpixels(a, rng, int(rng.integers(1, 8)), float(rng.uniform(0.1, 0.5)))

    def noise(a: np.ndarray) -> np.ndarray:
        sigma = float(rng.uniform(0.0, 0.05 * 255))
        return gaussian_noise(a, rng, sigma, gray=rng.random() >= 0.5)

    ops = [gaussian, average, median, bilateral, motion, mean_shift, superpixels, noise]
    for i in rng.permutation(len(ops)):
        if rng.random() < 0.25:
            arr = np.clip(ops[i](arr), 0, 255).astype(np.float32)
    return arr


def blur_noise(
    img: Image.Image,
    rng: np.random.Generator,
    variant: Literal["lemma", "kdltr"] = "lemma",
    scale: float = 1.0,
) -> Image.Image:
    """Blur + noise of the LEMMA or KD-LTR STR-benchmark LR sets, then an optional downscale.

    LEMMA degrades only images already smaller than 16x64 (see ``is_small``) and keeps their size,
    hence ``scale=1``. The downscale (``scale < 1``) is bicubic and comes last.
    """
    arr = as_float(img)
    if variant == "lemma":
        arr = _lemma_degradation(arr, rng)
    elif variant == "kdltr":
        arr = _kdltr_degradation(arr, rng)
    else:
        raise ValueError(f"blur_noise: unknown variant {variant!r}; expected 'lemma' or 'kdltr'")
    out = as_pil(arr)
    if scale != 1.0:
        out = out.resize(target_size(img, scale), Image.BICUBIC)
    return out


def _uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi)) if hi > lo else float(lo)


def camera(
    img: Image.Image,
    rng: np.random.Generator,
    strength: float = 0.5,
    scale: float = 0.5,
    misalign: bool = True,
) -> Image.Image:
    """A camera at a shorter focal length: the HR scene seen through a worse optical path.

    Order: misalignment (shift, rotation, zoom: TextZoom's LR/HR pairs are not pixel-aligned),
    illumination (gain, gradient, haze, gamma), defocus disk and motion blur (sized in output
    pixels), optical downscale by ``scale`` (area integration), Poisson-Gaussian sensor noise,
    JPEG. Every range grows with ``strength`` in [0, 1]; ``scale=1`` with ``misalign=False`` is a
    same-size capture (the HR side of the embedded pairs).
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"camera: strength must be in [0, 1], got {strength}")
    s = float(strength)
    target = target_size(img, scale)
    arr = as_float(img)
    h, w = arr.shape[:2]

    if misalign:
        shift = 0.3 + 1.2 * s
        angle = _uniform(rng, -1, 1) * (0.3 + 1.2 * s)
        zoom = 1.0 + _uniform(rng, -1, 1) * (0.01 + 0.04 * s)
        m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, zoom)
        m[0, 2] += _uniform(rng, -shift, shift)
        m[1, 2] += _uniform(rng, -shift, shift) * 0.5
        arr = cv2.warpAffine(
            arr, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )

    # Illumination: global gain, a linear light gradient, haze (contrast loss), gamma.
    x = arr / 255.0
    gain = _uniform(rng, 1.0 - 0.35 * s, 1.0 + 0.15 * s)
    gx, gy = np.meshgrid(np.linspace(-1, 1, w), np.linspace(-1, 1, h))
    a = rng.uniform(-1, 1)
    grad = 1.0 + _uniform(rng, 0, 0.35 * s) * (a * gx + (1 - abs(a)) * gy)
    x = x * (gain * grad[..., None]).astype(np.float32)
    haze = _uniform(rng, 0.0, 0.45 * s)
    x = x * (1 - haze) + haze * x.mean(axis=(0, 1), keepdims=True)
    gamma = math.exp(_uniform(rng, -0.35, 0.35) * s)
    x = np.clip(x, 0, 1) ** gamma
    arr = (x * 255.0).astype(np.float32)

    # Optics: defocus (disk) and camera shake (mostly horizontal), sized in output pixels so
    # that a strength means the same legibility loss at any scale.
    radius = _uniform(rng, 0.2 + 0.8 * s, 0.4 + 1.6 * s) / scale
    if radius > 0.35:
        arr = filter(arr, disk_kernel(radius))
    length = _uniform(rng, 0.0, 0.25 + 2.0 * s) / scale
    if length > 0.75:
        arr = filter(arr, motion_kernel(length, _uniform(rng, -25, 25)))

    arr = resize(arr, target, cv2.INTER_AREA)

    # Sensor: signal-dependent shot noise plus read noise, on the 0..1 scale.
    x = np.clip(arr / 255.0, 0, 1)
    read = _uniform(rng, 0.002, 0.01 + 0.04 * s)
    shot = _uniform(rng, 0.0, 0.002 + 0.01 * s)
    std = np.sqrt(shot * x + read**2)
    x = x + rng.standard_normal(x.shape).astype(np.float32) * std
    arr = np.clip(x, 0, 1) * 255.0

    quality = int(round(_uniform(rng, 95 - 55 * s, 98 - 30 * s)))
    arr = jpeg(arr, max(10, min(100, quality)))
    return as_pil(arr)


PIPELINES: dict[str, Pipeline] = {
    "bicubic": bicubic,
    "blur_noise": blur_noise,
    "bsrgan": bsrgan,
    "realesrgan": realesrgan,
    "camera": camera,
}


def degrade(img: Image.Image, name: str, rng: np.random.Generator, **params: Any) -> Image.Image:
    """Run pipeline ``name`` on ``img``; unknown names raise KeyError listing the valid ones."""
    try:
        fn = PIPELINES[name]
    except KeyError:
        raise KeyError(
            f"unknown degradation pipeline {name!r}; valid: {', '.join(sorted(PIPELINES))}"
        ) from None
    try:
        return fn(img, rng, **params)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise TypeError(f"pipeline {name!r}: {exc}") from exc
        raise


def is_small(
    img: Image.Image, max_w: int = 64, max_h: int = 16, rule: Literal["box", "area"] = "box"
) -> bool:
    """Whether ``img`` counts as low-resolution.

    ``box`` (default): width <= max_w and height <= max_h (TSRN's CommonLR, "smaller than 64x16";
    LEMMA's "less than 16x64 pixels"). ``area``: width*height <= max_w*max_h, the test LEMMA's
    public code actually applies.
    """
    w, h = img.size
    if rule == "box":
        return w <= max_w and h <= max_h
    if rule == "area":
        return w * h <= max_w * max_h
    raise ValueError(f"is_small: unknown rule {rule!r}; expected 'box' or 'area'")


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample ``index``: independent of how many samples come before it."""
    return np.random.default_rng([int(seed), int(index)])
