"""Spec + params -> the exact arguments of one evaluation (`stisr evaluate`).

Kept beside plan.py (paths, recognizer resolution) so the CLI only parses and dispatches.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stisr.config import scale_settings
from stisr.papers.plan import (
    eval_path,
    recognizer_checkpoint,
    resolve_recognizer,
    run_dir,
    testset_dirs,
)
from stisr.papers.spec import PSEUDO_SR, all_runs, load_common, load_specs


def recognizer_paths(params: Mapping[str, Any], ref: str) -> tuple[str, Path | None]:
    """(rec_kind, checkpoint) for the evaluator: `none`, an external name, or `model` + weights."""
    if ref == "none":
        return "none", None
    rec = resolve_recognizer(params, ref, all_runs(load_specs()))
    if rec.external:
        return rec.external, None
    return "model", recognizer_checkpoint(params, rec)


def evaluation_args(
    params: Mapping[str, Any], sr: str, recognizer: str, testset: str
) -> dict[str, Any]:
    """Keyword arguments of `engine.evaluate.evaluate` for (sr, recognizer, testset), but device."""
    ev = scale_settings(params)["eval"]
    kind, rec_ckpt = recognizer_paths(params, recognizer)
    ts = load_common().testsets[testset]
    return {
        "sr": sr,
        "recognizer": recognizer,
        "testset": testset,
        "subsets": testset_dirs(params, testset),
        "out_path": eval_path(params, sr, recognizer, testset),
        "sr_checkpoint": None if sr in PSEUDO_SR else run_dir(params, sr) / "model.pt",
        "rec_kind": kind,
        "rec_checkpoint": rec_ckpt,
        "weighted": ts.get("average") == "weighted",
        "meta": {"source": params["source"], "scale": params["scale"]},
        "batch_size": ev["batch_size"],
        "max_images": ev["max_images"],
        "samples": ev["samples"],
    }
