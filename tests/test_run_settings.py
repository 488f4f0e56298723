"""The planner's side of run settings: what a spec may ask, how it becomes a TrainConfig, and
that a run the engine cannot honour is refused with every reason."""

from __future__ import annotations

import dataclasses

import pytest

from stisr.cli import main
from stisr.config import ParamsError, load_params
from stisr.papers import identity, plan
from stisr.papers.settings import optimizer_settings, schedule_settings, setting_problems
from stisr.papers.spec import all_runs, load_specs
from stisr.papers.training import train_config, train_hash

from .conftest import REPO

PARAMS = load_params(REPO / "params.yaml")
RUNS = all_runs(load_specs())


def test_lemma_settings_resolve_to_the_papers_shape_at_every_scale():
    run = RUNS["lemma/lemma"]
    # x0.5 after 400 of 500 epochs: a milestone at 80% of the run, whatever its length
    sched = schedule_settings(run, {"lr_schedule": "constant"})
    assert sched == {"warmup_steps": 0, "lr_schedule": "multistep", "lr_milestones": [0.8],
                     "lr_gamma": 0.5}  # fmt: skip
    paper = optimizer_settings(run, 1e-3, paper_scale=True)
    assert paper["lr"] == 1e-3 and paper["betas"] == (0.5, 0.999)
    assert paper["optimizer_options"] == {"guide_lr": 1e-4}
    demo = optimizer_settings(run, 2e-3, paper_scale=False)  # the guide keeps its 1:10 ratio
    assert demo["lr"] == 2e-3 and demo["optimizer_options"]["guide_lr"] == pytest.approx(2e-4)
    every_25 = {"schedule": {"name": "step", "step_epochs": 25, "gamma": 0.1}, "epochs": 100}
    kd = schedule_settings(dataclasses.replace(RUNS["kdltr/abinet_ce"], extra=every_25), {})
    assert kd["lr_milestones"] == [0.25, 0.5, 0.75] and kd["lr_gamma"] == 0.1


def test_setting_problems_name_every_unhonoured_key():
    from stisr.models.sr.tsrn import TSRN

    run = dataclasses.replace(
        RUNS["tsrn/tsrn"],
        extra={"optimizer": {"name": "sgd", "guide_lr": 1e-4}, "schedule": {"name": "poly"},
               "distill": {}, "ema": 2},
    )  # fmt: skip
    problems = setting_problems(run, TSRN)
    text = " | ".join(problems)
    for word in ("distill", "guide_lr", "sgd", "poly", "ema"):
        assert word in text, word
    assert len(problems) == 5


def test_paper_scale_uses_the_runs_own_budget_and_batch():
    paper = {**PARAMS, "source": "official", "scale": "paper"}
    cfg = train_config(paper, "tsrn/tsrn", RUNS, runtime=False)
    assert cfg.batch_size == 512 and cfg.epochs == 500 and cfg.betas == (0.5, 0.999)
    demo = train_config(PARAMS, "tsrn/tsrn", RUNS, runtime=False)
    assert demo.steps == PARAMS["scales"]["demo"]["sr"]["steps"] and demo.epochs is None


def test_train_hash_moves_with_what_shapes_the_run_and_only_that():
    base = train_hash(PARAMS, "tsrn/tsrn", RUNS)
    demo = PARAMS["scales"]["demo"]
    models = {**demo["models"], "tsrn": {"hidden_units": 8, "srb_nums": 3}}
    wider = {**PARAMS, "scales": {**PARAMS["scales"], "demo": {**demo, "models": models}}}
    assert train_hash(wider, "tsrn/tsrn", RUNS) != base
    assert train_hash(wider, "zoo/crnn", RUNS) == train_hash(PARAMS, "zoo/crnn", RUNS)
    threads = {**PARAMS, "train": {**PARAMS["train"], "torch_threads": 2}}
    assert train_hash(threads, "tsrn/tsrn", RUNS) == base  # how fast it runs is not identity
    runs = dict(RUNS)
    runs["tsrn/tsrn"] = dataclasses.replace(RUNS["tsrn/tsrn"], losses={"mse": 1.0})
    assert train_hash(PARAMS, "tsrn/tsrn", runs) != base


def test_model_overrides_are_validated_before_any_job(tmp_path):
    bad = {**PARAMS, "scales": {**PARAMS["scales"], "demo": {
        **PARAMS["scales"]["demo"], "models": {"tsrn": {"hiden_units": 8}}}}}  # fmt: skip
    with pytest.raises(ParamsError, match=r"scales\.demo\.models\.tsrn.*hiden_units"):
        identity.check_model_overrides(bad)
    unknown = {**PARAMS, "scales": {**PARAMS["scales"], "demo": {
        **PARAMS["scales"]["demo"], "models": {"tsrm": {}}}}}  # fmt: skip
    with pytest.raises(ParamsError, match="tsrm"):
        identity.check_model_overrides(unknown)
    identity.check_model_overrides(PARAMS)


def test_train_of_a_gated_run_exits_2_with_every_reason(capsys):
    assert main(["-q", "train", "--run", "kdltr/abinet_ltr"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for word in ("distill", "soft_logits", "epochs"):
        assert word in err, word
    assert main(["-q", "train", "--run", "nope/none"]) == 2


def test_plan_lists_blocked_runs_with_reasons(capsys):
    assert main(["plan"]) == 0
    out = capsys.readouterr().out
    assert "blocked kdltr/abinet_ltr:" in out and "distill" in out
    assert "blocked tsrn/tsrn" not in out
    assert not plan.run_problems(PARAMS, "tsrn/tsrn", RUNS)


def test_network_assets_resolve_per_source_and_are_trained_in_the_dag():
    official = {**PARAMS, "source": "official", "scale": "paper"}
    emb = plan.resolve_asset(PARAMS, "tp_transformer", RUNS)
    assert emb["kind"] == "checkpoint"
    assert emb["path"] == "runs/embedded-demo/train/zoo.stt_transformer/model.pt"
    assert plan.resolve_asset(official, "tp_transformer", RUNS)["path"] == (
        "data/official/weights/tp_transformer.stisr.pt"
    )
    # the stand-in is trained although it is no evaluator (scales.demo.recognizers)
    assert not plan.run_problems(PARAMS, "lemma/tbsrn", RUNS)
    assert "zoo/stt_transformer" in plan.all_jobs(PARAMS, load_specs()).trains
    cfg = train_config(PARAMS, "image/tpgsr", RUNS, runtime=False)
    assert cfg.assets["tp_teacher"]["path"].endswith("zoo.crnn/model.pt")
    assert cfg.init_modules == {"tpg": "runs/embedded-demo/train/zoo.crnn/model.pt"}
