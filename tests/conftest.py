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
