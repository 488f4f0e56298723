"""The one training loop for every model: the engine owns the loop, the model its objective.

A run is fully described by a `TrainConfig` (built from a paper spec entry and params.yaml). The
loop is deterministic on CPU for a given seed: batches are a pure function of (seed, step), and the
RNG states travel with the checkpoint, so a resumed run ends with the same weights as an
uninterrupted one. What a step minimises is the model's `training_loss(batch, ctx)`
(models/objective.py); `ctx` carries the run's loss weights, image losses and frozen assets.
SIGTERM / SIGUSR1 (SLURM's pre-emption warning) write a checkpoint and exit with `EXIT_REQUEUE`
so that the scheduler requeues the job; the restarted job resumes.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler
from tqdm import tqdm

from stisr.atomic_io import atomic_path, atomic_write_text
from stisr.data.datasets import collate, open_dataset
from stisr.engine.assets import asset_deviations, build_assets, init_submodules, warm_start
from stisr.engine.checkpoint import (
    atomic_save,
    load_checkpoint,
    load_model,
    model_payload,
)
from stisr.engine.optim import (
    EMA,
    build_optimizer,
    set_lr,
)
from stisr.engine.provenance import provenance
from stisr.engine.seeding import rng_state, seed_everything, set_rng_state, stable_seed
from stisr.engine.selection import Selector, better, split_holdout
from stisr.engine.speed import (
    channels_last_safe,
    data_cache_mb,
    fused_optimizer,
    pin_memory,
    prepare_model,
    to_device,
)
from stisr.engine.train_config import ConfigMismatch, TrainConfig
from stisr.losses import LOSS_ASSETS, LOSSES, build_loss
from stisr.models.objective import Context
from stisr.models.registry import build_model

log = logging.getLogger("stisr.engine.train")
EXIT_REQUEUE = 75  # EX_TEMPFAIL: "try again"; the SLURM profile requeues on it


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
    """The training set (opened as the model asks) and how many samples it drops (labels with
    no character the model can emit; counted in metrics.json as `dropped_labels`)."""
    options = {**model.train_data_options(), "cache_mb": data_cache_mb(cfg.num_workers)}
    sets = [open_dataset(Path(d), **options) for d in cfg.train_dirs]
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


def build_context(cfg: TrainConfig, assets: Mapping[str, nn.Module]) -> Context:
    """The run's loss weights, its image losses (with the assets they read) and the assets."""
    weights = {k: float(w) for k, w in cfg.losses.items() if w}
    image = {k: w for k, w in weights.items() if k in LOSSES}
    options = {}
    for name in image:
        if name in LOSS_ASSETS:
            keyword, role, _ = LOSS_ASSETS[name]
            if role not in assets:
                raise ValueError(f"{cfg.run}: loss {name!r} needs asset {role!r}")
            options[name] = {keyword: assets[role]}
    image_loss = build_loss(image, options).to(cfg.device) if image else None
    return Context(weights=weights, image_loss=image_loss, assets=dict(assets))


class _Preempted(Exception):
    pass


