"""The plain residual block of SRResNet (the SRB without recurrence) and EDSR."""

from __future__ import annotations

from torch import Tensor, nn

from stisr.models.layers.activations import make_activation


class ResidualBlock(nn.Module):
    """x + res_scale * BN(conv(act(BN(conv(x))))); attribute names as in TextZoom's srresnet.py.

    EDSR drops the batch norms and the conv biases and scales the branch by 0.1 (TextZoom's
    edsr.py `_Residual_Block`, whose `conv1` / `conv2` keys are the same).
    """

    def __init__(
        self,
        channels: int,
        activation: str = "prelu",
        batch_norm: bool = True,
        bias: bool = True,
        res_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=bias)
        self.bn1 = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()
        self.prelu = make_activation(activation)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(channels) if batch_norm else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        branch = self.bn2(self.conv2(self.prelu(self.bn1(self.conv1(x)))))
        return x + (branch if self.res_scale == 1.0 else self.res_scale * branch)
