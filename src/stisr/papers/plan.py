"""From specs + params to the concrete jobs: which runs to train, which evaluations to run.

The Snakefile expands its rules from these functions and the report uses the same ones to find
each cell's metrics file, so the two can never disagree about where a number comes from. A cell
whose model or recognizer is not implemented yet yields no job; the report marks it instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stisr.config import work_name
from stisr.data.source_registry import load_sources
from stisr.losses import LOSS_ASSETS, LOSSES, VGGFeaturesSpec
from stisr.models import objective
from stisr.models.registry import is_implemented, model_class
from stisr.papers.figure_sources import (  # noqa: F401 (re-exported for the report)
    figure_baseline_sources,
    figure_sources,
    merge_source,
    recognizer_column,
)
from stisr.papers.settings import setting_problems
from stisr.papers.spec import (
    PSEUDO_SR,
    PaperSpec,
    RunSpec,
    TableSpec,
    all_runs,
    load_common,
)

COMPLEXITY_METRICS = ("params", "flops", "latency")


def slug(ref: str) -> str:
    """A run id as one path component (`tsrn/tsrn` -> `tsrn.tsrn`)."""
    return ref.replace("/", ".")


def unslug(text: str) -> str:
    return text.replace(".", "/", 1)


def data_root(params: Mapping[str, Any]) -> Path:
    if params["source"] == "embedded":
        return Path("data") / "embedded" / params["scale"]
    return Path("data") / "official"


def run_dir(params: Mapping[str, Any], run_id: str) -> Path:
    return Path("runs") / work_name(params) / "train" / slug(run_id)


def eval_path(params: Mapping[str, Any], sr: str, recognizer: str, testset: str) -> Path:
    return (
        Path("runs") / work_name(params) / "eval" / slug(sr) / slug(recognizer) / f"{testset}.json"
    )


def complexity_path(params: Mapping[str, Any], sr: str, recognizer: str) -> Path:
    return Path("runs") / work_name(params) / "complexity" / f"{slug(sr)}+{slug(recognizer)}.json"


def train_set_dirs(params: Mapping[str, Any], name: str) -> list[Path]:
    sets = load_common().train_sets
    if name not in sets or params["source"] not in sets[name]:
        raise KeyError(
            f"train set {name!r} has no {params['source']} data (common.yaml train_sets)"
        )
    return [data_root(params) / d for d in sets[name][params["source"]]]


def testset_dirs(params: Mapping[str, Any], testset: str) -> dict[str, list[Path]]:
    """Subset name -> folders (several when the official release splits a set, e.g. train1/2)."""
    ts = load_common().testsets[testset]
    mapped = ts.get("official", {}) if params["source"] == "official" else {}
    root = data_root(params)
    return {
        s: [root / d for d in mapped[s]] if s in mapped else [root / ts["data"] / s]
        for s in ts["subsets"]
    }


@dataclass(frozen=True)
class Recognizer:
    """How a recognizer reference is obtained on this data source."""

    ref: str
    model: str | None  # registry name; None for external recognizers
    run: str | None = None  # a training run that produces it
    weights: str | None = None  # a fetch-registry name of released weights
    external: str | None = None


def resolve_recognizer(params: Mapping[str, Any], ref: str, runs: Mapping[str, RunSpec]):
    """A recognizer (or a network asset of the same shape: model, embedded_run, weights)."""
    common = load_common()
    catalogue = {**common.assets, **common.recognizers}
    if ref in catalogue:
        entry = catalogue[ref]
        if "external" in entry:
            return Recognizer(ref, None, external=entry["external"])
        if params["source"] == "embedded":
            return Recognizer(ref, entry["model"], run=entry["embedded_run"])
        return Recognizer(ref, entry["model"], weights=entry["weights"])
    return Recognizer(ref, runs[ref].model, run=ref)


def recognizer_checkpoint(params: Mapping[str, Any], rec: Recognizer) -> Path | None:
    """The weights file a recognizer is read from (None for external ones, which ship their own)."""
    if rec.external:
        return None
    if rec.run:
        return run_dir(params, rec.run) / "model.pt"
    return Path("data/official/weights") / f"{rec.weights}.stisr.pt"


def selection_settings(params, run: RunSpec, runs: Mapping[str, RunSpec]) -> dict[str, Any]:
    """TrainConfig fields for params.yaml `train.selection` (engine/selection.py); SR runs only."""
    train = params["train"]
    if train["selection"] == "last" or run.task != "sr":
        return {"selection": "last"}
    rec = resolve_recognizer(params, train["selection_recognizer"], runs)
    weights = recognizer_checkpoint(params, rec)
    if weights is None:
        raise ValueError(
            f"params.yaml train.selection_recognizer: {rec.ref!r} is external; "
            "selection needs a stisr recognizer (e.g. crnn, the official code's choice)"
        )
    settings: dict[str, Any] = {
        "selection": train["selection"],
        "select_recognizer": str(weights),
        "holdout": train["holdout"],
    }
    if train["selection"] == "test":
        dirs = testset_dirs(params, "textzoom_test")
        settings["select_sets"] = {k: [str(d) for d in v] for k, v in dirs.items()}
    return settings


def vgg_features(params: Mapping[str, Any]) -> dict[str, Any]:
    """`VGGFeaturesSpec` fields of the `vgg16_features` asset (the perceptual loss's extractor).

    Defaults are the TextZoom SRResNet setting (ImageNet VGG16 `features[:31]`). Official data:
    torchvision's ImageNet file (fetch-registry entry `vgg16`). Embedded data has no network, so
    the features are frozen seeded random weights of the same layout, their widths divided by
    params.yaml `scales.<scale>.random_vgg_divisor`: a deviation the run's metrics name.
    """
    if params["source"] == "official":
        return {"weights": str(Path("data/official") / load_sources()["vgg16"].dest)}
    divisor = params["scales"][params["scale"]].get("random_vgg_divisor", 1)
    return {"width_divisor": divisor, "seed": params["seed"]}


def recognizer_problem(params, ref: str, runs: Mapping[str, RunSpec]) -> str | None:
    """Why a recognizer cannot be used here (None when it can)."""
    rec = resolve_recognizer(params, ref, runs)
    if rec.external:
        return None
    if not is_implemented(rec.model):
        return f"recognizer {ref} not implemented yet"
    if rec.run and (why := run_problem(params, rec.run, runs)):
        return f"recognizer {ref}: {why}"
    enabled = params.get("scales", {}).get(params["scale"], {}).get("recognizers", "all")
    gated = params["source"] == "embedded" and enabled != "all" and rec.model not in enabled
    if gated:
        return (
            f"recognizer {ref} ({rec.model}) is not trained on embedded data at scale "
            f"{params['scale']} (params.yaml scales.{params['scale']}.recognizers)"
        )
    return None


def recognizer_available(params, ref: str, runs: Mapping[str, RunSpec]) -> bool:
    return recognizer_problem(params, ref, runs) is None


def asset_bindings(run: RunSpec) -> dict[str, str]:
    """Role -> asset reference: defaults of the run's losses (`LOSS_ASSETS`), then its own."""
    defaults = {
        role: default for name, (_, role, default) in LOSS_ASSETS.items() if run.losses.get(name)
    }
    return {**defaults, **run.assets}


def built_asset(ref: str) -> bool:
    """An asset built from its settings (VGG features), not a network trained or released."""
    return load_common().assets.get(ref, {}).get("kind") == "vgg_features"


def resolve_asset(params, ref: str, runs: Mapping[str, RunSpec]) -> dict[str, Any]:
    """An asset reference -> the engine's spec of it (engine/assets.py) on this data source."""
    if built_asset(ref):
        fields = vgg_features(params)
        spec = VGGFeaturesSpec(**fields)
        out = {"kind": "vgg_features", **fields, "note": spec.note}
        return out if spec.weights else {**out, "deviation": f"perceptual loss on {spec.note}"}
    rec = resolve_recognizer(params, ref, runs)
    path = recognizer_checkpoint(params, rec)
    if path is None:
        raise ValueError(f"asset {ref!r} is external; an objective needs a stisr model")
    return {"kind": "checkpoint", "path": str(path), "note": f"{ref} ({path})"}


def asset_problem(params, ref: str, runs: Mapping[str, RunSpec]) -> str | None:
    """Why an asset cannot be provided here. Network assets are trained in the DAG whatever
    `scales.<scale>.recognizers` says (that list picks the evaluators, not objectives' parts)."""
    if ref not in load_common().assets:
        return recognizer_problem(params, ref, runs)
    if built_asset(ref):
        return None
    rec = resolve_recognizer(params, ref, runs)
    if not is_implemented(rec.model):
        return f"asset {ref} ({rec.model}) not implemented yet"
    if rec.run and (why := run_problem(params, rec.run, runs)):
        return f"asset {ref}: {why}"
    return None


def run_problems(params, run_id: str, runs: Mapping[str, RunSpec]) -> list[str]:
    """Every reason a run cannot be trained here (empty when it can)."""
    run = runs[run_id]
    if not is_implemented(run.model):  # its settings are still checked against the engine's
        unknown = [f"{run_id}: {why}" for why in setting_problems(run, None)]
        return [f"model of {run_id} not implemented yet", *unknown]
    cls = model_class(run.model)
    problems = [f"{run_id}: {why}" for why in setting_problems(run, cls)]
    known = set(LOSSES) | set(cls.objective_losses)
    if missing := sorted(set(run.losses) - known):
        problems.append(f"{run_id}: loss {', '.join(missing)} not implemented yet for {run.model}")
    default = objective.Recognizer.training_loss
    default_objective = issubclass(cls, objective.Recognizer) and cls.training_loss is default
    if default_objective and (len(run.losses) > 1 or any(w != 1 for w in run.losses.values())):
        # A recognizer's default objective is its own text loss; other weights would be ignored.
        problems.append(f"{run_id}: weighted recognition losses {dict(run.losses)} not implemented")
    bound = asset_bindings(run)
    weights = {k: w for k, w in run.losses.items() if w}
    if unbound := sorted(set(cls.needed_assets(weights)) - set(bound)):
        problems.append(f"{run_id}: its objective needs asset(s) {', '.join(unbound)} (`assets:`)")
    for role, ref in {**bound, **run.init_modules}.items():
        if why := asset_problem(params, ref, runs):
            problems.append(f"{run_id}: {role} from {ref}: {why}")
    train = params.get("train", {})
    selecting = run.task == "sr" and train.get("selection", "last") != "last"
    if selecting and (why := recognizer_problem(params, train["selection_recognizer"], runs)):
        problems.append(f"{run_id}: selection recognizer: {why}")
    if run.init and (why := recognizer_problem(params, run.init, runs)):
        problems.append(f"{run_id} starts from {run.init}: {why}")
    return problems


def run_problem(params, run_id: str, runs: Mapping[str, RunSpec]) -> str | None:
    """Why a run cannot be trained here (None when it can): every reason, joined."""
    problems = run_problems(params, run_id, runs)
    return "; ".join(problems) if problems else None


def run_available(params, run_id: str, runs: Mapping[str, RunSpec]) -> bool:
    return run_problem(params, run_id, runs) is None


def sr_available(params, sr: str, runs: Mapping[str, RunSpec]) -> bool:
    return sr in PSEUDO_SR or run_available(params, sr, runs)


def cell_status(params, src: Mapping[str, Any], runs: Mapping[str, RunSpec]) -> str | None:
    """None when the pipeline computes this cell, else the reason it does not (yet)."""
    if src.get("metric") == "size":
        return None
    sr, rec = src.get("sr"), src.get("recognizer")
    if src.get("metric") in ("psnr", "ssim"):
        rec = None
    if src.get("metric") in COMPLEXITY_METRICS:
        return complexity_problem(params, sr, rec, runs)
    if sr is not None and sr not in PSEUDO_SR and (why := run_problem(params, sr, runs)):
        return why
    if rec is not None and (problem := recognizer_problem(params, rec, runs)):
        return problem
    return None


def complexity_problem(params, sr: str | None, rec: str | None, runs) -> str | None:
    """Parameters and FLOPs are properties of the paper-scale architecture: they need the model
    code and a run setting it implements, not trained weights, so a recognizer that is not trained
    at this scale is still counted."""
    if sr is not None and sr not in PSEUDO_SR and (why := run_problem(params, sr, runs)):
        return why
    if rec is None:
        return None
    resolved = resolve_recognizer(params, rec, runs)
    if resolved.external:
        return f"the complexity of the external recognizer {rec} is not measured"
    if not is_implemented(resolved.model):
        return f"recognizer {rec} not implemented yet"
    if resolved.run and (why := run_problem(params, resolved.run, runs)):
        return f"recognizer {rec}: {why}"
    return None


def cell_job(src: Mapping[str, Any]) -> tuple[str, tuple[str, ...]]:
    """The job that computes a cell: ("eval", (sr, recognizer, testset)) or ("complexity", ...)."""
    metric = src["metric"]
    if metric in COMPLEXITY_METRICS:
        return "complexity", (src.get("sr", "lr"), src.get("recognizer", "none"))
    if metric == "size":  # counted by the HR evaluation without a recognizer
        return "eval", ("hr", "none", src["testset"])
    if metric in ("psnr", "ssim"):  # image quality needs no recognizer
        return "eval", (src.get("sr", "hr"), "none", src["testset"])
    return "eval", (src.get("sr", "hr"), src.get("recognizer", "none"), src["testset"])


def cell_metrics_path(params: Mapping[str, Any], src: Mapping[str, Any]) -> Path:
    """The metrics file a cell reads: the output of `cell_job`."""
    if "testset" not in src and src.get("metric") not in COMPLEXITY_METRICS:
        raise ValueError(f"cell source {src!r} has no testset")
    kind, key = cell_job(src)
    return complexity_path(params, *key) if kind == "complexity" else eval_path(params, *key)


@dataclass(frozen=True)
class Jobs:
    trains: tuple[str, ...]
    evaluations: tuple[tuple[str, str, str], ...]  # (sr, recognizer, testset)
    complexities: tuple[tuple[str, str], ...]  # (sr, recognizer)


def table_jobs(params, table: TableSpec, runs: Mapping[str, RunSpec]) -> Jobs:
    evals: set[tuple[str, str, str]] = set()
    comps: set[tuple[str, str]] = set()
    for row in table.rows:
        if row.derive:
            continue
        for col in table.columns:
            src = table.cell_source(row, col)
            if cell_status(params, src, runs) is not None:
                continue
            kind, key = cell_job(src)
            (comps if kind == "complexity" else evals).add(key)
    trains = set()
    for sr, rec, _ in evals:  # complexity needs architectures only, never trained weights
        trains |= _needed_runs(params, sr, rec, runs)
    return Jobs(tuple(sorted(trains)), tuple(sorted(evals)), tuple(sorted(comps)))


def _needed_runs(params, sr: str, rec: str, runs) -> set[str]:
    """The runs an evaluation reads, and (transitively) the runs they start from or whose
    networks their objectives read (init, init_modules, warm_start, assets)."""
    todo = [] if sr in PSEUDO_SR else [sr]
    if rec != "none" and (r := resolve_recognizer(params, rec, runs)).run:
        todo.append(r.run)
    needed: set[str] = set()
    while todo:
        run_id = todo.pop()
        if run_id in needed:
            continue
        needed.add(run_id)
        run = runs[run_id]
        refs = [*([run.init] if run.init else []), *run.init_modules.values()]
        refs += list(asset_bindings(run).values())
        if start := run.warm_start.get(params["scale"]):
            todo.append(start)
        for ref in refs:
            if not built_asset(ref) and (r := resolve_recognizer(params, ref, runs)).run:
                todo.append(r.run)
    return needed


def _declared(src: Mapping[str, Any], runs: Mapping[str, RunSpec]) -> bool:
    """A source that names declared runs and can exist (no HR image in an STR-format set: a
    figure's HR column there shows the saved images of another evaluation, or says why not)."""
    sr, rec = src.get("sr"), src.get("recognizer")
    testset = load_common().testsets.get(src.get("testset"), {})
    if sr in ("hr", "hr_bicubic_lr") and testset.get("format") != "textzoom":
        return False
    ok_sr = sr in PSEUDO_SR or sr in runs
    return ok_sr and (rec is None or rec in runs or rec in load_common().recognizers)


def figure_jobs(params, spec: PaperSpec, runs: Mapping[str, RunSpec]) -> Jobs:
    """Evaluations (and the runs behind them) the figures of one paper read beyond its tables'
    cells, so that a run only a figure reads is still trained."""
    evals = set()
    for fig in spec.figures:
        for src in figure_sources(fig, spec):
            if _declared(src, runs) and cell_status(params, src, runs) is None:
                evals.add(cell_job(src)[1])
    trains = set()
    for sr, rec, _ in evals:
        trains |= _needed_runs(params, sr, rec, runs)
    return Jobs(tuple(sorted(trains)), tuple(sorted(evals)), ())


def paper_jobs(params, spec: PaperSpec, runs: Mapping[str, RunSpec]) -> Jobs:
    """Everything one paper's tables and figures need (what it costs if run alone)."""
    parts = [*(table_jobs(params, t, runs) for t in spec.tables), figure_jobs(params, spec, runs)]
    return _union(parts)


def all_jobs(params, specs: Mapping[str, PaperSpec]) -> Jobs:
    runs = all_runs(dict(specs))
    return _union([paper_jobs(params, specs[p], runs) for p in params["papers"]])


def _union(parts: list[Jobs]) -> Jobs:
    trains = sorted({r for j in parts for r in j.trains})
    evals = sorted({e for j in parts for e in j.evaluations})
    comps = sorted({c for j in parts for c in j.complexities})
    return Jobs(tuple(trains), tuple(evals), tuple(comps))
