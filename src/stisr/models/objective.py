"""What a trainable model owns: its objective, what evaluation reads, its parameter groups.

The split of baudm/parseq (model vs. system) and the diffusers training examples: the engine
(`engine/train.py`) owns the loop - data order, optimizer, schedule, AMP, EMA, checkpoints,
pre-emption - and never looks at what kind of model it trains. A model owns

* `training_loss(batch, ctx) -> (loss, parts)`: the scalar to minimise and its named, detached
  parts (logged as `loss/<name>`);
* `infer(batch, ctx=None) -> {"sr": ..., "text": [...], ...}`: what evaluation reads (an SR image,
  a text, intermediate outputs, a sampler's result);
* `param_groups(lr, options)`: optimizer groups, e.g. a guide recognizer with its own learning rate
  (`options` is the run spec's `optimizer` block);
* class-level declarations the planner reads before anything is built: `objective_losses` (loss
  names its `training_loss` understands beyond the image losses of `stisr.losses.LOSSES`),
  `optimizer_options` (extra keys of the `optimizer` block its `param_groups` honours) and
  `needed_assets(weights)` (roles of the frozen networks its objective reads from `ctx.assets`).

The two mixins below give plain SR models and recognizers their defaults; a guided model (TPGSR,
TBSRN, LEMMA, ...) overrides what it needs. A batch is a mapping: `lr` (B, 4, h, w) RGBM in [0, 1]
(a recognizer's input image), `hr` (B, 4, H, W) when the data has pairs, `label` (list of str).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

Batch = Mapping[str, Any]
Parts = dict[str, Tensor]
ImageLoss = Callable[[Tensor, Tensor], tuple[Tensor, Parts]]


@dataclass
class Context:
    """What the engine hands an objective besides the batch.

    `weights` are the run's loss weights (name -> weight, zeros dropped); `image_loss` is the
    weighted sum of those of them that are image losses (`stisr.losses.LOSSES`, `(sr, hr)`),
    None when the run has none; `assets` are frozen networks by role (eval mode, no gradients).
    """

    weights: Mapping[str, float] = field(default_factory=dict)
    image_loss: ImageLoss | None = None
    assets: Mapping[str, nn.Module] = field(default_factory=dict)
    step: int = 0
    total_steps: int = 1

    def weight(self, name: str) -> float:
        return float(self.weights.get(name, 0.0))

    def asset(self, role: str) -> nn.Module:
        if role not in self.assets:
            raise KeyError(
                f"the objective needs asset {role!r}, but the run provides "
                f"{sorted(self.assets) or 'none'} (run spec `assets:`)"
            )
        return self.assets[role]


def add_weighted(total: Tensor | None, parts: Parts, name: str, value: Tensor, weight: float):
    """`total + weight * value`, recording the unweighted, detached value in `parts`."""
    parts[name] = value.detach()
    term = weight * value
    return term if total is None else total + term


class Trainable:
    """Declarations shared by every trainable model (class-level, read by the planner)."""

    objective_losses: ClassVar[frozenset[str]] = frozenset()
    optimizer_options: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def needed_assets(cls, weights: Mapping[str, float]) -> frozenset[str]:
        """Roles of the frozen networks `training_loss` reads for these loss weights."""
        return frozenset()

    def param_groups(self, lr: float, options: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def train_data_options(self) -> dict[str, Any]:
        """Keyword arguments of `open_dataset` for this model's training data."""
        return {"mask": True}


class SRModel(Trainable):
    """Default objective of a super-resolver: the run's image losses between SR and HR.

    The input has `in_channels` channels of the RGBM batch (3 for RGB models, 4 with the mask);
    the target is HR cut to as many channels as the output (TSRN supervises RGBM with L2).
    """

    task: ClassVar[str] = "sr"

    @property
    def input_channels(self) -> int:
        return int(getattr(self, "in_channels", getattr(self.config, "in_channels", 4)))

    def sr_input(self, batch: Batch, device: torch.device | str | None = None) -> Tensor:
        lr = batch["lr"][:, : self.input_channels]
        return lr if device is None else lr.to(device)

    def forward_inputs(self, batch: Batch) -> tuple[Any, ...]:
        """The positional arguments of `forward` for a batch (what FLOP counts and latency run)."""
        return (self.sr_input(batch),)

    def training_loss(self, batch: Batch, ctx: Context) -> tuple[Tensor, Parts]:
        if ctx.image_loss is None:
            raise ValueError(f"{type(self).__name__}: the run has no image loss to train with")
        sr = self(self.sr_input(batch))
        return ctx.image_loss(sr, batch["hr"][:, : sr.shape[1]])

    @torch.no_grad()
    def infer(self, batch: Batch, ctx: Context | None = None) -> dict[str, Any]:
        return {"sr": self(self.sr_input(batch))}


class Recognizer(Trainable):
    """Default objective of a recognizer: its own text loss (`text_loss(x, labels)`, teacher
    forcing inside) on its preprocessed input; `infer` reads the text."""

    task: ClassVar[str] = "rec"
    objective_losses: ClassVar[frozenset[str]] = frozenset({"ctc", "ce"})

    def text_loss(self, x: Tensor, labels: Iterable[str]) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def training_loss(self, batch: Batch, ctx: Context) -> tuple[Tensor, Parts]:
        x = self.preprocess(batch["lr"][:, :3])
        loss = self.text_loss(x, list(batch["label"]))
        return loss, {"recognition": loss.detach()}

    @torch.no_grad()
    def read(self, images: Tensor) -> list[str]:
        """RGB(M) images in [0, 1] -> the recognized text."""
        return self.decode(self(self.preprocess(images[:, :3])))

    @torch.no_grad()
    def infer(self, batch: Batch, ctx: Context | None = None) -> dict[str, Any]:
        return {"text": self.read(batch["lr"])}

    def train_data_options(self) -> dict[str, Any]:
        from stisr.charset import EVAL_CHARSET, Charset

        charset = getattr(self, "charset", None)  # ABINet/MATRN: the same 36 characters
        chars = charset.chars if isinstance(charset, Charset) else EVAL_CHARSET
        # recognizers learn from HR-sized word images
        return {"mask": True, "lr_size": (128, 32), "label_charset": chars}
