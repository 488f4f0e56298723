"""Model-owned objectives and the run settings the engine honours (optimizer, schedule, EMA,
assets, partial init, config identity on resume)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from torch import nn

from stisr.data.datasets import collate, open_dataset
from stisr.engine import optim
from stisr.engine.assets import init_submodules, warm_start
from stisr.engine.checkpoint import atomic_save, load_checkpoint, model_payload
from stisr.engine.train import ConfigMismatch, TrainConfig, build_context, train
from stisr.losses import build_loss
from stisr.models import registry
from stisr.models.objective import Context, SRModel
from stisr.models.registry import build_model
from stisr.models.sr.tsrn import TSRN, TSRNConfig

from .test_engine import TINY_CRNN, TINY_TSRN, _cfg, _rec_cfg, _same, _weights


def _batch(tiny_textzoom, n=4, **kw) -> dict[str, Any]:
    data = open_dataset(tiny_textzoom / "train", mask=True, **kw)
    return collate([data[i] for i in range(n)])


def test_sr_default_objective_is_bitwise_the_weighted_image_loss(tiny_textzoom):
    """TSRN's losses through `training_loss` equal the pre-refactor step: the weighted (sr, hr)
    losses on the model's RGBM output against the RGBM HR."""
    torch.manual_seed(0)
    model = TSRN(TSRNConfig(**TINY_TSRN))
    batch = _batch(tiny_textzoom)
    weights = {"mse": 1.0, "gradient_profile": 1e-4}
    ctx = build_context(_cfg([tiny_textzoom / "train"], 1, losses=weights), {})
    torch.manual_seed(1)
    loss, parts = model.training_loss(batch, ctx)
    torch.manual_seed(1)
    sr = model(batch["lr"][:, :4])
    expected, expected_parts = build_loss(weights)(sr, batch["hr"][:, : sr.shape[1]])
    assert torch.equal(loss, expected)
    assert parts.keys() == expected_parts.keys()
    assert all(torch.equal(parts[k], expected_parts[k]) for k in parts)


def test_recognizer_default_objective_is_its_text_loss(tiny_str):
    torch.manual_seed(0)
    model = build_model("crnn", TINY_CRNN)
    data = open_dataset(tiny_str / "train", **model.train_data_options())
    batch = collate([data[i] for i in range(4)])
    loss, parts = model.training_loss(batch, Context())
    expected = model.text_loss(model.preprocess(batch["lr"][:, :3]), batch["label"])
    assert torch.equal(loss, expected) and torch.equal(parts["recognition"], expected)
    assert model.infer(batch)["text"] == model.decode(model(model.preprocess(batch["lr"][:, :3])))


class TwoHeadSR(SRModel, nn.Module):
    """A toy guided SR model: a second 'guide' branch with its own learning rate."""

    optimizer_options: ClassVar[frozenset[str]] = frozenset({"guide_lr"})

    def __init__(self, config: Any = None) -> None:
        super().__init__()
        self.config = config
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.guide = nn.Conv2d(4, 4, 1)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        x = self.body(lr) + self.guide(lr)
        return nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    def param_groups(self, lr, options):
        return [
            {"params": list(self.body.parameters()), "lr": lr},
            {"params": list(self.guide.parameters()), "lr": options["guide_lr"]},
        ]


@dataclass
class TwoHeadConfig:
    in_channels: int = 4


@pytest.fixture
def two_head(monkeypatch):
    monkeypatch.setitem(registry.SR_MODELS, "two_head", (TwoHeadConfig, TwoHeadSR))


