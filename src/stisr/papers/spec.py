"""Typed loader and validator of the paper specs (the single place that says what a paper is).

A spec declares runs, tables (every cell with the paper's number and where ours comes from) and
figures; see docs/ARCHITECTURE.md. Validation happens at load time so that a typo in a spec stops
the workflow before any job starts, with the file and the offending key in the message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

# The shipped specs; STISR_SPEC_DIR points the planner and every job at an edited copy (an
# experiment with changed loss weights, say) without touching the package.
SPEC_DIR = Path(os.environ.get("STISR_SPEC_DIR") or Path(__file__).parent)
PAPERS = ("tsrn", "lemma", "image", "kdltr", "tcdm")
PSEUDO_SR = ("lr", "hr", "hr_bicubic_lr", "bicubic")
METRICS = ("accuracy", "psnr", "ssim", "params", "flops", "latency", "size")
CELL_KEYS = ("sr", "recognizer", "testset", "subset", "metric", "scale", "format")


class SpecError(ValueError):
    """A paper spec is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class RunSpec:
    """One training run: `id` is qualified as `<paper>/<run>`."""

    id: str
    task: str
    model: str
    model_config: dict[str, Any] = field(default_factory=dict)
    losses: dict[str, float] = field(default_factory=dict)
    train_set: str = "textzoom_train"
    init: str | None = None
    # Per-scale overrides of params.yaml `scales.<scale>.<task>` (`scales: {demo: {steps: ..}}`):
    # recognizers differ several-fold in cost per step, so one step count cannot fit them all.
    scales: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Frozen networks the objective reads: role -> asset (common.yaml `assets`), recognizer or run
    assets: dict[str, str] = field(default_factory=dict)
    # Partial init: sub-module of the model -> the recognizer or run whose weights it starts from
    init_modules: dict[str, str] = field(default_factory=dict)
    # Scale -> run whose weights this run starts from where names and shapes match (a labelled
    # demo shortcut: ablations fine-tune a shared run instead of training from scratch)
    warm_start: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def paper(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def name(self) -> str:
        return self.id.split("/", 1)[1]


@dataclass(frozen=True)
class Column:
    id: str
    label: str
    source: dict[str, Any]
    extra: bool = False  # an extra column (e.g. an independent judge) with no paper number


@dataclass(frozen=True)
class Row:
    id: str
    label: str
    source: dict[str, Any]
    paper: tuple[float | None, ...]
    text: dict[str, str] = field(default_factory=dict)
    derive: dict[str, str] | None = None
    cells: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class TableSpec:
    paper: str
    id: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    defaults: dict[str, Any] = field(default_factory=dict)
    text_columns: tuple[str, ...] = ()
    metric_format: str = "percent"
    caption: str = ""

    @property
    def key(self) -> str:
        return f"{self.paper}/{self.id}"

    def cell_source(self, row: Row, column: Column) -> dict[str, Any]:
        """Where a cell's value comes from: defaults <- column <- row <- row.cells[column]."""
        src = {**self.defaults, **column.source, **row.source, **row.cells.get(column.id, {})}
        for ref_key in ("sr", "recognizer"):
            if ref_key in src:
                src[ref_key] = qualify(self.paper, src[ref_key], ref_key)
        return src


@dataclass(frozen=True)
class FigureSpec:
    paper: str
    id: str
    title: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.paper}/{self.id}"


@dataclass(frozen=True)
class PaperSpec:
    paper: str
    title: str
    venue: str
    runs: dict[str, RunSpec]
    tables: tuple[TableSpec, ...]
    figures: tuple[FigureSpec, ...]
    text: str = ""
    code: str = ""


@dataclass(frozen=True)
class Common:
    recognizers: dict[str, dict[str, Any]]
    testsets: dict[str, dict[str, Any]]
    train_sets: dict[str, dict[str, list[str]]]
    assets: dict[str, dict[str, Any]] = field(default_factory=dict)


def qualify(paper: str, ref: str, kind: str = "sr") -> str:
    """Qualify a run reference with its paper unless it is global (pseudo input, catalogue)."""
    if "/" in ref or ref in PSEUDO_SR:
        return ref
    if kind == "recognizer" and ref in load_common().recognizers:
        return ref
    return f"{paper}/{ref}"


@cache
def load_common() -> Common:
    path = SPEC_DIR / "common.yaml"
    data = _read_yaml(path)
    for key in ("recognizers", "testsets", "train_sets"):
        if not isinstance(data.get(key), dict):
            raise SpecError(f"{path}: '{key}' must be a mapping")
    for name, ts in data["testsets"].items():
        for req in ("format", "subsets", "data"):
            if req not in ts:
                raise SpecError(f"{path}: testsets.{name} lacks '{req}'")
    assets = data.get("assets") or {}
    if not isinstance(assets, dict):
        raise SpecError(f"{path}: 'assets' must be a mapping")
    return Common(data["recognizers"], data["testsets"], data["train_sets"], assets)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SpecError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise SpecError(f"{path}: top level must be a mapping")
    return data


