"""Checkpoint selection (params.yaml train.selection): last, best on test, best on a hold-out."""

from __future__ import annotations

import json

import pytest
import torch

from stisr.engine import selection as selection_mod
from stisr.engine.checkpoint import load_checkpoint
from stisr.engine.selection import Selector, split_holdout
from stisr.engine.train import TrainConfig, train
from stisr.models.registry import build_model
from tests.test_engine import TINY_TSRN, _cfg, _rec_cfg


def _sr_cfg(tz, steps, **kw) -> TrainConfig:
    return _cfg([tz / "train"], steps, **kw)  # the engine tests' tiny TSRN run


@pytest.fixture(scope="module")
def tiny_crnn(tiny_str, tmp_path_factory):
    out = tmp_path_factory.mktemp("crnn")
    train(_rec_cfg([tiny_str / "train"], 1), out, progress=False)
    return out / "model.pt"


def _weights(path):
    return load_checkpoint(path)["state_dict"]


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_split_holdout_is_seeded_disjoint_and_checked():
    data = list(range(40))
    train_a, held_a = split_holdout(data, 0.1, seed=5)
    train_b, held_b = split_holdout(data, 0.1, seed=5)
    assert list(held_a.indices) == list(held_b.indices) and len(held_a) == 4
    assert sorted([*train_a.indices, *held_a.indices]) == data
    assert list(split_holdout(data, 0.1, seed=6)[1].indices) != list(held_a.indices)
    with pytest.raises(ValueError, match="train.holdout"):
        split_holdout(list(range(5)), 0.05, seed=0)  # rounds to 0 held-out images


def test_selector_sums_set_accuracies_and_restores_mode(tiny_textzoom):
    from stisr.data.datasets import open_dataset

    sets = {s: open_dataset(tiny_textzoom / "test" / s, mask=True) for s in ("easy", "hard")}
    labels = [sets["easy"][i]["label"] for i in range(len(sets["easy"]))]
    calls = iter([labels, ["?"] * len(labels)])  # easy all right, hard all wrong
    selector = Selector(sets, lambda images: next(calls), batch_size=64)
    model = build_model("tsrn", TINY_TSRN)
    model.train()
    scores = selector.score(model)
    assert scores == {"easy": 1.0, "hard": 0.0, "score": 1.0}
    assert model.training


def test_test_selection_keeps_the_best_step_and_resumes_exactly(
    tiny_textzoom, tiny_crnn, tmp_path, monkeypatch
):
    scripted = {2: 0.1, 4: 0.3, 6: 0.2}  # the best checkpoint is step 4
    steps_seen = []

    def fake_score(self, model, device="cpu"):
        step = 2 * (len(steps_seen) + 1) if not steps_seen else steps_seen[-1] + 2
        steps_seen.append(step)
        return {"easy": scripted[step], "score": scripted[step]}

    sets = {"easy": [str(tiny_textzoom / "test" / "easy")]}
    kw = dict(selection="test", select_sets=sets, select_recognizer=str(tiny_crnn))
    monkeypatch.setattr(selection_mod.Selector, "score", fake_score)
    metrics = train(_sr_cfg(tiny_textzoom, 6, **kw), tmp_path / "sel", progress=False)
    assert metrics["selected_step"] == 4 and metrics["selection_score"] == pytest.approx(0.3)
    train(_sr_cfg(tiny_textzoom, 4), tmp_path / "ref4", progress=False)  # plain run to step 4
    assert _same(_weights(tmp_path / "sel/model.pt"), _weights(tmp_path / "ref4/model.pt"))
    history = [json.loads(x) for x in (tmp_path / "sel/history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history if "select/score" in h] == [2, 4, 6]

    # interrupted after step 4 (checkpoint holds the best so far), resumed to 6: same choice
    steps_seen.clear()
    train(_sr_cfg(tiny_textzoom, 4, **kw), tmp_path / "res", progress=False)
    assert load_checkpoint(tmp_path / "res/checkpoints/last.pt")["selection"]["step"] == 4
    steps_seen[:] = [4]
    resumed = train(_sr_cfg(tiny_textzoom, 6, **kw), tmp_path / "res", progress=False)
    assert resumed["selected_step"] == 4
    assert _same(_weights(tmp_path / "res/model.pt"), _weights(tmp_path / "sel/model.pt"))


def test_real_scoring_leaves_training_unchanged(tiny_textzoom, tiny_crnn, tmp_path):
    """Scoring with a real recognizer draws no random numbers: the last weights are those of a
    run without selection, and a tie keeps the earliest checkpoint."""
    sets = {"easy": [str(tiny_textzoom / "test" / "easy")]}
    kw = dict(selection="test", select_sets=sets, select_recognizer=str(tiny_crnn))
    metrics = train(_sr_cfg(tiny_textzoom, 4, **kw), tmp_path / "sel", progress=False)
    train(_sr_cfg(tiny_textzoom, 4), tmp_path / "plain", progress=False)
    last = _weights(tmp_path / "sel/checkpoints/last.pt")
    assert _same(last, _weights(tmp_path / "plain/model.pt"))
    assert metrics["selection"] == "test" and metrics["selected_step"] in (2, 4)


def test_validation_selection_trains_on_the_rest(tiny_textzoom, tiny_crnn, tmp_path):
    kw = dict(selection="validation", holdout=0.25, select_recognizer=str(tiny_crnn))
    metrics = train(_sr_cfg(tiny_textzoom, 2, **kw), tmp_path / "val", progress=False)
    assert metrics["train_images"] == 24 - 6 and metrics["selection"] == "validation"


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"selection": "best"}, "selection must be one of"),
        ({"selection": "test", "select_recognizer": "r.pt"}, "needs select_sets"),
        ({"selection": "validation"}, "needs select_recognizer"),
        ({"selection": "test", "task": "rec", "select_recognizer": "r.pt"}, "SR runs only"),
    ],
)
def test_bad_selection_settings_are_named(tiny_textzoom, kw, match):
    with pytest.raises(ValueError, match=match):
        _sr_cfg(tiny_textzoom, 2, **kw)


def test_selection_settings_follow_params_and_source():
    from stisr.config import load_params
    from stisr.papers import plan
    from stisr.papers.spec import all_runs, load_specs

    from .conftest import REPO

    runs = all_runs(load_specs())
    params = load_params(REPO / "params.yaml", {"scale": "smoke"})
    assert plan.selection_settings(params, runs["tsrn/tsrn"], runs) == {"selection": "last"}
    params["train"].update(selection="test", selection_recognizer="crnn")
    got = plan.selection_settings(params, runs["tsrn/tsrn"], runs)
    assert got["select_recognizer"].endswith("train/zoo.crnn/model.pt")
    assert set(got["select_sets"]) == {"easy", "medium", "hard"}
    assert plan.selection_settings(params, runs["zoo/crnn"], runs) == {"selection": "last"}
    official = load_params(REPO / "params.yaml", {"source": "official", "scale": "paper"})
    official["train"].update(selection="validation", selection_recognizer="crnn")
    got = plan.selection_settings(official, runs["tsrn/tsrn"], runs)
    assert got["select_recognizer"] == "data/official/weights/crnn.stisr.pt"
    assert "select_sets" not in got and got["holdout"] == official["train"]["holdout"]
    official["train"]["selection_recognizer"] = "ppocr"
    with pytest.raises(ValueError, match="train.selection_recognizer"):
        plan.selection_settings(official, runs["tsrn/tsrn"], runs)
