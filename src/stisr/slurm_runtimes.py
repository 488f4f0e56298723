"""SLURM time limits of the training jobs: `slurm/runtimes.yaml` (benchmarks/gpu_hours.py).

The file maps each training run's slug (the `{run}` wildcard of workflow/rules/train.smk) to
minutes: `train: {tsrn.tsrn: 600, ...}`. The train rule reads it once when the workflow is parsed;
a missing file, a malformed one or a run it does not list gets `DEFAULT_MINUTES` (48 h, a common
partition limit), never an error, so that planning never depends on the estimate existing.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

DEFAULT_MINUTES = 2880  # 48 h
# `slurm` at the repository root links to workflow/profiles/slurm; the real path is used so that
# a checkout without the link still finds the file.
REPO_ROOT = Path(__file__).resolve().parents[2]
RUNTIMES_PATH = REPO_ROOT / "workflow" / "profiles" / "slurm" / "runtimes.yaml"


def load_runtimes(path: str | Path = RUNTIMES_PATH) -> dict[str, int]:
    """Run slug -> minutes from the file's `train:` mapping ({} when absent or unreadable)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    train = data.get("train") if isinstance(data, Mapping) else None
    if not isinstance(train, Mapping):
        return {}
    out = {}
    for slug, minutes in train.items():
        if isinstance(minutes, int | float) and not isinstance(minutes, bool) and minutes > 0:
            out[str(slug)] = int(minutes)
    return out


def train_runtime(slug: str, runtimes: Mapping[str, int]) -> int:
    """SLURM `runtime` (minutes) of the training job of run `slug`."""
    return int(runtimes.get(slug, DEFAULT_MINUTES))
