"""The training-step benchmark's own side runs (CI cannot fetch the official code)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_step_speed.py"


def load_script():
    spec = importlib.util.spec_from_file_location("train_step_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_train_step_speed_smoke_times_both_tsrn_configs(capsys):
    threads = torch.get_num_threads()
    try:
        results = load_script().main(["--smoke", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    figures = results[1]
    assert set(figures) == {"paper", "code"}
    for fig in figures.values():
        assert fig["ours"] > 0 and "official" not in fig
    out = capsys.readouterr().out
    assert "our side only" in out and "tsrn[paper] threads=1" in out


def test_lmdb_loading_smoke_reads_synthetic_pairs(capsys):
    spec = importlib.util.spec_from_file_location("lmdb_loading", SCRIPT.parent / "lmdb_loading.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    result = module.main(["--smoke", "--batch", "16"])
    assert torch.get_num_threads() == threads  # restored
    assert result["pairs_per_s"] > 0
    assert "pairs/s/core=" in capsys.readouterr().out


def test_demo_train_cost_times_a_run_of_its_own_configuration(tmp_path, monkeypatch, capsys):
    from stisr.data.synth import make_str_sets

    repo = SCRIPT.parents[1]
    monkeypatch.chdir(tmp_path)  # the planner resolves data/embedded/<scale>/... from here
    make_str_sets(tmp_path / "data/embedded/smoke/str", {"train": 8}, seed=3)
    spec = importlib.util.spec_from_file_location("demo_cost", SCRIPT.parent / "demo_train_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    args = ["--params", str(repo / "params.yaml"), "--set", "scale=smoke", "--warmup", "1"]
    rows = module.main([*args, "--repeats", "1", "--runs", "zoo/crnn", "tsrn/tsrn"])
    assert torch.get_num_threads() == threads  # restored
    (row,) = rows  # tsrn/tsrn has no TextZoom data here: skipped, with the reason
    assert row["run"] == "zoo/crnn" and row["s_per_step"] > 0 and row["steps"] == 6
    assert row["cpu_min"] == row["s_per_step"] * 6 / 60
    out = capsys.readouterr().out
    assert "zoo/crnn:" in out and "tsrn/tsrn: skipped" in out and "CPU-min of training" in out
