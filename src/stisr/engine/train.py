"""The one training loop for every model (SR and recognition).

A run is fully described by a `TrainConfig` (built from a paper spec entry and params.yaml). The
loop is deterministic on CPU for a given seed: batches are a pure function of (seed, step), and the
RNG states travel with the checkpoint, so a resumed run ends with the same weights as an
uninterrupted one. SIGTERM / SIGUSR1 (SLURM's pre-emption warning) write a checkpoint and exit with
`EXIT_REQUEUE` so that the scheduler requeues the job; the restarted job resumes.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler
from tqdm import tqdm

from stisr.atomic_io import atomic_write_text
from stisr.charset import EVAL_CHARSET, Charset
from stisr.data.datasets import collate, open_dataset
from stisr.engine.checkpoint import (
    atomic_save,
    load_checkpoint,
    load_model,
    model_payload,
)
from stisr.engine.provenance import provenance
from stisr.engine.seeding import rng_state, seed_everything, set_rng_state, stable_seed
from stisr.engine.selection import SELECTIONS, Selector, better, split_holdout
from stisr.losses import VGGFeaturesSpec, build_loss
from stisr.models.registry import build_model

log = logging.getLogger("stisr.engine.train")
EXIT_REQUEUE = 75  # EX_TEMPFAIL: "try again"; the SLURM profile requeues on it


@dataclass
class TrainConfig:
    """Everything a training run needs; saved as params.json beside the weights."""

    run: str
    task: str  # sr | rec
    model: str
    model_config: dict[str, Any]
    train_dirs: list[str]
    losses: dict[str, float] = field(default_factory=dict)
    steps: int | None = None
    epochs: int | None = None
    batch_size: int = 16
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    checkpoint_every: int = 100
    log_every: int = 10
    seed: int = 0
    grad_clip: float | None = None
    loss_scale: float = 1.0
    # Attention decoders barely start learning at a short, constant LR: `cosine` decays the LR
    # to 0 over the run after a linear warm-up of `warmup_steps` (which also applies to constant).
    lr_schedule: str = "constant"  # constant | cosine
    warmup_steps: int = 0
    init: str | None = None  # model.pt to start from (fine-tuning)
    # VGGFeaturesSpec fields for a `perceptual` loss, resolved per data source (papers/plan.py)
    perceptual_features: dict[str, Any] | None = None
    # Which weights become model.pt (engine/selection.py); SR runs only.
    selection: str = "last"  # last | validation | test
    select_sets: dict[str, list[str]] = field(default_factory=dict)  # 'test': subset -> dirs
    select_recognizer: str | None = None  # model.pt of the recognizer that scores
    holdout: float = 0.05  # 'validation': fraction of the training images held out to score on
    device: str = "cpu"
    amp: bool = False
    num_workers: int = 0
    torch_threads: int = 1

    def __post_init__(self) -> None:
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"TrainConfig.lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}"
            )
        if self.warmup_steps < 0:
            raise ValueError(f"TrainConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
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


LR_SCHEDULES = ("constant", "cosine")


def lr_at(cfg: TrainConfig, step: int, n_steps: int) -> float:
    """LR of the update made at `step` (0-based) of `n_steps`.

    A pure function of the step, so a resumed run follows the same curve with nothing extra in
    the checkpoint.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, n_steps - cfg.warmup_steps))
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


