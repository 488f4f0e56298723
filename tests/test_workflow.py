"""End to end: the Snakemake DAG at smoke scale, rerun as a no-op, MLflow runs, the notebook."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from stisr.papers.spec import all_runs, load_specs
from stisr.report.table_markdown import EMBEDDED_WARNING

from .conftest import REPO

pytestmark = pytest.mark.slow


def _snakemake(workdir: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, **(env or {})}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("workflow")
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    out = _snakemake(work, "--config", "scale=smoke")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return work


def test_smoke_dag_fills_the_tsrn_slice(smoke_run):
    results = smoke_run / "results/embedded-smoke"  # one folder per data source and scale
    cells = pd.read_csv(results / "tsrn/table4.csv")
    done = cells[cells["status"] == "computed"]  # embedded data: never "reproduced"
    assert {"bicubic", "tsrn", "improvement"} <= set(done["row"])
    assert set(done["column"]) >= {"crnn_easy", "crnn_medium", "crnn_hard", "crnn_average"}
    assert set(cells["source"]) == {"embedded"} and set(cells["scale"]) == {"smoke"}
    assert done["commit"].notna().all() and done["params_hash"].notna().all()
    assert cells["delta"].isna().all()
    judge = cells[cells["column"].str.startswith("ppocr") & cells["row"].eq("tsrn")]
    assert judge["ours"].notna().all()
    computed = cells["status"].isin(["computed", "no paper value"])
    assert cells.loc[~computed, "ours"].isna().all()
    md = (results / "tsrn/table4.md").read_text()
    assert "embedded synthetic-data results" in md
    zoo = pd.read_csv(results / "zoo/complexity.csv").set_index(["row", "column"])
    assert zoo.loc[("crnn", "params"), "ours"] == pytest.approx(8.331301)  # millions
    assert zoo.loc[("crnn", "flops"), "status"] == "computed"
    assert "2.93G" in zoo.loc[("parseq", "flops"), "fitted"]  # a choice, marked as such
    assert pd.isna(zoo.loc[("parseq", "params"), "fitted"])
    index = (results / "README.md").read_text()
    assert "Coverage" in index and "paper cells computed" in index
    for paper in ("tsrn", "lemma", "image", "kdltr", "tcdm"):
        assert list((results / paper).glob("*.csv")), paper
        assert list((results / paper).glob("*.png")), paper
    # the only "reproduced" left is the banner that says these are not reproduced numbers
    for path in results.rglob("*"):
        if path.suffix in (".md", ".csv", ".json"):
            text = path.read_text().replace(EMBEDDED_WARNING, "")
            assert "reproduced" not in text.lower(), path


def test_every_job_leaves_a_benchmark_and_the_run_ends_with_its_timing(smoke_run):
    bench = smoke_run / "logs/embedded-smoke/benchmarks"
    rules = {p.name for p in bench.iterdir()}
    assert {
        "synth_textzoom",
        "train",
        "evaluate",
        "complexity",
        "table",
        "figure",
        "index",
    } <= rules
    timing = (smoke_run / "results/embedded-smoke/timing.md").read_text()
    assert "## Per paper" in timing and "| tsrn |" in timing
    assert "| train |" in timing


def test_second_run_does_nothing(smoke_run):
    out = _snakemake(smoke_run, "--config", "scale=smoke")
    assert out.returncode == 0
    assert "Nothing to be done" in out.stdout + out.stderr


def test_snakemake_report_is_html(smoke_run):
    out = _snakemake(smoke_run, "--config", "scale=smoke", "--report", "report.html")
    assert out.returncode == 0, out.stderr[-2000:]
    html = (smoke_run / "report.html").read_text(errors="replace")
    assert "<html" in html.lower() and "fig2.png" in html


def test_mlflow_has_every_tracked_run(smoke_run):
    import mlflow

    tracked = sorted(p.stem for p in (smoke_run / "runs/embedded-smoke/tracked").glob("*.json"))
    client = mlflow.MlflowClient(f"sqlite:///{smoke_run / 'mlruns.db'}")
    exp = client.get_experiment_by_name("stisr")
    runs = client.search_runs([exp.experiment_id])
    keys = sorted(r.data.tags["stisr.key"].split("/", 1)[1].replace("/", ".") for r in runs)
    assert keys == tracked
    tsrn = next(r for r in runs if r.data.tags["stisr.key"].endswith("tsrn/tsrn"))
    assert "eval.crnn.textzoom_test.average.accuracy" in tsrn.data.metrics
    assert client.get_metric_history(tsrn.info.run_id, "loss")


def test_notebook_executes(smoke_run):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(REPO / "notebooks" / "compare_runs.ipynb", as_version=4)
    os.environ["STISR_ROOT"] = str(smoke_run)
    try:
        NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    finally:
        os.environ.pop("STISR_ROOT")
    outputs = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "computed cells out of" in outputs
    assert "MLflow runs in" in outputs


def test_invalid_param_stops_before_any_job(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    out = _snakemake(tmp_path, "--config", "scale=smoke", "seed=-1")
    assert out.returncode != 0
    assert "seed" in out.stderr + out.stdout
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


# --- configuration is identity: an edit reruns exactly the jobs it affects -----------------------


def _planned_jobs(out: subprocess.CompletedProcess) -> dict[str, set[str]]:
    """rule -> the wildcard strings of the jobs a dry run would execute."""
    jobs: dict[str, set[str]] = {}
    rule = None
    for line in out.stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            rule = m.group(1)
            jobs.setdefault(rule, set())
        elif rule and line.strip().startswith("wildcards:"):
            jobs[rule].add(line.split(":", 1)[1].strip())
    return jobs


@pytest.fixture(scope="module")
def edited_copy(smoke_run, tmp_path_factory):
    """A copy of the finished smoke DAG (mtimes and Snakemake's records kept) to edit."""
    work = tmp_path_factory.mktemp("edited") / "work"
    shutil.copytree(smoke_run, work, symlinks=True)
    return work


def _smoke_trains(**overrides):
    from stisr.config import load_params
    from stisr.papers import plan
    from stisr.papers.spec import load_specs

    params = load_params(REPO / "params.yaml", {"scale": "smoke", **overrides})
    return params, plan.all_jobs(params, load_specs())


def _dry_run_with(work: Path, name: str, override: str) -> subprocess.CompletedProcess:
    """A dry run with `override` (YAML) merged into params.yaml; the run must plan cleanly."""
    extra = work / name
    extra.write_text(override)
    out = _snakemake(work, "-n", "--configfile", str(extra), "--config", "scale=smoke")
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def _train_wildcards(keep) -> set[str]:
    """The train jobs' wildcards of the planned smoke runs for which `keep(run)` holds."""
    _, planned = _smoke_trains()
    runs = all_runs(load_specs())
    return {f"run={r.replace('/', '.', 1)}" for r in planned.trains if keep(runs[r])}


def test_a_width_override_reruns_exactly_that_models_runs(edited_copy):
    override = "scales:\n  smoke:\n    models:\n      tsrn: {hidden_units: 6, srb_nums: 1}\n"
    out = _dry_run_with(edited_copy, "wider_tsrn.yaml", override)
    jobs = _planned_jobs(out)
    expected = _train_wildcards(lambda run: run.model == "tsrn")
    assert expected and jobs["train"] == expected
    assert not {"synth_textzoom", "synth_str", "complexity", "degrade_str"} & jobs.keys()
    assert all(w.split("sr=")[1].split(",")[0] in {e[4:] for e in expected}
               for w in jobs["evaluate"])  # fmt: skip
    assert "params" in out.stdout.lower()  # the reason Snakemake gives: params changed


def test_a_loss_weight_edit_reruns_exactly_that_run(edited_copy, tmp_path):
    specs = tmp_path / "specs"
    shutil.copytree(REPO / "src/stisr/papers", specs, ignore=shutil.ignore_patterns("*.py"))
    text = (specs / "tsrn.yaml").read_text()
    old = "losses: {mse: 1.0, tv: 2.0e-8, perceptual: 6.0e-3}"
    assert old in text
    (specs / "tsrn.yaml").write_text(text.replace(old, old.replace("6.0e-3", "1.0e-2")))
    env = {"STISR_SPEC_DIR": str(specs)}
    out = _snakemake(edited_copy, "-n", "--config", "scale=smoke", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = _planned_jobs(out)
    assert jobs["train"] == {"run=tsrn.srresnet"}
    assert {w.split(",")[0] for w in jobs["evaluate"]} == {"sr=tsrn.srresnet"}
    assert "table" in jobs and "synth_textzoom" not in jobs


def test_a_runtime_switch_reruns_nothing(edited_copy):
    """channels_last and the thread count change how fast a job runs, not what it computes."""
    override = "train: {channels_last: false, torch_threads: 2}\n"
    out = _dry_run_with(edited_copy, "runtime.yaml", override)
    assert "Nothing to be done" in out.stdout + out.stderr, _planned_jobs(out)


def test_a_step_budget_edit_reruns_only_sr_runs(edited_copy):
    out = _dry_run_with(edited_copy, "sr_steps.yaml", "scales:\n  smoke:\n    sr: {steps: 7}\n")
    assert _planned_jobs(out)["train"] == _train_wildcards(lambda run: run.task == "sr")
    out = _snakemake(edited_copy, "-n", "--config", "scale=smoke")  # the original: nothing to do
    assert "Nothing to be done" in out.stdout + out.stderr
