"""A run spec's own training settings (optimizer, schedule, budget, EMA), checked and resolved.

Every key a spec may give a run is either honoured by the engine (and turned into `TrainConfig`
fields here) or reported as a problem, so that no run trains while silently ignoring part of its
setting. The paper's settings apply at `paper` scale; at the other scales the scale's budget,
batch size and base LR apply, and the spec's optimizer kind, betas, weight decay, per-group LR
ratios, schedule shape (milestones as fractions of the run) and EMA are kept.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

from stisr.engine.optim import OPTIMIZERS
from stisr.papers.spec import RunSpec

# Keys of a run spec (besides the typed RunSpec fields) that the engine honours.
HONOURED_KEYS = frozenset(
    {"note", "optimizer", "schedule", "epochs", "steps", "batch_size", "grad_clip", "ema"}
)
OPTIMIZER_KEYS = frozenset({"name", "lr", "betas", "weight_decay"})
SCHEDULE_KEYS = {
    "constant": frozenset(),
    "cosine": frozenset(),
    "step": frozenset({"step_epochs", "gamma"}),  # x gamma every step_epochs epochs
    "multistep": frozenset({"milestones_epochs", "gamma"}),  # x gamma at each listed epoch
}


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def setting_problems(run: RunSpec, model_cls: type | None) -> list[str]:
    """Every setting of `run` that the engine (or the model's objective) cannot honour; without a
    model class (not implemented yet) its optimizer options are not judged."""
    problems = []
    if unsupported := sorted(set(run.extra) - HONOURED_KEYS):
        problems.append(f"the training engine does not implement {', '.join(unsupported)} yet")
    opt = run.extra.get("optimizer") or {}
    if not isinstance(opt, Mapping):
        return [*problems, f"optimizer must be a mapping, got {opt!r}"]
    allowed = OPTIMIZER_KEYS | getattr(model_cls, "optimizer_options", frozenset())
    if model_cls is not None and (unknown := sorted(set(opt) - allowed)):
        problems.append(
            f"optimizer option(s) {', '.join(unknown)} not honoured by {run.model} "
            f"(known: {', '.join(sorted(allowed))})"
        )
    if opt.get("name", "adam") not in OPTIMIZERS:
        problems.append(f"optimizer {opt.get('name')!r} not implemented (known: {OPTIMIZERS})")
    sched = run.extra.get("schedule")
    if sched is not None:
        name = sched.get("name") if isinstance(sched, Mapping) else None
        if name not in SCHEDULE_KEYS:
            problems.append(f"schedule {sched!r}: name must be one of {sorted(SCHEDULE_KEYS)}")
        else:
            if unknown := sorted(set(sched) - {"name"} - SCHEDULE_KEYS[name]):
                problems.append(f"schedule {name}: unknown key(s) {', '.join(unknown)}")
            if name in ("step", "multistep") and not _number(run.extra.get("epochs")):
                problems.append(f"schedule {name} is in epochs: the run must state its epochs")
    ema = run.extra.get("ema")
    if ema is not None and not (_number(ema) and 0 < ema < 1):
        problems.append(f"ema must be a decay in (0, 1), got {ema!r}")
    return problems


def optimizer_settings(run: RunSpec, base_lr: float, paper_scale: bool) -> dict[str, Any]:
    """TrainConfig fields of the optimizer; extra options (e.g. `guide_lr`) keep their ratio to
    the base LR when the scale's LR replaces the paper's."""
    opt = dict(run.extra.get("optimizer") or {})
    paper_lr = float(opt.get("lr", base_lr))
    lr = paper_lr if paper_scale else base_lr
    extra = {k: v for k, v in opt.items() if k not in OPTIMIZER_KEYS}
    if not paper_scale and paper_lr > 0:
        extra = {k: (v * lr / paper_lr if k.endswith("_lr") else v) for k, v in extra.items()}
    return {
        "optimizer": opt.get("name", "adam"),
        "lr": lr,
        "betas": tuple(opt.get("betas", (0.9, 0.999))),
        "weight_decay": float(opt.get("weight_decay", 0.0)),
        "optimizer_options": extra,
    }


def schedule_settings(run: RunSpec, task: Mapping[str, Any]) -> dict[str, Any]:
    """TrainConfig fields of the LR schedule: the spec's shape if it has one, else the scale's."""
    fields: dict[str, Any] = {"warmup_steps": task.get("warmup_steps", 0)}
    sched = run.extra.get("schedule")
    if sched is None:
        return {**fields, "lr_schedule": task.get("lr_schedule", "constant")}
    name = sched["name"]
    if name in ("constant", "cosine"):
        return {**fields, "lr_schedule": name}
    epochs = float(run.extra["epochs"])
    if name == "step":
        every = float(sched["step_epochs"])
        marks = [k * every / epochs for k in range(1, int(epochs // every) + 1)]
    else:
        marks = [float(m) / epochs for m in sched["milestones_epochs"]]
    return {
        **fields,
        "lr_schedule": "multistep",
        "lr_milestones": [m for m in marks if 0 < m < 1],
        "lr_gamma": float(sched.get("gamma", 0.1)),
    }


def budget_settings(run: RunSpec, task: Mapping[str, Any], paper_scale: bool) -> dict[str, Any]:
    """Steps or epochs and batch size: the run's own at paper scale, else the scale's (and the
    run's per-scale `scales:` overrides, already merged into `task`)."""
    own = run.extra if paper_scale else {}
    if "steps" in own or "epochs" in own:
        steps, epochs = own.get("steps"), own.get("epochs")
    else:
        steps, epochs = task.get("steps"), task.get("epochs")
    return {
        "steps": steps,
        "epochs": epochs,
        "batch_size": int(own.get("batch_size", task["batch_size"])),
    }
