"""GPU hours of the full replication (official data, paper scale): per training run and per paper.

What is counted, what is measured, what is assumed
---------------------------------------------------
For every training run that a paper of params.yaml `papers` declares or needs, with params.yaml
overridden to `source: official, scale: paper` (the SLURM profile's setting), the run's resolved
`TrainConfig` (`stisr.papers.training.train_config`, what `stisr train` runs) gives:

* optimizer steps: the engine's own `stisr.engine.train.total_steps` (the run's `steps`, or epochs
  x (train-set size // batch)). Official train-set sizes are not on this machine; they are the
  published counts in `TRAIN_SETS` below, and the output lists the source of each;
* FLOPs per training sample (counted, on this CPU, by `stisr.metrics.complexity.count_flops`, which
  also counts recurrent layers and attention): the model's forward at its paper config and the
  paper's input shape (SR: RGBM LR 16x64, HR 32x128; recognizers: the word image size their data
  options ask for), times 3 for forward + backward; plus the rest of the objective's forward,
  counted the same way (`training_loss` on a batch, minus the model's forward): the frozen
  assets it reads (TPGSR's CRNN teacher, TBSRN's STT transformer, SRResNet's VGG16 features) and
  the losses' own matrix products; plus the backward through those assets where the SR image's
  gradient passes (perceptual and text-focus losses): input gradients only, as their weights are
  frozen, i.e. about one more forward of that share of their FLOPs (`asset_grad_share`). For a
  recognizer, the model's forward is the teacher-forced forward of its `training_loss` (no
  decoding). Released weights are not on this machine: an asset whose file is absent is counted
  on the same architecture with random weights (the FLOPs do not depend on the weights; its
  `notes` say so); one that cannot be built at all counts 0 (also said);
* GPU hours = steps x batch x FLOPs per sample / the sustained rate `--tflops`. That rate is an
  ASSUMPTION, printed in the output, never a measurement: no GPU exists here. The default, 15
  TFLOP/s, is an A100-class GPU with AMP at ~10% of peak: small convolutional/recurrent models at
  16x64 inputs are bound by memory and kernel launches, not FLOPs;
* SLURM minutes (slurm/runtimes.yaml, read by the train rule) = ceil(GPU hours x 60 x 3), 3 being
  a safety factor for that assumption, data loading and checkpoints, kept within [60, 2880]
  (48 h, a common partition limit: a longer run relies on the engine's checkpoint + requeue on
  SLURM's pre-emption signal, and is resumed by the next job).

Not counted: the optimizer update, data loading and checkpoint selection. With `--measure`, each
distinct (model, config, losses, assets) is also timed on this CPU: 2 warm-up + 3 timed steps of
`training_loss` + backward + the run's optimizer at batch 4 on 1 thread (batches and contexts
built as in benchmarks/train_step_speed.py); the output then shows measured CPU seconds per
sample and the FLOP rate they imply, a check of the counts (and of how far each model is from
FLOP-bound), not a GPU figure. The full `--measure` run takes about 8 minutes of one CPU core.

Per paper, the total sums the runs that paper's tables and figures need
(`stisr.papers.plan.paper_jobs`), runs shared with another paper included; the grand total counts
each run once. Runs a paper declares that the pipeline does not train yet are listed with the
reason and have no estimate (the train rule gives them 48 h).

How to run (inside `. .venv/bin/activate`, from the repository root)
-------------------------------------------------------------------
    python benchmarks/gpu_hours.py                 # docs/gpu_hours.md + slurm/runtimes.yaml
    python benchmarks/gpu_hours.py --measure       # also CPU seconds per sample (minutes of CPU)
    python benchmarks/gpu_hours.py --tflops 40     # another sustained rate (e.g. an H100)
    python benchmarks/gpu_hours.py --smoke --out /tmp/gpu   # 2 runs, written to /tmp/gpu (tests)
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from stisr.atomic_io import atomic_write_text
from stisr.config import load_params, model_config
from stisr.engine.assets import build_asset
from stisr.engine.optim import build_optimizer
from stisr.engine.speed import prepare_model, to_device
from stisr.engine.train import build_context, total_steps
from stisr.engine.train_config import TrainConfig
from stisr.losses import VGGFeaturesSpec
from stisr.metrics.complexity import _countable_attention, count_flops
from stisr.models.registry import build_model
from stisr.papers import plan
from stisr.papers.spec import RunSpec, all_runs, load_specs
from stisr.papers.training import train_config
from stisr.slurm_runtimes import DEFAULT_MINUTES, RUNTIMES_PATH

REPO = Path(__file__).resolve().parents[1]
OVERRIDES = {"source": "official", "scale": "paper"}
DEFAULT_TFLOPS = 15.0
RATE_NOTE = (
    "an A100-class GPU with AMP at ~10% of peak: small convolutional/recurrent models at 16x64 "
    "inputs are bound by memory and kernel launches, not FLOPs"
)
SAFETY = 3
MIN_MINUTES, MAX_MINUTES = 60, DEFAULT_MINUTES
FLOP_BATCH = 2  # samples per counted forward (FLOPs are per sample; 2 keeps batch-wise ops honest)
MEASURE_BATCH, WARMUP, REPEATS = 4, 2, 3
WORD = "street"  # the label of every counted sample (6 characters, TextZoom's typical length)
SMOKE_RUNS = ("tsrn/srcnn", "tsrn/tsrn")
DOC_PATH = REPO / "docs" / "gpu_hours.md"

# Samples per epoch of the official training sets (common.yaml `train_sets`), as published.
TRAIN_SETS: dict[str, tuple[int | None, str]] = {
    "textzoom_train": (
        17_367,
        "TextZoom train1 + train2: 17,367 pairs (sources.yaml `textzoom`, TextZoom README)",
    ),
    "synth_text": (
        7_224_586 + 5_522_808,
        "clovaai data_lmdb_release MJ_train 7,224,586 + ST 5,522,808 (published counts; "
        "params.yaml embedded.sizes.paper.str.train, 200,000, is the embedded stand-in's size)",
    ),
    "synth_text_lr": (
        7_224_586 + 5_522_808,
        "as synth_text (the same MJ_train + ST words, read at LR size)",
    ),
    "str_real": (276_000, "STR-Fewer-Labels real labelled set, about 276K (sources.yaml)"),
    "tcdm_augmented": (None, "17,367 + TCDM's synthesized pairs; their number n_s is not stated"),
}


def minutes_for(hours: float) -> int:
    """SLURM minutes of a run estimated at `hours` GPU hours (the rule in the docstring)."""
    return min(MAX_MINUTES, max(MIN_MINUTES, math.ceil(hours * 60 * SAFETY)))


@dataclass
class Estimate:
    run: str
    papers: list[str]
    planned: bool  # trained by the official/paper DAG
    model: str = ""
    train_set: str = ""
    n_train: int | None = None
    budget: str = ""
    batch: int | None = None
    steps: int | None = None
    model_flops: float | None = None  # forward FLOPs per sample
    extra_flops: float = 0.0  # rest of the objective's forward per sample (assets, losses)
    grad_share: float = 0.0  # share of extra_flops whose backward is needed too
    cpu_s: float | None = None  # measured CPU seconds per training sample (1 thread)
    why: str | None = None  # why there is no estimate
    notes: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        return plan.slug(self.run)

    @property
    def train_flops(self) -> float | None:
        if self.model_flops is None:
            return None
        return 3 * self.model_flops + (1 + self.grad_share) * self.extra_flops

    def hours(self, tflops: float) -> float | None:
        if self.train_flops is None or self.steps is None or self.batch is None:
            return None
        return self.steps * self.batch * self.train_flops / (tflops * 1e12) / 3600

    def minutes(self, tflops: float) -> int | None:
        hours = self.hours(tflops)
        return None if hours is None else minutes_for(hours)


# ----------------------------------------------------------------------------- building blocks


def paper_batch(model: nn.Module, task: str, n: int) -> dict[str, Any]:
    """A batch at the shapes the model's training data has (its `train_data_options`)."""
    opts = model.train_data_options()
    lw, lh = opts.get("lr_size", (64, 16))
    gen = torch.Generator().manual_seed(0)
    batch: dict[str, Any] = {"lr": torch.rand(n, 4, lh, lw, generator=gen), "label": [WORD] * n}
    if task == "sr":
        hw, hh = opts.get("hr_size", (128, 32))
        batch["hr"] = torch.rand(n, 4, hh, hw, generator=gen)
    return batch


