"""VGG feature extractors for the perceptual loss, laid out like torchvision's `vgg*().features`.

TextZoom's SRResNet setting (`src/loss/percptual_loss.py`, `GeneratorLoss`) compares ImageNet
VGG16 `features[:31]` (every conv block through pool5) of SR and HR with MSE, on the images as the
network outputs them (no ImageNet normalisation); those are the defaults here. The module is an
`nn.Sequential` with torchvision's indices, so its keys are `0.weight`, `0.bias`, `2.weight`, ...
and torchvision's ImageNet files (`vgg16-397923af.pth`, `vgg19-dcbb9e9d.pth`) load strictly once
their `features.` prefix is stripped (`features_state_dict`).

Without network access (the embedded data source) there are no ImageNet weights: `VGGFeaturesSpec`
with `weights=None` builds the same layout with frozen, seeded random weights (torchvision's VGG
initialisation), optionally narrower (`width_divisor`) so that the demo scale stays cheap. That is
a deviation from the paper, and `VGGFeaturesSpec.note` says so wherever the run is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

POOL = "M"
VGG_LAYOUTS: dict[str, tuple[int | str, ...]] = {  # torchvision's configurations "D" and "E"
    "vgg16": (64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL,
              512, 512, 512, POOL),
    "vgg19": (64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL,
              512, 512, 512, 512, POOL),
}  # fmt: skip


def _modules(network: str, width_divisor: int) -> list[nn.Module]:
    if network not in VGG_LAYOUTS:
        raise ValueError(f"unknown VGG network {network!r}; expected one of {sorted(VGG_LAYOUTS)}")
    out: list[nn.Module] = []
    channels = 3
    for item in VGG_LAYOUTS[network]:
        if item == POOL:
            out.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        width = max(1, int(item) // width_divisor)
        out += [nn.Conv2d(channels, width, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
        channels = width
    return out


class VGGFeatures(nn.Sequential):
    """The first `layers` modules of torchvision's VGG `features` (conv3x3, ReLU, max-pool) on RGB.

    `layers=None` keeps them all (31 for VGG16, 37 for VGG19). `width_divisor` divides every conv
    width (at least 1 channel): only for random weights.
    """

    def __init__(
        self,
        network: str = "vgg16",
        layers: int | None = None,
        width_divisor: int = 1,
    ) -> None:
        modules = _modules(network, width_divisor)
        if layers is not None and not 1 <= layers <= len(modules):
            raise ValueError(f"{network}: layers must be in 1..{len(modules)}, got {layers}")
        super().__init__(*modules[:layers])
        self.network = network


def features_state_dict(raw: Mapping[str, Tensor], layers: int) -> dict[str, Tensor]:
    """torchvision VGG state dict (`features.<i>.*`, `classifier.*`) -> keys of `VGGFeatures`."""
    out = {}
    for key, value in raw.items():
        prefix, _, rest = key.partition(".")
        if prefix == "features" and int(rest.split(".", 1)[0]) < layers:
            out[rest] = value
    return out


@dataclass(frozen=True)
class VGGFeaturesSpec:
    """How to obtain the perceptual loss's frozen extractor; defaults: the TextZoom setting.

    `weights` is a torchvision ImageNet file; None = seeded random weights (no network).
    """

    network: str = "vgg16"
    layers: int = 31
    weights: str | None = None
    width_divisor: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.width_divisor, bool) or not isinstance(self.width_divisor, int):
            raise ValueError(f"width_divisor must be an integer, got {self.width_divisor!r}")
        if self.width_divisor < 1 or (self.weights and self.width_divisor != 1):
            raise ValueError(
                f"width_divisor must be >= 1, and 1 with pretrained weights; got "
                f"{self.width_divisor} (weights {self.weights!r})"
            )

    @property
    def note(self) -> str:
        """What the features are, for the run's metrics and the report."""
        layout = f"{self.network} features[:{self.layers}]"
        if self.weights:
            return f"ImageNet {layout} ({Path(self.weights).name})"
        return (
            f"random VGG features (embedded): frozen {layout}, widths / {self.width_divisor}, "
            f"seed {self.seed}; not the paper's ImageNet weights"
        )

    def build(self) -> VGGFeatures:
        """The extractor, frozen and in eval mode; the global RNG is left as it was."""
        with torch.random.fork_rng(devices=[]):  # the default init of the layers draws from it
            model = VGGFeatures(self.network, self.layers, self.width_divisor)
        if self.weights:
            raw = torch.load(self.weights, map_location="cpu", weights_only=True)
            model.load_state_dict(features_state_dict(raw, self.layers), strict=True)
        else:
            gen = torch.Generator().manual_seed(self.seed)
            for m in model.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(
                        m.weight, mode="fan_out", nonlinearity="relu", generator=gen
                    )
                    nn.init.zeros_(m.bias)
        return model.requires_grad_(False).eval()