class StepBatchSampler(Sampler[list[int]]):
    """Batches as a pure function of (seed, step): resuming at step k replays nothing."""

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int, total_steps: int):
        if n == 0:
            raise ValueError("the training set is empty")
        self.n, self.batch_size, self.seed = n, min(batch_size, n), seed
        self.start_step, self.total_steps = start_step, total_steps
        self.per_epoch = max(1, n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        perm, perm_epoch = None, -1
        for step in range(self.start_step, self.total_steps):
            epoch, i = divmod(step, self.per_epoch)
            if epoch != perm_epoch:
                perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
                perm_epoch = epoch
            yield perm[i * self.batch_size : (i + 1) * self.batch_size].tolist()

    def __len__(self) -> int:
        return self.total_steps - self.start_step


def _dataset(cfg: TrainConfig, model: nn.Module) -> tuple[Dataset, int]:
    """The training set and how many samples it drops (labels with no character the
    recognizer can emit; counted in metrics.json as `dropped_labels`)."""
    kw: dict[str, Any] = {"mask": True}
    if cfg.task == "rec":
        kw["lr_size"] = (128, 32)  # recognizers learn from HR-sized word images
        charset = getattr(model, "charset", None)  # ABINet/MATRN: the same 36 characters
        kw["label_charset"] = charset.chars if isinstance(charset, Charset) else EVAL_CHARSET
    sets = [open_dataset(Path(d), **kw) for d in cfg.train_dirs]
    dropped = sum(len(getattr(s, "dropped_labels", ())) for s in sets)
    if dropped:
        log.warning("%s: %d training labels have no usable character; dropped", cfg.run, dropped)
    return _concat(sets), dropped


def _selection(cfg: TrainConfig, data: Dataset, seed: int) -> tuple[Dataset, Selector | None]:
    """The training data left after any hold-out, and the scorer of `cfg.selection`."""
    if cfg.selection == "last":
        return data, None
    from stisr.engine.evaluate import recognizer_reader

    with torch.random.fork_rng(devices=[]):  # building the scorer must not move the run's RNG
        reader = recognizer_reader("model", Path(cfg.select_recognizer), cfg.device)
    if cfg.selection == "validation":
        data, held = split_holdout(data, cfg.holdout, seed)
        return data, Selector({"validation": held}, reader)
    sets = {
        name: _concat([open_dataset(Path(d), mask=True) for d in dirs])
        for name, dirs in cfg.select_sets.items()
    }
    return data, Selector(sets, reader)


def _concat(sets: list[Dataset]) -> Dataset:
    return sets[0] if len(sets) == 1 else ConcatDataset(sets)


class SRStep:
    """LR -> SR, losses against HR (all channels: TSRN supervises RGBM with L2)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig):
        self.model = model
        self.loss = build_loss(cfg.losses or {"mse": 1.0}, _loss_options(cfg)).to(cfg.device)
        self.in_ch = getattr(model, "in_channels", 4)

    def __call__(self, batch: Mapping[str, Any], device: str):
        lr = batch["lr"][:, : self.in_ch].to(device)
        hr = batch["hr"].to(device)
        sr = self.model(lr)
        hr = hr[:, : sr.shape[1]]
        return self.loss(sr, hr)


def _loss_options(cfg: TrainConfig) -> dict[str, dict[str, Any]]:
    """The perceptual loss's frozen feature extractor, built from `cfg.perceptual_features`."""
    if not cfg.losses.get("perceptual"):
        return {}
    if cfg.perceptual_features is None:
        raise ValueError(f"{cfg.run}: the perceptual loss needs `perceptual_features`")
    return {"perceptual": {"features": VGGFeaturesSpec(**cfg.perceptual_features).build()}}


class RecStep:
    """Word image -> the recognizer's own training loss (teacher forcing stays inside it)."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __call__(self, batch: Mapping[str, Any], device: str):
        x = self.model.preprocess(batch["lr"][:, :3].to(device))
        loss = self.model.training_loss(x, list(batch["label"]))
        return loss, {"recognition": loss.detach()}


class _Preempted(Exception):
    pass


def total_steps(cfg: TrainConfig, n_train: int) -> int:
    if cfg.steps is not None:
        return cfg.steps
    assert cfg.epochs is not None, "TrainConfig needs steps or epochs"
    return cfg.epochs * max(1, n_train // max(1, min(cfg.batch_size, n_train)))


def train(cfg: TrainConfig, out_dir: Path, *, progress: bool = True) -> dict[str, Any]:
    """Train (or resume) one run into `out_dir`; returns the final metrics."""
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoints" / "last.pt"
    torch.set_num_threads(cfg.torch_threads)
    seed = stable_seed(cfg.seed, cfg.run)
    seed_everything(seed)

    model = build_model(cfg.model, cfg.model_config)
    if cfg.init:
        init = load_model(Path(cfg.init))
        model.load_state_dict(init.state_dict(), strict=True)
    model.to(cfg.device)
    opt = torch.optim.Adam(
        model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay
    )
    step_fn = SRStep(model, cfg) if cfg.task == "sr" else RecStep(model)
    data, dropped_labels = _dataset(cfg, model)
    data, selector = _selection(cfg, data, seed)
    best_path = out_dir / "checkpoints" / "best.pt"
    best: dict[str, float] | None = None
    n_steps = total_steps(cfg, len(data))

    start, history = 0, []
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        set_rng_state(state["rng"])
        start = int(state["step"])
        best = state.get("selection")
        history = [h for h in _read_history(out_dir) if h["step"] <= start]
        log.info("resuming %s from step %d (%s)", cfg.run, start, ckpt_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {**asdict(cfg), "provenance": provenance(cfg.train_dirs, seed)}
    atomic_write_text(out_dir / "params.json", json.dumps(record, indent=2, default=str))

    sampler = StepBatchSampler(len(data), cfg.batch_size, seed, start, n_steps)
    loader = DataLoader(
        data, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.num_workers
    )
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp)
    stop = {"signal": None}

    def _on_signal(signum, _frame):
        stop["signal"] = signum

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGUSR1)}

    def save(step: int) -> None:
        atomic_save(
            {
                **model_payload(model, cfg.model, cfg.model_config, run=cfg.run, task=cfg.task),
                "optimizer": opt.state_dict(),
                "rng": rng_state(),
                "step": step,
                "selection": best,
            },
            ckpt_path,
        )
        _write_history(out_dir, history)

    def select(step: int) -> None:
        """Score the current weights; keep them in best.pt when they beat the best so far."""
        nonlocal best
        scores = selector.score(model, cfg.device)
        entry = {f"select/{k}": v for k, v in scores.items()}
        if history and history[-1]["step"] == step:
            history[-1].update(entry)
        else:
            history.append({"step": step, **entry})
        if better(scores, best):
            best = {**scores, "step": step}
            atomic_save(
                model_payload(model, cfg.model, cfg.model_config, run=cfg.run, task=cfg.task),
                best_path,
            )

    t0 = time.time()
    step = start
    model.train()
    bar = tqdm(total=n_steps, initial=start, desc=cfg.run, disable=not progress, mininterval=5)
    try:
        for batch in loader:
            with torch.autocast(device_type="cuda", enabled=cfg.amp):
                loss, parts = step_fn(batch, cfg.device)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{cfg.run}: loss is {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            lr = lr_at(cfg, step, n_steps)
            for group in opt.param_groups:
                group["lr"] = lr
            scaler.scale(loss * cfg.loss_scale).backward()
            if cfg.grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == n_steps:
                entry = {"step": step, "loss": float(loss.detach()), "lr": lr}
                entry.update({f"loss/{k}": float(v) for k, v in parts.items()})
                history.append(entry)
                bar.set_postfix(loss=f"{entry['loss']:.4f}")
            if step % cfg.checkpoint_every == 0 and step < n_steps:
                if selector is not None:
                    select(step)
                save(step)
            if stop["signal"] is not None:
                save(step)
                raise _Preempted()
    except _Preempted:
        log.warning(
            "%s: signal %s at step %d; checkpoint written to %s",
            cfg.run,
            stop["signal"],
            step,
            ckpt_path,
        )
        raise SystemExit(EXIT_REQUEUE) from None
    finally:
        bar.close()
        for s, h in old.items():
            signal.signal(s, h)

    if selector is not None:
        select(step)
    save(step)
    if best is not None and best["step"] != step:
        model.load_state_dict(load_model(best_path).state_dict())
        log.info("%s: keeping the step-%d weights (%s)", cfg.run, best["step"], cfg.selection)
    model.eval()
    atomic_save(
        model_payload(model, cfg.model, cfg.model_config, run=cfg.run, task=cfg.task),
        out_dir / "model.pt",
    )
    metrics = {
        "steps": step,
        "final_loss": history[-1]["loss"] if history else math.nan,
        "train_images": len(data),
        "dropped_labels": dropped_labels,
        "parameters": sum(p.numel() for p in model.parameters()),
        "wall_s_last_segment": round(time.time() - t0, 2),
        "selection": cfg.selection,
    }
    if cfg.perceptual_features is not None:
        features = VGGFeaturesSpec(**cfg.perceptual_features)
        metrics["perceptual_features"] = features.note
        if not features.weights:  # the report lists it under the table (report/tables.py)
            metrics["deviations"] = [f"perceptual loss on {features.note}"]
    if best is not None:
        metrics.update(selected_step=int(best["step"]), selection_score=best["score"])
    _write_samples(model, cfg, data, out_dir / "samples.png")
    atomic_write_text(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    log.info("%s: trained %d steps; weights and metrics in %s", cfg.run, step, out_dir)
    return metrics


def _read_history(out_dir: Path) -> list[dict]:
    path = out_dir / "history.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_history(out_dir: Path, history: Sequence[dict]) -> None:
    atomic_write_text(out_dir / "history.jsonl", "".join(json.dumps(h) + "\n" for h in history))


@torch.no_grad()
def _write_samples(model: nn.Module, cfg: TrainConfig, data: Dataset, path: Path) -> None:
    """A small grid of what the model does on fixed training images (for MLflow browsing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch = collate([data[i] for i in range(min(4, len(data)))])
    images = batch["lr"][:, :3].to(cfg.device)
    if cfg.task == "sr":
        sr = model(batch["lr"][:, : getattr(model, "in_channels", 4)].to(cfg.device))
        panels = [("LR", images), ("SR", sr[:, :3]), ("HR", batch["hr"][:, :3])]
    else:
        preds = model.decode(model(model.preprocess(images)))
        panels = [("input / prediction", images)]
    fig, axes = plt.subplots(
        len(images), len(panels), figsize=(3 * len(panels), 1.1 * len(images)), squeeze=False
    )
    for r in range(len(images)):
        for c, (title, t) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(t[r].clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            ax.set_axis_off()
            if r == 0:
                ax.set_title(title, fontsize=8)
            if cfg.task == "rec":
                ax.set_title(f"{batch['label'][r]} -> {preds[r]}", fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    tmp.replace(path)