def build_assets_offline(
    params: Mapping[str, Any], run: RunSpec, cfg: TrainConfig, runs: Mapping[str, RunSpec]
) -> tuple[dict[str, nn.Module], list[str]]:
    """The run's frozen assets: from their files when present, else the same architecture on
    random weights (FLOPs do not depend on the weights); notes say which."""
    refs = plan.asset_bindings(run)
    assets: dict[str, nn.Module] = {}
    notes: list[str] = []
    for role, spec in cfg.assets.items():
        ref = refs.get(role, role)
        source = spec.get("path") or spec.get("weights")
        if source and Path(source).exists():
            assets[role] = build_asset(role, spec)
            notes.append(f"asset {role}: {ref} from {source}")
            continue
        try:
            with torch.random.fork_rng(devices=[]):
                if spec.get("kind") == "vgg_features":
                    keep = {k: spec[k] for k in ("network", "layers") if k in spec}
                    module = VGGFeaturesSpec(**keep).build()
                else:
                    rec = plan.resolve_recognizer(params, ref, runs)
                    module = build_model(rec.model, model_config(params, rec.model, {}))
            assets[role] = module.requires_grad_(False).eval()
            notes.append(
                f"asset {role}: {ref} counted on its architecture with random weights "
                f"({source} is absent here; same FLOPs)"
            )
        except Exception as err:  # counted as 0, and said so
            notes.append(f"asset {role}: {ref} not built offline ({err}); its FLOPs count as 0")
    return assets, notes


