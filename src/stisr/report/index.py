"""results/<source>-<scale>/README.md: which paper cells and figures are computed, with links.

The index reads what `write_table` (CSV) and `write_figure` (JSON status next to the PNG) wrote,
so it costs no recomputation; with the specs it also counts what has not been generated yet, so
that an unfinished run can never look like full coverage. Every file it lists must come from the
data source and scale it states: a table or figure of another source or scale is an error naming
the file, never a silent mix.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from stisr.atomic_io import atomic_write_text
from stisr.papers.spec import PaperSpec, TableSpec
from stisr.report.cell_provenance import done_word
from stisr.report.table_markdown import coverage_of, data_banner

NOT_GENERATED = "not generated yet"


def paper_cell_count(table: TableSpec) -> int:
    """Cells of the table that carry a paper number (the denominator of coverage)."""
    return sum(v is not None for row in table.rows for v in row.paper)


def _check_origin(path: Path, found: set[tuple[str, str]], expected: tuple[str, str] | None):
    if expected is not None and found and found != {expected}:
        got = ", ".join(f"{s}-{c}" for s, c in sorted(found))
        raise ValueError(
            f"{path}: made from {got}, not {expected[0]}-{expected[1]}: results of different "
            "data sources or scales are never mixed in one index (regenerate it, or point "
            "the index at that results folder)"
        )


def read_table_csv(path: Path, origin: tuple[str, str] | None = None) -> tuple[int, int]:
    """(computed, total) paper cells of one table CSV written by `write_table`; with `origin`
    (source, scale), a CSV made from other data or another scale is an error."""
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a table CSV written by stisr ({err})") from err
    missing = {"paper", "status", "extra", "source", "scale"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path}: not a table CSV written by stisr (no {sorted(missing)})")
    _check_origin(path, set(zip(frame["source"], frame["scale"], strict=True)), origin)
    frame["extra"] = frame["extra"].astype(str).str.lower() == "true"
    return coverage_of(frame)


def read_figure_status(path: Path, origin: tuple[str, str] | None = None) -> dict[str, Any]:
    try:
        status = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(status, dict) or "computed" not in status:
        raise ValueError(f"{path}: not a figure status (no 'computed')")
    _check_origin(path, {(status.get("source"), status.get("scale"))}, origin)
    return status


def coverage(
    results_dir: Path,
    specs: Mapping[str, PaperSpec] | None = None,
    origin: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Counts of computed paper cells and figures.

    Without `specs`, from the files under `results_dir` only; with them, every table and figure
    the specs declare counts, and those not written yet count as not computed. With `origin`
    (source, scale), every file must come from it.
    """
    results_dir = Path(results_dir)
    tables: dict[str, dict[str, Any]] = {}
    figures: dict[str, dict[str, Any]] = {}
    if specs is None:
        for csv in sorted(results_dir.glob("*/*.csv")):
            done, total = read_table_csv(csv, origin)
            tables[f"{csv.parent.name}/{csv.stem}"] = {"computed": done, "total": total,
                                                       "csv": csv}  # fmt: skip
        for js in sorted(results_dir.glob("*/*.json")):
            if js.with_suffix(".png").is_file():
                status = read_figure_status(js, origin)
                figures[f"{js.parent.name}/{js.stem}"] = _figure_entry(status, js)
    else:
        for spec in specs.values():
            for table in spec.tables:
                csv = results_dir / spec.paper / f"{table.id}.csv"
                if csv.is_file():
                    done, total = read_table_csv(csv, origin)
                    entry = {"computed": done, "total": total, "csv": csv}
                else:
                    entry = {"computed": 0, "total": paper_cell_count(table), "csv": None}
                tables[table.key] = entry
            for fig in spec.figures:
                js = results_dir / spec.paper / f"{fig.id}.json"
                if js.is_file() and js.with_suffix(".png").is_file():
                    figures[fig.key] = _figure_entry(read_figure_status(js, origin), js)
                else:
                    figures[fig.key] = {"computed": False, "reason": NOT_GENERATED, "png": None}
    cells_done = sum(t["computed"] for t in tables.values())
    cells_total = sum(t["total"] for t in tables.values())
    return {
        "cells_computed": cells_done,
        "cells_total": cells_total,
        "cells_percent": 100.0 * cells_done / cells_total if cells_total else 0.0,
        "figures_computed": sum(bool(f["computed"]) for f in figures.values()),
        "figures_total": len(figures),
        "tables": tables,
        "figures": figures,
    }