def test_param_groups_schedule_and_adamw_are_honoured(tiny_textzoom, tmp_path, two_head):
    cfg = _cfg(
        [tiny_textzoom / "train"],
        4,
        model="two_head",
        model_config={},
        optimizer="adamw",
        weight_decay=0.1,
        lr=1e-2,
        optimizer_options={"guide_lr": 1e-3},
        lr_schedule="multistep",
        lr_milestones=[0.5],
        lr_gamma=0.5,
    )
    train(cfg, tmp_path, progress=False)
    state = load_checkpoint(tmp_path / "checkpoints/last.pt")["optimizer"]
    groups = state["param_groups"]
    # the last update (step 3 of 4) is past the milestone at step 2: x 0.5 on both groups
    assert [g["lr"] for g in groups] == pytest.approx([5e-3, 5e-4])
    assert [g["initial_lr"] for g in groups] == pytest.approx([1e-2, 1e-3])
    assert all(g["weight_decay"] == 0.1 for g in groups)
    history = [json.loads(x) for x in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [h["lr"] for h in history] == pytest.approx([1e-2, 1e-2, 5e-3, 5e-3])


def test_lr_factor_shapes():
    f = [optim.lr_factor("multistep", s, 10, milestones=[0.3, 0.6], gamma=0.1) for s in range(10)]
    assert f == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01])
    assert optim.lr_factor("constant", 0, 10, warmup_steps=4) == 0.25
    assert optim.lr_factor("cosine", 10, 10) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="optimizer"):
        optim.build_optimizer("sgd", [{"params": [nn.Parameter(torch.zeros(1))], "lr": 1}],
                              betas=(0.9, 0.99), weight_decay=0)  # fmt: skip


def test_ema_weights_become_model_pt(tiny_textzoom, tmp_path):
    data = [tiny_textzoom / "train"]
    metrics = train(_cfg(data, 3, ema=0.5), tmp_path / "ema", progress=False)
    assert metrics["weights"] == "ema"
    ckpt = load_checkpoint(tmp_path / "ema/checkpoints/last.pt")
    final = _weights(tmp_path / "ema/model.pt")
    assert _same(final, ckpt["ema"]) and not _same(final, ckpt["state_dict"])
    # resuming restores the average: 1 + 2 steps == 3 steps
    train(_cfg(data, 1, ema=0.5), tmp_path / "cut", progress=False)
    train(_cfg(data, 3, ema=0.5), tmp_path / "cut", progress=False)
    assert _same(final, _weights(tmp_path / "cut/model.pt"))


def test_checkpoint_carries_scaler_and_identity(tiny_textzoom, tmp_path):
    cfg = _cfg([tiny_textzoom / "train"], 2)
    train(cfg, tmp_path, progress=False)
    ckpt = load_checkpoint(tmp_path / "checkpoints/last.pt")
    assert "scaler" in ckpt and ckpt["identity"] == cfg.identity()
    assert json.loads((tmp_path / "metrics.json").read_text())["identity_hash"] == (
        cfg.identity_hash()
    )


def test_resume_with_a_changed_config_is_refused_and_restart_keeps_the_old(tiny_textzoom, tmp_path):
    data = [tiny_textzoom / "train"]
    train(_cfg(data, 2), tmp_path, progress=False)
    before = (tmp_path / "checkpoints/last.pt").read_bytes()
    changed = _cfg(data, 4, losses={"mse": 2.0, "gradient_profile": 1e-4})
    with pytest.raises(ConfigMismatch, match="differs in: losses"):
        train(changed, tmp_path, progress=False)
    assert (tmp_path / "checkpoints/last.pt").read_bytes() == before  # nothing touched
    with pytest.raises(ConfigMismatch, match="model_config"):
        train(_cfg(data, 4, model_config={"hidden_units": 2, "srb_nums": 1}), tmp_path,
              progress=False)  # fmt: skip
    with pytest.raises(ConfigMismatch, match="past the budget"):
        train(_cfg(data, 1), tmp_path, progress=False)
    train(changed, tmp_path, progress=False, restart=True)
    assert (tmp_path / "checkpoints.stale-1/last.pt").read_bytes() == before
    fresh = train(changed, tmp_path / "fresh", progress=False)
    assert _same(_weights(tmp_path / "model.pt"), _weights(tmp_path / "fresh/model.pt"))
    assert fresh["steps"] == 4
    # the step budget alone may grow: 4 -> 6 resumes
    assert train(_cfg(data, 6, losses=changed.losses), tmp_path, progress=False)["steps"] == 6


