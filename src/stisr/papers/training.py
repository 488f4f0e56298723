"""From a run id + effective params to the exact `TrainConfig` its job trains with.

One function builds it for the CLI (`stisr train`) and for the Snakefile, which hashes it into
the train rule's `params:`; so a job reruns exactly when something that shapes its weights (or
its step budget) changes, and never otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stisr.config import model_config, task_settings
from stisr.engine.train_config import TrainConfig, config_hash
from stisr.papers.plan import (
    asset_bindings,
    recognizer_checkpoint,
    resolve_asset,
    resolve_recognizer,
    run_dir,
    selection_settings,
    train_set_dirs,
)
from stisr.papers.settings import budget_settings, optimizer_settings, schedule_settings
from stisr.papers.spec import RunSpec

# TrainConfig fields that change where and how fast a job runs, not what it computes.
RUNTIME_FIELDS = ("device", "amp", "num_workers", "torch_threads", "channels_last")


def runtime_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """Where and how fast a job runs; `auto` resolves against this machine."""
    import torch

    train = params["train"]
    cuda = torch.cuda.is_available() and train["device"] != "cpu"
    workers = train["num_workers"]
    return {
        "device": "cuda" if cuda else "cpu",
        "amp": cuda if train["amp"] == "auto" else bool(train["amp"]),
        "num_workers": (8 if cuda else 0) if workers == "auto" else workers,
        "torch_threads": train["torch_threads"],
        "channels_last": bool(train["channels_last"]),
    }


def train_config(
    params: Mapping[str, Any], run_id: str, runs: Mapping[str, RunSpec], *, runtime: bool = True
) -> TrainConfig:
    """The run's TrainConfig; `runtime=False` leaves device/AMP/workers at their defaults (what
    the Snakefile hashes, so that moving a job to a GPU node is not a configuration change)."""
    run = runs[run_id]
    task = task_settings(params, run.task, run.scales)
    paper_scale = params["scale"] == "paper"
    train = params["train"]
    init = None
    if run.init:  # a trained run on embedded data, the released weights on official data
        init = str(recognizer_checkpoint(params, resolve_recognizer(params, run.init, runs)))
    init_modules = {
        target: str(recognizer_checkpoint(params, resolve_recognizer(params, ref, runs)))
        for target, ref in run.init_modules.items()
    }
    assets = {role: resolve_asset(params, ref, runs) for role, ref in asset_bindings(run).items()}
    start = run.warm_start.get(params["scale"])
    return TrainConfig(
        run=run_id,
        task=run.task,
        model=run.model,
        model_config=model_config(params, run.model, run.model_config),
        train_dirs=[str(d) for d in train_set_dirs(params, run.train_set)],
        losses=dict(run.losses),
        **budget_settings(run, task, paper_scale),
        **optimizer_settings(run, task["lr"], paper_scale),
        **schedule_settings(run, task),
        ema=run.extra.get("ema"),
        checkpoint_every=task["checkpoint_every"],
        log_every=task["log_every"],
        seed=params["seed"],
        grad_clip=run.extra.get("grad_clip", train["grad_clip"]),
        loss_scale=train["loss_scale"],
        init=init,
        init_modules=init_modules,
        warm_start=str(run_dir(params, start) / "model.pt") if start else None,
        assets=assets,
        **(runtime_settings(params) if runtime else {}),
        **selection_settings(params, run, runs),
    )


def train_hash(params: Mapping[str, Any], run_id: str, runs: Mapping[str, RunSpec]) -> str:
    """Hash of everything that shapes the run's output, step budget included."""
    cfg = train_config(params, run_id, runs, runtime=False)
    fields = {k: v for k, v in vars(cfg).items() if k not in RUNTIME_FIELDS}
    return config_hash(fields)
