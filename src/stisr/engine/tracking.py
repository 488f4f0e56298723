"""MLflow: every trained run (and each evaluated SR source) is logged for browsing and comparison.

Design (no lost runs under parallel jobs): training and evaluation jobs write plain files (the
DAG's real outputs); a separate `stisr track` job copies one run's files into MLflow. Writes to the
default SQLite store are serialized with a file lock next to the database, and a run is keyed by
the tag `stisr.key`, so re-tracking replaces the earlier copy instead of duplicating it. With
`MLFLOW_TRACKING_URI` pointing at a tracking server, the same code logs there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock


def tracking_uri(default: str) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", default)


def _lock_for(uri: str) -> FileLock | None:
    if uri.startswith("sqlite:///"):
        return FileLock(uri.removeprefix("sqlite:///") + ".lock", timeout=600)
    return None


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def log_run(
    *,
    key: str,
    uri: str,
    experiment: str,
    run_dir: Path | None,
    evaluations: Sequence[Path],
    tags: Mapping[str, str],
) -> str:
    """Log (or re-log) one run; returns the MLflow run id."""
    import mlflow
    from mlflow.tracking import MlflowClient

    lock = _lock_for(uri)
    if lock is not None:
        lock.acquire()
    try:
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
        for old in client.search_runs([exp_id], filter_string=f"tags.`stisr.key` = '{key}'"):
            client.delete_run(old.info.run_id)
        with mlflow.start_run(experiment_id=exp_id, run_name=key) as run:
            mlflow.set_tags({"stisr.key": key, **tags})
            if run_dir is not None:
                _log_training(run_dir)
            for path in evaluations:
                ev = json.loads(Path(path).read_text())
                prefix = f"eval.{ev['recognizer']}.{ev['testset']}"
                for subset, metrics in ev["subsets"].items():
                    for name, value in metrics.items():
                        mlflow.log_metric(f"{prefix}.{subset}.{name}", float(value))
            return run.info.run_id
    finally:
        if lock is not None:
            lock.release()


def _log_training(run_dir: Path) -> None:
    import mlflow

    params = json.loads((run_dir / "params.json").read_text())
    prov = params.pop("provenance", {})
    flat = {k: str(v)[:500] for k, v in _flatten(params).items()}
    mlflow.log_params(flat)
    if prov:  # code commit, versions and data hashes: tags, so runs can be filtered by them
        mlflow.set_tags({f"provenance.{k}": str(v)[:5000] for k, v in _flatten(prov).items()})
    history = run_dir / "history.jsonl"
    if history.exists():
        for line in history.read_text().splitlines():
            entry = json.loads(line)
            step = int(entry.pop("step"))
            mlflow.log_metrics({k: float(v) for k, v in entry.items()}, step=step)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    numbers = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    mlflow.log_metrics({f"final.{k}": float(v) for k, v in numbers.items()})
    mlflow.set_tags({f"final.{k}": str(v) for k, v in metrics.items() if k not in numbers})
    samples = run_dir / "samples.png"
    if samples.exists():
        mlflow.log_artifact(str(samples))
