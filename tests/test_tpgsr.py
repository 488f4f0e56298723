"""TPGSR: official layout and size, multi-stage shapes, TP loss, objective, prior zeroing."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch

from stisr.losses import build_loss
from stisr.losses.text_prior import TextPriorLoss, text_prior_kl, text_prior_l1, text_prior_loss
from stisr.models.layers.tpgsr_blocks import TPTransformer
from stisr.models.layers.tps_stn import LowResSTNHead
from stisr.models.objective import Context
from stisr.models.rec.crnn import CRNN, CRNNConfig
from stisr.models.sr.tpgsr import (
    CODE_VARIANT,
    TPGSR,
    TPGSRConfig,
    official_files,
    official_state_dict,
)
from tests.test_models_rec import _official_shapes as crnn_official_shapes

TINY_CRNN = {"cnn_widths": (4, 8, 8, 8, 16, 16, 16), "hidden": 8}
TINY = {
    "hidden_units": 4,
    "srb_nums": 1,
    "text_channels": 4,
    "tp_widths": (8, 8, 8),
    "tpg": TINY_CRNN,
    "iterations": 2,
}
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- official layout ---------------------------------------------------------------------------


def _bn(s: OrderedDict, prefix: str, n: int) -> None:
    for k in _BN:
        s[f"{prefix}.{k}"] = () if k == "num_batches_tracked" else (n,)


def _gru_block(s: OrderedDict, prefix: str, n_in: int, c: int) -> None:
    """TPGSR `GruBlock(n_in, c)`: 1x1 conv, then `nn.GRU(c, c // 2, bidirectional=True)`."""
    s[f"{prefix}.conv1.weight"] = (c, n_in, 1, 1)
    s[f"{prefix}.conv1.bias"] = (c,)
    for suffix in ("", "_reverse"):
        s[f"{prefix}.gru.weight_ih_l0{suffix}"] = (3 * (c // 2), c)
        s[f"{prefix}.gru.weight_hh_l0{suffix}"] = (3 * (c // 2), c // 2)
        s[f"{prefix}.gru.bias_ih_l0{suffix}"] = (3 * (c // 2),)
        s[f"{prefix}.gru.bias_hh_l0{suffix}"] = (3 * (c // 2),)


def _official_sr_shapes() -> OrderedDict[str, tuple[int, ...]]:
    """`state_dict_G` of TPGSR `model/tsrn.py` `TSRN_TL(STN=True, mask=True, srb_nums=5,
    hidden_units=32)` (text_emb 37, out_text_channels 32; `stn_head.py`, 16x64 input)."""
    s: OrderedDict[str, tuple[int, ...]] = OrderedDict()
    s["block1.0.weight"], s["block1.0.bias"], s["block1.1.weight"] = (64, 4, 9, 9), (64,), (1,)
    for b in range(2, 7):  # RecurrentResidualBlockTL(64, 32); its `prelu` is a parameter-free mish
        s[f"block{b}.conv1.weight"], s[f"block{b}.conv1.bias"] = (64, 64, 3, 3), (64,)
        _bn(s, f"block{b}.bn1", 64)
        _gru_block(s, f"block{b}.gru1", 96, 64)
        s[f"block{b}.conv2.weight"], s[f"block{b}.conv2.bias"] = (64, 64, 3, 3), (64,)
        _bn(s, f"block{b}.bn2", 64)
        _gru_block(s, f"block{b}.gru2", 64, 64)
    for i, (c_in, c_out) in enumerate([(37, 512), (512, 128), (128, 64), (64, 32)], 1):
        s[f"infoGen.tconv{i}.weight"] = (c_in, c_out, 3, 3)  # ConvTranspose2d, bias=False
        _bn(s, f"infoGen.bn{i}", c_out)
    s["block7.0.weight"], s["block7.0.bias"] = (64, 64, 3, 3), (64,)
    _bn(s, "block7.1", 64)
    s["block8.0.conv.weight"], s["block8.0.conv.bias"] = (256, 64, 3, 3), (256,)
    s["block8.1.weight"], s["block8.1.bias"] = (4, 64, 9, 9), (4,)
    s["tps.inverse_kernel"], s["tps.padding_matrix"] = (23, 23), (3, 2)
    s["tps.target_coordinate_repr"], s["tps.target_control_points"] = (16 * 64, 23), (20, 2)
    prev = 4
    for idx, width in zip((0, 2, 4, 6, 8, 10), (32, 64, 128, 256, 256, 256), strict=True):
        s[f"stn_head.stn_convnet.{idx}.0.weight"] = (width, prev, 3, 3)
        s[f"stn_head.stn_convnet.{idx}.0.bias"] = (width,)
        _bn(s, f"stn_head.stn_convnet.{idx}.1", width)
        prev = width
    s["stn_head.stn_fc1.0.weight"], s["stn_head.stn_fc1.0.bias"] = (512, 512), (512,)  # 2 x 256
    _bn(s, "stn_head.stn_fc1.1", 512)
    s["stn_head.stn_fc2.weight"], s["stn_head.stn_fc2.bias"] = (40, 512), (40,)
    return s


def _fake(shapes: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    return {
        prefix + k: torch.randint(0, 9, s) if k.endswith("num_batches_tracked") else torch.randn(s)
        for k, s in shapes.items()
    }


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_checkpoint_files_load_strictly(prefix: str) -> None:
    sr_ckpt = {"state_dict_G": _fake(_official_sr_shapes(), prefix), "info": {"iters": 7}}
    tpgs = [_fake(crnn_official_shapes(), prefix) for _ in range(3)]  # recognizer_best_{i}.pth
    model = TPGSR(TPGSRConfig(**CODE_VARIANT))
    result = model.load_state_dict(official_state_dict({"sr": sr_ckpt, "tpg": tpgs}), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    infogen = sr_ckpt["state_dict_G"][prefix + "infoGen.tconv1.weight"]
    torch.testing.assert_close(model.sr[0].infoGen.tconv1.weight, infogen)
    embedding = tpgs[2][prefix + "rnn.1.embedding.bias"]
    torch.testing.assert_close(model.tpg[2].rnn[1].embedding.bias, embedding)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if "num_batches" not in k}
    expected = {f"sr.0.{k}": v for k, v in _official_sr_shapes().items() if "num_batches" not in k}
    for i in range(3):
        expected.update({f"tpg.{i}.{k}": v for k, v in crnn_official_shapes().items()})
    assert ours == expected
    assert official_files(model.config) == {
        "sr": ["model_best_0.pth"],
        "tpg": ["recognizer_best_0.pth", "recognizer_best_1.pth", "recognizer_best_2.pth"],
    }


def test_official_state_dict_forms_and_errors() -> None:
    sd = {"module.block1.1.weight": torch.ones(1)}
    assert list(official_state_dict({"state_dict_G": sd})) == ["sr.0.block1.1.weight"]
    two = official_state_dict({"sr": [{"state_dict_G": sd}, {"state_dict_G": sd}], "tpg": sd})
    assert sorted(two) == ["sr.0.block1.1.weight", "sr.1.block1.1.weight", "tpg.0.block1.1.weight"]
    with pytest.raises(ValueError, match="state_dict_G"):
        official_state_dict({"weights": sd})
    with pytest.raises(ValueError, match="mapping"):
        official_state_dict([sd])  # type: ignore[arg-type]


def test_parameter_count_at_paper_scale() -> None:
    # Official TSRN_TL (TPGSR model/tsrn.py, GRU + mish), by hand from its layer sizes:
    # block1 conv9x9 4->64 + PReLU 20,801; a TL-SRB = 2 x conv3x3 64->64 (36,928 each) + 2 BN
    # (128 each) + gru1 (1x1 96->64 6,208 + BiGRU(64, 32) 18,816) + gru2 (1x1 64->64 4,160 +
    # 18,816) = 122,112, x5 = 610,560; block7 conv3x3 + BN 37,056; block8 upsample conv 64->256
    # 147,712 + conv9x9 64->4 20,740 = 168,452; infoGen transposed convs 37->512->128->64->32
    # (170,496 + 589,824 + 73,728 + 18,432) + BNs 1,472 = 853,952; STN head 16x64 (convnet
    # 1,570,848 + fc1 263,680 + fc2 20,520) = 1,855,048. Total 3,545,869.
    sr_official = 20_801 + 610_560 + 37_056 + 168_452 + 853_952 + 1_855_048
    crnn_official = 8_331_301  # crnn.pytorch CRNN(32, 1, 37, 256), see test_models_rec.py
    code = TPGSR(TPGSRConfig(**CODE_VARIANT))  # `--sr_share --stu_iter=3`: 1 SR + 3 TPGs
    assert n_params(code.sr) == sr_official == 3_545_869
    assert n_params(code) == sr_official + 3 * crnn_official == 28_539_772
    # Paper defaults (BLSTM, PReLU): each of the 10 RNNs has 4/3 the GRU's 18,816 weights
    # (+6,272) and 6 PReLUs add one slope each.
    assert n_params(TPGSR()) == 28_539_772 + 10 * 6_272 + 6
    # IMAGE Table 1: TPGSR alone 35.33M - 8.36M (CRNN) = 26.97M. Only 3 stages come close: 1 SR
    # branch + 3 generators is 28.54M, 26.68M without the STN head (1,855,048), which the code
    # runs only in training; with IMAGE's own CRNN figure (8.36M x 3) 26.77M. The last 0.2M
    # (0.75%) we cannot place. 2 or 4 stages would be 18.4M / 35.0M.
    inference = n_params(code) - n_params(code.sr[0].stn_head)
    assert inference == 26_684_724
    assert abs(inference - 26.97e6) / 26.97e6 < 0.012
    for stages in (2, 4):
        assert abs(inference + (stages - 3) * crnn_official - 26.97e6) > 7e6


def test_low_res_stn_head_takes_16x64() -> None:
    head = LowResSTNHead(4, 20, "none", (16, 64)).eval()
    feat, points = head(torch.rand(2, 4, 16, 64))
    assert feat.shape == (2, 512) and points.shape == (2, 20, 2)
    with pytest.raises(ValueError, match="multiple of 16"):
        LowResSTNHead(4, 20, "none", (8, 64))


# --- shapes and stages -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {**CODE_VARIANT, "iterations": 3},
        {"use_stn": False, "share_sr": False, "share_tpg": True, "iterations": 3},
        {"iterations": 1, "scale_factor": 4, "srb_nums": 0},
    ],
)
def test_stage_outputs_and_shapes(overrides: dict) -> None:
    cfg = TPGSRConfig(**{**TINY, **overrides})
    model = TPGSR(cfg)
    assert len(model.sr) == cfg.num_sr_branches and len(model.tpg) == cfg.num_tp_generators
    size = (16 * cfg.scale_factor, 64 * cfg.scale_factor)
    for training in (True, False):
        out = model.train(training).run_stages(torch.rand(3, 4, 16, 64))
        assert len(out.sr_stages) == len(out.priors) == cfg.iterations
        for sr, prior in zip(out.sr_stages, out.priors, strict=True):
            assert sr.shape == (3, 4, *size) and sr.abs().max() < 1  # tanh
            assert prior.shape == (26, 3, 37)
            torch.testing.assert_close(prior.sum(-1), torch.ones(26, 3))
    with torch.no_grad():
        assert model(torch.rand(1, 4, 16, 64)).shape == (1, 4, *size)
    result = model.infer({"lr": torch.rand(2, 4, 16, 64)})
    assert set(result) == {"sr", "sr_stages", "text_prior"}
    assert result["sr"] is result["sr_stages"][-1] and len(result["text_prior"]) == cfg.iterations


def test_later_stages_read_the_previous_sr_image() -> None:
    model = TPGSR(TPGSRConfig(**{**TINY, "iterations": 3})).eval()
    lr = torch.rand(2, 4, 16, 64)
    with torch.no_grad():
        out = model.run_stages(lr)
        torch.testing.assert_close(out.priors[0], model.text_prior(lr, 0))
        for i in (1, 2):
            torch.testing.assert_close(out.priors[i], model.text_prior(out.sr_stages[i - 1], i))
            fed = out.priors[i].permute(1, 2, 0).unsqueeze(2)
            torch.testing.assert_close(out.sr_stages[i], model.sr[0](lr, fed))


def test_tp_transformer_maps_26_frames_to_203_columns() -> None:
    assert TPTransformer(37, 32, (8, 8, 8))(torch.rand(2, 37, 1, 26)).shape == (2, 32, 1, 203)


# --- text prior loss ---------------------------------------------------------------------------


def test_text_prior_loss_by_hand() -> None:
    pred = torch.tensor([[[0.25, 0.75]], [[0.5, 0.5]]])  # (T=2, B=1, C=2)
    target = torch.tensor([[[0.5, 0.5]], [[0.5, 0.5]]])
    l1 = (0.25 + 0.25 + 0 + 0) / 4  # mean over all 4 elements
    kl = (0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75) + 0 + 0) / 4  # 'mean', not batch
    assert text_prior_l1(pred, target).item() == pytest.approx(l1)
    assert text_prior_kl(pred, target).item() == pytest.approx(kl, rel=1e-6)
    assert text_prior_loss(pred, target).item() == pytest.approx(l1 + kl, rel=1e-6)
    assert TextPriorLoss(l1_weight=0.0)(pred, target).item() == pytest.approx(kl, rel=1e-6)
    assert text_prior_loss(target, target).item() == pytest.approx(0.0, abs=1e-7)
    zero = torch.tensor([[[0.0, 1.0]]])  # eps inside the logs keeps a zero probability finite
    assert torch.isfinite(text_prior_loss(zero, torch.tensor([[[0.5, 0.5]]])))
    with pytest.raises(ValueError, match="same shape"):
        text_prior_loss(pred, target[:1])


# --- objective ---------------------------------------------------------------------------------


def _ctx(weights: dict, teacher: torch.nn.Module | None = None) -> Context:
    image = {k: v for k, v in weights.items() if k != "text_prior"}
    assets = {"tp_teacher": teacher} if teacher is not None else {}
    return Context(weights=weights, image_loss=build_loss(image), assets=assets)


def _batch(n: int = 4) -> dict:
    return {"lr": torch.rand(n, 4, 16, 64), "hr": torch.rand(n, 4, 32, 128), "label": ["a"] * n}


def test_declarations() -> None:
    assert TPGSR.objective_losses == {"text_prior"}
    assert TPGSR.needed_assets({"mse": 1.0, "text_prior": 1.0}) == {"tp_teacher"}
    assert TPGSR.needed_assets({"mse": 1.0, "text_prior": 0.0}) == frozenset()
    assert TPGSR.optimizer_options == frozenset()  # one Adam, one learning rate in the code
    model = TPGSR(TPGSRConfig(**TINY))
    groups = model.param_groups(1e-3, {})
    assert len(groups) == 1 and sum(p.numel() for p in groups[0]["params"]) == n_params(model)


def test_training_loss_is_the_weighted_sum_of_its_parts() -> None:
    model = TPGSR(TPGSRConfig(**TINY)).eval()  # eval: deterministic, to recompute the parts
    teacher = CRNN(CRNNConfig(**TINY_CRNN)).eval()
    weights = {"mse": 1.0, "gradient_profile": 1e-4, "text_prior": 0.5}
    batch = _batch()
    loss, parts = model.training_loss(batch, _ctx(weights, teacher))
    assert set(parts) == set(weights) and all(not p.requires_grad for p in parts.values())
    torch.testing.assert_close(loss.detach(), sum(weights[k] * parts[k] for k in weights))
    with torch.no_grad():
        out = model.run_stages(batch["lr"])
        target = teacher(teacher.preprocess(batch["hr"])).softmax(-1)
        tp = sum(text_prior_loss(p, target) for p in out.priors)
        mse = sum(torch.nn.functional.mse_loss(sr, batch["hr"]) for sr in out.sr_stages)
    torch.testing.assert_close(parts["text_prior"], tp)
    torch.testing.assert_close(parts["mse"], mse)  # image losses summed over the stages
    loss_no_tp, parts_no_tp = model.training_loss(batch, _ctx({"mse": 1.0}))
    assert set(parts_no_tp) == {"mse"} and torch.isfinite(loss_no_tp)
    with pytest.raises(KeyError, match="tp_teacher"):
        model.training_loss(batch, _ctx({"mse": 1.0, "text_prior": 1.0}))


def test_crnn_state_dict_loads_into_the_tp_generators() -> None:
    pretrained = CRNN(CRNNConfig(**TINY_CRNN)).state_dict()
    model = TPGSR(TPGSRConfig(**{**TINY, "iterations": 3}))
    model.tpg[0].load_state_dict(pretrained, strict=True)
    model.load_tp_generators(pretrained)
    for tpg in model.tpg:
        torch.testing.assert_close(tpg.cnn.conv0.weight, pretrained["cnn.conv0.weight"])
    with pytest.raises(RuntimeError):
        model.load_tp_generators(CRNN().state_dict())  # the wrong size does not load


def test_first_quarter_of_the_batch_gets_a_zero_prior_in_training() -> None:
    model = TPGSR(TPGSRConfig(**{**TINY, "zero_prior_fraction": 0.25}))
    fed: list[torch.Tensor] = []
    model.sr[0].register_forward_pre_hook(lambda _m, args: fed.append(args[1].detach()))
    out = model.train().run_stages(torch.rand(8, 4, 16, 64))
    assert len(fed) == 2
    for stage, prior in zip(fed, out.priors, strict=True):
        assert stage[:2].abs().max() == 0  # 8 // 4 = 2 samples
        torch.testing.assert_close(stage[2:], prior.permute(1, 2, 0).unsqueeze(2)[2:])
        assert prior[:, :2].sum() > 0  # the TP loss still sees the generator's prior
    fed.clear()
    with torch.no_grad():
        model.eval().run_stages(torch.rand(8, 4, 16, 64))
    assert all(stage[:2].abs().max() > 0 for stage in fed)  # never at evaluation
    assert TPGSRConfig().zero_prior_fraction == 0.0 and CODE_VARIANT["zero_prior_fraction"] == 0.25
    paper = TPGSR(TPGSRConfig(**TINY)).train()  # default (paper): no zeroing
    fed.clear()
    paper.sr[0].register_forward_pre_hook(lambda _m, args: fed.append(args[1].detach()))
    paper.run_stages(torch.rand(8, 4, 16, 64))
    assert all(stage[:2].abs().max() > 0 for stage in fed)


def test_adam_steps_are_finite() -> None:
    model = TPGSR(TPGSRConfig(**{**TINY, **CODE_VARIANT})).train()
    teacher = CRNN(CRNNConfig(**TINY_CRNN)).eval().requires_grad_(False)
    ctx = _ctx({"mse": 1.0, "gradient_profile": 1e-4, "text_prior": 1.0}, teacher)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    batch = _batch()
    for _ in range(3):
        loss, parts = model.training_loss(batch, ctx)
        opt.zero_grad()
        loss.backward()
        assert model.tpg[1].cnn.conv0.weight.grad is not None  # the TP loss trains every TPG
        opt.step()
        assert torch.isfinite(loss) and all(torch.isfinite(v) for v in parts.values())
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="zero_prior_fraction"):
        TPGSRConfig(zero_prior_fraction=1.0)
    with pytest.raises(ValueError, match="TPGSRConfig.tpg"):
        TPGSRConfig(tpg={"bogus": 1})
    with pytest.raises(ValueError, match="TPGSRConfig.iterations"):
        TPGSRConfig(iterations=0)
    with pytest.raises(ValueError, match="TPGSRConfig.tp_widths"):
        TPGSRConfig(tp_widths=[8, 8])
    with pytest.raises(ValueError, match=r"TPGSR expects \(B, 4, H, W\)"):
        TPGSR(TPGSRConfig(**TINY))(torch.rand(1, 3, 16, 64))


def test_engine_trains_tpgsr_from_its_spec_with_teacher_and_initialised_generators(
    tiny_textzoom, tiny_str, tmp_path
) -> None:
    """The spec's objective end to end through the engine: a CRNN run is the frozen TP teacher and
    the start of every stage's generator (init_modules `tpg`), and the TP loss is logged."""
    from stisr.engine.checkpoint import load_model
    from stisr.engine.train import TrainConfig, train
    from stisr.papers import plan
    from stisr.papers.spec import all_runs, load_specs

    run = all_runs(load_specs())["image/tpgsr"]
    assert run.assets == {"tp_teacher": "crnn"} and run.init_modules == {"tpg": "crnn"}
    rec = TrainConfig(run="t/crnn", task="rec", model="crnn", model_config=TINY_CRNN,
                      train_dirs=[str(tiny_str / "train")], steps=2, batch_size=4)  # fmt: skip
    train(rec, tmp_path / "crnn", progress=False)
    crnn_pt = str(tmp_path / "crnn/model.pt")
    cfg = TrainConfig(
        run="t/tpgsr",
        task="sr",
        model="tpgsr",
        model_config=TINY,
        train_dirs=[str(tiny_textzoom / "train")],
        losses=run.losses,
        steps=2,
        batch_size=4,
        log_every=1,
        init_modules={"tpg": crnn_pt},
        assets={"tp_teacher": {"kind": "checkpoint", "path": crnn_pt}},
    )
    assert not plan.run_problems(
        {**_params(), "scale": "smoke"}, "image/tpgsr", all_runs(load_specs())
    )
    train(cfg, tmp_path / "tpgsr", progress=False)
    history = (tmp_path / "tpgsr/history.jsonl").read_text()
    assert '"loss/text_prior"' in history and '"loss/gradient_profile"' in history
    model = load_model(tmp_path / "tpgsr/model.pt").eval()
    assert len(model.tpg) == 2 and model.infer({"lr": torch.rand(1, 4, 16, 64)})["sr"].shape == (
        1, 4, 32, 128)  # fmt: skip


def _params():
    from stisr.config import load_params
    from tests.conftest import REPO

    return load_params(REPO / "params.yaml")
