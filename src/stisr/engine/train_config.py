"""A training run's configuration and its identity (what a checkpoint must match to resume).

`TrainConfig` is built by the CLI from a spec entry and params.yaml (`papers/plan.py` resolves the
paths); every field is honoured by `engine/train.py`. `identity()` leaves out only the step budget
and where/how fast the run executes, so a resumed run can never mix two configurations.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from stisr.engine.optim import LR_SCHEDULES, OPTIMIZERS, lr_factor
from stisr.engine.selection import SELECTIONS


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as params.json beside the weights.

    Built by `papers/plan.py` from a spec entry and params.yaml. Every field is honoured here;
    `identity()` is what a checkpoint must match to be resumed.
    """

    run: str
    model: str
    model_config: dict[str, Any]
    train_dirs: list[str]
    task: str = ""  # sr | rec: the registry's family, recorded for the report (not used here)
    losses: dict[str, float] = field(default_factory=dict)
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 16
    optimizer: str = "adam"  # adam | adamw
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    # Extra keys of the spec's `optimizer` block that the model's `param_groups` reads (guide_lr)
    optimizer_options: dict[str, Any] = field(default_factory=dict)
    lr_schedule: str = "constant"  # constant | cosine | multistep (after `warmup_steps`)
    warmup_steps: int = 0
    lr_milestones: list[float] = field(default_factory=list)  # fractions of the run (multistep)
    lr_gamma: float = 0.1
    ema: float | None = None  # EMA decay; model.pt then holds the EMA weights
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    grad_clip: float | None = None
    loss_scale: float = 1.0
    init: str | None = None  # model.pt to start from (fine-tuning)
    init_modules: dict[str, str] = field(default_factory=dict)  # sub-module -> model.pt
    warm_start: str | None = None  # model.pt whose matching tensors (name, shape) start the run
    # Frozen networks of the objective: role -> engine/assets.py spec
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Which weights become model.pt (engine/selection.py); SR runs only.
    selection: str = "last"  # last | validation | test
    select_sets: dict[str, list[str]] = field(default_factory=dict)  # 'test': subset -> dirs
    select_recognizer: str | None = None  # model.pt of the recognizer that scores
    holdout: float = 0.05  # 'validation': fraction of the training images held out to score on
    device: str = "cpu"
    amp: bool = False
    num_workers: int = 0
    torch_threads: int = 1
    # NHWC activations and weights (engine/speed.py): the same function, other kernels; on this
    # CPU a TSRN step at paper shapes runs about 1.2x faster.
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"TrainConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"TrainConfig.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"
            )
        if self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if any(not 0 < m < 1 for m in self.lr_milestones):
            raise ValueError(f"TrainConfig.lr_milestones must be in (0, 1): {self.lr_milestones}")
        if self.ema is not None and not 0 < self.ema < 1:
            raise ValueError(f"TrainConfig.ema must be in (0, 1), got {self.ema}")
        if self.selection not in SELECTIONS:
            raise ValueError(
                f"TrainConfig.selection must be one of {SELECTIONS}, got {self.selection!r}"
            )
        if self.selection != "last" and self.task != "sr":
            raise ValueError(f"{self.run}: checkpoint selection applies to SR runs only")
        if self.selection != "last" and not self.select_recognizer:
            raise ValueError(f"{self.run}: selection {self.selection!r} needs select_recognizer")
        if self.selection == "test" and not self.select_sets:
            raise ValueError(f"{self.run}: selection 'test' needs select_sets")

    def lr_factor_at(self, step: int, n_steps: int) -> float:
        """Multiplier of every group's base LR for the update made at `step` of `n_steps`."""
        return lr_factor(
            self.lr_schedule,
            step,
            n_steps,
            warmup_steps=self.warmup_steps,
            milestones=self.lr_milestones,
            gamma=self.lr_gamma,
        )

    def identity(self) -> dict[str, Any]:
        """What shaped the weights: everything but the step budget and where/how fast it runs."""
        return {k: v for k, v in asdict(self).items() if k not in NOT_IDENTITY}

    def identity_hash(self) -> str:
        return config_hash(self.identity())


# Fields that do not change what a run learns (the step budget may grow on resume).
NOT_IDENTITY = frozenset(
    {
        "steps",
        "epochs",
        "checkpoint_every",
        "log_every",
        "device",
        "num_workers",
        "torch_threads",
        "channels_last",
    }
)


def config_hash(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class ConfigMismatch(RuntimeError):
    """A checkpoint was written under a different run configuration."""


def lr_at(cfg: TrainConfig, step: int, n_steps: int) -> float:
    """Base LR of the update made at `step` (0-based) of `n_steps` (first parameter group)."""
    return cfg.lr * cfg.lr_factor_at(step, n_steps)
