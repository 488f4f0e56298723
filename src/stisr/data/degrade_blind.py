"""Blind-SR degradation models: the BSRGAN- and Real-ESRGAN-like LR pipelines.

Split from :mod:`stisr.data.degrade` because these two generic random degradation models (with
their kernel tables) are large and independent of the papers' own LR protocols; they are still
registered, and importable, as ``stisr.data.degrade.bsrgan`` / ``.realesrgan``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

from stisr.data.degrade_ops import (
    INTERPOLATIONS,
    aniso_kernel,
    as_float,
    as_pil,
    filter,
    gaussian_noise,
    jpeg,
    poisson_noise,
    resize,
    sinc_kernel,
    target_size,
)

__all__ = ["bsrgan", "realesrgan"]


def _bsrgan_blur(arr: np.ndarray, rng: np.random.Generator, sf: float) -> np.ndarray:
    wd2, wd = 4.0 + sf, 2.0 + 0.2 * sf
    if rng.random() < 0.5:
        l1, l2 = wd2 * rng.random() + 0.1, wd2 * rng.random() + 0.1
        size = 2 * int(rng.integers(2, 12)) + 3
        k = aniso_kernel(size, math.sqrt(l1), math.sqrt(l2), math.pi * rng.random())
    else:
        sigma = wd * rng.random() + 0.1
        size = 2 * int(rng.integers(2, 12)) + 3
        k = aniso_kernel(size, sigma, sigma, 0.0)
    return filter(arr, k)


def _bsrgan_noise(arr: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    level = float(rng.uniform(2, 25))
    r = rng.random()
    if r < 0.6:
        return gaussian_noise(arr, rng, level, gray=False)
    if r < 0.8:
        return gaussian_noise(arr, rng, level, gray=True)
    # Channel-correlated noise: a random 3x3 covariance.
    lv = level**2
    u = np.linalg.qr(rng.standard_normal((3, 3)))[0]
    cov = lv * (u.T @ np.diag(rng.random(3)) @ u)
    return arr + rng.multivariate_normal(np.zeros(3), cov, size=arr.shape[:2]).astype(np.float32)


def bsrgan(img: Image.Image, rng: np.random.Generator, scale: float = 0.5) -> Image.Image:
    """BSRGAN-like: two blurs, a downsample, noise and JPEG in random order, then JPEG."""
    target = target_size(img, scale)
    sf = 1.0 / scale
    arr = as_float(img)
    for op in rng.permutation(5):
        if op in (0, 1):
            arr = _bsrgan_blur(arr, rng, sf)
        elif op == 2:
            arr = resize(arr, target, int(rng.choice(INTERPOLATIONS)))
        elif op == 3:
            arr = _bsrgan_noise(arr, rng)
        else:
            arr = jpeg(arr, int(rng.integers(30, 96)))
        arr = np.clip(arr, 0, 255).astype(np.float32)
    arr = jpeg(arr, int(rng.integers(30, 96)))
    return as_pil(resize(arr, target, cv2.INTER_CUBIC))


_RE_KERNELS = (
    "iso",
    "aniso",
    "generalized_iso",
    "generalized_aniso",
    "plateau_iso",
    "plateau_aniso",
)
_RE_KERNEL_PROB = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)


def _realesrgan_kernel(
    rng: np.random.Generator, sigma_range: tuple[float, float], sinc_prob: float
) -> np.ndarray:
    size = int(rng.choice(np.arange(7, 22, 2)))
    if rng.random() < sinc_prob:
        lo = math.pi / 3 if size < 13 else math.pi / 5
        return sinc_kernel(size, float(rng.uniform(lo, math.pi)))
    kind = _RE_KERNELS[int(rng.choice(len(_RE_KERNELS), p=_RE_KERNEL_PROB))]
    sx = float(rng.uniform(*sigma_range))
    iso = kind.endswith("iso") and not kind.endswith("aniso")
    sy = sx if iso else float(rng.uniform(*sigma_range))
    theta = 0.0 if iso else float(rng.uniform(-math.pi, math.pi))
    if kind.startswith("generalized"):
        return aniso_kernel(size, sx, sy, theta, "generalized", float(rng.uniform(0.5, 4.0)))
    if kind.startswith("plateau"):
        return aniso_kernel(size, sx, sy, theta, "plateau", float(rng.uniform(1.0, 2.0)))
    return aniso_kernel(size, sx, sy, theta)


def _realesrgan_order(
    arr: np.ndarray,
    rng: np.random.Generator,
    base: tuple[int, int],
    *,
    sigma: tuple[float, float],
    resize_prob: tuple[float, float, float],
    resize_range: tuple[float, float],
    noise_range: tuple[float, float],
    poisson_range: tuple[float, float],
) -> np.ndarray:
    arr = filter(arr, _realesrgan_kernel(rng, sigma, 0.1))
    mode = int(rng.choice(3, p=resize_prob))  # up, down, keep
    factor = (
        rng.uniform(1.0, resize_range[1])
        if mode == 0
        else rng.uniform(resize_range[0], 1.0)
        if mode == 1
        else 1.0
    )
    w, h = arr.shape[1], arr.shape[0]
    new = (max(2, round(w * factor)), max(2, round(h * factor)))
    # Never shrink below a quarter of the final size: text crops are tiny already.
    new = (max(new[0], base[0] // 4 or 1), max(new[1], base[1] // 4 or 1))
    arr = resize(arr, new, int(rng.choice(INTERPOLATIONS)))
    gray = rng.random() < 0.4
    if rng.random() < 0.5:
        arr = gaussian_noise(arr, rng, float(rng.uniform(*noise_range)), gray)
    else:
        arr = poisson_noise(arr, rng, float(rng.uniform(*poisson_range)), gray)
    arr = np.clip(arr, 0, 255).astype(np.float32)
    return jpeg(arr, int(rng.integers(30, 96)))


def realesrgan(img: Image.Image, rng: np.random.Generator, scale: float = 0.5) -> Image.Image:
    """Real-ESRGAN-like second-order degradation with its published parameter ranges."""
    target = target_size(img, scale)
    arr = as_float(img)
    arr = _realesrgan_order(
        arr,
        rng,
        target,
        sigma=(0.2, 3.0),
        resize_prob=(0.2, 0.7, 0.1),
        resize_range=(0.15, 1.5),
        noise_range=(1.0, 30.0),
        poisson_range=(0.05, 3.0),
    )
    if rng.random() < 0.8:  # second blur probability
        arr = filter(arr, _realesrgan_kernel(rng, (0.2, 1.5), 0.1))
    arr = _realesrgan_order(
        arr,
        rng,
        target,
        sigma=(0.2, 1.5),
        resize_prob=(0.3, 0.4, 0.3),
        resize_range=(0.3, 1.2),
        noise_range=(1.0, 25.0),
        poisson_range=(0.05, 2.5),
    )

    def resize_sinc(a: np.ndarray) -> np.ndarray:
        a = resize(a, target, int(rng.choice(INTERPOLATIONS)))
        if rng.random() < 0.8:
            a = filter(a, sinc_kernel(21, float(rng.uniform(math.pi / 3, math.pi))))
        return a

    if rng.random() < 0.5:
        arr = jpeg(np.clip(resize_sinc(arr), 0, 255), int(rng.integers(30, 96)))
    else:
        arr = resize_sinc(jpeg(arr, int(rng.integers(30, 96))))
    return as_pil(resize(arr, target, cv2.INTER_CUBIC))
