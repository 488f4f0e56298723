"""What the figures of a spec read: pure spec logic (no params, no files).

The planner (`plan.figure_jobs`) turns these sources into evaluations and runs, and the renderers
(`report/figures.py`) read the same sources, so a figure never plots a point nobody computed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stisr.papers.spec import FigureSpec, PaperSpec, TableSpec, qualify


def recognizer_column(table: TableSpec, row: Any, rec: str, subset: str) -> Any | None:
    """The column of `table` whose cell in `row` is read by `rec` on `subset` (None if none)."""
    for col in table.columns:
        src = table.cell_source(row, col)
        if src.get("recognizer") == rec and src.get("subset") == subset:
            return col
    return None


def figure_baseline_sources(fig: FigureSpec, spec: PaperSpec) -> dict[str, dict[str, Any]]:
    """Recognizer -> cell source of the reference line of an `accuracy_by_method` figure (e.g.
    LR read by each recognizer): the first plotted row's cell with `baseline.sr` as its input.
    These cells are in no table, so the workflow plans their evaluations from here."""
    opts = fig.options
    baseline = opts.get("baseline") or {}
    if fig.kind != "accuracy_by_method" or not baseline.get("sr"):
        return {}
    table = next(t for t in spec.tables if t.id == opts.get("table"))
    row_ids = opts.get("rows") or [r.id for r in table.rows if not r.derive]
    first = next(r for r in table.rows if r.id == row_ids[0])
    subset = opts.get("subset", "average")
    out = {}
    for rec in opts.get("recognizers") or []:
        rec = qualify(fig.paper, str(rec), "recognizer")
        if (col := recognizer_column(table, first, rec, subset)) is not None:
            src = table.cell_source(first, col)
            out[rec] = {**src, "sr": qualify(fig.paper, str(baseline["sr"]))}
    return out


FIGURE_SOURCE_KEYS = ("sr", "recognizer", "testset", "subset", "metric", "scale")


def merge_source(paper: str, *layers: Mapping[str, Any]) -> dict[str, Any]:
    """Merge cell-source keys of figure options (later layers win), references qualified."""
    src: dict[str, Any] = {}
    for layer in layers:
        src.update({k: layer[k] for k in FIGURE_SOURCE_KEYS if layer.get(k) is not None})
    for key in ("sr", "recognizer"):
        if key in src:
            src[key] = qualify(paper, str(src[key]), key)
    return src


def figure_sources(fig: FigureSpec, spec: PaperSpec) -> list[dict[str, Any]]:
    """Every cell source a figure reads beyond its tables' cells: reference lines, the points of
    a swept parameter (e.g. KD-LTR's temperatures), the columns of an image grid."""
    out = list(figure_baseline_sources(fig, spec).values())
    opts = fig.options
    if fig.kind == "accuracy_vs_param":
        series = [{"points": opts["points"]}] if opts.get("points") else opts.get("series") or []
        for s in series:
            for pt in s.get("points") or []:
                out.append(merge_source(fig.paper, {"metric": "accuracy"}, opts, s, pt))
    elif fig.kind == "image_grid" and opts.get("testset"):
        base = {"metric": "accuracy", "testset": opts["testset"]}
        for col in opts.get("columns") or []:
            out.append(merge_source(fig.paper, base, opts, col))
    return [s for s in out if "testset" in s and "sr" in s]
