"""TPS spatial transformer (localization network + thin-plate-spline sampler).

Used by TSRN's central alignment module and by ASTER's rectifier. The layout follows the public
aster.pytorch code, which TextZoom reuses unchanged: a 6-block conv localization network over a
small resized copy of the image predicts `num_control_points` source points (half along the top
edge, half along the bottom edge), and a TPS maps a fixed grid of target control points onto them.
Attribute and buffer names match that code (`stn_convnet`, `stn_fc1`, `stn_fc2`, `inverse_kernel`,
...) so official checkpoints load unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Localization-net widths (aster.pytorch stn_head.py); each block ends with a 2x2 max-pool except
# the last, so the input is downsampled 32x before the fully connected layers.
_LOC_WIDTHS = (32, 64, 128, 256, 256, 256)
_LOC_DOWNSAMPLE = 2 ** (len(_LOC_WIDTHS) - 1)
_LOC_FC = 512
_LAST_POOL = 2 * (len(_LOC_WIDTHS) - 1) - 1  # index of the fifth pooling in stn_convnet
_INIT_MARGIN = 0.01  # margin of the localization net's initial (bias) control points


def _pair(value: Sequence[int] | Sequence[float], name: str) -> tuple:
    values = tuple(value)
    if len(values) != 2:
        raise ValueError(f"{name} must have 2 entries (height, width), got {value!r}")
    return values


def edge_control_points(num_control_points: int, margin_x: float, margin_y: float) -> Tensor:
    """(N, 2) points in [0, 1]^2 as (x, y): N/2 evenly spaced on the top edge, N/2 on the bottom."""
    if num_control_points < 4 or num_control_points % 2:
        raise ValueError(
            f"num_control_points must be an even number >= 4, got {num_control_points}"
        )
    per_side = num_control_points // 2
    xs = torch.linspace(margin_x, 1.0 - margin_x, per_side, dtype=torch.float64)
    top = torch.stack([xs, torch.full_like(xs, margin_y)], dim=1)
    bottom = torch.stack([xs, torch.full_like(xs, 1.0 - margin_y)], dim=1)
    return torch.cat([top, bottom], dim=0)


def _tps_kernel(points: Tensor, centers: Tensor) -> Tensor:
    """U(r) = r^2 log r between every point and every center (0 where r = 0)."""
    sq_dist = (points[:, None, :] - centers[None, :, :]).pow(2).sum(-1)
    # 0.5 * d2 * log(d2) == r^2 log r; the limit at r = 0 is 0.
    safe = torch.where(sq_dist > 0, sq_dist, torch.ones_like(sq_dist))
    return 0.5 * sq_dist * torch.log(safe)


class STNHead(nn.Module):
    """Localization network: image -> (features, control points in [0, 1] as (x, y)).

    `input_size` is the (H, W) the image is resized to before this net (32x64 in TSRN and ASTER);
    both must be multiples of 32. The last layer starts at zero weight with its bias on the edge
    control points, so training starts from a near-identity rectification.
    """

    def __init__(
        self,
        in_channels: int,
        num_control_points: int = 20,
        activation: str = "none",
        input_size: Sequence[int] = (32, 64),
    ) -> None:
        super().__init__()
        if activation not in ("none", "sigmoid"):
            raise ValueError(f"stn activation must be 'none' or 'sigmoid', got {activation!r}")
        height, width = _pair(input_size, "stn input_size")
        if height % _LOC_DOWNSAMPLE or width % _LOC_DOWNSAMPLE or min(height, width) <= 0:
            raise ValueError(
                f"stn input_size must be positive multiples of {_LOC_DOWNSAMPLE}, "
                f"got {input_size!r}"
            )
        self.num_control_points = num_control_points
        self.activation = activation
        self.input_size = (height, width)
        layers: list[nn.Module] = []
        prev = in_channels
        for i, width_out in enumerate(_LOC_WIDTHS):
            layers.append(
                nn.Sequential(
                    nn.Conv2d(prev, width_out, kernel_size=3, stride=1, padding=1),
                    nn.BatchNorm2d(width_out),
                    nn.ReLU(inplace=True),
                )
            )
            if i < len(_LOC_WIDTHS) - 1:
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            prev = width_out
        self.stn_convnet = nn.Sequential(*layers)
        flat = prev * (height // _LOC_DOWNSAMPLE) * (width // _LOC_DOWNSAMPLE)
        self.stn_fc1 = nn.Sequential(
            nn.Linear(flat, _LOC_FC), nn.BatchNorm1d(_LOC_FC), nn.ReLU(inplace=True)
        )
        self.stn_fc2 = nn.Linear(_LOC_FC, num_control_points * 2)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.001)
                nn.init.zeros_(m.bias)
        points = edge_control_points(self.num_control_points, _INIT_MARGIN, _INIT_MARGIN)
        if self.activation == "sigmoid":
            points = torch.logit(points)
        with torch.no_grad():
            self.stn_fc2.weight.zero_()
            self.stn_fc2.bias.copy_(points.reshape(-1).float())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(
                f"STNHead expects inputs of size {self.input_size}, got {tuple(x.shape[-2:])}"
            )
        feat = self.stn_convnet(x).flatten(1)
        img_feat = self.stn_fc1(feat)
        points = self.stn_fc2(0.1 * img_feat)  # 0.1 damping as in the original code
        if self.activation == "sigmoid":
            points = torch.sigmoid(points)
        return img_feat, points.view(-1, self.num_control_points, 2)


class LowResSTNHead(STNHead):
    """The localization net for an LR image fed as is (16x64 in TPGSR, TATT, LEMMA, C3, STT).

    Built as the head for (2H, W) inputs (same layers, same parameter shapes), with the fifth
    pooling halving only the width (`MaxPool2d((1, 2))`), as those codes' `stn_head.py` do.
    """

    def __init__(
        self,
        in_channels: int,
        num_control_points: int = 20,
        activation: str = "none",
        input_size: Sequence[int] = (16, 64),
    ) -> None:
        height, width = _pair(input_size, "stn input_size")
        half = _LOC_DOWNSAMPLE // 2
        if height <= 0 or height % half or width % _LOC_DOWNSAMPLE:
            raise ValueError(
                f"low-resolution stn input_size must be (multiple of {half}, multiple of "
                f"{_LOC_DOWNSAMPLE}), got {input_size!r}"
            )
        super().__init__(in_channels, num_control_points, activation, (2 * height, width))
        self.stn_convnet[_LAST_POOL] = nn.MaxPool2d(kernel_size=(1, 2), stride=(1, 2))
        self.input_size = (height, width)


def make_stn_head(
    in_channels: int, num_control_points: int, activation: str, input_size: Sequence[int]
) -> STNHead:
    """The localization net for `input_size`: the low-resolution variant for 16-row inputs."""
    if int(input_size[0]) % _LOC_DOWNSAMPLE:
        return LowResSTNHead(in_channels, num_control_points, activation, input_size)
    return STNHead(in_channels, num_control_points, activation, input_size)


class TPSSpatialTransformer(nn.Module):
    """Samples an `output_size` image whose target control points land on the source points.

    The TPS solve is precomputed as buffers (names as in aster.pytorch). The sampling grid uses
    pixel-centre coordinates x/(W-1), y/(H-1), i.e. grid_sample with `align_corners=True`, which is
    what the original code got under the torch<1.3 grid_sample it was written for.
    """

    def __init__(
        self,
        output_size: Sequence[int] = (32, 100),
        num_control_points: int = 20,
        margins: Sequence[float] = (0.05, 0.05),
        align_corners: bool = True,
    ) -> None:
        super().__init__()
        height, width = _pair(output_size, "tps output_size")
        margin_x, margin_y = _pair(margins, "tps margins")
        if height < 2 or width < 2:
            raise ValueError(f"tps output_size must be at least 2x2, got {output_size!r}")
        self.output_size = (height, width)
        self.num_control_points = num_control_points
        self.align_corners = align_corners
        target = edge_control_points(num_control_points, margin_x, margin_y)
        n = num_control_points
        kernel = torch.zeros(n + 3, n + 3, dtype=torch.float64)
        kernel[:n, :n] = _tps_kernel(target, target)
        kernel[:n, n] = 1.0
        kernel[n, :n] = 1.0
        kernel[:n, n + 1 :] = target
        kernel[n + 1 :, :n] = target.t()
        inverse = torch.linalg.inv(kernel)
        ys, xs = torch.meshgrid(
            torch.arange(height, dtype=torch.float64) / (height - 1),
            torch.arange(width, dtype=torch.float64) / (width - 1),
            indexing="ij",
        )
        coords = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=1)  # (HW, 2) as (x, y)
        coord_repr = torch.cat(
            [
                _tps_kernel(coords, target),
                torch.ones(coords.shape[0], 1, dtype=torch.float64),
                coords,
            ],
            dim=1,
        )
        self.register_buffer("inverse_kernel", inverse.float())
        self.register_buffer("padding_matrix", torch.zeros(3, 2))
        self.register_buffer("target_coordinate_repr", coord_repr.float())
        self.register_buffer("target_control_points", target.float())

    def forward(self, x: Tensor, source_control_points: Tensor) -> tuple[Tensor, Tensor]:
        """Returns the rectified image and the (B, H*W, 2) source coordinates in [0, 1]."""
        expected = (x.shape[0], self.num_control_points, 2)
        if tuple(source_control_points.shape) != expected:
            raise ValueError(
                f"source control points must have shape {expected}, "
                f"got {tuple(source_control_points.shape)}"
            )
        batch = source_control_points.shape[0]
        rhs = torch.cat(
            [source_control_points, self.padding_matrix.expand(batch, 3, 2).to(x.dtype)], dim=1
        )
        mapping = torch.matmul(self.inverse_kernel.to(x.dtype), rhs)
        source = torch.matmul(self.target_coordinate_repr.to(x.dtype), mapping)
        grid = source.view(batch, *self.output_size, 2).clamp(0.0, 1.0) * 2.0 - 1.0
        out = F.grid_sample(x, grid, mode="bilinear", align_corners=self.align_corners)
        return out, source


def tps_rectify(
    x: Tensor, stn_head: STNHead, tps: TPSSpatialTransformer, sample_resized: bool
) -> Tensor:
    """Resize to the localization net's input size, predict control points, sample with TPS.

    `sample_resized=True` samples from the resized copy (TSRN code); False samples from the
    original image (ASTER code). The resize is bilinear with align_corners=True in both codes.
    """
    small = F.interpolate(x, size=stn_head.input_size, mode="bilinear", align_corners=True)
    _, points = stn_head(small)
    out, _ = tps(small if sample_resized else x, points)
    return out
