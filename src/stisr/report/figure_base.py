"""The figure-renderer contract shared by every figure kind of :mod:`stisr.report.figures`.

Split from :mod:`stisr.report.figures` so that the renderers (accuracy plots, image grids) and
the PNG writer depend on one small module: `NotReproduced`, the `Rendered`/`Renderer` types, a
pyplot-free figure, and the merge and check of a figure's cell sources.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stisr.papers import plan
from stisr.papers.spec import PSEUDO_SR, FigureSpec, PaperSpec, RunSpec, load_common

__all__ = ["NotReproduced", "Rendered", "Renderer", "check_ref", "figure_source", "new_figure"]

Rendered = tuple[Figure, str | None]  # the figure and, when only part of it is drawn, why
Renderer = Callable[[FigureSpec, Mapping[str, Any], Mapping[str, RunSpec], PaperSpec], Rendered]


class NotReproduced(Exception):
    """Nothing of the figure can be drawn yet; the message is the reason shown to the reader."""


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)  # Agg canvas without pyplot: no global state, no display needed
    return figure


def check_ref(ref: str, kind: str, runs: Mapping[str, RunSpec]) -> None:
    known = ref in PSEUDO_SR or ref in runs or ref == "none"
    if kind == "recognizer":
        known = known or ref in load_common().recognizers
    if not known:
        raise NotReproduced(f"spec problem: {kind} {ref!r} is not a declared run")


def figure_source(
    fig: FigureSpec, runs: Mapping[str, RunSpec], *layers: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge cell-source keys (later layers win) and qualify run references like table cells."""
    src = plan.merge_source(fig.paper, *layers)
    for key in ("sr", "recognizer"):
        if key in src:
            check_ref(src[key], key, runs)
    return src
