"""Paper figures as PNGs, drawn from the same metric files as the tables.

A renderer either draws the whole figure, draws part of it and says what is missing, or raises
`NotReproduced`; then a placeholder PNG states "<paper> <figure>: not computed yet - <reason>", so
a results folder never shows a picture that looks complete when it is not. Next to every PNG a
small JSON (`{"computed", "reason", "source", "scale", "commit", ...}`) lets the index report
coverage without re-rendering.

Renderers per figure kind: `figure_accuracy` (accuracy_by_method, accuracy_vs_param) and
`figure_grid` (image_grid), on the contract in `figure_base`; this module maps kinds to
renderers, draws the placeholders and writes the PNG and its JSON.
"""

from __future__ import annotations

import io
import json
import logging
import textwrap
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from stisr.atomic_io import atomic_write_bytes, atomic_write_text
from stisr.papers.spec import FigureSpec, PaperSpec, RunSpec, load_specs
from stisr.report.cell_provenance import report_commit
from stisr.report.figure_accuracy import accuracy_by_method, accuracy_vs_param
from stisr.report.figure_base import NotReproduced, Rendered, Renderer, new_figure
from stisr.report.figure_grid import image_grid

__all__ = ["EMBEDDED_NOTE", "RENDERERS", "NotReproduced", "placeholder", "write_figure"]

log = logging.getLogger("stisr.report.figures")
EMBEDDED_NOTE = "embedded synthetic data - not the paper's numbers"


# --- placeholders and writing ---------------------------------------------------------------------


def _not_reproduced_kind(reason: str, *_args: Any) -> Rendered:
    raise NotReproduced(reason)


RENDERERS: dict[str, Renderer] = {
    "accuracy_by_method": accuracy_by_method,
    "image_grid": image_grid,
    "accuracy_vs_param": accuracy_vs_param,
    "architecture": partial(_not_reproduced_kind, "a hand-drawn diagram, not generated from data"),
}


def placeholder(fig: FigureSpec, reason: str) -> Figure:
    """A PNG that cannot be mistaken for a result: it states the figure and why it is missing."""
    figure = new_figure(8.0, 2.6)
    message = f"{fig.paper} {fig.id}: not computed yet - {reason}"
    figure.text(0.5, 0.62, textwrap.fill(message, 90), ha="center", va="center", fontsize=10,
                color="firebrick", weight="bold")  # fmt: skip
    figure.text(0.5, 0.22, textwrap.fill(fig.title, 100), ha="center", va="center", fontsize=8,
                color="0.35")  # fmt: skip
    return figure


def _shipped_spec(fig: FigureSpec) -> PaperSpec:
    specs = load_specs()
    if fig.paper not in specs:
        raise KeyError(f"figure {fig.key}: no shipped spec for paper {fig.paper!r}; pass spec=")
    return specs[fig.paper]


def write_figure(
    fig: FigureSpec,
    params: Mapping[str, Any],
    runs: Mapping[str, RunSpec],
    out_path: Path,
    *,
    spec: PaperSpec | None = None,
) -> bool:
    """Render `fig` to `out_path` (PNG) and `<out_path>.json`; True when fully reproduced.

    `spec` is the paper the figure belongs to (for the tables it plots); default: the shipped spec.
    """
    out_path = Path(out_path)
    renderer = RENDERERS.get(fig.kind)
    figure: Figure | None = None
    if renderer is None:
        reason: str | None = f"no renderer for figure kind {fig.kind!r}"
    else:
        try:
            paper_spec = spec if spec is not None else _shipped_spec(fig)
            figure, reason = renderer(fig, params, runs, paper_spec)
        except NotReproduced as err:
            reason = str(err)
    embedded = params["source"] == "embedded"
    if figure is None:
        figure = placeholder(fig, reason or "unknown")
    else:
        # Outside the drawing area: `bbox_inches="tight"` grows the canvas to hold them.
        chars = int(figure.get_figwidth() * 72 / (0.55 * 7))
        if reason:
            header = textwrap.fill(f"{fig.paper} {fig.id}: not computed yet - {reason}", chars)
            figure.text(0.5, 1.0, header, ha="center", va="bottom", fontsize=7, color="firebrick")
        if embedded:
            figure.text(0.5, 0.0, EMBEDDED_NOTE, ha="center", va="top", fontsize=8,
                        color="firebrick", style="italic")  # fmt: skip
    reproduced = reason is None
    note = EMBEDDED_NOTE if embedded else ""
    buf = io.BytesIO()
    meta = {"Title": f"{fig.paper} {fig.id}: {fig.title}",
            "Description": note if reproduced else f"not computed yet - {reason}"}  # fmt: skip
    figure.savefig(buf, format="png", metadata=meta, bbox_inches="tight", pad_inches=0.15)
    atomic_write_bytes(out_path, buf.getvalue())
    status = {
        "paper": fig.paper,
        "figure": fig.id,
        "title": fig.title,
        "kind": fig.kind,
        "computed": reproduced,
        "reason": reason or "",
        "source": params["source"],
        "scale": params["scale"],
        "commit": report_commit(),
        "note": note if reproduced else "",
    }
    atomic_write_text(out_path.with_suffix(".json"), json.dumps(status, indent=2) + "\n")
    if not reproduced:
        log.info("%s %s not computed yet: %s", fig.paper, fig.id, reason)
    return reproduced
