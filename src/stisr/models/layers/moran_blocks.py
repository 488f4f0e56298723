"""Building blocks of MORAN v2 (Luo et al., Pattern Recognition 2019): the MORN rectifier and
ASRN's ResNet, with the module layout of Canjie-Luo/MORAN_v2 (`models/morn.py`,
`models/asrn_res.py`) so the official state dict maps one to one (models/rec/moran.py).

Grid sampling uses align_corners as the caller passes it (MORAN: True, as torch 0.3 sampled).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_STRIDES = (2, 2, (2, 1), (2, 1), (2, 1))  # first block of ASRN.cnn.block1..block5
_BN_MOMENTUM = 0.01  # ASRN's BatchNorm momentum (MORN keeps the default)


def _base_grid(height: int, width: int, batch: int, like: Tensor) -> Tensor:
    """(B, H, W, 2) identity sampling grid in [-1, 1] as (x, y)."""
    ys = torch.linspace(-1.0, 1.0, height, dtype=like.dtype, device=like.device)
    xs = torch.linspace(-1.0, 1.0, width, dtype=like.dtype, device=like.device)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
    return grid.unsqueeze(0).expand(batch, height, width, 2)


class MORN(nn.Module):
    """Predicts a coarse vertical offset map, upsamples it onto the output grid, resamples."""

    def __init__(self, in_ch: int, widths: Sequence[int], out_size: tuple[int, int], align: bool):
        super().__init__()
        w1, w2, w3, w4 = widths
        self.out_size, self.align = out_size, align
        self.cnn = nn.Sequential(
            nn.MaxPool2d(2, 2),
            *(nn.Conv2d(in_ch, w1, 3, 1, 1), nn.BatchNorm2d(w1), nn.ReLU(True), nn.MaxPool2d(2, 2)),
            *(nn.Conv2d(w1, w2, 3, 1, 1), nn.BatchNorm2d(w2), nn.ReLU(True), nn.MaxPool2d(2, 2)),
            *(nn.Conv2d(w2, w3, 3, 1, 1), nn.BatchNorm2d(w3), nn.ReLU(True)),
            *(nn.Conv2d(w3, w4, 3, 1, 1), nn.BatchNorm2d(w4), nn.ReLU(True)),
            *(nn.Conv2d(w4, 1, 3, 1, 1), nn.BatchNorm2d(1)),
        )
        self.pool = nn.MaxPool2d(2, 1)

    def _offsets(self, x: Tensor, grid: Tensor) -> Tensor:
        """(B, H, W, 1) vertical offsets: signed max-pool of the CNN map, sampled on the grid."""
        offsets = self.cnn(x)
        pooled = self.pool(F.relu(offsets)) - self.pool(F.relu(-offsets))
        return F.grid_sample(pooled, grid, align_corners=self.align).permute(0, 2, 3, 1)

    def forward(self, x: Tensor, refinements: int) -> Tensor:
        resized = F.interpolate(x, size=self.out_size, mode="bilinear", align_corners=self.align)
        grid = _base_grid(*self.out_size, x.shape[0], x)
        offsets = self._offsets(resized, grid)
        rectified = x
        for i in range(refinements + 1):
            if i:
                offsets = offsets + self._offsets(rectified, grid)
            sample = torch.cat([grid[..., :1], grid[..., 1:] + offsets], dim=3)
            rectified = F.grid_sample(x, sample, align_corners=self.align)
        return rectified


class ResidualBlock(nn.Module):
    """conv1 (3x3 strided, or 1x1) + BN -> conv2 3x3 + BN, added to the (downsampled) input."""

    def __init__(self, in_ch: int, out_ch: int, stride: int | tuple[int, int]) -> None:
        super().__init__()
        strided = (stride[0] if isinstance(stride, tuple) else stride) > 1
        kernel, pad = (3, 1) if strided else (1, 0)
        self.downsample = (
            nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 3, stride, 1),
                nn.BatchNorm2d(out_ch, momentum=_BN_MOMENTUM),
            )
            if strided
            else None
        )
        self.conv1 = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, kernel, stride, pad),
            nn.BatchNorm2d(out_ch, momentum=_BN_MOMENTUM),
        )
        self.conv2 = nn.Sequential(
            nn.Conv2d(out_ch, out_ch, 3, 1, 1), nn.BatchNorm2d(out_ch, momentum=_BN_MOMENTUM)
        )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu(residual + self.conv2(self.conv1(x)))


class ResNet(nn.Module):
    def __init__(self, in_ch: int, widths: Sequence[int], blocks: Sequence[int]) -> None:
        super().__init__()
        self.block0 = nn.Sequential(
            nn.Conv2d(in_ch, widths[0], 3, 1, 1), nn.BatchNorm2d(widths[0], momentum=_BN_MOMENTUM)
        )
        prev = widths[0]
        for i, (width, n, stride) in enumerate(zip(widths[1:], blocks, _STRIDES, strict=True)):
            layers = [ResidualBlock(prev, width, stride)]
            layers += [ResidualBlock(width, width, 1) for _ in range(n - 1)]
            self.add_module(f"block{i + 1}", nn.Sequential(*layers))
            prev = width

    def forward(self, x: Tensor) -> Tensor:
        for i in range(6):
            x = getattr(self, f"block{i}")(x)
        return x