class _Objective(nn.Module):
    """`model.training_loss(batch, ctx)` as a module, with the frozen assets as its children (so
    that `count_flops` hooks their recurrent layers too)."""

    def __init__(self, model: nn.Module, ctx: Any) -> None:
        super().__init__()
        self.model = model
        self.assets = nn.ModuleDict(dict(ctx.assets))
        self.ctx = ctx

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.model.training_loss(batch, self.ctx)[0]


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, list | tuple):
        return [t for v in value for t in _tensors(v)]
    return []


def asset_grad_share(model: nn.Module, ctx: Any, batch: Mapping[str, Any]) -> float:
    """Share of the frozen assets' forward FLOPs whose output carries a gradient (the SR branch
    of a perceptual or text-focus loss), in one forward with autograd on: the outermost module
    calls inside each asset, weighted by the FLOPs a `FlopCounterMode` sees in them. Their
    backward computes input gradients only (frozen weights): about one more forward of those
    calls."""
    counter = FlopCounterMode(display=False)
    calls: list[tuple[bool, int]] = []
    handles = []
    for asset in {id(a): a for a in ctx.assets.values()}.values():
        depth: list[int] = []

        def pre(module, args, depth=depth):
            depth.append(counter.get_total_flops())

        def post(module, args, out, depth=depth):
            start = depth.pop()
            if not depth:
                grad = any(t.requires_grad for t in _tensors(out))
                calls.append((grad, counter.get_total_flops() - start))

        for m in asset.modules():
            handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.enable_grad(), _countable_attention(), counter:
            model.training_loss(batch, ctx)
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
    total = sum(f for _, f in calls)
    if total == 0:  # nothing counted (e.g. fused kernels only): share by calls
        return sum(g for g, _ in calls) / len(calls) if calls else 0.0
    return sum(f for g, f in calls if g) / total


def model_forward_flops(model: nn.Module, task: str, batch: Mapping[str, Any]) -> float:
    """Forward FLOPs of the model alone on `batch` (SR: its LR input; recognizer: its
    preprocessed image, inference forward), per batch."""
    if task == "sr":
        return float(count_flops(model, model.sr_input(batch))["flops"])
    return float(count_flops(model, model.preprocess(batch["lr"][:, :3]))["flops"])


@dataclass
class Count:
    """FLOPs per training sample of one (model, config, losses, assets)."""

    model: float  # the model's forward
    extra: float = 0.0  # the rest of the objective's forward (frozen assets, losses)
    grad_share: float = 0.0  # share of the assets' forward whose backward is needed
    notes: list[str] = field(default_factory=list)