def _figure_entry(status: Mapping[str, Any], js: Path) -> dict[str, Any]:
    return {
        "computed": bool(status["computed"]),
        "reason": str(status.get("reason", "")),
        "png": js.with_suffix(".png"),
    }


def _selected(params: Mapping[str, Any], specs: Mapping[str, PaperSpec]) -> dict[str, PaperSpec]:
    """The papers params.yaml selects (in its order) that declare tables or figures."""
    order = [p for p in params.get("papers", list(specs)) if p in specs]
    return {p: specs[p] for p in order if specs[p].tables or specs[p].figures}


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _link(path: Path | None, results_dir: Path, name: str) -> str:
    return f"[{name}]({path.relative_to(results_dir).as_posix()})" if path else "-"


def index_markdown(
    params: Mapping[str, Any], specs: Mapping[str, PaperSpec], results_dir: Path
) -> str:
    results_dir = Path(results_dir)
    chosen = _selected(params, specs)
    cov = coverage(results_dir, chosen, (params["source"], params["scale"]))
    word = done_word(params)
    lines = ["# Results", "", *data_banner(params), ""]
    lines += [
        f"Coverage: {cov['cells_computed']} / {cov['cells_total']} paper cells {word} "
        f"({cov['cells_percent']:.1f}%); figures: {cov['figures_computed']} / "
        f"{cov['figures_total']} {word}.",
        "",
        "A cell counts when the paper prints a number and this pipeline computed the same cell "
        "(whatever its value). Each table's Markdown says why the other cells are missing; its "
        "CSV gives every cell's source, scale, commit and configuration hash.",
        "",
    ]
    for paper, spec in chosen.items():
        venue = f" ({spec.venue})" if spec.venue and spec.venue != "-" else ""
        lines += [f"## {paper}: {_cell(spec.title)}{venue}", ""]
        if spec.tables:
            lines += [f"| table | title | paper cells {word} | files |", "|---|---|---|---|"]
            for table in spec.tables:
                t = cov["tables"][table.key]
                csv = t["csv"]
                md = csv.with_suffix(".md") if csv is not None else None
                md = md if md is not None and md.is_file() else None
                files = f"{_link(md, results_dir, 'md')} {_link(csv, results_dir, 'csv')}"
                count = f"{t['computed']} / {t['total']}"
                if csv is None:
                    count += f" ({NOT_GENERATED})"
                lines.append(f"| {table.id} | {_cell(table.title)} | {count} | {files} |")
            lines.append("")
        if spec.figures:
            lines += ["| figure | title | status |", "|---|---|---|"]
            for fig in spec.figures:
                f = cov["figures"][fig.key]
                state = word if f["computed"] else f"not computed yet - {f['reason']}"
                link = _link(f["png"], results_dir, fig.id) if f["png"] else fig.id
                lines.append(f"| {link} | {_cell(fig.title)} | {_cell(state)} |")
            lines.append("")
    return "\n".join(lines)


def write_index(
    params: Mapping[str, Any], specs: Mapping[str, PaperSpec], results_dir: Path
) -> Path:
    """Write `<results_dir>/README.md` atomically and return its path."""
    results_dir = Path(results_dir)
    return atomic_write_text(results_dir / "README.md", index_markdown(params, specs, results_dir))
