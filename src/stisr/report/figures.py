"""Paper figures as PNGs, drawn from the same metric files as the tables.

A renderer either draws the whole figure, draws part of it and says what is missing, or raises
`NotReproduced`; then a placeholder PNG states "<paper> <figure>: not computed yet - <reason>", so
a results folder never shows a picture that looks complete when it is not. Next to every PNG a
small JSON (`{"computed", "reason", "source", "scale", "commit", ...}`) lets the index report
coverage without re-rendering.
"""

from __future__ import annotations

import io
import json
import logging
import textwrap
import zipfile
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import offset_copy
from PIL import Image

from stisr.atomic_io import atomic_write_bytes, atomic_write_text
from stisr.charset import normalize_label
from stisr.config import work_name
from stisr.metrics.accuracy import wrong_char_positions
from stisr.papers import plan
from stisr.papers.spec import (
    PSEUDO_SR,
    FigureSpec,
    PaperSpec,
    RunSpec,
    TableSpec,
    load_common,
    load_specs,
    qualify,
)
from stisr.report.cell_provenance import DONE, report_commit
from stisr.report.tables import (
    cell_value,
    compute_table,
    read_json,
)

log = logging.getLogger("stisr.report.figures")
EMBEDDED_NOTE = "embedded synthetic data - not the paper's numbers"
Rendered = tuple[Figure, str | None]  # the figure and, when only part of it is drawn, why
Renderer = Callable[[FigureSpec, Mapping[str, Any], Mapping[str, RunSpec], PaperSpec], Rendered]


class NotReproduced(Exception):
    """Nothing of the figure can be drawn yet; the message is the reason shown to the reader."""


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)  # Agg canvas without pyplot: no global state, no display needed
    return figure


def _check_ref(ref: str, kind: str, runs: Mapping[str, RunSpec]) -> None:
    known = ref in PSEUDO_SR or ref in runs or ref == "none"
    if kind == "recognizer":
        known = known or ref in load_common().recognizers
    if not known:
        raise NotReproduced(f"spec problem: {kind} {ref!r} is not a declared run")


