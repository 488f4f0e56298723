"""Weight initialisations the public code applies after building a model (SR and recognizers)."""

from __future__ import annotations

from torch import nn


def he_fan_out_(module: nn.Module) -> None:
    """Conv2d weights ~ N(0, 2 / (k * k * out_channels)), biases 0 (VDSR, EDSR, LapSRN, ABINet).

    Only exact `nn.Conv2d` modules are touched: transposed convolutions keep their own init.
    """
    for m in module.modules():
        if type(m) is nn.Conv2d:
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def vit_init_(
    module: nn.Module,
    *,
    skip: nn.Module | None = None,
    embeddings: bool = False,
    convs: bool = False,
) -> None:
    """timm / PaddleOCR transformer init: Linear weights ~ TruncNormal(0, 0.02), biases 0.

    `embeddings`: Embedding weights too (PARSeq); `convs`: Conv2d weights ~ He normal over fan-in
    (SVTR). Modules inside `skip` keep their own init. Draws follow `module.modules()` order, so a
    seed gives the same weights as the official loops.
    """
    kept = set(skip.modules()) if skip is not None else set()
    for m in module.modules():
        if m in kept:
            continue
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif embeddings and isinstance(m, nn.Embedding):
            nn.init.trunc_normal_(m.weight, std=0.02)
        elif convs and isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight)
