"""What each table cell is: the words it is called by, the commit and configuration behind it, and
the ways the runs behind it depart from the paper's setting.

A number computed on embedded data or at a reduced scale is "computed"; only official data at paper
scale can be "reproduced" (docs/protocols.md). Each cell carries the identity hash of the jobs that
made it (the same hashes Snakemake compares, papers/identity.py), so two CSV rows with equal hashes
come from the same configuration.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from stisr.config import scale_settings
from stisr.engine.provenance import git_commit
from stisr.engine.train_config import config_hash
from stisr.models.registry import build_config
from stisr.papers import identity, plan
from stisr.papers.spec import PSEUDO_SR, RunSpec, TableSpec, load_common

REPRODUCED = "reproduced"
COMPUTED = "computed"
DONE = (REPRODUCED, COMPUTED)


def comparable(params: Mapping[str, Any]) -> bool:
    """Only official data at paper scale can be held against the paper's number."""
    return params["source"] == "official" and params["scale"] == "paper"


def done_word(params: Mapping[str, Any]) -> str:
    return REPRODUCED if comparable(params) else COMPUTED


def commit_label(info: Mapping[str, Any] | None) -> str | None:
    """`<sha>` or `<sha>+dirty` (uncommitted changes to tracked files), None if unknown."""
    if not info or not info.get("commit"):
        return None
    return info["commit"] + ("+dirty" if info.get("dirty") else "")


def recorded_commit(data: Any) -> str | None:
    """The commit a metrics file says computed it (evaluations record their provenance)."""
    if not isinstance(data, Mapping):
        return None
    return commit_label((data.get("provenance") or {}).get("git"))


def report_commit() -> str | None:
    return commit_label(git_commit())


class CellIdentity:
    """Per-table cache of the job hashes behind cells (a run's hash is computed once)."""

    def __init__(self, params: Mapping[str, Any], runs: Mapping[str, RunSpec]) -> None:
        self.params, self.runs = params, runs
        self._train: dict[str, str] = {}

    def _run_hash(self, run_id: str | None) -> str | None:
        if not run_id or run_id not in self.runs:
            return None
        if run_id not in self._train:
            self._train[run_id] = identity.train_hash(self.params, run_id, self.runs)
        return self._train[run_id]

    def _rec_run(self, rec: str | None) -> str | None:
        if not rec or rec == "none":
            return None
        return plan.resolve_recognizer(self.params, rec, self.runs).run

    def of(self, src: Mapping[str, Any]) -> str:
        """The hash of everything that shaped this cell's number besides the code."""
        sr, rec = src.get("sr"), src.get("recognizer")
        if src.get("metric") in ("params", "flops", "latency"):
            parts: dict[str, Any] = {
                "complexity": identity.complexity_hash(self.params, sr, rec or "none", self.runs)
            }
        else:
            parts = {"eval": identity.eval_hash(self.params, src["testset"])}
        parts["sr"] = None if sr in PSEUDO_SR else self._run_hash(sr)
        parts["recognizer"] = self._run_hash(self._rec_run(rec))
        return config_hash(parts)[:12]


def runs_behind(
    table: TableSpec, params: Mapping[str, Any], runs: Mapping[str, RunSpec]
) -> set[str]:
    """The trained runs whose weights the table's cells read (SR models and recognizers)."""
    used: set[str] = set()
    recognizers = load_common().recognizers
    for row in table.rows:
        if row.derive:
            continue
        for col in table.columns:
            src = table.cell_source(row, col)
            if src.get("sr") in runs:
                used.add(src["sr"])
            rec = src.get("recognizer")
            if rec and rec != "none" and (rec in runs or rec in recognizers):
                resolved = plan.resolve_recognizer(params, rec, runs).run
                if resolved:
                    used.add(resolved)
    return used


@cache
def _config_fields(model: str, frozen: str) -> dict[str, Any]:
    return dataclasses.asdict(build_config(model, json.loads(frozen)))


def model_deviations(params: Mapping[str, Any], run: RunSpec) -> list[str]:
    """`key=value (paper: value)` for each model setting this scale overrides (widths, aux_ctc,
    use_stn, greedy decoding, ...): the stand-in is not the paper's architecture."""
    if params["scale"] == "paper":
        return []
    overrides = scale_settings(params)["models"].get(run.model, {})
    if not overrides:
        return []
    spec = dict(run.model_config)
    ours = _config_fields(run.model, json.dumps({**overrides, **spec}, sort_keys=True))
    paper = _config_fields(run.model, json.dumps(spec, sort_keys=True))
    diffs = [f"{k}={ours[k]!r} (paper: {paper[k]!r})" for k in ours if ours[k] != paper[k]]
    if not diffs:
        return []
    return [f"model `{run.model}` at scale {params['scale']}: " + ", ".join(diffs)]


def run_deviations(
    table: TableSpec, params: Mapping[str, Any], runs: Mapping[str, RunSpec]
) -> list[str]:
    """`<run>: <deviation>` for every trained run behind the table's cells: the model settings
    this scale changes, and what the run itself recorded (e.g. random VGG features)."""
    notes = []
    for run_id in sorted(runs_behind(table, params, runs)):
        if plan.run_problems(params, run_id, runs):  # blocked: its cells say why, it has no model
            continue
        notes += [f"{run_id}: {d}" for d in model_deviations(params, runs[run_id])]
        path = plan.run_dir(params, run_id) / "metrics.json"
        if path.exists():
            recorded = json.loads(Path(path).read_text()).get("deviations", [])
            notes += [f"{run_id}: {d}" for d in recorded]
    return notes
