"""Paper tables: spec cells + metric files -> a long CSV (one row per cell) and a wide Markdown.

Every cell says where its number comes from and, when there is none, why: the model is not
implemented yet, or a job that should have written the metrics did not ("missing metrics", which a
finished pipeline never shows). Numbers are read from the files `stisr.papers.plan` names, so the
report and the workflow cannot disagree about a cell's source. Each CSV row carries the data source,
scale, commit and configuration hash of its number (report/cell_provenance.py); a number is
"computed" unless it was made on official data at paper scale, where it is "reproduced" and shown
with its difference from the paper's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from stisr.atomic_io import atomic_write_text
from stisr.engine.train_config import config_hash
from stisr.papers import plan
from stisr.papers.spec import CELL_KEYS, RunSpec, TableSpec
from stisr.report.cell_provenance import (
    DONE,
    CellIdentity,
    comparable,
    done_word,
    recorded_commit,
    report_commit,
    run_deviations,
)
from stisr.report.table_markdown import (
    MISSING,
    NO_PAPER,
    as_number,
    paper_values,
    table_markdown,
)

FRAME_COLUMNS = (
    "table",
    "row",
    "row_label",
    "column",
    "column_label",
    "paper",
    "ours",
    "delta",
    "status",
    "inputs",
    "extra",
    "source",
    "scale",
    "commit",
    "params_hash",
    "fitted",
)
NOT_YET = "not computed yet"
_COMPLEXITY_KEYS = {"params": "params", "flops": "flops", "latency": "latency_ms"}


def read_json(path: Path, cache: dict[Path, Any] | None = None) -> Any:
    """Parse a metrics file; a corrupt one is an error naming the file (writes are atomic)."""
    if cache is not None and path in cache:
        return cache[path]
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if cache is not None:
        cache[path] = data
    return data


def metric_scale(src: Mapping[str, Any], metric_format: str) -> float:
    """Display factor: the paper prints accuracy in percent and parameters in millions."""
    if src.get("scale") is not None:
        return float(src["scale"])
    metric = src.get("metric")
    if metric == "accuracy":
        return 100.0 if metric_format == "percent" else 1.0
    if metric == "params":
        return 1e-6
    return 1.0


def metrics_path(params: Mapping[str, Any], src: Mapping[str, Any]) -> Path:
    """The file the pipeline writes for this cell (the job `plan.cell_job` plans for it)."""
    return plan.cell_metrics_path(params, src)


class CellValue(NamedTuple):
    value: float | None  # display-scaled; None unless the status is computed (or reproduced)
    status: str
    commit: str | None = None  # the commit that computed it, when its metrics file says
    fitted: str | None = None  # why the number was chosen to match the paper's (no evidence)


def cell_value(
    params: Mapping[str, Any],
    src: Mapping[str, Any],
    runs: Mapping[str, RunSpec],
    metric_format: str = "percent",
    cache: dict[Path, Any] | None = None,
) -> CellValue:
    """One cell's number, status and provenance, from the metrics file the plan names."""
    reason = plan.cell_status(params, src, runs)
    if reason is not None:
        return CellValue(None, f"{NOT_YET}: {reason}")
    path = metrics_path(params, src)
    if not path.is_file():
        return CellValue(None, f"{MISSING}: {path}")
    data = read_json(path, cache)
    metric = src["metric"]
    if metric in _COMPLEXITY_KEYS:
        raw = data.get(_COMPLEXITY_KEYS[metric]) if isinstance(data, dict) else None
        where = f"{_COMPLEXITY_KEYS[metric]} in {path}"
    else:
        subsets = data.get("subsets", {}) if isinstance(data, dict) else {}
        subset = src.get("subset")
        raw = subsets.get(subset, {}).get(metric) if isinstance(subsets, dict) else None
        where = f"{metric} of subset {subset} in {path}"
    commit = recorded_commit(data)
    if raw is None:
        return CellValue(None, f"{NOT_YET}: no {where}", commit)
    fitted = (data.get("fitted") or {}).get(metric) if metric in _COMPLEXITY_KEYS else None
    value = float(raw) * metric_scale(src, metric_format)
    return CellValue(value, done_word(params), commit, fitted)


# --- the table -----------------------------------------------------------------------------------


def compact_source(src: Mapping[str, Any]) -> str:
    return " ".join(f"{k}={src[k]}" for k in CELL_KEYS if k in src)


