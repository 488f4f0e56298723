"""MLflow logging: parallel jobs sharing the SQLite store lose no run; re-logging replaces."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from stisr.engine.tracking import log_run

pytestmark = pytest.mark.slow


def _fake_run(root: Path, name: str, steps: int = 5) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "params.json").write_text(
        json.dumps({"run": name, "lr": 0.001, "model_config": {"a": 1}})
    )
    (run / "history.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, steps + 1))
    )
    (run / "metrics.json").write_text(json.dumps({"steps": steps, "final_loss": 1.0 / steps}))
    return run


def _log(args: tuple[str, str, str]) -> str:
    uri, key, run_dir = args
    return log_run(
        key=key, uri=uri, experiment="stisr", run_dir=Path(run_dir), evaluations=[], tags={}
    )


def test_parallel_logging_loses_no_run_and_relogging_replaces(tmp_path):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    jobs = [(uri, f"embedded-smoke/run{i}", str(_fake_run(tmp_path, f"run{i}"))) for i in range(8)]
    with mp.get_context("spawn").Pool(8) as pool:
        ids = pool.map(_log, jobs)
    assert len(set(ids)) == 8
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("stisr")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.tags["stisr.key"] for r in runs) == sorted(j[1] for j in jobs)
    for r in runs:
        assert len(client.get_metric_history(r.info.run_id, "loss")) == 5
        assert r.data.params["model_config.a"] == "1"
    _log(jobs[0])  # re-tracking the same key replaces the earlier copy
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 8