def _source(
    fig: FigureSpec, runs: Mapping[str, RunSpec], *layers: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge cell-source keys (later layers win) and qualify run references like table cells."""
    src = plan.merge_source(fig.paper, *layers)
    for key in ("sr", "recognizer"):
        if key in src:
            _check_ref(src[key], key, runs)
    return src


# --- accuracy_by_method ---------------------------------------------------------------------------


def _find_table(fig: FigureSpec, spec: PaperSpec) -> TableSpec:
    tid = fig.options.get("table")
    for table in spec.tables:
        if table.id == tid:
            return table
    raise NotReproduced(f"spec problem: options.table {tid!r} is not a table of {spec.paper}")


def _accuracy_by_method(
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
    figure = _new_figure(max(6.0, 0.75 * len(rows) + 2.5), 4.2)
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
            _check_ref(baselines[rec]["sr"], "sr", runs)
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


def _accuracy_vs_param(
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
    figure = _new_figure(6.0, 4.0)
    ax = figure.add_subplot()
    reasons: list[str] = []
    metrics: set[str] = set()
    n_total = 0
    for i, s in enumerate(series):
        xs, ours, paper = [], [], []
        for pt in s["points"]:
            if "x" not in pt:
                raise NotReproduced(f"spec problem: a point of series {s.get('label')!r} has no x")
            src = _source(fig, runs, {"metric": "accuracy"}, opts, s, pt)
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


# --- image_grid -----------------------------------------------------------------------------------


class _Panel:
    """One column of an image grid: images and the strings under them, or why there are none."""

    def __init__(
        self,
        label: str,
        images: list[np.ndarray] | None = None,
        texts: list[str] | None = None,
        labels: list[str] | None = None,
        reason: str | None = None,
        text_only: bool = False,
    ):
        self.label, self.images, self.texts, self.labels = label, images, texts, labels
        self.reason, self.text_only = reason, text_only
        self.show_label = text_only  # texts are ground truth (never marked wrong)


def _load_samples(json_path: Path, subset: str) -> dict[str, np.ndarray] | None:
    data = read_json(json_path)
    name = data.get("samples") if isinstance(data, dict) else None
    if not name or not (json_path.parent / name).is_file():
        return None
    prefix = f"{subset}/"
    try:
        with np.load(json_path.parent / name, allow_pickle=False) as npz:
            arrays = {k[len(prefix) :]: npz[k] for k in npz.files if k.startswith(prefix)}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise ValueError(f"{json_path.parent / name}: unreadable sample file ({err})") from err
    if data.get("recognizer") == "none":
        arrays.pop("preds", None)  # no recognizer read these images
    return arrays or None


def _any_eval_with(
    params: Mapping[str, Any], testset: str, subset: str, key: str
) -> dict[str, np.ndarray] | None:
    """Samples of any evaluation of this test set that saved `key` (the LR/HR inputs are shared)."""
    root = Path("runs") / work_name(params) / "eval"
    for path in sorted(root.glob(f"*/*/{testset}.json")):
        arrays = _load_samples(path, subset)
        if arrays is not None and len(arrays.get(key, ())) > 0:
            return arrays
    return None


def _bicubic_down_up(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.BICUBIC)
    return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC))


def _grid_panel(
    col: Mapping[str, Any],
    fig: FigureSpec,
    params: Mapping[str, Any],
    runs: Mapping[str, RunSpec],
    testset: str,
    subset: str,
) -> _Panel:
    label = str(col.get("label", col.get("sr", "?")))
    if "sr" not in col:
        if col.get("show") == "label":
            return _Panel(label, text_only=True)  # filled from the other columns' labels
        return _Panel(label, reason=f"spec problem: column {label!r} gives no sr")
    if col.get("output"):
        return _Panel(label, reason=f"{label}: intermediate outputs {col['output']} are not saved")
    try:
        src = _source(fig, runs, {"testset": testset}, fig.options, col)
    except NotReproduced as err:
        return _Panel(label, reason=f"{label}: {err}")
    sr, rec = src["sr"], src.get("recognizer")
    show_label = col.get("show") == "label"
    status = plan.cell_status(params, {k: v for k, v in (("sr", sr), ("recognizer", rec)) if v},
                              runs)  # fmt: skip
    # 1. the evaluation of exactly this image source and recognizer
    path = plan.eval_path(params, sr, rec or "none", testset)
    arrays = _load_samples(path, subset) if status is None and path.is_file() else None
    if arrays is not None:
        return _panel_from(label, arrays, show_label)
    why = f"{label}: {status or f'no evaluation at {path}'}"
    # 2. no recognizer asked for: the images of any evaluation of this source
    if rec is None and status is None:
        root = Path("runs") / work_name(params) / "eval" / plan.slug(sr)
        for other in sorted(root.glob(f"*/{testset}.json")):
            arrays = _load_samples(other, subset)
            if arrays is not None and len(arrays.get("images", ())) > 0:
                arrays.pop("preds", None)
                return _panel_from(label, arrays, show_label)
    # 3. pseudo inputs: the LR/HR arrays that any evaluation of the test set saved
    if sr in ("lr", "hr", "hr_bicubic_lr"):
        key = "lr" if sr == "lr" else "hr"
        found = _any_eval_with(params, testset, subset, key)
        if found is None:
            return _Panel(label, reason=f"{label}: no evaluation of {testset}/{subset} saved {key}")
        images = list(found[key])
        if sr == "hr_bicubic_lr":
            images = [_bicubic_down_up(im) for im in images]
        labels = [str(x) for x in found.get("labels", [])]
        panel = _Panel(label, images, labels if show_label else None, labels)
        panel.show_label = show_label
        panel.reason = why if rec is not None and not show_label else None
        return panel
    return _Panel(label, reason=why)


def _panel_from(label: str, arrays: Mapping[str, np.ndarray], show_label: bool) -> _Panel:
    labels = [str(x) for x in arrays.get("labels", [])]
    preds = [str(x) for x in arrays["preds"]] if "preds" in arrays else None
    panel = _Panel(label, list(arrays.get("images", [])), labels if show_label else preds, labels)
    panel.show_label = show_label
    return panel


def _draw_string(ax: Any, text: str, wrong: set[int], y: float, fontsize: float = 7.5) -> None:
    """Centre `text` under an image, one monospace glyph at a time so wrong ones can be red."""
    if not text:
        ax.text(0.5, y, "(empty)", transform=ax.transAxes, ha="center", va="top",
                fontsize=fontsize, color="0.5", style="italic")  # fmt: skip
        return
    width = 0.602 * fontsize  # advance of DejaVu Sans Mono, in points
    start = -width * len(text) / 2
    for i, ch in enumerate(text):
        tr = offset_copy(ax.transAxes, fig=ax.figure, x=start + i * width, y=0, units="points")
        color = "red" if i in wrong else "black"
        ax.text(0.5, y, ch, transform=tr, ha="left", va="top", family="monospace",
                fontsize=fontsize, color=color)  # fmt: skip


def _image_grid(
    fig: FigureSpec, params: Mapping[str, Any], runs: Mapping[str, RunSpec], spec: PaperSpec
) -> Rendered:
    opts = fig.options
    testset = opts.get("testset")
    columns = opts.get("columns") or []
    if not testset:
        raise NotReproduced("the images do not come from a test-set evaluation (no testset)")
    if not columns:
        raise NotReproduced("spec problem: an image grid needs columns")
    common = load_common().testsets
    if testset not in common:
        raise NotReproduced(f"spec problem: testset {testset!r} is not in common.yaml")
    subset = str(opts.get("subset") or common[testset]["subsets"][0])
    panels = [_grid_panel(c, fig, params, runs, testset, subset) for c in columns]
    drawn = [p for p in panels if p.images is not None]
    reasons = list(dict.fromkeys(p.reason for p in panels if p.reason))
    if not drawn:
        more = f" (and {len(reasons) - 1} more columns)" if len(reasons) > 1 else ""
        raise NotReproduced((reasons[0] if reasons else "no column could be loaded") + more)
    picks = _pick_samples(opts.get("select"), drawn)
    n = min(int(opts.get("count", 4)), len(picks))
    if n == 0:
        raise NotReproduced(f"the evaluations of {testset}/{subset} saved no (selected) samples")
    truth = next((p.labels for p in drawn if p.labels), None)
    for p in panels:
        if p.text_only:
            if truth is None:
                p.reason = f"{p.label}: no labels saved"
            p.texts = truth
    figure = _new_figure(1.75 * len(panels) + 0.4, 0.8 * n + 1.0)
    axes = figure.subplots(n, len(panels), squeeze=False)
    for j, p in enumerate(panels):
        for i, k in enumerate(picks[:n]):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(p.label, fontsize=8)
            if p.images is None and not p.text_only:
                ax.set_facecolor("0.9")
                ax.text(0.5, 0.5, "not computed\nyet", ha="center", va="center",
                        fontsize=6, color="0.4", transform=ax.transAxes)  # fmt: skip
                continue
            if p.text_only:
                ax.axis("off")
                if p.texts is not None and k < len(p.texts):
                    _draw_string(ax, str(p.texts[k]), set(), 0.6)
                continue
            ax.imshow(p.images[k], interpolation="nearest", aspect="auto")
            if p.texts is not None and k < len(p.texts):
                text, wrong = str(p.texts[k]), set()
                if not p.show_label and truth is not None and k < len(truth):
                    wrong = set(wrong_char_positions(text, str(truth[k])))
                    text = normalize_label(text)  # the positions index the normalized string
                _draw_string(ax, text, wrong, -0.06)
    height = 0.8 * n + 1.0
    figure.subplots_adjust(left=0.02, right=0.98, top=1 - 0.55 / height, bottom=0.3 / height,
                           hspace=0.75, wspace=0.08)  # fmt: skip
    figure.suptitle(fig.title, fontsize=9)
    return figure, ("; ".join(reasons) if reasons else None)


def _pick_samples(select: Any, drawn: list[_Panel]) -> list[int]:
    """Sample indices to show: all saved ones, or (`select: misrecognized`) those read wrongly."""
    size = min(len(p.images or []) for p in drawn)
    if not select:
        return list(range(size))
    if select != "misrecognized":
        raise NotReproduced(f"sample selection {select!r} is not supported")
    read = next((p for p in drawn if p.texts is not None and not p.show_label and p.labels), None)
    if read is None:
        raise NotReproduced("select: misrecognized needs a column read by a recognizer")
    pairs = zip(read.texts or [], read.labels or [], strict=False)
    wrong = [i for i, (t, y) in enumerate(pairs) if normalize_label(t) != normalize_label(y)]
    return [i for i in wrong if i < size]


# --- placeholders and writing ---------------------------------------------------------------------


def _not_reproduced_kind(reason: str, *_args: Any) -> Rendered:
    raise NotReproduced(reason)


RENDERERS: dict[str, Renderer] = {
    "accuracy_by_method": _accuracy_by_method,
    "image_grid": _image_grid,
    "accuracy_vs_param": _accuracy_vs_param,
    "architecture": partial(_not_reproduced_kind, "a hand-drawn diagram, not generated from data"),
}


def placeholder(fig: FigureSpec, reason: str) -> Figure:
    """A PNG that cannot be mistaken for a result: it states the figure and why it is missing."""
    figure = _new_figure(8.0, 2.6)
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