def _derive(op: str, a: float, b: float) -> float | None:
    if op == "sub":
        return a - b
    if op == "add":
        return a + b
    return None if b == 0 else a / b  # ratio


def compute_table(
    table: TableSpec, params: Mapping[str, Any], runs: Mapping[str, RunSpec]
) -> pd.DataFrame:
    """One row per cell (long format): the paper's number, ours, the delta (official data at
    paper scale only), the status and the cell's provenance."""
    cache: dict[Path, Any] = {}
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    ident = CellIdentity(params, runs)
    for row in table.rows:
        if row.derive:
            continue
        for col in table.columns:
            src = table.cell_source(row, col)
            value, status, commit, fitted = cell_value(
                params, src, runs, table.metric_format, cache
            )
            cells[(row.id, col.id)] = {
                "ours": value,
                "status": status,
                "inputs": compact_source(src),
                "commit": commit,
                "params_hash": ident.of(src) if status in DONE else None,
                "fitted": fitted,
            }
    for row in table.rows:  # derived rows after all their inputs (a derived row may use another)
        if not row.derive:
            continue
        op, a, b = row.derive["op"], row.derive["a"], row.derive["b"]
        for col in table.columns:
            ca, cb = cells.get((a, col.id)), cells.get((b, col.id))
            value, status = None, f"{NOT_YET}: rows {a} and {b} come after this derived row"
            if ca is not None and cb is not None:
                value, status = _derive_cell(op, a, b, ca, cb, done_word(params))
            both = [c for c in (ca, cb) if c is not None]
            commits = {c["commit"] for c in both if c["commit"]}
            cells[(row.id, col.id)] = {
                "ours": value,
                "status": status,
                "inputs": f"{op}({a}, {b})",
                "commit": commits.pop() if len(commits) == 1 else None,
                "params_hash": (
                    config_hash([c["params_hash"] for c in both])[:12] if status in DONE else None
                ),
                "fitted": "; ".join(c["fitted"] for c in both if c["fitted"]) or None,
            }
    fallback_commit = report_commit()  # files that record no commit: the report's checkout
    with_delta = comparable(params)
    records = []
    for row in table.rows:
        papers = paper_values(table, row)
        for col in table.columns:
            cell = cells[(row.id, col.id)]
            paper, ours = papers[col.id], cell["ours"]
            status = cell["status"]
            if status in DONE and papers[col.id] is None:
                status = NO_PAPER
            p_num = as_number(paper)
            delta = ours - p_num if with_delta and ours is not None and p_num is not None else None
            records.append({
                "table": table.id, "row": row.id, "row_label": row.label, "column": col.id,
                "column_label": col.label, "paper": paper, "ours": ours, "delta": delta,
                "status": status, "inputs": cell["inputs"], "extra": col.extra,
                "source": params["source"], "scale": params["scale"],
                "commit": cell["commit"] or fallback_commit, "params_hash": cell["params_hash"],
                "fitted": cell["fitted"],
            })  # fmt: skip
    return pd.DataFrame.from_records(records, columns=list(FRAME_COLUMNS))


def _derive_cell(
    op: str, a: str, b: str, ca: Mapping[str, Any], cb: Mapping[str, Any], done: str
) -> tuple[float | None, str]:
    for cell in (ca, cb):
        if cell["status"].startswith(MISSING):
            return None, cell["status"]
    for name, cell in ((a, ca), (b, cb)):
        if cell["ours"] is None:
            reason = cell["status"].removeprefix(f"{NOT_YET}: ")
            return None, f"{NOT_YET}: row {name}: {reason}"
    value = _derive(op, ca["ours"], cb["ours"])
    if value is None:
        return None, f"{NOT_YET}: row {b} is 0 (ratio undefined)"
    return value, done


def write_table(
    table: TableSpec, params: Mapping[str, Any], runs: Mapping[str, RunSpec], out_dir: Path
) -> list[Path]:
    """Write `<out_dir>/<paper>/<table>.csv` (long) and `.md` (wide), atomically."""
    frame = compute_table(table, params, runs)
    base = Path(out_dir) / table.paper / table.id
    csv_path = atomic_write_text(base.with_suffix(".csv"), frame.to_csv(index=False))
    markdown = table_markdown(table, frame, params, run_deviations(table, params, runs))
    md_path = atomic_write_text(base.with_suffix(".md"), markdown)
    return [csv_path, md_path]
