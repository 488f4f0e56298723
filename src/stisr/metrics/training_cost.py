"""What a training run costs at paper scale: FLOPs per sample, optimizer steps, GPU hours.

The SLURM time limit of every training job (slurm/runtimes.yaml) and the GPU-hour budget of each
paper (docs/gpu_hours.md) come from here, and no GPU is on the machine that makes them: so the
FLOPs are counted on a CPU (the model at its paper config and input shape, plus the frozen assets
and losses its objective reads), the steps are the engine's own `total_steps` of each run's
resolved `TrainConfig` on the published train-set sizes, and the GPU rate is an assumption that
the outputs state. benchmarks/gpu_hours.py runs this and writes the files; its docstring has the
full method.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from stisr.config import model_config
from stisr.engine.assets import build_asset
from stisr.engine.train import build_context, total_steps
from stisr.engine.train_config import TrainConfig
from stisr.losses import VGGFeaturesSpec
from stisr.metrics.complexity import _countable_attention, count_flops
from stisr.models.registry import build_model
from stisr.papers import plan
from stisr.papers.spec import RunSpec, all_runs
from stisr.papers.training import train_config
from stisr.slurm_runtimes import DEFAULT_MINUTES

# The setting the estimate is for (the SLURM profile's): official data at the papers' scale.
OVERRIDES = {"source": "official", "scale": "paper"}
# The assumed sustained GPU rate (TFLOP/s): an assumption, stated in every output.
DEFAULT_TFLOPS = 15.0
RATE_NOTE = (
    "an A100-class GPU with AMP at ~10% of peak: small convolutional/recurrent models at 16x64 "
    "inputs are bound by memory and kernel launches, not FLOPs"
)
# SLURM minutes = ceil(GPU hours x 60 x SAFETY), within [MIN_MINUTES, MAX_MINUTES] (48 h).
SAFETY = 3
MIN_MINUTES, MAX_MINUTES = 60, DEFAULT_MINUTES
FLOP_BATCH = 2  # samples per counted forward (FLOPs are per sample; 2 keeps batch-wise ops honest)
MEASURE_BATCH, WARMUP, REPEATS = 4, 2, 3  # the CPU timing of `--measure` (batch, steps)
WORD = "street"  # the label of every counted sample (6 characters, TextZoom's typical length)

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
    """One training run's estimate, or why it has none (`why`)."""

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
        """FLOPs per training sample: 3 x the model's forward (forward + backward), the rest of
        the objective's forward, and the input-gradient backward of its `grad_share`."""
        if self.model_flops is None:
            return None
        return 3 * self.model_flops + (1 + self.grad_share) * self.extra_flops

    def hours(self, tflops: float) -> float | None:
        """GPU hours at a sustained `tflops` TFLOP/s (steps x batch x train FLOPs / rate)."""
        if self.train_flops is None or self.steps is None or self.batch is None:
            return None
        return self.steps * self.batch * self.train_flops / (tflops * 1e12) / 3600

    def minutes(self, tflops: float) -> int | None:
        """The SLURM time limit of the run (`minutes_for` its hours)."""
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
    """Every tensor in a (nested) output, to see whether any of them carries a gradient."""
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
        return float(count_flops(model, *model.forward_inputs(batch))["flops"])
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
    """FLOPs per training sample of the run (the method: benchmarks/gpu_hours.py's docstring)."""
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


def measure_key(cfg: TrainConfig) -> str:
    """What the FLOPs (and the CPU time) of a run depend on: runs sharing it are counted once."""
    return json.dumps(
        [cfg.model, cfg.model_config, cfg.losses, sorted(cfg.assets)], sort_keys=True, default=str
    )


# ----------------------------------------------------------------------------- the estimate

# CPU seconds per training sample of (params, run, its TrainConfig, all runs): `--measure`.
Measure = Callable[[Mapping[str, Any], RunSpec, TrainConfig, Mapping[str, RunSpec]], float]


def run_membership(
    params: Mapping[str, Any],
    specs: Mapping[str, Any],
    runs: Mapping[str, RunSpec],
    selected: Sequence[str] | None,
) -> tuple[dict[str, list[str]], set[str]]:
    """(run -> papers needing it, in the papers' order; the runs the DAG trains). The runs a
    paper declares but no table needs are included, after those the DAG trains."""
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
    measure: Measure | None = None,
    log: Callable[..., None] = print,
) -> list[Estimate]:
    """One `Estimate` per run a paper needs or declares (or per `selected` run); each distinct
    `measure_key` is counted once and, with `measure`, also timed once."""
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
        if measure is not None:
            if key not in measured:
                log(f"# timing {run_id} ({cfg.model}) on 1 CPU thread", flush=True)
                measured[key] = measure(params, run, cfg, runs)
            row.cpu_s = measured[key]
    return rows


def paper_totals(
    rows: Sequence[Estimate], papers: Sequence[str], tflops: float
) -> dict[str, tuple[int, float, int]]:
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
