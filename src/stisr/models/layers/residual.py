"""SRResNet's plain residual block (the SRB without recurrence)."""

from __future__ import annotations

from torch import Tensor, nn

from stisr.models.layers.activations import make_activation


class ResidualBlock(nn.Module):
    """x + BN(conv(act(BN(conv(x))))); attribute names as in TextZoom's srresnet.py."""

    def __init__(self, channels: int, activation: str = "prelu") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn1 = nn.BatchNorm2d(channels)
        self.prelu = make_activation(activation)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))