def total_steps(cfg: TrainConfig, n_train: int) -> int:
    if cfg.steps is not None:
        return cfg.steps
    assert cfg.epochs is not None, "TrainConfig needs steps or epochs"
    return cfg.epochs * max(1, n_train // max(1, min(cfg.batch_size, n_train)))


def check_resumable(cfg: TrainConfig, state: Mapping[str, Any], path: Path, n_steps: int) -> None:
    """Refuse a checkpoint of another configuration, or one past the step budget."""
    saved = state.get("identity")
    if saved is not None and saved != cfg.identity():
        keys = sorted(k for k in {*saved, *cfg.identity()} if saved.get(k) != cfg.identity().get(k))
        raise ConfigMismatch(
            f"{cfg.run}: {path} was written with a different configuration (differs in: "
            f"{', '.join(keys)}); it is not resumed. Move it away to train afresh, or pass "
            "--restart to set it aside (nothing is deleted)."
        )
    if int(state["step"]) > n_steps:
        raise ConfigMismatch(
            f"{cfg.run}: {path} is at step {state['step']}, past the budget of {n_steps} steps; "
            "it is not resumed. Pass --restart to set it aside and train afresh."
        )


def set_aside(ckpt_dir: Path) -> Path | None:
    """Move a run's checkpoints to `checkpoints.stale-<n>` (kept, never deleted)."""
    if not ckpt_dir.exists():
        return None
    n = 1
    while (dest := ckpt_dir.with_name(f"{ckpt_dir.name}.stale-{n}")).exists():
        n += 1
    ckpt_dir.rename(dest)
    log.warning("checkpoints of another configuration set aside in %s", dest)
    return dest


def train(
    cfg: TrainConfig, out_dir: Path, *, progress: bool = True, restart: bool = False
) -> dict[str, Any]:
    """Train (or resume) one run into `out_dir`; returns the final metrics.

    A checkpoint is resumed only when it was written under the same `identity()`; otherwise
    ConfigMismatch, or with `restart` the old checkpoints are set aside and training starts over.
    """
    out_dir = Path(out_dir)
    ckpt_path = out_dir / "checkpoints" / "last.pt"
    torch.set_num_threads(cfg.torch_threads)
    seed = stable_seed(cfg.seed, cfg.run)
    seed_everything(seed)

    model = build_model(cfg.model, cfg.model_config)
    if cfg.init:
        init = load_model(Path(cfg.init))
        model.load_state_dict(init.state_dict(), strict=True)
    init_submodules(model, cfg.init_modules, cfg.run)
    started = warm_start(model, cfg.warm_start, cfg.run) if cfg.warm_start else None
    channels_last = cfg.channels_last and channels_last_safe(model, cfg.device)
    if cfg.channels_last and not channels_last:
        log.warning("%s: channels-last off (engine/speed.py channels_last_safe)", cfg.run)
    prepare_model(model, cfg.device, channels_last)
    assets = build_assets(cfg.assets, cfg.device)
    ctx = build_context(cfg, assets)
    groups = model.param_groups(cfg.lr, cfg.optimizer_options)
    opt = build_optimizer(
        cfg.optimizer,
        groups,
        betas=cfg.betas,
        weight_decay=cfg.weight_decay,
        fused=fused_optimizer(cfg.device),
    )
    ema = EMA(model, cfg.ema) if cfg.ema else None
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp)
    data, dropped_labels = _dataset(cfg, model)
    data, selector = _selection(cfg, data, seed)
    best_path = out_dir / "checkpoints" / "best.pt"
    best: dict[str, float] | None = None
    n_steps = total_steps(cfg, len(data))
    ctx.total_steps = n_steps

    start, history = 0, []
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        try:
            check_resumable(cfg, state, ckpt_path, n_steps)
        except ConfigMismatch:
            if not restart:
                raise
            set_aside(ckpt_path.parent)
            state = None
        if state is not None:
            model.load_state_dict(state["state_dict"])
            opt.load_state_dict(state["optimizer"])
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            if ema is not None and state.get("ema"):
                ema.load_state_dict(state["ema"])
            set_rng_state(state["rng"])
            start = int(state["step"])
            best = state.get("selection")
            history = [h for h in _read_history(out_dir) if h["step"] <= start]
            log.info("resuming %s from step %d (%s)", cfg.run, start, ckpt_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        **asdict(cfg),
        "identity_hash": cfg.identity_hash(),
        "provenance": provenance(cfg.train_dirs, seed),
    }
    atomic_write_text(out_dir / "params.json", json.dumps(record, indent=2, default=str))

    sampler = StepBatchSampler(len(data), cfg.batch_size, seed, start, n_steps)
    loader = DataLoader(
        data,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=cfg.num_workers,
        pin_memory=pin_memory(cfg.device),
    )
    stop = {"signal": None}

    def _on_signal(signum, _frame):
        stop["signal"] = signum

    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGUSR1)}

    def payload(weights: Mapping[str, torch.Tensor] | None = None) -> dict[str, Any]:
        out = model_payload(model, cfg.model, cfg.model_config, run=cfg.run, task=cfg.task)
        if weights is not None:
            out["state_dict"] = weights
        return out

    def save(step: int) -> None:
        atomic_save(
            {
                **payload(),
                "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "rng": rng_state(),
                "step": step,
                "selection": best,
                "identity": cfg.identity(),
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
            atomic_save(payload(), best_path)

    t0 = time.time()
    step = start
    model.train()
    params = [p for g in opt.param_groups for p in g["params"]]
    bar = tqdm(total=n_steps, initial=start, desc=cfg.run, disable=not progress, mininterval=5)
    try:
        for batch in loader:
            ctx.step = step
            with torch.autocast(device_type="cuda", enabled=cfg.amp):
                loss, parts = model.training_loss(to_device(batch, cfg.device, channels_last), ctx)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{cfg.run}: loss is {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            lr = set_lr(opt, cfg.lr_factor_at(step, n_steps))
            scaler.scale(loss * cfg.loss_scale).backward()
            if cfg.grad_clip:
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(opt)
            scaler.update()
            if ema is not None:
                ema.update(model)
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
    if ema is not None:
        model.load_state_dict(ema.state_dict())
    model.eval()
    atomic_save(payload(), out_dir / "model.pt")
    metrics = {
        "steps": step,
        "final_loss": history[-1]["loss"] if history else math.nan,
        "train_images": len(data),
        "dropped_labels": dropped_labels,
        "parameters": sum(p.numel() for p in model.parameters()),
        "wall_s_last_segment": round(time.time() - t0, 2),
        "selection": cfg.selection,
        "identity_hash": cfg.identity_hash(),
        "weights": "ema" if ema is not None else "trained",
    }
    notes = {role: s["note"] for role, s in cfg.assets.items() if s.get("note")}
    if notes:
        metrics["assets"] = notes
    deviations = asset_deviations(cfg.assets) + ([started] if started else [])
    if deviations:  # the report lists them under the table
        metrics["deviations"] = deviations
    if best is not None:
        metrics.update(selected_step=int(best["step"]), selection_score=best["score"])
    _write_samples(model, data, out_dir / "samples.png", cfg.device)
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
def _write_samples(model: nn.Module, data: Dataset, path: Path, device: str) -> None:
    """A small grid of what the model infers on fixed training images (for MLflow browsing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batch = collate([data[i] for i in range(min(4, len(data)))])
    out = model.infer(to_device(batch, device))
    panels = [("input", batch["lr"][:, :3])]
    if "sr" in out:
        panels.append(("SR", out["sr"][:, :3].cpu()))
    if "hr" in batch:
        panels.append(("HR", batch["hr"][:, :3]))
    texts = out.get("text")
    n = len(batch["lr"])
    fig, axes = plt.subplots(n, len(panels), figsize=(3 * len(panels), 1.1 * n), squeeze=False)
    for r in range(n):
        for c, (title, t) in enumerate(panels):
            ax = axes[r][c]
            ax.imshow(t[r].clamp(0, 1).permute(1, 2, 0).numpy())
            ax.set_axis_off()
            if texts is not None:
                ax.set_title(f"{batch['label'][r]} -> {texts[r]}", fontsize=7)
            elif r == 0:
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", dpi=80)
    plt.close(fig)
