"""The paper specs: every paper declared, numbers transcribed, references resolved, DAG planned."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stisr.config import load_params
from stisr.papers import plan
from stisr.papers.spec import PAPERS, SpecError, all_runs, load_common, load_specs, parse_spec

from .conftest import REPO


def _cell(table, row_id, col_id):
    row = next(r for r in table.rows if r.id == row_id)
    cols = [c for c in table.columns if not c.extra]
    return row.paper[[c.id for c in cols].index(col_id)]


def test_every_paper_has_tables_and_figures():
    specs = load_specs()
    assert set(PAPERS) <= set(specs)
    for paper in PAPERS:
        assert specs[paper].tables, paper
        assert specs[paper].figures, paper
        numbers = [v for t in specs[paper].tables for r in t.rows for v in r.paper if v is not None]
        assert len(numbers) > 100, paper


def test_tsrn_table4_transcription_spot_checks():
    t4 = next(t for t in load_specs()["tsrn"].tables if t.id == "table4")
    assert _cell(t4, "bicubic", "aster_easy") == 64.7
    assert _cell(t4, "tsrn", "crnn_average") == 41.4
    assert _cell(t4, "lapsrn", "moran_medium") == 44.9
    assert _cell(t4, "improvement", "crnn_average") == 14.6
    assert len(t4.rows) == 10


def test_cell_source_merges_defaults_column_row():
    t4 = next(t for t in load_specs()["tsrn"].tables if t.id == "table4")
    row = next(r for r in t4.rows if r.id == "tsrn")
    col = next(c for c in t4.columns if c.id == "crnn_hard")
    src = t4.cell_source(row, col)
    assert src == {
        "testset": "textzoom_test",
        "metric": "accuracy",
        "recognizer": "crnn",
        "subset": "hard",
        "sr": "tsrn/tsrn",
    }


def test_bad_spec_names_file_and_key(tmp_path):
    bad = yaml.safe_load((REPO / "src/stisr/papers/tsrn.yaml").read_text())
    bad["tables"][3]["rows"][0]["paper"] = [1.0, 2.0]
    path = tmp_path / "tsrn.yaml"
    path.write_text(yaml.safe_dump(bad))
    with pytest.raises(SpecError, match=r"tsrn\.yaml.*tables\.table4\.rows\.bicubic\.paper"):
        parse_spec(path)


def test_embedded_demo_plan_trains_the_slice():
    params = load_params(REPO / "params.yaml")
    jobs = plan.all_jobs(params, load_specs())
    assert {"tsrn/tsrn", "zoo/crnn"} <= set(jobs.trains)
    assert ("bicubic", "crnn", "textzoom_test") in jobs.evaluations
    assert ("tsrn/tsrn", "ppocr", "textzoom_test") in jobs.evaluations


def test_official_paper_plan_uses_released_weights():
    params = load_params(REPO / "params.yaml", {"source": "official", "scale": "paper"})
    specs = load_specs()
    jobs = plan.all_jobs(params, specs)
    assert "zoo/crnn" not in jobs.trains
    rec = plan.resolve_recognizer(params, "crnn", all_runs(specs))
    assert rec.weights == "crnn" and rec.run is None
    dirs = plan.train_set_dirs(params, "textzoom_train")
    assert [d.name for d in dirs] == ["train1", "train2"]


def test_dvc_yaml_is_in_sync_with_specs():
    out = subprocess.run(
        [sys.executable, "-m", "stisr.cli", "sync-dvc", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    stages = yaml.safe_load(Path(REPO / "dvc.yaml").read_text())["stages"]
    assert "tsrn_table4" in stages["table"]["foreach"]


def test_demo_trains_only_the_enabled_recognizers():
    params = load_params(REPO / "params.yaml")
    specs = load_specs()
    runs = all_runs(specs)
    jobs = plan.all_jobs(params, specs)
    enabled = params["scales"]["demo"]["recognizers"]
    assets = {a["model"] for a in load_common().assets.values() if "model" in a}
    trained = [runs[r].model for r in jobs.trains if runs[r].task == "rec"]
    assert all(m in enabled or m in assets for m in trained)  # evaluators, or objectives' parts
    src = {"sr": "bicubic", "recognizer": "aster", "metric": "accuracy", "testset": "textzoom_test"}
    if plan.is_implemented("aster") and "aster" not in enabled:
        assert "scales.demo.recognizers" in plan.cell_status(params, src, runs)
    smoke = load_params(REPO / "params.yaml", {"scale": "smoke"})
    assert plan.cell_status(smoke, {**src, "recognizer": "crnn"}, runs) is None


def test_run_scales_override_the_scale_and_is_validated(tmp_path):
    from stisr.config import task_settings

    spec = yaml.safe_load((REPO / "src/stisr/papers/zoo.yaml").read_text())
    spec["runs"]["crnn"]["scales"] = {"demo": {"epochs": 2, "lr": 5.0e-4}}
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(spec))
    run = parse_spec(path).runs["crnn"]
    demo = load_params(REPO / "params.yaml", {"scale": "demo"})
    settings = task_settings(demo, "rec", run.scales)
    assert settings["epochs"] == 2 and "steps" not in settings and settings["lr"] == 5.0e-4
    assert settings["batch_size"] == demo["scales"]["demo"]["rec"]["batch_size"]
    smoke = load_params(REPO / "params.yaml", {"scale": "smoke"})
    assert task_settings(smoke, "rec", run.scales) == smoke["scales"]["smoke"]["rec"]
    for bad, key in (
        ({"demo": {"stpes": 10}}, r"runs\.crnn\.scales\.demo"),
        ({"demo": {"steps": 0}}, r"runs\.crnn\.scales\.demo\.steps"),
        ({"big": {"steps": 10}}, r"runs\.crnn\.scales"),
        ({"demo": {"lr_schedule": "step"}}, r"runs\.crnn\.scales\.demo\.lr_schedule"),
    ):
        spec["runs"]["crnn"]["scales"] = bad
        path.write_text(yaml.safe_dump(spec))
        with pytest.raises(SpecError, match=r"zoo\.yaml.*" + key):
            parse_spec(path)


def test_runs_with_settings_the_engine_lacks_are_not_trained():
    """A KD-LTR student (distillation losses, its own schedule) must not be trained as a plain
    fine-tune: its cells say why instead of showing a number from a different setting."""
    params = load_params(REPO / "params.yaml")
    params["scales"]["demo"]["recognizers"] = "all"
    specs = load_specs()
    runs = all_runs(specs)
    assert "not implemented yet" in plan.run_problem(params, "kdltr/abinet_ltr", runs)
    reasons = plan.run_problems(params, "kdltr/abinet_ltr", runs)  # every reason, not the first
    assert len(reasons) >= 3 and any("distill" in r for r in reasons)
    assert any("soft_logits" in r for r in reasons)
    assert "distill" in plan.run_problem(params, "kdltr/abinet_ce", runs)
    assert plan.run_problem(params, "tsrn/srresnet", runs) is None
    # A recognizer trains with its own loss: a weight on it would be silently ignored.
    weighted = dict(runs)
    weighted["zoo/crnn"] = dataclasses.replace(runs["zoo/crnn"], losses={"ctc": 2.0})
    assert "weighted recognition losses" in plan.run_problem(params, "zoo/crnn", weighted)
    trains = plan.all_jobs(params, specs).trains
    assert not any(r.startswith("kdltr/") for r in trains)
    src = {"sr": "lr", "recognizer": "kdltr/abinet_ltr", "metric": "accuracy",
           "testset": "textzoom_test"}  # fmt: skip
    assert "soft_logits" in plan.cell_status(params, src, runs)


def test_every_tsrn_table_cell_is_planned_once_its_recognizers_are_trained():
    """Every cell of the TextZoom paper's Tables 1-4 has a job when all recognizers are enabled;
    on the embedded demo the only cells left out are those read by a recognizer without a demo
    recipe yet (scales.demo.recognizers), and they say so."""
    params = load_params(REPO / "params.yaml")
    specs = load_specs()
    runs = all_runs(specs)
    demo = {**params["scales"]["demo"], "recognizers": "all"}
    enabled = {**params, "scales": {**params["scales"], "demo": demo}}
    for table in specs["tsrn"].tables:
        for row in table.rows:
            if row.derive:
                continue
            for col in table.columns:
                src = table.cell_source(row, col)
                assert plan.cell_status(enabled, src, runs) is None, (table.id, row.id, col.id)
                why = plan.cell_status(params, src, runs)
                assert why is None or "scales.demo.recognizers" in why, (row.id, col.id, why)


def test_complexity_cells_need_the_architecture_not_trained_weights():
    """Parameters/FLOPs are measured at paper scale from the model code: a recognizer that is not
    trained at this scale is still counted, while its accuracy cells say why they are empty."""
    params = load_params(REPO / "params.yaml")
    params["scales"]["demo"]["recognizers"] = ["crnn"]
    runs = all_runs(load_specs())
    flops = {"sr": "lr", "recognizer": "parseq", "metric": "flops"}
    accuracy = {
        "sr": "lr",
        "recognizer": "parseq",
        "metric": "accuracy",
        "testset": "textzoom_test",
    }
    assert plan.cell_status(params, flops, runs) is None
    assert "not trained on embedded data" in plan.cell_status(params, accuracy, runs)
    external = {"sr": "lr", "recognizer": "ppocr", "metric": "flops"}
    assert "not measured" in plan.cell_status(params, external, runs)
