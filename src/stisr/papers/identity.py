"""Configuration is identity: the hash each job carries as a Snakemake `params:` entry.

A job reruns exactly when something that shapes its output changes (Snakemake compares these
values with the ones recorded at the last run), and the tables downstream rerun with it. The
train rule hashes the resolved TrainConfig (papers/training.py); evaluations and complexity
counts hash the settings they read besides their input files.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stisr.config import ParamsError, scale_settings
from stisr.engine.train_config import config_hash
from stisr.models.registry import ModelConfigError, build_config
from stisr.papers.plan import resolve_recognizer, testset_dirs
from stisr.papers.spec import PSEUDO_SR, RunSpec
from stisr.papers.training import train_hash

__all__ = [
    "check_model_overrides",
    "complexity_hash",
    "data_hash",
    "eval_hash",
    "spec_hash",
    "train_hash",
]


def check_model_overrides(params: Mapping[str, Any]) -> None:
    """Every `scales.<scale>.models` override builds its model's config dataclass (ParamsError
    naming the key otherwise), before any job starts."""
    for scale, settings in params["scales"].items():
        for name, overrides in (settings.get("models") or {}).items():
            where = f"params.yaml: scales.{scale}.models.{name}"
            try:
                build_config(name, overrides)
            except KeyError as err:
                raise ParamsError(f"{where}: {err.args[0]}") from None
            except ModelConfigError as err:
                raise ParamsError(f"{where}: {err}") from None


def eval_hash(params: Mapping[str, Any], testset: str) -> str:
    """What shapes an evaluation besides its input files: the scale's evaluation settings."""
    ev = dict(scale_settings(params)["eval"])
    ev.pop("batch_size", None)  # batching does not change a metric
    dirs = {k: [str(d) for d in v] for k, v in testset_dirs(params, testset).items()}
    return config_hash({"eval": ev, "subsets": dirs})


def complexity_hash(params, sr: str, rec: str, runs: Mapping[str, RunSpec]) -> str:
    """Complexity is counted on the paper architecture: the models and their spec configs."""
    parts = {}
    if sr not in PSEUDO_SR:
        parts["sr"] = [runs[sr].model, runs[sr].model_config]
    if rec != "none":
        r = resolve_recognizer(params, rec, runs)
        parts["rec"] = [r.model, runs[r.run].model_config if r.run else {}]
    return config_hash(parts)


def spec_hash(paper: str, kind: str, item_id: str) -> str:
    """A table's or figure's spec (rows, columns, the paper's numbers, options)."""
    from stisr.papers.spec import load_specs

    spec = load_specs()[paper]
    items = spec.tables if kind == "table" else spec.figures
    return config_hash(repr(next(i for i in items if i.id == item_id)))


def data_hash(params: Mapping[str, Any], what: str) -> str:
    """The embedded generator's settings of one dataset (sizes at this scale, seed)."""
    emb = params["embedded"]
    return config_hash({"sizes": emb["sizes"][params["scale"]].get(what), "seed": emb["seed"]})
