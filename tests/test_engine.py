"""The training loop and evaluator on tiny models: determinism, resuming, pre-emption."""

from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch

from stisr.engine.checkpoint import load_checkpoint, load_model
from stisr.engine.evaluate import evaluate
from stisr.engine.train import EXIT_REQUEUE, StepBatchSampler, TrainConfig, train
from stisr.engine.train_config import lr_at
from stisr.models.sr.tsrn import TSRN

TINY_TSRN = {"hidden_units": 4, "srb_nums": 1}
TINY_CRNN = {"cnn_widths": [4, 8, 8, 8, 8, 8, 8], "hidden": 8}


def _cfg(data_dirs, steps, **kw) -> TrainConfig:
    base = dict(
        run="test/tsrn",
        task="sr",
        model="tsrn",
        model_config=TINY_TSRN,
        train_dirs=[str(d) for d in data_dirs],
        losses={"mse": 1.0, "gradient_profile": 1e-4},
        steps=steps,
        batch_size=4,
        checkpoint_every=2,
        log_every=1,
        seed=7,
    )
    base.update(kw)
    return TrainConfig(**base)


def _rec_cfg(data_dirs, steps, **kw) -> TrainConfig:
    """The tiny CRNN recognition run the engine, selection and bad-input tests share."""
    rec = dict(run="test/crnn", task="rec", model="crnn", model_config=TINY_CRNN, losses={})
    return _cfg(data_dirs, steps, **{**rec, **kw})


def _weights(path):
    return load_checkpoint(path)["state_dict"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_batches_are_a_function_of_step():
    full = list(StepBatchSampler(10, 4, seed=1, start_step=0, total_steps=7))
    tail = list(StepBatchSampler(10, 4, seed=1, start_step=4, total_steps=7))
    assert full[4:] == tail
    assert all(len(b) == 4 for b in full)
    with pytest.raises(ValueError, match="empty"):
        StepBatchSampler(0, 4, seed=1, start_step=0, total_steps=1)


def test_same_seed_same_weights_and_resume_equals_uninterrupted(tiny_textzoom, tmp_path):
    data = [tiny_textzoom / "train"]
    m1 = train(_cfg(data, 6), tmp_path / "a", progress=False)
    m2 = train(_cfg(data, 6), tmp_path / "b", progress=False)
    assert m1["final_loss"] == m2["final_loss"]
    assert _same(_weights(tmp_path / "a/model.pt"), _weights(tmp_path / "b/model.pt"))
    # stop after 4 steps, then continue to 6 from the checkpoint
    train(_cfg(data, 4), tmp_path / "c", progress=False)
    m3 = train(_cfg(data, 6), tmp_path / "c", progress=False)
    assert _same(_weights(tmp_path / "a/model.pt"), _weights(tmp_path / "c/model.pt"))
    assert m3["final_loss"] == m1["final_loss"]
    history = [json.loads(x) for x in (tmp_path / "c/history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "c/samples.png").stat().st_size > 0


def test_sigterm_checkpoints_and_exits_for_requeue(tiny_textzoom, tmp_path, monkeypatch):
    data = [tiny_textzoom / "train"]
    calls = {"n": 0}
    real_call = TSRN.training_loss

    def call_then_signal(self, batch, ctx):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_call(self, batch, ctx)

    monkeypatch.setattr(TSRN, "training_loss", call_then_signal)
    with pytest.raises(SystemExit) as exc:
        train(_cfg(data, 6, checkpoint_every=100), tmp_path / "p", progress=False)
    assert exc.value.code == EXIT_REQUEUE
    assert load_checkpoint(tmp_path / "p/checkpoints/last.pt")["step"] == 3
    assert not (tmp_path / "p/model.pt").exists()
    monkeypatch.setattr(TSRN, "training_loss", real_call)
    train(_cfg(data, 6, checkpoint_every=100), tmp_path / "p", progress=False)
    train(_cfg(data, 6, checkpoint_every=100), tmp_path / "q", progress=False)
    assert _same(_weights(tmp_path / "p/model.pt"), _weights(tmp_path / "q/model.pt"))


def test_recognizer_training_and_evaluation(tiny_str, tiny_textzoom, tmp_path):
    cfg = _rec_cfg([tiny_str / "train"], 3, batch_size=8)
    metrics = train(cfg, tmp_path / "crnn", progress=False)
    assert metrics["steps"] == 3 and metrics["parameters"] > 0
    assert load_model(tmp_path / "crnn/model.pt").training is True  # rebuilt, weights loaded
    out = tmp_path / "eval.json"
    subsets = {s: [tiny_textzoom / "test" / s] for s in ("easy", "medium", "hard")}
    result = evaluate(
        sr="bicubic",
        recognizer="test/crnn",
        testset="textzoom_test",
        subsets=subsets,
        out_path=out,
        rec_checkpoint=tmp_path / "crnn/model.pt",
        weighted=True,
        samples=2,
    )
    assert json.loads(out.read_text()) == result
    avg = result["subsets"]["average"]
    assert avg["size"] == 18
    assert 0.0 <= avg["accuracy"] <= 1.0
    assert 5 < avg["psnr"] < 60 and 0 < avg["ssim"] <= 1
    assert out.with_suffix(".samples.npz").exists()


def test_evaluate_hr_without_recognizer_counts_sizes(tiny_textzoom, tmp_path):
    result = evaluate(
        sr="hr",
        recognizer="none",
        testset="textzoom_test",
        subsets={"easy": [tiny_textzoom / "test/easy"]},
        out_path=tmp_path / "e.json",
    )
    assert result["subsets"]["easy"] == {"size": 6}


def test_cosine_lr_schedule_is_followed_and_resume_is_exact(tiny_textzoom, tmp_path, monkeypatch):
    data = [tiny_textzoom / "train"]
    kw = dict(lr_schedule="cosine", warmup_steps=2, checkpoint_every=100)
    train(_cfg(data, 6, **kw), tmp_path / "ref", progress=False)
    history = [json.loads(x) for x in (tmp_path / "ref/history.jsonl").read_text().splitlines()]
    # warm-up 0.5 -> 1 x lr, then half a cosine over the 4 remaining updates
    quarter = math.cos(math.pi / 4)
    expected = [0.5, 1.0, 1.0, (1 + quarter) / 2, 0.5, (1 - quarter) / 2]
    assert [h["lr"] for h in history] == pytest.approx([1e-3 * f for f in expected])
    assert lr_at(_cfg(data, 6, **kw), 6, 6) == 0.0  # decays to 0 at the end
    # SIGTERM mid-run: the resumed run picks the curve up where it stopped
    real_call = TSRN.training_loss
    calls = {"n": 0}

    def call_then_signal(self, batch, ctx):
        calls["n"] += 1
        if calls["n"] == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_call(self, batch, ctx)

    monkeypatch.setattr(TSRN, "training_loss", call_then_signal)
    with pytest.raises(SystemExit):
        train(_cfg(data, 6, **kw), tmp_path / "cut", progress=False)
    monkeypatch.setattr(TSRN, "training_loss", real_call)
    train(_cfg(data, 6, **kw), tmp_path / "cut", progress=False)
    assert _same(_weights(tmp_path / "ref/model.pt"), _weights(tmp_path / "cut/model.pt"))
    cut = (tmp_path / "cut/history.jsonl").read_text()
    assert cut == (tmp_path / "ref/history.jsonl").read_text()
    with pytest.raises(ValueError, match="lr_schedule"):
        _cfg(data, 6, lr_schedule="sometimes")
