"""Shared fixtures: tiny embedded data made by the project's own generator (no ../shared)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_textzoom(tmp_path_factory) -> Path:
    from stisr.data.synth import make_textzoom

    out = tmp_path_factory.mktemp("tz")
    make_textzoom(out, {"train": 24, "easy": 6, "medium": 6, "hard": 6}, seed=3)
    return out


@pytest.fixture(scope="session")
def tiny_str(tmp_path_factory) -> Path:
    from stisr.data.synth import make_str_sets

    out = tmp_path_factory.mktemp("str")
    make_str_sets(out, {"train": 32, "ic13": 6}, seed=4)
    return out


@pytest.fixture
def smoke_workdir(tiny_textzoom, tmp_path, monkeypatch):
    """A working folder at smoke scale whose TextZoom training set is `tiny_textzoom`; returns
    (params, runs, stand_in), where `stand_in(run_id)` saves that run's untrained model.pt (for
    tests of how a spec wires assets and inits, where the weights do not matter)."""
    from stisr.config import load_params
    from stisr.engine.checkpoint import atomic_save, model_payload
    from stisr.models.registry import build_model
    from stisr.papers.plan import run_dir, train_set_dirs
    from stisr.papers.spec import all_runs, load_specs
    from stisr.papers.training import train_config

    runs = all_runs(load_specs())
    params = load_params(REPO / "params.yaml", {"scale": "smoke"})
    monkeypatch.chdir(tmp_path)
    for folder in train_set_dirs(params, "textzoom_train"):
        folder.parent.mkdir(parents=True)
        folder.symlink_to(tiny_textzoom / "train")

    def stand_in(run_id: str) -> Path:
        cfg = train_config(params, run_id, runs)
        path = run_dir(params, run_id) / "model.pt"
        model = build_model(cfg.model, cfg.model_config)
        atomic_save(model_payload(model, cfg.model, cfg.model_config), path)
        return path

    return params, runs, stand_in
