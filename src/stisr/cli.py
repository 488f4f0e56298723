"""`stisr <command>`: the only entry point Snakemake rules call.

Each command resolves paths from params.yaml and the paper specs through `stisr.papers.plan`, so
the workflow and the CLI always agree on where things live. This module only parses arguments,
checks ids against the specs and registries, and dispatches.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from stisr.config import ParamsError, load_params, work_name
from stisr.papers import ids
from stisr.papers.ids import UnknownId

log = logging.getLogger("stisr")


class UsageError(Exception):
    """A request the pipeline refuses, with every reason (exit status 2, no traceback)."""


def _params(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    return load_params(args.params, overrides)


def cmd_synth(args: argparse.Namespace) -> None:
    from stisr.data.synth import make_str_sets, make_textzoom

    params = _params(args)
    sizes = params["embedded"]["sizes"][params["scale"]]
    out = Path(args.out)
    seed = params["embedded"]["seed"]
    if args.what == "textzoom":
        make_textzoom(out, sizes["textzoom"], seed)
    else:
        make_str_sets(out, sizes["str"], seed + 1)
    log.info("embedded %s data written to %s", args.what, out)


def cmd_degrade(args: argparse.Namespace) -> None:
    from stisr.data.lr_benchmarks import LrSetError, make_lr_benchmark

    params = _params(args)
    sources = dict(item.split("=", 1) for item in args.src)
    try:
        n = make_lr_benchmark(args.kind, sources, Path(args.out), params["embedded"]["seed"] + 7)
    except LrSetError as err:
        raise SystemExit(str(err)) from None
    log.info("%d LR images (%s) written to %s", n, args.kind, args.out)


def cmd_fetch(args: argparse.Namespace) -> None:
    from stisr.data.fetch import fetch

    ids.check("source", args.name, ids.sources())
    path = fetch(args.name, Path(args.root), partial_dir=Path(args.partial_dir))
    log.info("%s is in %s", args.name, path)


def cmd_import_weights(args: argparse.Namespace) -> None:
    """Released recognizer weights -> a stisr checkpoint (strict load after the key mapping)."""
    from stisr.data.source_registry import load_sources
    from stisr.engine.checkpoint import atomic_save, model_payload
    from stisr.engine.recognize import load_official
    from stisr.models.registry import is_implemented
    from stisr.papers.spec import load_common

    ids.check("weights", args.name, ids.sources("weights"))
    common = load_common()
    entries = [*common.recognizers.values(), *common.assets.values()]
    entry = next((r for r in entries if r.get("weights") == args.name), None)
    if entry is None or not is_implemented(entry["model"]):
        raise SystemExit(f"import-weights: no implemented recognizer uses weights {args.name!r}")
    src = Path(args.root) / load_sources()[args.name].dest
    model, config = load_official(entry["model"], src)
    payload = model_payload(model, entry["model"], config, run=f"released/{args.name}")
    atomic_save(payload, Path(args.out))
    log.info("released %s weights imported from %s into %s", args.name, src, args.out)


def cmd_train(args: argparse.Namespace) -> None:
    from stisr.engine.train import ConfigMismatch, train
    from stisr.papers.plan import run_dir, run_problems
    from stisr.papers.spec import all_runs, load_specs
    from stisr.papers.training import train_config

    ids.check_run(args.run)
    params = _params(args)
    runs = all_runs(load_specs())
    if problems := run_problems(params, args.run, runs):
        raise UsageError(f"{args.run} cannot be trained here:\n  " + "\n  ".join(problems))
    cfg = train_config(params, args.run, runs)
    try:
        train(cfg, run_dir(params, args.run), progress=not args.quiet, restart=args.restart)
    except ConfigMismatch as err:
        raise UsageError(str(err)) from None


def cmd_evaluate(args: argparse.Namespace) -> None:
    ids.check("sr", args.sr, ids.srs())
    ids.check("recognizer", args.recognizer, ids.recognizers())
    ids.check("test set", args.testset, ids.testsets())
    import torch

    from stisr.engine.evaluate import evaluate
    from stisr.papers.evaluation import evaluation_args
    from stisr.papers.training import runtime_settings

    params = _params(args)
    job = evaluation_args(params, args.sr, args.recognizer, args.testset)
    torch.set_num_threads(params["train"]["torch_threads"])
    evaluate(device=runtime_settings(params)["device"], **job)


def cmd_complexity(args: argparse.Namespace) -> None:
    """Parameters, FLOPs and CPU latency of SR model + recognizer (metrics/complexity_run.py)."""
    ids.check("sr", args.sr, ids.srs())
    ids.check("recognizer", args.recognizer, ids.recognizers())
    import torch

    from stisr.atomic_io import atomic_write_text
    from stisr.metrics.complexity_run import ComplexityError, measure_pair
    from stisr.papers.plan import complexity_path
    from stisr.papers.spec import all_runs, load_specs

    params = _params(args)
    torch.set_num_threads(params["train"]["torch_threads"])
    try:
        result = measure_pair(params, args.sr, args.recognizer, all_runs(load_specs()))
    except ComplexityError as err:
        raise SystemExit(str(err)) from None
    out = complexity_path(params, args.sr, args.recognizer)
    atomic_write_text(out, json.dumps(result, indent=2))
    log.info("complexity of %s + %s written to %s", args.sr, args.recognizer, out)


def cmd_track(args: argparse.Namespace) -> None:
    from stisr.atomic_io import atomic_write_text
    from stisr.engine.tracking import log_run, tracking_uri
    from stisr.papers.plan import run_dir
    from stisr.papers.spec import PSEUDO_SR

    ids.check_run(args.run, PSEUDO_SR)
    params = _params(args)
    rd = run_dir(params, args.run) if args.trained else None
    uri = tracking_uri(params["mlflow"]["tracking_uri"])
    key = f"{work_name(params)}/{args.run}"
    run_id = log_run(
        key=key,
        uri=uri,
        experiment=params["mlflow"]["experiment"],
        run_dir=rd,
        evaluations=[Path(p) for p in args.evaluations],
        tags={"source": params["source"], "scale": params["scale"], "run": args.run},
    )
    record = {"key": key, "mlflow_run_id": run_id, "tracking_uri": uri}
    atomic_write_text(Path(args.out), json.dumps(record) + "\n")
    log.info("%s logged to MLflow (%s), run %s", key, uri, run_id)


def cmd_table(args: argparse.Namespace) -> None:
    from stisr.papers.spec import all_runs, load_specs
    from stisr.report.tables import write_table

    ids.check("table", args.table, ids.tables(args.paper), f" of {args.paper}")
    params = _params(args)
    specs = load_specs()
    table = next(t for t in specs[args.paper].tables if t.id == args.table)
    paths = write_table(table, params, all_runs(specs), _results(args, params))
    log.info("table %s/%s written to %s", args.paper, args.table, ", ".join(map(str, paths)))


def _results(args: argparse.Namespace, params: dict[str, Any]) -> Path:
    """One results folder per data source and scale, as the Snakefile writes them."""
    return Path(args.out) if args.out else Path("results") / work_name(params)


def cmd_figure(args: argparse.Namespace) -> None:
    from stisr.papers.spec import all_runs, load_specs
    from stisr.report.figures import write_figure

    ids.check("figure", args.figure, ids.figures(args.paper), f" of {args.paper}")
    params = _params(args)
    specs = load_specs()
    fig = next(f for f in specs[args.paper].figures if f.id == args.figure)
    out = _results(args, params) / args.paper / f"{args.figure}.png"
    write_figure(fig, params, all_runs(specs), out)
    log.info("figure %s/%s written to %s", args.paper, args.figure, out)


def cmd_index(args: argparse.Namespace) -> None:
    from stisr.papers.spec import load_specs
    from stisr.report.index import write_index

    params = _params(args)
    path = write_index(params, load_specs(), _results(args, params))
    log.info("results index written to %s", path)


def cmd_recognize(args: argparse.Namespace) -> None:
    ids.check("recognizer", args.recognizer, ids.recognizer_models())
    from stisr.engine.recognize import accuracy, recognize_folder

    weights = Path(args.weights) if args.weights else None
    preds = recognize_folder(Path(args.folder), args.recognizer, weights, args.batch_size)
    lines = ["path\tprediction\tlabel\tcorrect"]
    lines += [
        f"{p.path}\t{p.prediction}\t{'' if p.label is None else p.label}\t"
        f"{'' if p.correct is None else int(p.correct)}"
        for p in preds
    ]
    if args.out:
        from stisr.atomic_io import atomic_write_text

        atomic_write_text(Path(args.out), "\n".join(lines) + "\n")
        log.info("%d predictions written to %s", len(preds), args.out)
    else:
        print("\n".join(lines[: args.show + 1]))
    acc = accuracy(preds)
    if acc is not None:
        print(f"word accuracy ({args.recognizer}, {len(preds)} images): {100 * acc:.2f}%")


def cmd_plan(args: argparse.Namespace) -> None:
    from stisr.papers.plan import all_jobs, run_problems
    from stisr.papers.spec import all_runs, load_specs

    params = _params(args)
    specs = load_specs()  # validates every spec and the references between them
    for spec in specs.values():
        cells = sum(sum(v is not None for v in r.paper) for t in spec.tables for r in t.rows)
        print(
            f"{spec.paper}: {len(spec.runs)} runs, {len(spec.tables)} tables, "
            f"{len(spec.figures)} figures, {cells} paper numbers"
        )
    jobs = all_jobs(params, specs)
    print(
        f"{work_name(params)}: {len(jobs.trains)} training runs, "
        f"{len(jobs.evaluations)} evaluations, {len(jobs.complexities)} complexity measurements"
    )
    for run in jobs.trains:
        print(f"  train {run}")
    runs = all_runs(specs)
    blocked = {r: run_problems(params, r, runs) for r in runs if runs[r].paper in params["papers"]}
    blocked = {r: why for r, why in blocked.items() if why}
    print(f"{len(blocked)} runs of the selected papers cannot be trained here:")
    for run, why in blocked.items():
        print(f"  blocked {run}: " + "; ".join(w.removeprefix(f"{run}: ") for w in why))


def cmd_sync_dvc(args: argparse.Namespace) -> None:
    from stisr.atomic_io import atomic_write_text
    from stisr.dvc_stages import dvc_text, is_current

    path = Path(args.path)
    if args.check:
        if not is_current(path):
            raise SystemExit(f"{path} is out of date: run `stisr sync-dvc`")
        return
    atomic_write_text(path, dvc_text())
    log.info("DVC stages written to %s", path)


def build_parser() -> argparse.ArgumentParser:
    """The `stisr` parser (stisr/cli_parser.py: descriptions, valid values, examples)."""
    from stisr.cli_parser import make_parser

    return make_parser(COMMANDS, __doc__)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (ParamsError, UsageError, UnknownId) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], None]] = {
    "synth": cmd_synth,
    "degrade": cmd_degrade,
    "fetch": cmd_fetch,
    "import-weights": cmd_import_weights,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "complexity": cmd_complexity,
    "track": cmd_track,
    "table": cmd_table,
    "figure": cmd_figure,
    "index": cmd_index,
    "recognize": cmd_recognize,
    "sync-dvc": cmd_sync_dvc,
    "plan": cmd_plan,
}

if __name__ == "__main__":
    sys.exit(main())
