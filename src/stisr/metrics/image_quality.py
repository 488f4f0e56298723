"""PSNR and SSIM per image, defined as the TextZoom evaluation code defines them.

Both take (B, C, H, W) tensors in [0, 1] with C = 3 (RGB) or 4 (RGBM: the mask channel is dropped,
as TextZoom does), compute in float64 and return one value per image, shape (B,). Inputs are not
clamped: clamp the SR output first if the model can leave [0, 1].

Aggregation note: the TextZoom code computes one PSNR/SSIM per *batch* and averages the batch
values; per-image values averaged over the set (what `stisr.engine.evaluate` should do with these
functions) are independent of the batch size, and differ from the code's numbers only through the
non-linearity of PSNR in the MSE.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(sr: torch.Tensor, hr: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes and return the RGB channels as float64."""
    for arg, t in (("sr", sr), ("hr", hr)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4 or t.shape[1] not in (3, 4):
            raise ValueError(
                f"{name}: {arg} must have shape (B, 3 or 4, H, W), got {tuple(t.shape)}"
            )
    if sr.shape[0] != hr.shape[0] or sr.shape[2:] != hr.shape[2:]:
        raise ValueError(f"{name}: sr {tuple(sr.shape)} and hr {tuple(hr.shape)} differ in size")
    return sr[:, :3].to(torch.float64), hr[:, :3].to(sr.device, torch.float64)


def psnr(sr: torch.Tensor, hr: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, 10*log10(data_range^2 / MSE over C, H, W).

    Identical images give +inf (MSE 0), as in the TextZoom code, rather than a clamped finite
    value that would look like a measurement: a set average that contains inf is inf. Note that
    `json.dumps` writes inf as the non-standard token `Infinity`.
    """
    sr, hr = _check_pair(sr, hr, "psnr")
    mse = (sr - hr).pow(2).mean(dim=(1, 2, 3))
    peak = torch.tensor(float(data_range) ** 2, dtype=torch.float64, device=mse.device)
    return torch.where(mse > 0, 10.0 * torch.log10(peak / mse), torch.full_like(mse, math.inf))


def gaussian_kernel_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Sampled 1-D Gaussian of odd `size` centred on size // 2, normalized to sum 1, float64."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"SSIM window size must be a positive odd int, got {size}")
    if sigma <= 0:
        raise ValueError(f"SSIM sigma must be > 0, got {sigma}")
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalized 2-D Gaussian (size, size): the outer product of `gaussian_kernel_1d`."""
    g = gaussian_kernel_1d(size, sigma)
    return torch.outer(g, g)


def _band_matrix(n: int, kernel: torch.Tensor) -> torch.Tensor:
    """(n, n) matrix M with (M @ v)[i] = sum_k kernel[k] v[i + k - r], zero outside 0..n-1."""
    r = kernel.numel() // 2
    idx = torch.arange(n, device=kernel.device)
    offset = idx[None, :] - idx[:, None] + r  # kernel index for (row i, column j)
    inside = (offset >= 0) & (offset < kernel.numel())
    return torch.where(inside, kernel[offset.clamp(0, kernel.numel() - 1)], 0.0)


def ssim(
    sr: torch.Tensor,
    hr: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
    padding: Literal["zero", "valid"] = "zero",
) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004), averaged over channels and positions.

    Local statistics use a window_size x window_size Gaussian (sigma 1.5) applied to each RGB
    channel separately, with C1 = (0.01 L)^2 and C2 = (0.03 L)^2, L = data_range.
    `padding="zero"` (default) is the TextZoom definition: the images are zero-padded by
    window_size // 2 and the SSIM map is averaged over the full H x W (border windows see the
    zero padding, which lowers the value slightly versus other tools). `padding="valid"` keeps only
    windows fully inside the image (the scikit-image/Wang et al. convention) and needs
    H, W >= window_size. The Gaussian is separable, so the filtering is done exactly as two
    banded matrix products (rows, then columns), which is much faster than an 11x11 float64
    convolution on CPU and gives the same zero-padded result.
    """
    sr, hr = _check_pair(sr, hr, "ssim")
    if padding not in ("zero", "valid"):
        raise ValueError(f"ssim: padding must be 'zero' or 'valid', got {padding!r}")
    height, width = sr.shape[2:]
    if padding == "valid" and min(height, width) < window_size:
        raise ValueError(
            f"ssim: padding='valid' needs H, W >= window_size={window_size}, got {(height, width)}"
        )
    kernel = gaussian_kernel_1d(window_size, sigma).to(sr.device)
    rows = _band_matrix(height, kernel)
    cols_t = _band_matrix(width, kernel).T

    def blur(x: torch.Tensor) -> torch.Tensor:
        return rows @ x @ cols_t

    mu1, mu2 = blur(sr), blur(hr)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    var1 = blur(sr * sr) - mu1_sq
    var2 = blur(hr * hr) - mu2_sq
    cov = blur(sr * hr) - mu12
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu12 + c1) * (2 * cov + c2)) / ((mu1_sq + mu2_sq + c1) * (var1 + var2 + c2))
    if padding == "valid":
        r = window_size // 2
        ssim_map = ssim_map[:, :, r : height - r, r : width - r]
    return ssim_map.mean(dim=(1, 2, 3))
