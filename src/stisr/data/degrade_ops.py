"""Image operations the LR pipelines of `data/degrade.py` are built from: blur kernels,
resizing, JPEG, noise. Float32 HxWx3 arrays on the 0..255 scale unless stated otherwise.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image
from scipy import special


def as_float(img: Image.Image) -> np.ndarray:
    if not isinstance(img, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(img).__name__}")
    return np.asarray(img.convert("RGB"), dtype=np.float32)


def as_pil(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), mode="RGB")


def as_uint8(arr: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def target_size(img: Image.Image, scale: float) -> tuple[int, int]:
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    w, h = img.size
    return max(1, round(w * scale)), max(1, round(h * scale))


def filter(arr: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    kernel = np.asarray(kernel, dtype=np.float32)
    return cv2.filter2D(arr, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REFLECT)


def odd(n: float) -> int:
    n = max(1, int(math.ceil(n)))
    return n if n % 2 else n + 1


def kernel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    r = (size - 1) / 2.0
    ax = np.arange(size, dtype=np.float64) - r
    return np.meshgrid(ax, ax)


def aniso_kernel(
    size: int, sx: float, sy: float, theta: float, shape: str = "gauss", beta: float = 1.0
) -> np.ndarray:
    """Rotated anisotropic Gaussian (or generalized Gaussian / plateau) kernel, sum 1."""
    xx, yy = kernel_grid(size)
    c, s = math.cos(theta), math.sin(theta)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    q = (u / max(sx, 1e-3)) ** 2 + (v / max(sy, 1e-3)) ** 2  # x^T Sigma^-1 x
    if shape == "gauss":
        k = np.exp(-0.5 * q)
    elif shape == "generalized":
        k = np.exp(-0.5 * q**beta)
    elif shape == "plateau":
        k = 1.0 / (1.0 + q**beta)
    else:
        raise ValueError(f"unknown kernel shape {shape!r}")
    return (k / k.sum()).astype(np.float32)


def disk_kernel(radius: float) -> np.ndarray:
    """Anti-aliased uniform disk: the point-spread function of a defocused lens."""
    size = odd(2 * radius + 3)
    xx, yy = kernel_grid(size)
    dist = np.sqrt(xx**2 + yy**2)
    k = np.clip(radius + 0.5 - dist, 0.0, 1.0)
    return (k / k.sum()).astype(np.float32)


def motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """Line kernel of ``length`` pixels at ``angle_deg``, drawn with sub-pixel samples."""
    size = odd(length + 3)
    k = np.zeros((size, size), np.float64)
    c = (size - 1) / 2.0
    a = math.radians(angle_deg)
    for t in np.linspace(-length / 2, length / 2, max(2, int(length * 4) + 1)):
        x, y = c + t * math.cos(a), c + t * math.sin(a)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy))):
            if 0 <= x0 + dx < size and 0 <= y0 + dy < size:
                k[y0 + dy, x0 + dx] += w
        for dx, dy, w in ((0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            if 0 <= x0 + dx < size and 0 <= y0 + dy < size:
                k[y0 + dy, x0 + dx] += w
    return (k / k.sum()).astype(np.float32)


def sinc_kernel(size: int, omega_c: float) -> np.ndarray:
    """Circular low-pass (2-D sinc / Airy) kernel: ringing and overshoot artifacts."""
    xx, yy = kernel_grid(size)
    r = np.sqrt(xx**2 + yy**2)
    with np.errstate(divide="ignore", invalid="ignore"):
        k = omega_c * special.j1(omega_c * r) / (2 * np.pi * r)
    k[r == 0] = omega_c**2 / (4 * np.pi)
    return (k / k.sum()).astype(np.float32)


INTERPOLATIONS = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)


def resize(arr: np.ndarray, size: tuple[int, int], interp: int) -> np.ndarray:
    w, h = size
    if (arr.shape[1], arr.shape[0]) == (w, h):
        return arr
    return cv2.resize(arr, (w, h), interpolation=interp)


def jpeg(arr: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through libjpeg (4:2:0 chroma); cv2 wants BGR, so channels are flipped."""
    bgr = np.ascontiguousarray(as_uint8(arr)[:, :, ::-1])
    ok, buf = cv2.imencode(".jpg", bgr, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32)


def gaussian_noise(arr: np.ndarray, rng: np.random.Generator, sigma: float, gray: bool):
    shape = arr.shape[:2] + (1,) if gray else arr.shape
    return arr + rng.normal(0.0, sigma, size=shape).astype(np.float32)


def poisson_noise(arr: np.ndarray, rng: np.random.Generator, scale: float, gray: bool):
    """Basic-SR style Poisson noise: quantize to photon counts, keep the residual x ``scale``."""
    x = np.clip(arr / 255.0, 0.0, 1.0)
    if gray:
        x = x @ np.array([0.299, 0.587, 0.114], np.float32)
        x = x[..., None]
    vals = 2.0 ** math.ceil(math.log2(max(2, len(np.unique(np.rint(x * 255))))))
    noisy = rng.poisson(x * vals) / vals
    return arr + (noisy - x).astype(np.float32) * 255.0 * scale
