"""Image-grid figures: saved evaluation samples side by side, misread characters in red.

Split from :mod:`stisr.report.figures`: loading the sample arrays an evaluation saved (or the
shared LR/HR inputs), choosing which samples to show, and drawing the grid.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.transforms import offset_copy
from PIL import Image

from stisr.charset import normalize_label
from stisr.config import work_name
from stisr.metrics.accuracy import wrong_char_positions
from stisr.papers import plan
from stisr.papers.spec import FigureSpec, PaperSpec, RunSpec, load_common
from stisr.report.figure_base import NotReproduced, Rendered, figure_source, new_figure
from stisr.report.tables import read_json

__all__ = ["image_grid"]


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
        src = figure_source(fig, runs, {"testset": testset}, fig.options, col)
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


def image_grid(
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
    figure = new_figure(1.75 * len(panels) + 0.4, 0.8 * n + 1.0)
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
