"""Accuracy figures: `accuracy_by_method` (one point per table row) and `accuracy_vs_param`.

Split from :mod:`stisr.report.figures`: both kinds plot accuracy lines, ours next to the paper's
values, from the same metric files as the tables; the image grids live in `figure_grid`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from stisr.papers import plan
from stisr.papers.spec import FigureSpec, PaperSpec, RunSpec, TableSpec, load_common, qualify
from stisr.report.cell_provenance import DONE
from stisr.report.figure_base import (
    NotReproduced,
    Rendered,
    check_ref,
    figure_source,
    new_figure,
)
from stisr.report.tables import cell_value, compute_table

__all__ = ["accuracy_by_method", "accuracy_vs_param"]


# --- accuracy_by_method ---------------------------------------------------------------------------


def _find_table(fig: FigureSpec, spec: PaperSpec) -> TableSpec:
    tid = fig.options.get("table")
    for table in spec.tables:
        if table.id == tid:
            return table
    raise NotReproduced(f"spec problem: options.table {tid!r} is not a table of {spec.paper}")


def accuracy_by_method(
    fig: FigureSpec, params: Mapping[str, Any], runs: Mapping[str, RunSpec], spec: PaperSpec
) -> Rendered:
    table = _find_table(fig, spec)
    opts = fig.options
    by_id = {r.id: r for r in table.rows}
    row_ids = opts.get("rows") or [r.id for r in table.rows if not r.derive]
    missing_rows = [r for r in row_ids if r not in by_id]
    if missing_rows:
        raise NotReproduced(f"spec problem: rows {missing_rows} not in {table.key}")
    rows = [by_id[r] for r in row_ids]
    subset = opts.get("subset", "average")
    recognizers = [qualify(fig.paper, str(r), "recognizer") for r in opts.get("recognizers") or []]
    if not recognizers:
        recognizers = sorted({str(table.cell_source(rows[0], c).get("recognizer")) for c in
                              table.columns if not c.extra} - {"None"})  # fmt: skip
    frame = compute_table(table, params, runs).set_index(["row", "column"])
    ours: dict[str, list[float]] = {}
    paper: dict[str, list[float]] = {}
    reasons: list[str] = []
    for rec in recognizers:
        ours[rec], paper[rec] = [], []
        for row in rows:
            col = plan.recognizer_column(table, row, rec, subset)
            if col is None:
                raise NotReproduced(f"spec problem: {table.key} has no {rec} {subset} column")
            cell = frame.loc[(row.id, col.id)]
            ok = cell["status"] in DONE or cell["status"] == "no paper value"
            ours[rec].append(float(cell["ours"]) if ok else np.nan)
            paper[rec].append(_num(cell["paper"]))
            if not ok:
                reasons.append(f"{row.label}/{rec}: {cell['status']}")
    baselines = plan.figure_baseline_sources(fig, spec)
    n_total = len(rows) * len(recognizers) + len(baselines)
    if len(reasons) == len(rows) * len(recognizers):
        raise NotReproduced(f"no point computed ({reasons[0]})" if reasons else "no points")
    percent = table.metric_format == "percent"
    figure = new_figure(max(6.0, 0.75 * len(rows) + 2.5), 4.2)
    ax = figure.add_subplot()
    xs = np.arange(len(rows))
    colors = [f"C{i}" for i in range(len(recognizers))]
    baseline = opts.get("baseline") or {}
    for rec, color in zip(recognizers, colors, strict=True):
        name = _rec_label(rec)
        ax.plot(xs, ours[rec], "-o", color=color, label=f"{name} (ours)", ms=4)
        ax.plot(xs + 0.15, paper[rec], "D", color=color, alpha=0.3, mfc="none",
                label=f"{name} (paper)", ms=4)  # fmt: skip
        if rec in baselines:
            check_ref(baselines[rec]["sr"], "sr", runs)
            value, why, *_ = cell_value(params, baselines[rec], runs, table.metric_format)
            if value is None:
                reasons.append(f"{baseline['sr']}/{rec}: {why}")
            else:
                style = ":" if baseline.get("style", "dotted") == "dotted" else "--"
                ax.axhline(value, ls=style, color=color, lw=1, label=f"{name} {baseline['sr']}")
    ax.set_xticks(xs, [r.label for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"accuracy{' (%)' if percent else ''} - {subset}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="best")
    ax.set_title(fig.title, fontsize=9)
    figure.tight_layout()
    reason = None
    if reasons:
        n_done = n_total - len(reasons)
        reason = f"{n_done} of {n_total} points computed; first missing: {reasons[0]}"
    return figure, reason


def _rec_label(rec: str) -> str:
    return str(load_common().recognizers.get(rec, {}).get("label", rec))


def _num(value: Any) -> float:
    try:
        return float(value) if value is not None else np.nan
    except (TypeError, ValueError):
        return np.nan


# --- accuracy_vs_param ----------------------------------------------------------------------------


def accuracy_vs_param(
    fig: FigureSpec, params: Mapping[str, Any], runs: Mapping[str, RunSpec], spec: PaperSpec
) -> Rendered:
    """Curves over a swept parameter; each point names the evaluation it reads.

    Options: `points: [{x, sr, recognizer, paper}]` (one curve) or `series: [{label, points}]`;
    testset/subset/sr/recognizer at the figure or series level are defaults for the points.
    Accuracy is plotted in percent.
    """
    opts = fig.options
    if opts.get("points"):
        series = [{"label": opts.get("label", "ours"), "points": opts["points"]}]
    else:
        series = list(opts.get("series") or [])
    if not series:
        raise NotReproduced("the figure options list no evaluation points (points: [{x, sr, ...}])")
    for s in series:
        if not s.get("points"):
            sweep = " over a degradation" if opts.get("degradation") else ""
            raise NotReproduced(
                f"series {s.get('label', '?')!r} names no evaluation per x value; the pipeline has "
                f"no job for this sweep{sweep}"
            )
    figure = new_figure(6.0, 4.0)
    ax = figure.add_subplot()
    reasons: list[str] = []
    metrics: set[str] = set()
    n_total = 0
    for i, s in enumerate(series):
        xs, ours, paper = [], [], []
        for pt in s["points"]:
            if "x" not in pt:
                raise NotReproduced(f"spec problem: a point of series {s.get('label')!r} has no x")
            src = figure_source(fig, runs, {"metric": "accuracy"}, opts, s, pt)
            if "testset" not in src:
                raise NotReproduced("spec problem: points name no testset")
            value, status, *_ = cell_value(params, src, runs, "percent")
            metrics.add(str(src["metric"]))
            xs.append(float(pt["x"]))
            ours.append(np.nan if value is None else value)
            paper.append(_num(pt.get("paper")))
            n_total += 1
            if value is None:
                reasons.append(f"x={pt['x']}: {status}")
        name = str(s.get("label", "ours"))
        mine, theirs = (
            ("ours", "paper") if name == "ours" else (f"{name} (ours)", f"{name} (paper)")
        )
        ax.plot(xs, ours, "-o", color=f"C{i}", label=mine, ms=4)
        if not np.all(np.isnan(paper)):
            ax.plot(xs, paper, "D", color=f"C{i}", alpha=0.3, mfc="none", label=theirs)
    if len(reasons) == n_total:
        raise NotReproduced(f"no point computed ({reasons[0]})")
    if opts.get("x_scale") in ("log", "linear"):
        ax.set_xscale(opts["x_scale"])
    ax.set_xlabel(str(opts.get("x_label", opts.get("param", "x"))))
    ax.set_ylabel(" / ".join(f"{m} (%)" if m == "accuracy" else m for m in sorted(metrics)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(fig.title, fontsize=9)
    figure.tight_layout()
    reason = None
    if reasons:
        reason = (
            f"{n_total - len(reasons)} of {n_total} points computed; first missing: {reasons[0]}"
        )
    return figure, reason
