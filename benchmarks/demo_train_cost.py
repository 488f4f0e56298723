"""CPU minutes each training run of a scale costs, before running it: the demo budget's ledger.

For every run the workflow trains at this scale (or `--runs`), the run's own configuration is
built as `stisr train` builds it (`papers.training.train_config`: the scale's widths, batch, the
run's losses and assets), a few real batches of its training set are drawn, and one training
step (forward, the model's `training_loss`, backward, Adam) is timed on one thread after warm-up
steps. CPU minutes = seconds per step x the run's step budget (the engine's `total_steps`).
Logging, checkpoints and evaluation are not counted; a real job adds start-up (~3 s) and its
checkpoints.

Why not time `train()` at two step counts: the shorter call absorbs first-call costs (lazy
imports, oneDNN kernel set-up), and the difference comes out several times too small.

    python benchmarks/demo_train_cost.py                       # every run the demo trains
    python benchmarks/demo_train_cost.py --runs zoo/crnn tsrn/tsrn
    python benchmarks/demo_train_cost.py --set scale=smoke      # any top-level params override

Runs whose assets or init weights are not trained yet are listed as skipped, with the reason.
Figures are only comparable on an otherwise idle CPU: the header prints the load average.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from typing import Any

import torch

from stisr.config import load_params
from stisr.data.datasets import collate
from stisr.engine.assets import build_assets
from stisr.engine.speed import prepare_model
from stisr.engine.train import _dataset, build_context, total_steps
from stisr.models.registry import build_model
from stisr.papers import plan
from stisr.papers.spec import all_runs, load_specs
from stisr.papers.training import train_config


def step_seconds(cfg: Any, warmup: int, repeats: int) -> tuple[float, int]:
    """(seconds per training step, the run's step budget) on this thread."""
    model = build_model(cfg.model, cfg.model_config)
    prepare_model(model, "cpu", cfg.channels_last)
    ctx = build_context(cfg, build_assets(cfg.assets, "cpu"))
    data, _ = _dataset(cfg, model)
    n_steps = total_steps(cfg, len(data))
    ctx.total_steps = n_steps
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    bs = min(cfg.batch_size, len(data))
    batches = [
        collate([data[(j * bs + i) % len(data)] for i in range(bs)])
        for j in range(warmup + repeats)
    ]

    def step(batch: dict) -> None:
        loss, _parts = model.training_loss(batch, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    for batch in batches[:warmup]:
        step(batch)
    start = time.perf_counter()
    for batch in batches[warmup:]:
        step(batch)
    return (time.perf_counter() - start) / repeats, n_steps


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--runs", nargs="+", help="default: every run the scale's DAG trains")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=6)
    args = ap.parse_args(argv)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    params = load_params(args.params, overrides)
    specs = load_specs()
    runs = all_runs(specs)
    ids = args.runs or sorted(plan.all_jobs(params, specs).trains)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"# {params['source']}-{params['scale']}: 1 thread, load average {load}")
        for run_id in ids:
            if problem := plan.run_problem(params, run_id, runs):
                print(f"{run_id}: skipped ({problem})")
                continue
            cfg = train_config(params, run_id, runs)
            try:
                seconds, n_steps = step_seconds(cfg, args.warmup, args.repeats)
            except FileNotFoundError as err:  # an asset or init run not trained yet
                print(f"{run_id}: skipped ({err})")
                continue
            row = {"run": run_id, "s_per_step": seconds, "steps": n_steps,
                   "cpu_min": seconds * n_steps / 60}  # fmt: skip
            rows.append(row)
            print(f"{run_id}: {seconds:.3f} s/step x {n_steps} steps = {row['cpu_min']:.1f} "
                  "CPU-min", flush=True)  # fmt: skip
        total = sum(r["cpu_min"] for r in rows)
        print(f"# {len(rows)} runs: {total:.1f} CPU-min of training "
              f"(>= {total / max(os.cpu_count() or 1, 1):.1f} min wall on {os.cpu_count()} cores)")
    finally:
        torch.set_num_threads(threads)
    return rows


if __name__ == "__main__":
    main()
