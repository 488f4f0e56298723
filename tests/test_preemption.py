"""Kill and resume: a training process SIGTERMed five times at random moments ends with the same
weights, loss history and metrics as one that was never interrupted (exact on CPU)."""

from __future__ import annotations

import json
import random
import select
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from stisr.engine.checkpoint import load_checkpoint
from stisr.engine.train import EXIT_REQUEUE, TrainConfig, train

pytestmark = pytest.mark.slow

KILLS = 5
STEPS = 150
SEED = 20240  # of the kill delays

# Runs one training segment. The wrapper announces the first step of this segment on stdout, so the
# test only signals once train() has installed its SIGTERM handler (before that, SIGTERM would kill
# the interpreter outright, which is not what a pre-emption warning meets in practice).
DRIVER = """
import json, sys
from pathlib import Path
from stisr.engine import train as t
from stisr.models.sr.tsrn import TSRN

real = TSRN.training_loss
announced = []

def announce(self, batch, ctx):
    if not announced:
        announced.append(True)
        print("training", flush=True)
    return real(self, batch, ctx)

TSRN.training_loss = announce
cfg = t.TrainConfig(**json.loads(Path(sys.argv[1]).read_text()))
t.train(cfg, Path(sys.argv[2]), progress=False)
"""


def _config(data_dir: Path) -> TrainConfig:
    return TrainConfig(
        run="preempt/tsrn",
        task="sr",
        model="tsrn",
        model_config={"hidden_units": 4, "srb_nums": 1},
        train_dirs=[str(data_dir)],
        losses={"mse": 1.0, "gradient_profile": 1e-4},
        steps=STEPS,
        batch_size=4,
        checkpoint_every=10,
        log_every=1,
        seed=7,
    )


def _segment(driver: Path, cfg_path: Path, out: Path, kill_after: float | None) -> tuple[int, str]:
    """One process; SIGTERM `kill_after` seconds after its first training step (None: no kill)."""
    proc = subprocess.Popen(
        [sys.executable, str(driver), str(cfg_path), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 180)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "training":
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"training did not start (rc={proc.poll()}): {err[-2000:]}")
        if kill_after is not None:
            time.sleep(kill_after)
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


def test_five_random_sigterms_end_with_the_uninterrupted_weights(tiny_textzoom, tmp_path):
    cfg = _config(tiny_textzoom / "train")
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(asdict(cfg)))
    out = tmp_path / "killed"
    ckpt = out / "checkpoints" / "last.pt"

    delays = [random.Random(SEED + i).uniform(0.02, 0.4) for i in range(KILLS)]
    codes, steps = [], []
    for delay in delays:
        rc, err = _segment(driver, cfg_path, out, delay)
        codes.append(rc)
        steps.append(int(load_checkpoint(ckpt)["step"]) if ckpt.exists() else -1)
        assert rc == EXIT_REQUEUE, f"kill after {delay:.2f}s: exit {rc}\n{err[-2000:]}"
        assert not (out / "model.pt").exists(), "a killed segment must not write final weights"
    assert codes == [EXIT_REQUEUE] * KILLS
    # every kill interrupted training mid-way and left a later checkpoint than the one before
    assert all(b > a for a, b in zip([0, *steps], steps, strict=False)), steps
    assert steps[-1] < STEPS, steps
    print(f"kill delays {[round(d, 2) for d in delays]} s -> checkpoint steps {steps}")

    rc, err = _segment(driver, cfg_path, out, None)
    assert rc == 0, err[-2000:]

    reference = tmp_path / "uninterrupted"
    ref_metrics = train(cfg, reference, progress=False)

    a, b = _state(out / "model.pt"), _state(reference / "model.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("steps", "final_loss", "train_images", "parameters"):
        assert metrics[key] == ref_metrics[key], key
    assert metrics["steps"] == STEPS
    history = (out / "history.jsonl").read_text().splitlines()
    assert history == (reference / "history.jsonl").read_text().splitlines()
    assert [json.loads(h)["step"] for h in history] == list(range(1, STEPS + 1))