def count_run(
    params: Mapping[str, Any], run: RunSpec, cfg: TrainConfig, runs: Mapping[str, RunSpec]
) -> Count:
    """FLOPs per training sample of the run (see the module docstring)."""
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.model_config)
    assets, notes = build_assets_offline(params, run, cfg, runs)
    batch = paper_batch(model, run.task, FLOP_BATCH)
    n = FLOP_BATCH
    try:
        ctx = build_context(cfg, assets)
        objective = float(count_flops(_Objective(model, ctx), batch)["flops"])
    except Exception as err:  # the objective cannot run without a missing asset
        notes.append(f"objective not counted ({err}): model forward only")
        return Count(model_forward_flops(model, run.task, batch) / n, notes=notes)
    if run.task != "sr" and not assets:
        # a recognizer's objective is its teacher-forced forward + its text loss
        return Count(objective / n, notes=notes)
    forward = model_forward_flops(model, run.task, batch)
    share = asset_grad_share(model, ctx, batch) if assets else 0.0
    if share:
        notes.append(f"backward through the assets on the SR branch: + {share:.2g} x their forward")
    return Count(forward / n, max(0.0, objective - forward) / n, share, notes)


def measure_run(params: Mapping[str, Any], run: RunSpec, cfg: TrainConfig, runs) -> float:
    """Median CPU seconds per training sample (1 thread, batch MEASURE_BATCH)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        channels_last = bool(params["train"]["channels_last"])
        model = build_model(cfg.model, cfg.model_config).train()
        model = prepare_model(model, "cpu", channels_last)
        assets, _ = build_assets_offline(params, run, cfg, runs)
        ctx = build_context(cfg, assets)
        groups = model.param_groups(cfg.lr, cfg.optimizer_options)
        opt = build_optimizer(cfg.optimizer, groups, betas=cfg.betas, weight_decay=cfg.weight_decay)
        batch = to_device(paper_batch(model, run.task, MEASURE_BATCH), "cpu", channels_last)
        times = []
        for i in range(WARMUP + REPEATS):
            start = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            model.training_loss(batch, ctx)[0].backward()
            opt.step()
            if i >= WARMUP:
                times.append(time.perf_counter() - start)
        return statistics.median(times) / MEASURE_BATCH
    finally:
        torch.set_num_threads(threads)


def measure_key(cfg: TrainConfig) -> str:
    return json.dumps(
        [cfg.model, cfg.model_config, cfg.losses, sorted(cfg.assets)], sort_keys=True, default=str
    )


# ----------------------------------------------------------------------------- the estimate


def run_membership(params, specs, runs, selected: Sequence[str] | None):
    """(run -> papers needing it, planned runs, declared-only runs)."""
    needs: dict[str, list[str]] = {}
    for paper in params["papers"]:
        for run_id in plan.paper_jobs(params, specs[paper], runs).trains:
            needs.setdefault(run_id, []).append(paper)
    planned = set(needs)
    for paper in params["papers"]:
        for run_id in runs:
            if runs[run_id].paper == paper and run_id not in needs:
                needs[run_id] = [paper]
    order = sorted(needs, key=lambda r: (params["papers"].index(needs[r][0]), r))
    if selected is not None:
        unknown = sorted(set(selected) - set(runs))
        if unknown:
            raise SystemExit(f"unknown run(s): {', '.join(unknown)}")
        order = [r for r in order if r in set(selected)]
    return {r: needs[r] for r in order}, planned


def estimate(
    params: Mapping[str, Any],
    specs: Mapping[str, Any],
    selected: Sequence[str] | None = None,
    measure: bool = False,
    log=print,
) -> list[Estimate]:
    runs = all_runs(dict(specs))
    needs, planned = run_membership(params, specs, runs, selected)
    counted: dict[str, Count] = {}
    measured: dict[str, float] = {}
    rows = []
    for run_id, papers in needs.items():
        run = runs[run_id]
        row = Estimate(run_id, papers, run_id in planned, model=run.model, train_set=run.train_set)
        rows.append(row)
        problem = plan.run_problem(params, run_id, runs)
        try:
            cfg = train_config(params, run_id, runs, runtime=False)
        except Exception as err:
            row.why = problem or f"no training configuration: {err}"
            continue
        row.batch = cfg.batch_size
        row.budget = f"{cfg.steps:,} steps" if cfg.steps is not None else f"{cfg.epochs} epochs"
        row.n_train = TRAIN_SETS.get(run.train_set, (None, ""))[0]
        if cfg.steps is not None:
            row.steps = total_steps(cfg, row.n_train or 1)
        elif row.n_train is not None:
            row.steps = total_steps(cfg, row.n_train)
        if problem:
            row.why = problem
            continue
        if row.steps is None:
            row.why = f"train set {run.train_set} has no known size (see Train-set sizes)"
            continue
        key = measure_key(cfg)
        if key not in counted:
            log(f"# counting {run_id} ({cfg.model})", flush=True)
            counted[key] = count_run(params, run, cfg, runs)
        count = counted[key]
        row.model_flops, row.extra_flops = count.model, count.extra
        row.grad_share = count.grad_share
        row.notes += count.notes
        if measure:
            if key not in measured:
                log(f"# timing {run_id} ({cfg.model}) on 1 CPU thread", flush=True)
                measured[key] = measure_run(params, run, cfg, runs)
            row.cpu_s = measured[key]
    return rows


# ----------------------------------------------------------------------------- outputs


def _g(flops: float | None) -> str:
    return "—" if flops is None else f"{flops / 1e9:.3g}"


def _h(hours: float | None) -> str:
    return "—" if hours is None else f"{hours:.3g}"


def paper_totals(rows: Sequence[Estimate], papers: Sequence[str], tflops: float):
    """paper -> (runs estimated, GPU hours, runs without an estimate); planned runs only."""
    out = {}
    for paper in papers:
        mine = [r for r in rows if paper in r.papers and r.planned]
        done = [r for r in mine if r.hours(tflops) is not None]
        missing = [r for r in rows if paper in r.papers and r.hours(tflops) is None]
        out[paper] = (len(done), sum(r.hours(tflops) for r in done), len(missing))
    return out


def grand_total(rows: Sequence[Estimate], tflops: float) -> float:
    """GPU hours of every run the official/paper DAG trains, each once."""
    return sum(r.hours(tflops) or 0.0 for r in rows if r.planned)


def _run_table(rows: Sequence[Estimate], tflops: float, measure: bool) -> list[str]:
    header = (
        "| run | slug | papers | model | train set (samples) | budget | batch | optimizer steps "
        "| model fwd GFLOP/sample | objective extra GFLOP/sample | train GFLOP/sample | GPU hours "
        "| SLURM minutes |"
    )
    rule = "|---|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
    if measure:
        header += " CPU s/sample (measured) | CPU GFLOP/s (implied) |"
        rule += "---:|---:|"
    lines = [header + " notes |", rule + "---|"]
    for r in rows:
        size = f"{r.train_set} ({r.n_train:,})" if r.n_train else r.train_set
        if r.budget.endswith("steps"):
            size += " (not needed: steps given)"
        cells = [
            r.run,
            f"`{r.slug}`",
            ", ".join(r.papers),
            r.model,
            size,
            r.budget,
            str(r.batch),
            f"{r.steps:,}",
            _g(r.model_flops),
            _g(r.extra_flops),
            _g(r.train_flops),
            _h(r.hours(tflops)),
            str(r.minutes(tflops)),
        ]
        if measure:
            rate = r.train_flops / r.cpu_s / 1e9 if r.cpu_s and r.train_flops else None
            cells += [
                "—" if r.cpu_s is None else f"{r.cpu_s:.3g}",
                "—" if rate is None else f"{rate:.3g}",
            ]
        cells.append("; ".join(r.notes) or "—")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def slow_models(rows: Sequence[Estimate]) -> str:
    """The models whose measured CPU FLOP rate is under 60% of the median (sequential RNNs)."""
    rates: dict[str, float] = {}
    for r in rows:
        if r.cpu_s and r.train_flops:
            rates.setdefault(r.model, r.train_flops / r.cpu_s / 1e9)
    if len(rates) < 3:
        return ""
    median = statistics.median(rates.values())
    slow = {m: v for m, v in sorted(rates.items(), key=lambda kv: kv[1]) if v < 0.6 * median}
    if not slow:
        return ""
    names = ", ".join(f"{m} {v:.3g}" for m, v in slow.items())
    return (
        f"on this CPU core {names} GFLOP/s, under 60% of the median of the models here "
        f"({median:.3g} GFLOP/s)"
    )


def render_markdown(
    rows: Sequence[Estimate], papers: Sequence[str], tflops: float, command: str, measure: bool
) -> str:
    totals = paper_totals(rows, papers, tflops)
    grand = grand_total(rows, tflops)
    lines = [
        "# GPU hours of the full replication (official data, paper scale)",
        "",
        f"Generated by `{command}` (benchmarks/gpu_hours.py; its docstring has the method). "
        "Do not edit by hand: rerun it.",
        "",
        f"**Assumption, not a measurement:** a sustained {tflops:g} TFLOP/s per GPU (`--tflops`), "
        f"{RATE_NOTE}. No GPU was used to make this file. Every GPU-hour figure below scales as "
        f"1/rate: at {2 * tflops:g} TFLOP/s halve it.",
        "",
        "**Counted here (on a CPU):** FLOPs per training sample, with "
        "`stisr.metrics.complexity.count_flops` (convolutions, matrix products, attention, "
        "recurrent layers; 2 FLOPs per multiply-accumulate) on each model at its paper config and "
        "the paper's input shape (SR: LR 16x64 -> HR 32x128; recognizers: the 32x128 word image "
        "their data options ask for): 3 x the model's forward (forward + backward; for a "
        "recognizer the teacher-forced forward of its training loss), plus the rest of the "
        "objective's forward (`objective extra`: frozen assets such as TPGSR's CRNN teacher, the "
        "STT transformer of the text-focus loss or VGG16 features, and the losses' own products), "
        "plus the backward through those assets where the SR image's gradient passes (notes give "
        "the share). Optimizer steps are the engine's `total_steps` of each run's resolved "
        "configuration (`source: official, scale: paper`); epoch-based runs use the published "
        "train-set sizes listed at the end.",
        "",
        "**Method:** GPU hours = optimizer steps x batch x training FLOPs per sample / rate. "
        f"SLURM minutes (slurm/runtimes.yaml, read by the train rule) = ceil(GPU hours x 60 x "
        f"{SAFETY}), at least {MIN_MINUTES} and at most {MAX_MINUTES} (48 h); a run that needs "
        "longer is checkpointed on SLURM's pre-emption signal and resumed by the requeued job. "
        "Not counted: the optimizer update, data loading, evaluation.",
        "",
        "**Caveat:** FLOPs say nothing about efficiency. TSRN-like models run bidirectional LSTMs "
        "over 16- and 64-step sequences and the recognizers decode step by step at training time "
        "too (teacher forcing keeps the steps sequential for the RNN decoders), so their real "
        "GPU utilisation may be well below the assumed one; the 3x safety factor of the SLURM "
        "limits is there for that. Measure steps/s on the cluster's GPU (`stisr train` logs it) "
        "and rerun with `--tflops` set from it.",
        "",
    ]
    if measure:
        lines += [
            "**Measured here:** CPU seconds per training sample (`--measure`: training_loss + "
            f"backward + optimizer, batch {MEASURE_BATCH}, 1 thread, median of {REPEATS} steps "
            f"after {WARMUP} warm-up; torch {torch.__version__}). The implied CPU GFLOP/s shows "
            "how FLOP-bound each model is on a CPU core; it is not a GPU figure.",
            "",
        ]
        slow = slow_models(rows)
        if slow:
            lines += [
                f"**Measured here, read as a warning:** {slow}. Expect these models to be "
                "further from the assumed GPU rate too (their GPU hours are likely low).",
                "",
            ]
    lines += [
        "## Per paper",
        "",
        "A paper's runs are those its tables and figures need (runs shared with another paper "
        "included, e.g. tsrn/tsrn in four papers); the last row counts each run once.",
        "",
        "| paper | runs estimated | GPU hours | declared runs without an estimate |",
        "|---|---:|---:|---:|",
    ]
    for paper, (n, hours, missing) in totals.items():
        lines.append(f"| {paper} | {n} | {_h(hours)} | {missing} |")
    planned = [r for r in rows if r.planned and r.hours(tflops) is not None]
    extra = [r for r in rows if not r.planned and r.hours(tflops) is not None]
    missing = [r for r in rows if r.hours(tflops) is None]
    lines += [
        f"| **all (each run once)** | {len(planned)} | **{_h(grand)}** | {len(missing)} |",
        "",
        "## Runs the official/paper DAG trains",
        "",
        *_run_table(planned, tflops, measure),
    ]
    if extra:
        lines += [
            "",
            "## Implemented runs the official/paper DAG does not train",
            "",
            "On official data no table or figure needs these: the recognizers and the STT "
            "transformer are read from released weights. This is what training them yourself "
            "would cost (slurm/runtimes.yaml lists them too); not in the totals above.",
            "",
            *_run_table(extra, tflops, measure),
        ]
    if missing:
        lines += [
            "",
            "## Declared runs without an estimate",
            "",
            "Not trained by the pipeline yet (the reason is the planner's); the train rule gives "
            f"them {DEFAULT_MINUTES} minutes.",
            "",
            "| run | papers | model | budget | batch | optimizer steps | why |",
            "|---|---|---|---|---:|---:|---|",
        ]
        for r in missing:
            steps = "—" if r.steps is None else f"{r.steps:,}"
            why = (r.why or "").replace("|", "/")
            lines.append(
                f"| {r.run} | {', '.join(r.papers)} | {r.model} | {r.budget or '—'} | "
                f"{r.batch or '—'} | {steps} | {why} |"
            )
    used = sorted({r.train_set for r in rows if r.train_set})
    lines += ["", "## Train-set sizes (official data, samples per epoch)", ""]
    for name in used:
        n, source = TRAIN_SETS.get(name, (None, "not known to benchmarks/gpu_hours.py"))
        lines.append(f"* `{name}`: {'unknown' if n is None else f'{n:,}'}: {source}")
    return "\n".join(lines) + "\n"


def render_runtimes(rows: Sequence[Estimate], tflops: float, command: str) -> str:
    lines = [
        f"# Generated by `{command}` (benchmarks/gpu_hours.py): do not edit by hand.",
        "# SLURM runtime (minutes) of each training job, read by workflow/rules/train.smk",
        f"# (stisr/slurm_runtimes.py): ceil(estimated GPU hours x 60 x {SAFETY}) at an assumed",
        f"# {tflops:g} TFLOP/s sustained, within [{MIN_MINUTES}, {MAX_MINUTES}]. A run not listed "
        f"gets {DEFAULT_MINUTES}.",
        f"# Runs whose estimate exceeds {MAX_MINUTES} minutes (48 h) rely on the engine's",
        "# checkpoint + requeue: SLURM's pre-emption signal (--signal=B:USR1@300) writes a",
        "# checkpoint, the job exits 75, Snakemake resubmits it and the new job resumes.",
        "train:",
    ]
    listed = [r for r in rows if r.minutes(tflops) is not None]
    if not listed:
        lines[-1] = "train: {}"
    for r in listed:
        minutes = r.minutes(tflops)
        hours = r.hours(tflops)
        over = minutes == MAX_MINUTES and hours * 60 * SAFETY > MAX_MINUTES
        comment = f"{hours:.3g} GPU h" + (" (over the limit: checkpoint + requeue)" if over else "")
        lines.append(f"  {r.slug}: {minutes}  # {comment}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> list[Estimate]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument(
        "--tflops",
        type=float,
        default=DEFAULT_TFLOPS,
        help=f"assumed sustained TFLOP/s per GPU (default {DEFAULT_TFLOPS:g}: {RATE_NOTE})",
    )
    ap.add_argument("--measure", action="store_true", help="also time steps on 1 CPU thread")
    ap.add_argument("--runs", nargs="+", help="only these run ids (e.g. tsrn/tsrn)")
    ap.add_argument("--smoke", action="store_true", help=f"only {', '.join(SMOKE_RUNS)}")
    ap.add_argument("--out", help="folder for gpu_hours.md + runtimes.yaml (default: the repo's)")
    args = ap.parse_args(argv)
    if args.tflops <= 0:
        ap.error("--tflops must be positive")
    if (args.smoke or args.runs) and not args.out:
        ap.error("--smoke/--runs need --out (a subset must not replace the full estimate)")
    selected = list(SMOKE_RUNS) if args.smoke else args.runs
    params = load_params(args.params, OVERRIDES)
    specs = load_specs()
    rows = estimate(params, specs, selected, args.measure)
    command = shlex.join(["python", "benchmarks/gpu_hours.py", *(argv or sys.argv[1:])])
    if args.out:
        command = command.replace(args.out, "<out>")
    doc = Path(args.out) / "gpu_hours.md" if args.out else DOC_PATH
    yml = Path(args.out) / "runtimes.yaml" if args.out else RUNTIMES_PATH
    markdown = render_markdown(rows, params["papers"], args.tflops, command, args.measure)
    atomic_write_text(doc, markdown)
    atomic_write_text(yml, render_runtimes(rows, args.tflops, command))
    for paper, (n, hours, missing) in paper_totals(rows, params["papers"], args.tflops).items():
        print(f"{paper}: {hours:.3g} GPU h over {n} runs ({missing} declared runs not estimated)")
    grand = grand_total(rows, args.tflops)
    print(f"all (each run once): {grand:.3g} GPU h at an assumed {args.tflops:g} TFLOP/s")
    print(f"wrote {doc} and {yml}")
    return rows


if __name__ == "__main__":
    main()
