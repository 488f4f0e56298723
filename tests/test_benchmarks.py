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
