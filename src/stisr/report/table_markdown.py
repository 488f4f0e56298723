"""Paper tables as Markdown: ours beside the paper's number, at the paper's precision, with the
reasons for every cell not computed, the fitted cells and the deviations of the runs behind them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from stisr.papers.spec import Row, TableSpec
from stisr.report.cell_provenance import DONE, comparable, done_word

MISSING = "missing metrics"
_DEFAULT_DECIMALS = {"accuracy": 1, "psnr": 2, "ssim": 4, "params": 2, "flops": 2, "latency": 1}
NO_PAPER = "no paper value"
EMBEDDED_WARNING = (
    "**Warning: these are embedded synthetic-data results, computed to check the pipeline; they "
    "are not reproduced paper numbers and are never a replication.**"
)


def as_number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def paper_values(table: TableSpec, row: Row) -> dict[str, Any]:
    """Column id -> the paper's printed value (extra columns have none)."""
    values = iter(row.paper)
    return {c.id: (None if c.extra else next(values, None)) for c in table.columns}


def _decimals_of(value: Any) -> int:
    text = repr(float(value)) if not isinstance(value, int) else str(value)
    if "e" in text or "." not in text:
        return 0
    frac = text.split(".", 1)[1].rstrip("0")
    return min(len(frac), 4)


def column_decimals(table: TableSpec) -> dict[str, int]:
    """Print ours with the precision the paper prints (per column), else a per-metric default."""
    out = {}
    for col in table.columns:
        srcs = [table.cell_source(r, col) for r in table.rows if not r.derive]
        fmts = {s.get("format") for s in srcs}
        if table.metric_format == "int" or fmts == {"int"}:
            out[col.id] = 0
            continue
        papers = [paper_values(table, r)[col.id] for r in table.rows]
        nums = [p for p in papers if as_number(p) is not None]
        if nums:
            out[col.id] = max(1, max(_decimals_of(p) for p in nums))
        else:
            metrics = [s.get("metric") for s in srcs]
            out[col.id] = max((_DEFAULT_DECIMALS.get(m, 2) for m in metrics), default=2)
    return out


def cell_decimals(table: TableSpec, row: Row, column_id: str, default: int) -> int:
    """A cell's own `format: int` (e.g. a row of image counts) wins over its column's precision."""
    if row.derive:
        return default
    col = next(c for c in table.columns if c.id == column_id)
    src = table.cell_source(row, col)
    return 0 if src.get("format") == "int" or src.get("metric") == "size" else default


def _fmt(value: Any, decimals: int, sign: bool = False) -> str:
    num = as_number(value)
    if num is None:
        return "-" if value is None or _is_nan(value) else str(value)
    return f"{num:+.{decimals}f}" if sign else f"{num:.{decimals}f}"


def _escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def format_cell(
    paper: Any, ours: float | None, status: str, decimals: int, with_delta: bool = False
) -> str:
    """'ours / paper's', with '(delta)' only where the two are comparable (official data at
    paper scale); the paper's number alone, marked, when ours is not computed yet."""
    has_paper = paper is not None and not _is_nan(paper)
    if ours is not None and not _is_nan(ours):
        if not has_paper:
            return _fmt(ours, decimals)
        p_num = as_number(paper)
        delta = ""
        if with_delta and p_num is not None:
            delta = f" ({_fmt(ours - p_num, decimals, sign=True)})"
        return f"{_fmt(ours, decimals)} / {_fmt(paper, decimals)}{delta}"
    mark = "missing" if status.startswith(MISSING) else "n.c."
    return f"{mark} / {_fmt(paper, decimals)}" if has_paper else "-"


def _fitted(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def data_banner(params: Mapping[str, Any]) -> list[str]:
    """The data source/scale header every report page starts with."""
    lines = [
        f"Data source: `{params['source']}`, scale: `{params['scale']}` "
        f"(metrics under `runs/{params['source']}-{params['scale']}/`)."
    ]
    if params["source"] == "embedded":
        lines += ["", f"> {EMBEDDED_WARNING}"]
    elif params["scale"] != "paper":
        lines += ["", f"> Scale `{params['scale']}` uses reduced models and schedules: the numbers "
                      "are not comparable with the paper's."]  # fmt: skip
    return lines


def coverage_of(frame: pd.DataFrame) -> tuple[int, int]:
    """(computed, total) over the cells that carry a paper number."""
    paper_cells = frame[frame["paper"].notna() & ~frame["extra"].astype(bool)]
    return int(paper_cells["status"].isin(DONE).sum()), len(paper_cells)


def table_markdown(
    table: TableSpec,
    frame: pd.DataFrame,
    params: Mapping[str, Any],
    deviations: Sequence[str] = (),
) -> str:
    decimals = column_decimals(table)
    cols = list(table.columns)
    header = ["", *table.text_columns]
    header += [f"{c.label} (extra)" if c.extra else c.label for c in cols]
    lines = [f"# {table.paper} {table.id}: {table.title}", "", *data_banner(params), ""]
    unit = "accuracy in %" if table.metric_format == "percent" else "values as the paper prints"
    with_delta = comparable(params)
    cells = "ours / the paper's (ours - the paper's)" if with_delta else "ours / the paper's"
    lines += [
        f"Cells: {cells}; {unit}. `n.c.` = not computed yet (reasons below); `missing` = a "
        "job should have written the metrics file. Extra columns have no paper number. "
        "The CSV names each cell's inputs, commit and configuration hash."
    ]
    lines.append("")
    if table.caption:
        lines += [table.caption, ""]
    lines.append("| " + " | ".join(_escape(h) for h in header) + " |")
    lines.append("|" + "---|" * len(header))
    by_cell = {(r.row, r.column): r for r in frame.itertuples(index=False)}
    for row in table.rows:
        out = [row.label, *(row.text.get(t, "") for t in table.text_columns)]
        for c in cols:
            cell = by_cell[(row.id, c.id)]
            ours = None if _is_nan(cell.ours) else cell.ours
            paper = None if _is_nan(cell.paper) else cell.paper
            places = cell_decimals(table, row, c.id, decimals[c.id])
            text = format_cell(paper, ours, cell.status, places, with_delta)
            out.append(f"{text} (fitted)" if _fitted(cell.fitted) and ours is not None else text)
        lines.append("| " + " | ".join(_escape(x) for x in out) + " |")
    done, total = coverage_of(frame)
    word = done_word(params)
    fitted = frame[[_fitted(f) for f in frame["fitted"]]]
    note = ""
    if len(fitted):
        note = (f" ({len(fitted)} of them fitted: a choice made to match the paper's number, "
                "so their agreement is not evidence)")  # fmt: skip
    lines += ["", f"Coverage: {done} of {total} paper cells {word}{note}.", ""]
    if len(fitted):
        lines += ["Fitted cells:", ""]
        lines += [f"- {_escape(r.row_label)} / {_escape(r.column_label)}: {_escape(r.fitted)}"
                  for r in fitted.itertuples(index=False)]  # fmt: skip
        lines.append("")
    reasons = frame.loc[~frame["status"].isin(DONE), "status"]
    reasons = reasons[reasons != NO_PAPER].value_counts()
    if len(reasons):
        lines += ["Not computed:", ""]
        lines += [
            f"- {_escape(reason)} ({n} cell{'s' if n != 1 else ''})"
            for reason, n in sorted(reasons.items())
        ]
        lines.append("")
    if deviations:
        lines += ["Deviations from the paper's setting in the runs behind these cells:", ""]
        lines += [f"- {_escape(d)}" for d in deviations]
        lines.append("")
    return "\n".join(lines)
