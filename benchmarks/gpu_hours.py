"""GPU hours of the full replication (official data, paper scale): per training run and per paper.

What is counted, what is measured, what is assumed
---------------------------------------------------
For every training run that a paper of params.yaml `papers` declares or needs, with params.yaml
overridden to `source: official, scale: paper` (the SLURM profile's setting), the run's resolved
`TrainConfig` (`stisr.papers.training.train_config`, what `stisr train` runs) gives:

* optimizer steps: the engine's own `stisr.engine.train.total_steps` (the run's `steps`, or epochs
  x (train-set size // batch)). Official train-set sizes are not on this machine; they are the
  published counts in `stisr.metrics.training_cost.TRAIN_SETS`, and the output lists the source
  of each;
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
import shlex
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from stisr.atomic_io import atomic_write_text
from stisr.config import load_params
from stisr.engine.optim import build_optimizer
from stisr.engine.speed import prepare_model, to_device
from stisr.engine.train import build_context
from stisr.engine.train_config import TrainConfig
from stisr.metrics.training_cost import (
    DEFAULT_TFLOPS,
    MEASURE_BATCH,
    OVERRIDES,
    RATE_NOTE,
    REPEATS,
    WARMUP,
    Estimate,
    build_assets_offline,
    estimate,
    grand_total,
    paper_batch,
    paper_totals,
)
from stisr.models.registry import build_model
from stisr.papers.spec import RunSpec, load_specs
from stisr.report.gpu_hours_doc import render_markdown, render_runtimes
from stisr.slurm_runtimes import RUNTIMES_PATH

REPO = Path(__file__).resolve().parents[1]
SMOKE_RUNS = ("tsrn/srcnn", "tsrn/tsrn")
DOC_PATH = REPO / "docs" / "gpu_hours.md"


def measure_run(
    params: Mapping[str, Any], run: RunSpec, cfg: TrainConfig, runs: Mapping[str, RunSpec]
) -> float:
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


def main(argv: Sequence[str] | None = None) -> list[Estimate]:
    """Parse the command line, estimate, write the two files and print the per-paper totals."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--params", default=str(REPO / "params.yaml"))
    ap.add_argument(
        "--tflops",
        type=float,
        default=DEFAULT_TFLOPS,
        help=f"assumed sustained TFLOP/s per GPU (default {DEFAULT_TFLOPS:g}: "
        + RATE_NOTE.replace("%", "%%")  # argparse formats help strings with %
        + ")",
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
    rows = estimate(params, specs, selected, measure_run if args.measure else None)
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
