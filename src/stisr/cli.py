"""`stisr <command>`: the only entry point Snakemake rules call.

Each command resolves paths from params.yaml and the paper specs through `stisr.papers.plan`, so
the workflow and the CLI always agree on where things live.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stisr.config import (
    ParamsError,
    load_params,
    scale_settings,
    work_name,
)

log = logging.getLogger("stisr")


@dataclass(frozen=True)
class LrSet:
    """How an LR benchmark set is derived from the STR benchmarks (`stisr degrade <kind>`)."""

    subsets: tuple[str, ...]
    keep: Callable[[Any], bool]  # which source images enter the set
    pipeline: str | None = None  # degradation applied to them (seeded per image)
    options: dict[str, Any] = field(default_factory=dict)
    merge: bool = False  # one subset `all` instead of one per benchmark


def _all(img: Any) -> bool:
    return True


def _small(img: Any) -> bool:  # smaller than 64x16 (TSRN CommonLR) / 16x64 (LEMMA)
    return img.width <= 64 and img.height <= 16


def _short(img: Any) -> bool:  # IMAGE's IC15-352: height below 16 pixels
    return img.height < 16


STR_BENCHMARKS = ("ic13", "ic15", "iiit5k", "svt", "svtp", "cute80")
LR_SETS: dict[str, LrSet] = {
    "commonlr": LrSet(STR_BENCHMARKS, _small, merge=True),
    "lemma": LrSet(STR_BENCHMARKS, _small, "blur_noise", {"variant": "lemma"}),
    "kdltr": LrSet(STR_BENCHMARKS, _all, "blur_noise", {"variant": "kdltr"}),
    "ic15_352": LrSet(("ic15",), _short, merge=True),
}


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
    """Make an LR benchmark set (CommonLR, LEMMA, KD-LTR, IC15-352) from STR LMDBs."""
    from stisr.data.degrade import degrade, sample_rng
    from stisr.data.lmdb_io import LmdbReader, write_str_lmdb

    params = _params(args)
    spec = LR_SETS[args.kind]
    seed = params["embedded"]["seed"] + 7
    sources = dict(item.split("=", 1) for item in args.src)
    missing = [s for s in spec.subsets if s not in sources]
    if missing:
        raise SystemExit(f"degrade {args.kind}: no --src given for {', '.join(missing)}")

    def derived(name: str):
        with LmdbReader(Path(sources[name])) as reader:
            for i in range(len(reader)):
                img = reader.image("image", i)
                if not spec.keep(img):
                    continue
                if spec.pipeline:  # the rng of image i depends on (seed, benchmark, i) only
                    rng = sample_rng(seed + STR_BENCHMARKS.index(name), i)
                    img = degrade(img, spec.pipeline, rng, **spec.options)
                yield img, reader.label(i)

    out = Path(args.out)
    if spec.merge:
        n = write_str_lmdb(out / "all", (x for name in spec.subsets for x in derived(name)))
    else:
        n = sum(write_str_lmdb(out / name, derived(name)) for name in spec.subsets)
    log.info("%d LR images (%s) written to %s", n, args.kind, out)


def cmd_fetch(args: argparse.Namespace) -> None:
    from stisr.data.fetch import fetch

    path = fetch(args.name, Path(args.root), partial_dir=Path(args.partial_dir))
    log.info("%s is in %s", args.name, path)


def cmd_import_weights(args: argparse.Namespace) -> None:
    """Released recognizer weights -> a stisr checkpoint (strict load after the key mapping)."""
    from stisr.data.fetch import load_sources
    from stisr.engine.checkpoint import atomic_save, model_payload
    from stisr.engine.recognize import load_official
    from stisr.models.registry import is_implemented
    from stisr.papers.spec import load_common

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

    params = _params(args)
    runs = all_runs(load_specs())
    if args.run not in runs:
        raise UsageError(f"unknown run {args.run!r}; runs are declared in src/stisr/papers/*.yaml")
    if problems := run_problems(params, args.run, runs):
        raise UsageError(f"{args.run} cannot be trained here:\n  " + "\n  ".join(problems))
    cfg = train_config(params, args.run, runs)
    try:
        train(cfg, run_dir(params, args.run), progress=not args.quiet, restart=args.restart)
    except ConfigMismatch as err:
        raise UsageError(str(err)) from None


def _recognizer_paths(params, ref: str):
    from stisr.papers.plan import recognizer_checkpoint, resolve_recognizer
    from stisr.papers.spec import all_runs, load_specs

    if ref == "none":
        return "none", None
    rec = resolve_recognizer(params, ref, all_runs(load_specs()))
    if rec.external:
        return rec.external, None
    return "model", recognizer_checkpoint(params, rec)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from stisr.engine.evaluate import evaluate
    from stisr.papers.plan import eval_path, run_dir, testset_dirs
    from stisr.papers.spec import PSEUDO_SR, load_common

    params = _params(args)
    ev = scale_settings(params)["eval"]
    kind, rec_ckpt = _recognizer_paths(params, args.recognizer)
    sr_ckpt = None if args.sr in PSEUDO_SR else run_dir(params, args.sr) / "model.pt"
    ts = load_common().testsets[args.testset]
    import torch

    from stisr.papers.training import runtime_settings

    torch.set_num_threads(params["train"]["torch_threads"])
    evaluate(
        device=runtime_settings(params)["device"],
        sr=args.sr,
        recognizer=args.recognizer,
        testset=args.testset,
        subsets=testset_dirs(params, args.testset),
        out_path=eval_path(params, args.sr, args.recognizer, args.testset),
        sr_checkpoint=sr_ckpt,
        rec_kind=kind,
        rec_checkpoint=rec_ckpt,
        weighted=ts.get("average") == "weighted",
        meta={"source": params["source"], "scale": params["scale"]},
        batch_size=ev["batch_size"],
        max_images=ev["max_images"],
        samples=ev["samples"],
    )


def cmd_complexity(args: argparse.Namespace) -> None:
    """Parameters, FLOPs and CPU latency of SR model + recognizer at the papers' architecture.

    Architecture numbers are properties of the paper-scale configuration, so they are measured
    there whatever the scale of the run (no weights needed). Each model is counted as the papers
    counted it (`PAPER_COUNTS`: input size, decoding, profiler rules): `flops` is that count
    (multiply-accumulates, in G), `flops_all` every multiply-accumulate incl. attention, and
    `true_flops` 2 per MAC of `flops_all`.
    """
    import torch

    from stisr.atomic_io import atomic_write_text
    from stisr.metrics.complexity import (
        PAPER_COUNTS,
        PaperCount,
        count_parameters,
        measure_latency,
    )
    from stisr.models.registry import build_model
    from stisr.papers.plan import complexity_path, resolve_recognizer
    from stisr.papers.spec import PSEUDO_SR, all_runs, load_specs

    params = _params(args)
    runs = all_runs(load_specs())
    torch.set_num_threads(params["train"]["torch_threads"])
    torch.manual_seed(0)  # random weights and inputs: data-dependent decoders count reproducibly
    parts: list[tuple[str, torch.nn.Module, torch.Tensor, PaperCount]] = []
    if args.sr not in PSEUDO_SR or args.sr == "bicubic":
        name = "bicubic" if args.sr == "bicubic" else runs[args.sr].model
        cfg = {} if args.sr == "bicubic" else runs[args.sr].model_config
        model = build_model(name, cfg)
        x = torch.rand(1, getattr(model, "in_channels", 4), 16, 64)
        parts.append((args.sr, model, x, PaperCount()))
    if args.recognizer != "none":
        rec = resolve_recognizer(params, args.recognizer, runs)
        if rec.external:
            raise SystemExit(f"complexity of external recognizer {rec.external} is not measured")
        count = PAPER_COUNTS.get(rec.model, PaperCount())
        cfg = {**count.config, **(runs[rec.run].model_config if rec.run else {})}
        model = build_model(rec.model, cfg)
        parts.append((args.recognizer, model, model.preprocess(torch.rand(1, 3, 32, 128)), count))
    result: dict[str, Any] = {
        "params": 0,
        "flops": 0.0,
        "flops_all": 0.0,
        "true_flops": 0.0,
        "latency_ms": 0.0,
        "architecture_scale": "paper",
        "parts": {},
    }
    for name, model, x, count in parts:
        flops = count.count(model, x)
        lat = measure_latency(count.wrap(model), x, warmup=1, repeats=5)
        part = {
            "params": count_parameters(model),
            "flops": flops["paper_macs"] / 1e9,
            "flops_all": flops["macs"] / 1e9,
            "true_flops": flops["flops"] / 1e9,
            "latency_ms": lat["mean_ms"],
            "input": list(x.shape),
            "counted_as": count.why,
        }
        result["parts"][name] = part
        for key in ("params", "flops", "flops_all", "true_flops", "latency_ms"):
            result[key] += part[key]
    out = complexity_path(params, args.sr, args.recognizer)
    atomic_write_text(out, json.dumps(result, indent=2))
    log.info("complexity of %s + %s written to %s", args.sr, args.recognizer, out)


def cmd_track(args: argparse.Namespace) -> None:
    from stisr.engine.tracking import log_run, tracking_uri
    from stisr.papers.plan import run_dir

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
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"key": key, "mlflow_run_id": run_id, "tracking_uri": uri}) + "\n")
    log.info("%s logged to MLflow (%s), run %s", key, uri, run_id)


def cmd_table(args: argparse.Namespace) -> None:
    from stisr.papers.spec import all_runs, load_specs
    from stisr.report.tables import write_table

    params = _params(args)
    specs = load_specs()
    table = next((t for t in specs[args.paper].tables if t.id == args.table), None)
    if table is None:
        raise SystemExit(f"{args.paper} has no table {args.table!r}")
    paths = write_table(table, params, all_runs(specs), Path(args.out))
    log.info("table %s/%s written to %s", args.paper, args.table, ", ".join(map(str, paths)))


def cmd_figure(args: argparse.Namespace) -> None:
    from stisr.papers.spec import all_runs, load_specs
    from stisr.report.figures import write_figure

    params = _params(args)
    specs = load_specs()
    fig = next((f for f in specs[args.paper].figures if f.id == args.figure), None)
    if fig is None:
        raise SystemExit(f"{args.paper} has no figure {args.figure!r}")
    out = Path(args.out) / args.paper / f"{args.figure}.png"
    write_figure(fig, params, all_runs(specs), out)
    log.info("figure %s/%s written to %s", args.paper, args.figure, out)


def cmd_index(args: argparse.Namespace) -> None:
    from stisr.papers.spec import load_specs
    from stisr.report.index import write_index

    params = _params(args)
    path = write_index(params, load_specs(), Path(args.out))
    log.info("results index written to %s", path)


def cmd_recognize(args: argparse.Namespace) -> None:
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
    specs = load_specs()
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


def dvc_stages() -> dict[str, Any]:
    """dvc.yaml, derived from the specs and the fetch registry (one stage per table / source)."""
    from stisr.data.fetch import load_sources
    from stisr.papers.spec import load_specs

    specs = load_specs()
    code_deps = ["src/stisr", "workflow"]
    tables = {f"{p}_{t.id}": {"paper": p, "table": t.id} for p in specs for t in specs[p].tables}
    fetches = {s.name: s.dest for s in load_sources().values()}
    snake = "snakemake --cores all"
    table_out = "results/${source}-${scale}/${item.paper}/${item.table}"
    return {
        "stages": {
            "synth": {
                "cmd": f"{snake} data/embedded/${{scale}}/textzoom data/embedded/${{scale}}/str",
                "deps": ["src/stisr/data"],
                "params": ["embedded", "scale"],
                "outs": [
                    {"data/embedded/${scale}/textzoom": {"persist": True}},
                    {"data/embedded/${scale}/str": {"persist": True}},
                ],
            },
            "fetch": {
                "foreach": fetches,
                "do": {
                    "cmd": f"{snake} --config source=official -- data/official/${{item}}",
                    "deps": ["src/stisr/data/sources.yaml"],
                    "outs": [{"data/official/${item}": {"persist": True}}],
                },
            },
            "table": {  # results/<source>-<scale>/, as the Snakefile writes them
                "foreach": tables,
                "do": {
                    "cmd": f"{snake} {table_out}.csv",
                    "deps": code_deps,
                    "params": ["source", "scale", "seed", "embedded", "scales", "train"],
                    "outs": [
                        {f"{table_out}.csv": {"cache": False}},
                        {f"{table_out}.md": {"cache": False}},
                    ],
                },
            },
        }
    }


def cmd_sync_dvc(args: argparse.Namespace) -> None:
    header = "# Generated by `stisr sync-dvc` from the paper specs and sources.yaml: do not edit.\n"
    text = header + yaml.safe_dump(dvc_stages(), sort_keys=False, width=100)
    path = Path(args.path)
    if args.check:
        if not path.exists() or path.read_text() != text:
            raise SystemExit(f"{path} is out of date: run `stisr sync-dvc`")
        return
    path.write_text(text)
    log.info("DVC stages written to %s", path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="stisr", description=__doc__)
    p.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a top-level params key (e.g. scale=smoke)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="generate embedded data")
    s.add_argument("what", choices=["textzoom", "str"])
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_synth)

    s = sub.add_parser("degrade", help="make LR benchmark sets from STR LMDBs")
    s.add_argument("kind", choices=sorted(LR_SETS))
    s.add_argument("--src", nargs="+", required=True, metavar="NAME=LMDB")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_degrade)

    s = sub.add_parser("fetch", help="download an official source (src/stisr/data/sources.yaml)")
    s.add_argument("name")
    s.add_argument("--root", default="data/official")
    s.add_argument(
        "--partial-dir",
        default=".downloads",
        help="where interrupted downloads wait to be resumed (kept out of data/)",
    )
    s.set_defaults(fn=cmd_fetch)

    s = sub.add_parser("import-weights", help="convert released weights to a stisr checkpoint")
    s.add_argument("name", help="a weights entry of sources.yaml")
    s.add_argument("--root", default="data/official")
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_import_weights)

    s = sub.add_parser("train", help="train (or resume) one run")
    s.add_argument("--run", required=True, help="run id, e.g. tsrn/tsrn")
    s.add_argument(
        "--restart",
        action="store_true",
        help="set aside checkpoints of another configuration (kept, renamed) and train afresh",
    )
    s.set_defaults(fn=cmd_train)

    s = sub.add_parser("evaluate", help="evaluate (sr, recognizer, testset)")
    s.add_argument("--sr", required=True)
    s.add_argument("--recognizer", required=True)
    s.add_argument("--testset", required=True)
    s.set_defaults(fn=cmd_evaluate)

    s = sub.add_parser("complexity", help="parameters, FLOPs, latency of sr + recognizer")
    s.add_argument("--sr", required=True)
    s.add_argument("--recognizer", required=True)
    s.set_defaults(fn=cmd_complexity)

    s = sub.add_parser("track", help="log a run and its evaluations to MLflow")
    s.add_argument("--run", required=True, help="a run id, or a parameter-free SR (bicubic)")
    s.add_argument("--trained", action="store_true")
    s.add_argument("--evaluations", nargs="*", default=[])
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_track)

    for name, fn, extra in (("table", cmd_table, "table"), ("figure", cmd_figure, "figure")):
        s = sub.add_parser(name, help=f"write one {name} of a paper into results/")
        s.add_argument("paper")
        s.add_argument(extra)
        s.add_argument("--out", default="results")
        s.set_defaults(fn=fn)

    s = sub.add_parser("index", help="write results/README.md")
    s.add_argument("--out", default="results")
    s.set_defaults(fn=cmd_index)

    s = sub.add_parser("recognize", help="read a folder of word images (gt.txt optional)")
    s.add_argument("folder")
    s.add_argument("--recognizer", required=True, help="registry name (crnn, ...) or ppocr")
    s.add_argument("--weights", help="a stisr model.pt or an official weight file")
    s.add_argument("--out", help="write predictions as TSV here (default: print)")
    s.add_argument("--show", type=int, default=20, help="predictions printed without --out")
    s.add_argument("--batch-size", type=int, default=64)
    s.set_defaults(fn=cmd_recognize)

    s = sub.add_parser("sync-dvc", help="regenerate dvc.yaml from the specs")
    s.add_argument("--path", default="dvc.yaml")
    s.add_argument("--check", action="store_true", help="fail if dvc.yaml is out of date")
    s.set_defaults(fn=cmd_sync_dvc)

    s = sub.add_parser("plan", help="print the jobs the current params imply")
    s.set_defaults(fn=cmd_plan)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.fn(args)
    except (ParamsError, UsageError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