def _pick_source(d: dict[str, Any], where: str) -> dict[str, Any]:
    src = {k: d[k] for k in CELL_KEYS if k in d}
    metric = src.get("metric")
    if metric is not None and metric not in METRICS:
        raise SpecError(f"{where}: unknown metric {metric!r} (known: {', '.join(METRICS)})")
    return src


def _parse_scales(raw: Any, where: str) -> dict[str, dict[str, Any]]:
    """A run's `scales`, checked against the params.yaml schema of a scale's task settings."""
    from stisr.config import ParamsError, check_task_overrides

    if raw is None:
        return {}
    try:
        return check_task_overrides(raw, where)
    except ParamsError as err:
        raise SpecError(str(err)) from None


def _ref_map(paper: str, raw: Any, where: str) -> dict[str, str]:
    """`{role: ref}` with run references qualified by their paper (assets stay global)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise SpecError(f"{where}: must map names to recognizer, asset or run references")
    assets = load_common().assets
    return {str(k): v if v in assets else qualify(paper, v, "recognizer") for k, v in raw.items()}


def _warm_start(paper: str, raw: Any, where: str) -> dict[str, str]:
    """`{scale: run}` with the run qualified by its paper."""
    from stisr.config import scales

    if raw is None:
        return {}
    known = scales()
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise SpecError(f"{where}: must map scales ({', '.join(known)}) to run references")
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise SpecError(f"{where}: unknown scale(s) {unknown}; scales: {', '.join(known)}")
    return {str(k): qualify(paper, v) for k, v in raw.items()}


def parse_spec(path: Path) -> PaperSpec:
    """Parse one spec file; structural errors name the file and the key path."""
    data = _read_yaml(path)
    for req in ("paper", "title"):
        if req not in data:
            raise SpecError(f"{path}: missing top-level key '{req}'")
    paper = str(data["paper"])
    runs: dict[str, RunSpec] = {}
    for name, r in (data.get("runs") or {}).items():
        where = f"{path}: runs.{name}"
        if not isinstance(r, dict) or "model" not in r or r.get("task") not in ("sr", "rec"):
            raise SpecError(f"{where}: needs 'model' and 'task' (sr|rec)")
        known = {"task", "model", "model_config", "losses", "train_set", "init", "scales"}
        known |= {"assets", "init_modules", "warm_start"}
        train_set = r.get("train_set", "textzoom_train")
        if train_set not in load_common().train_sets:
            known_sets = ", ".join(load_common().train_sets)
            raise SpecError(f"{where}.train_set: {train_set!r} not one of {known_sets}")
        runs[name] = RunSpec(
            id=f"{paper}/{name}",
            task=r["task"],
            model=str(r["model"]),
            model_config=dict(r.get("model_config") or {}),
            losses={k: float(v) for k, v in (r.get("losses") or {}).items()},
            train_set=train_set,
            init=qualify(paper, str(r["init"]), "recognizer") if r.get("init") else None,
            scales=_parse_scales(r.get("scales"), f"{where}.scales"),
            assets=_ref_map(paper, r.get("assets"), f"{where}.assets"),
            init_modules=_ref_map(paper, r.get("init_modules"), f"{where}.init_modules"),
            warm_start=_warm_start(paper, r.get("warm_start"), f"{where}.warm_start"),
            extra={k: v for k, v in r.items() if k not in known},
        )
    tables = tuple(_parse_table(paper, t, path) for t in data.get("tables") or [])
    figures = []
    for f in data.get("figures") or []:
        if not isinstance(f, dict) or not {"id", "title", "kind"} <= f.keys():
            raise SpecError(f"{path}: figure {f!r} needs id, title and kind")
        opts = {k: v for k, v in f.items() if k not in ("id", "title", "kind")}
        figures.append(FigureSpec(paper, str(f["id"]), str(f["title"]), str(f["kind"]), opts))
    return PaperSpec(
        paper=paper,
        title=str(data["title"]),
        venue=str(data.get("venue", "")),
        runs=runs,
        tables=tables,
        figures=tuple(figures),
        text=str(data.get("text", "")),
        code=str(data.get("code", "")),
    )


def _parse_table(paper: str, t: dict[str, Any], path: Path) -> TableSpec:
    tid = t.get("id")
    where = f"{path}: tables.{tid}"
    if not tid or "columns" not in t or "rows" not in t:
        raise SpecError(f"{where}: a table needs id, columns and rows")
    columns = []
    for extra, key in ((False, "columns"), (True, "extra_columns")):
        for c in t.get(key) or []:
            if "id" not in c:
                raise SpecError(f"{where}.{key}: column without id: {c!r}")
            columns.append(
                Column(str(c["id"]), str(c.get("label", c["id"])), _pick_source(c, where), extra)
            )
    n_paper = sum(not c.extra for c in columns)
    rows = []
    for r in t["rows"]:
        rid = str(r.get("id"))
        rwhere = f"{where}.rows.{rid}"
        paper_vals = r.get("paper")
        if paper_vals is None:
            paper_vals = [None] * n_paper
        if not isinstance(paper_vals, list) or len(paper_vals) != n_paper:
            raise SpecError(f"{rwhere}.paper: needs {n_paper} values (one per column)")
        cells = r.get("cells") or {}
        for cid, c in cells.items():
            if cid not in {col.id for col in columns}:
                raise SpecError(f"{rwhere}.cells: unknown column {cid!r}")
            _pick_source(c, rwhere)
        rows.append(
            Row(
                id=rid,
                label=str(r.get("label", rid)),
                source=_pick_source(r, rwhere),
                paper=tuple(None if v is None else v for v in paper_vals),
                text={str(k): str(v) for k, v in (r.get("text") or {}).items()},
                derive=r.get("derive"),
                cells={k: dict(v) for k, v in cells.items()},
            )
        )
    ids = [r.id for r in rows]
    for r in rows:
        if r.derive:
            for k in ("a", "b"):
                if r.derive.get(k) not in ids:
                    raise SpecError(f"{where}.rows.{r.id}.derive.{k}: no row {r.derive.get(k)!r}")
            if r.derive.get("op") not in ("sub", "add", "ratio"):
                raise SpecError(f"{where}.rows.{r.id}.derive.op: use sub, add or ratio")
    fmt = t.get("metric_format", "percent")
    if fmt not in ("percent", "float", "int", "text"):
        raise SpecError(f"{where}.metric_format: {fmt!r} not one of percent, float, int, text")
    return TableSpec(
        paper=paper,
        id=str(tid),
        title=str(t.get("title", tid)),
        columns=tuple(columns),
        rows=tuple(rows),
        defaults=_pick_source(t.get("defaults") or {}, where),
        text_columns=tuple(str(x) for x in t.get("text_columns") or []),
        metric_format=fmt,
        caption=str(t.get("caption", "")),
    )


@cache
def load_specs() -> dict[str, PaperSpec]:
    """All specs shipped with the package (the five papers plus the recognizer zoo)."""
    specs = {}
    for path in sorted(SPEC_DIR.glob("*.yaml")):
        if path.name == "common.yaml":
            continue
        spec = parse_spec(path)
        specs[spec.paper] = spec
    validate_references(specs)
    return specs


def all_runs(specs: dict[str, PaperSpec]) -> dict[str, RunSpec]:
    return {run.id: run for spec in specs.values() for run in spec.runs.values()}


def validate_references(specs: dict[str, PaperSpec]) -> None:
    """Every run, recognizer and test set a cell names must be declared somewhere."""
    common = load_common()
    runs = all_runs(specs)
    for spec in specs.values():
        for table in spec.tables:
            for row in table.rows:
                if row.derive:
                    continue
                for col in table.columns:
                    src = table.cell_source(row, col)
                    where = f"{table.key} row {row.id!r} column {col.id!r}"
                    _check_cell(src, where, runs, common)
        for run in spec.runs.values():
            if run.init and run.init not in common.recognizers and run.init not in runs:
                raise SpecError(f"{run.id}.init: {run.init!r} is neither a recognizer nor a run")
            refs = {**run.assets, **run.init_modules}
            for key, ref in refs.items():
                if ref not in common.recognizers and ref not in runs and ref not in common.assets:
                    raise SpecError(f"{run.id}: {key}: {ref!r} is not an asset, recognizer or run")
            for scale, ref in run.warm_start.items():
                if ref == run.id or getattr(runs.get(ref), "model", None) != run.model:
                    where = f"{run.id}.warm_start.{scale}"
                    raise SpecError(f"{where}: {ref!r} is not another run of {run.model!r}")


def _check_cell(src: dict, where: str, runs: dict[str, RunSpec], common: Common) -> None:
    if src.get("metric") is None:
        raise SpecError(f"{where}: no metric")
    if src["metric"] == "size":
        pass
    elif src["metric"] in ("params", "flops", "latency"):
        if "sr" not in src and "recognizer" not in src:
            raise SpecError(f"{where}: a complexity cell needs 'sr' or 'recognizer'")
    else:
        needed = ("sr",) if src["metric"] in ("psnr", "ssim") else ("sr", "recognizer")
        for key in needed:
            if key not in src:
                raise SpecError(f"{where}: no {key}")
    sr = src.get("sr")
    if sr is not None and sr not in PSEUDO_SR and sr not in runs:
        raise SpecError(f"{where}: sr {sr!r} is not a declared run")
    rec = src.get("recognizer")
    is_rec_run = rec in runs and runs[rec].task == "rec"
    if rec is not None and rec not in common.recognizers and not is_rec_run:
        raise SpecError(f"{where}: recognizer {rec!r} is neither in common.yaml nor a rec run")
    ts = src.get("testset")
    if src["metric"] not in ("params", "flops", "latency"):
        if ts not in common.testsets:
            raise SpecError(f"{where}: testset {ts!r} is not in common.yaml")
        subsets = common.testsets[ts]["subsets"]
        allowed = list(subsets) + (["average"] if common.testsets[ts].get("average") else [])
        if src.get("subset") not in allowed:
            raise SpecError(f"{where}: subset {src.get('subset')!r} not one of {allowed}")