def test_partial_init_loads_a_submodule_strictly(tiny_str, tmp_path):
    crnn = build_model("crnn", TINY_CRNN)
    atomic_save(model_payload(crnn, "crnn", TINY_CRNN), tmp_path / "crnn.pt")

    class Host(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.guide = build_model("crnn", cfg)

    host = Host(TINY_CRNN)
    init_submodules(host, {"guide": str(tmp_path / "crnn.pt")}, "test/host")
    assert _same(host.guide.state_dict(), crnn.state_dict())
    with pytest.raises(ValueError, match="lacks"):
        init_submodules(host, {"nothing": str(tmp_path / "crnn.pt")}, "test/host")
    stages = nn.Module()
    stages.guides = nn.ModuleList([build_model("crnn", TINY_CRNN) for _ in range(2)])
    init_submodules(stages, {"guides": str(tmp_path / "crnn.pt")}, "test/stages")
    assert all(_same(g.state_dict(), crnn.state_dict()) for g in stages.guides)
    wide = Host({**TINY_CRNN, "hidden": 16})
    with pytest.raises(ValueError, match="sub-module 'guide'"):
        init_submodules(wide, {"guide": str(tmp_path / "crnn.pt")}, "test/host")


def test_warm_start_copies_matching_tensors_and_is_a_listed_deviation(tiny_textzoom, tmp_path):
    data = [tiny_textzoom / "train"]
    base = train(_cfg(data, 2), tmp_path / "base", progress=False)
    assert "deviations" not in base
    start = _weights(tmp_path / "base/model.pt")
    # a wider ablation: the head and tail keep their shapes, the SR blocks do not
    wider = {**TINY_TSRN, "srb_nums": 2}
    model = build_model("tsrn", wider)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    note = warm_start(model, str(tmp_path / "base/model.pt"), "test/wider")
    own = model.state_dict()
    copied = [k for k in own if k in start and start[k].shape == own[k].shape]
    assert copied and all(torch.equal(own[k], start[k]) for k in copied)
    kept = [k for k in own if k not in copied]
    assert kept and all(torch.equal(own[k], fresh[k]) for k in kept)
    assert f"{len(copied)} of {len(own)} tensors" in note and "from scratch" in note
    cfg = _cfg(data, 2, model_config=wider, warm_start=str(tmp_path / "base/model.pt"))
    metrics = train(cfg, tmp_path / "ablation", progress=False)
    assert any("warm-started from" in d for d in metrics["deviations"])
    crnn = build_model("crnn", TINY_CRNN)
    with pytest.raises(ValueError, match="shares no tensor"):
        warm_start(crnn, str(tmp_path / "base/model.pt"), "test/crnn")


def test_frozen_checkpoint_asset_reaches_the_context(tiny_str, tmp_path):
    train(_rec_cfg([tiny_str / "train"], 2), tmp_path / "rec", progress=False)
    cfg = _cfg(
        [tiny_str / "train"],
        1,
        assets={"guide": {"kind": "checkpoint", "path": str(tmp_path / "rec/model.pt")}},
    )
    from stisr.engine.assets import build_assets

    assets = build_assets(cfg.assets, "cpu")
    ctx = build_context(cfg, assets)
    guide = ctx.asset("guide")
    assert not guide.training and not any(p.requires_grad for p in guide.parameters())
    with pytest.raises(KeyError, match="run spec `assets:`"):
        ctx.asset("teacher")


def test_train_config_validates_settings():
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(run="r", model="tsrn", model_config={}, train_dirs=[], optimizer="sgd")
    with pytest.raises(ValueError, match="milestones"):
        TrainConfig(run="r", model="tsrn", model_config={}, train_dirs=[], lr_milestones=[1.5])
    with pytest.raises(ValueError, match="ema"):
        TrainConfig(run="r", model="tsrn", model_config={}, train_dirs=[], ema=1.0)
