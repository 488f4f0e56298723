"""TATT: official layout and size, shapes, TP Interpreter, TSSIM/warp, TSC and TP losses, groups."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch

from stisr.losses import build_loss
from stisr.losses.text_prior import text_prior_loss
from stisr.models.layers.tatt_blocks import rotate_warp, tri_ssim
from stisr.models.objective import Context
from stisr.models.rec.crnn import CRNN, CRNNConfig
from stisr.models.sr.tatt import (
    CODE_VARIANT,
    OFFICIAL_FILES,
    TATT,
    TATTConfig,
    ground_truth_prior,
    official_state_dict,
)
from tests.test_models_rec import _official_shapes as crnn_official_shapes
from tests.test_tpgsr import _fake, _official_sr_shapes

TINY_CRNN = {"cnn_widths": (4, 8, 8, 8, 16, 16, 16), "hidden": 8}
TINY = {"hidden_units": 4, "srb_nums": 1, "tpg": TINY_CRNN, "pe_max_len": 64}
STILL = {"deform_degrees": 0.0}  # no random warp: deterministic objectives


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- official layout ---------------------------------------------------------------------------


def _mha(s: OrderedDict, prefix: str, d: int) -> None:
    s[f"{prefix}.in_proj_weight"], s[f"{prefix}.in_proj_bias"] = (3 * d, d), (3 * d,)
    s[f"{prefix}.out_proj.weight"], s[f"{prefix}.out_proj.bias"] = (d, d), (d,)


def _linear_norms(s: OrderedDict, prefix: str, d: int, norms: tuple[int, ...]) -> None:
    for name in ("linear1", "linear2"):  # dim_feedforward = d_model
        s[f"{prefix}.{name}.weight"], s[f"{prefix}.{name}.bias"] = (d, d), (d,)
    for i in norms:
        s[f"{prefix}.norm{i}.weight"], s[f"{prefix}.norm{i}.bias"] = (d,), (d,)


def _official_shapes() -> OrderedDict[str, tuple[int, ...]]:
    """`state_dict_G` of TATT `model/tsrn.py` `TSRN_TL_TRANS(STN=True, mask=True, srb_nums=5,
    hidden_units=32)`: TPGSR's `TSRN_TL` layout with `out_text_channels=64` (so `gru1` reads 128
    channels) and `infoGen` = `TPInterpreter(37, 64, (16, 64))` (`transformer_v2.py`
    `InfoTransformer(d_model=64, nhead=4, dim_feedforward=64, 1 encoder, 2 decoder layers)`)."""
    base = _official_sr_shapes()
    s: OrderedDict[str, tuple[int, ...]] = OrderedDict(
        (k, v) for k, v in base.items() if not k.startswith("infoGen.")
    )
    for b in range(2, 7):
        s[f"block{b}.gru1.conv1.weight"] = (64, 128, 1, 1)
    d = 64
    s["infoGen.fc_in.weight"], s["infoGen.fc_in.bias"] = (d, 37), (d,)
    s["infoGen.fc_feature_in.weight"], s["infoGen.fc_feature_in.bias"] = (d, 64), (d,)
    s["infoGen.activation.weight"] = (1,)
    enc = "infoGen.transformer.encoder.layers.0"
    _mha(s, f"{enc}.self_attn", d)
    _linear_norms(s, enc, d, (1, 2))
    for i in range(2):
        dec = f"infoGen.transformer.decoder.layers.{i}"
        _mha(s, f"{dec}.self_attn", d)
        _mha(s, f"{dec}.multihead_attn", d)
        _linear_norms(s, dec, d, (1, 2, 3))
    s["infoGen.transformer.decoder.norm.weight"] = (d,)
    s["infoGen.transformer.decoder.norm.bias"] = (d,)
    for suffix in ("", "_reverse"):  # nn.GRU(64 * 16, 64 * 16 // 2, bidirectional=True)
        g = "infoGen.transformer.gru_encoding"
        s[f"{g}.weight_ih_l0{suffix}"], s[f"{g}.weight_hh_l0{suffix}"] = (1536, 1024), (1536, 512)
        s[f"{g}.bias_ih_l0{suffix}"], s[f"{g}.bias_hh_l0{suffix}"] = (1536,), (1536,)
    s["infoGen.pe.pe"] = (1, 5000, d)  # PositionalEncoding buffer, persistent
    s["infoGen.init_factor.weight"] = (16 * 64, d)
    return s


def test_official_layout_has_every_key_prefix() -> None:
    prefixes = {".".join(k.split(".")[:2]) for k in _official_shapes()}
    assert {"block1.0", "block6.gru2", "block7.1", "block8.0", "tps.inverse_kernel"} <= prefixes
    assert {"infoGen.fc_in", "infoGen.transformer", "infoGen.pe", "stn_head.stn_fc1"} <= prefixes


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_checkpoint_files_load_strictly(prefix: str) -> None:
    sr_ckpt = {"state_dict_G": _fake(_official_shapes(), prefix), "info": {"arch": "tatt"}}
    tpg = _fake(crnn_official_shapes(), prefix)  # recognizer_best_acc_0.pth
    model = TATT(TATTConfig(**CODE_VARIANT))
    result = model.load_state_dict(official_state_dict({"sr": sr_ckpt, "tpg": tpg}), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    gru = sr_ckpt["state_dict_G"][prefix + "infoGen.transformer.gru_encoding.weight_hh_l0"]
    torch.testing.assert_close(model.sr.infoGen.transformer.gru_encoding.weight_hh_l0, gru)
    assert model.tpg is not None
    torch.testing.assert_close(model.tpg.cnn.conv0.weight, tpg[prefix + "cnn.conv0.weight"])
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if "num_batches" not in k}
    expected = {f"sr.{k}": v for k, v in _official_shapes().items() if "num_batches" not in k}
    expected.update({f"tpg.{k}": v for k, v in crnn_official_shapes().items()})
    assert ours == expected
    assert OFFICIAL_FILES == {"sr": "model_best_acc_0.pth", "tpg": "recognizer_best_acc_0.pth"}


def test_official_state_dict_forms_and_errors() -> None:
    sd = {"module.block1.1.weight": torch.ones(1)}
    assert list(official_state_dict({"state_dict_G": sd})) == ["sr.block1.1.weight"]
    both = official_state_dict({"sr": {"state_dict_G": sd}, "tpg": {"rnn.x": torch.ones(1)}})
    assert sorted(both) == ["sr.block1.1.weight", "tpg.rnn.x"]
    with pytest.raises(ValueError, match="state_dict_G"):
        official_state_dict({"weights": sd})
    with pytest.raises(ValueError, match="mapping"):
        official_state_dict([sd])  # type: ignore[arg-type]


def test_parameter_count_at_paper_scale() -> None:
    # Official TSRN_TL_TRANS by hand from its layer sizes (GRU + mish):
    # block1 20,801; a TL-SRB = 2 conv3x3 (36,928 each) + 2 BN (128 each) + gru1 (1x1 128->64
    # 8,256 + BiGRU(64, 32) 18,816) + gru2 (4,160 + 18,816) = 124,160, x5 = 620,800; block7 37,056;
    # block8 168,452; STN head (16x64) 1,855,048. infoGen: fc_in 37->64 2,432 + fc_feature_in 4,160
    # + PReLU 1 + encoder layer (MHA 16,640 + 2 linear 8,320 + 2 LN 256) 25,216 + 2 decoder
    # layers (2 MHA 33,280 + 8,320 + 3 LN 384) 83,968 + decoder norm 128 + gru_encoding
    # BiGRU(1024, 512) 2 x (1536 x 1536 + 2 x 1536) 4,724,736 + init_factor 1024 x 64 65,536
    # = 4,906,177. SR branch 7,608,334; + the CRNN TPG 8,331,301 (test_models_rec) = 15,939,635.
    infogen = 2_432 + 4_160 + 1 + 25_216 + 83_968 + 128 + 4_724_736 + 65_536
    sr_official = 20_801 + 620_800 + 37_056 + 168_452 + 1_855_048 + infogen
    model = TATT(TATTConfig(**CODE_VARIANT))
    assert n_params(model.sr.infoGen) == infogen == 4_906_177
    assert n_params(model.sr) == sr_official == 7_608_334
    assert n_params(model) == sr_official + 8_331_301 == 15_939_635
    assert n_params(TATT()) == n_params(model)  # the switch changes no shape
    # Inference (STN off in eval, as in the code): 14,084,587; with a label prior: no TPG.
    assert n_params(model) - n_params(model.sr.stn_head) == 14_084_587
    gt = TATT(TATTConfig(text_prior="ground_truth", text_alphabet=63))
    assert gt.tpg is None and n_params(gt) == sr_official + 26 * 64  # fc_in reads 63 classes


# --- shapes, TP Interpreter, prior -------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [{}, CODE_VARIANT, {"use_stn": False, "rnn": "lstm", "activation": "prelu", "srb_nums": 0}],
)
def test_tiny_forward_shapes(overrides: dict) -> None:
    model = TATT(TATTConfig(**{**TINY, **overrides}))
    for training in (True, False):
        model.train(training)
        with torch.no_grad():
            sr = model(torch.rand(4, 4, 16, 64))
        assert sr.shape == (4, 4, 32, 128) and sr.abs().max() < 1  # tanh
    out = model.eval().infer({"lr": torch.rand(4, 4, 16, 64)})
    assert set(out) == {"sr", "text_prior"} and out["sr"].shape == (4, 4, 32, 128)
    assert out["text_prior"].shape == (26, 4, 37)
    torch.testing.assert_close(out["text_prior"].sum(-1), torch.ones(26, 4))
    with pytest.raises(ValueError, match=r"\(16, 64\) inputs"):
        model(torch.rand(1, 4, 32, 128))


def test_query_positions_recur_over_the_batch_only_in_the_code_variant() -> None:
    feature, prior = torch.randn(3, 8, 16, 64), torch.rand(3, 37, 1, 26)
    for variant, independent in (({}, True), (CODE_VARIANT, False)):
        torch.manual_seed(0)
        interpreter = TATT(TATTConfig(**{**TINY, **variant})).sr.infoGen.eval()
        with torch.no_grad():
            alone, together = interpreter(feature[2:], prior[2:]), interpreter(feature, prior)[2:]
            positions = interpreter.transformer.query_positions(
                interpreter.init_factor.weight, 3, interpreter.query_rnn_over_batch
            )
        assert torch.allclose(alone, together, atol=1e-6) == independent
        assert torch.allclose(positions[:, 0], positions[:, 2]) == independent


def test_ground_truth_prior_spaces_the_word_and_feeds_the_branch() -> None:
    chars = "0123456789abcdefghijklmnopqrstuvwxyz"
    prior = ground_truth_prior(["Ab!c", "x", "", "a" * 30], chars, 26)
    assert prior.shape == (26, 4, 37) and torch.equal(prior.sum(-1), torch.ones(26, 4))
    idx = prior.argmax(-1).t()
    a, b, c = chars.index("a") + 1, chars.index("b") + 1, chars.index("c") + 1
    gap = (26 - 3 - 1) // 3  # 7 blanks after each of the 3 kept characters ('!' dropped)
    spaced = [a, *[0] * gap, b, *[0] * gap, c]
    assert idx[0].tolist() == spaced + [0] * (26 - len(spaced))
    assert idx[1].tolist() == [chars.index("x") + 1] + [0] * 25
    assert idx[2].tolist() == [0] * 26 and idx[3].tolist() == [a] * 26
    cased = ground_truth_prior(["aB"], chars + chars[10:].upper(), 26)
    assert cased.shape == (26, 1, 63) and cased.argmax(-1)[12, 0] == 36 + 2  # 'B'
    model = TATT(TATTConfig(**TINY, text_prior="ground_truth", text_alphabet=63)).eval()
    batch = {"lr": torch.rand(2, 4, 16, 64), "label": ["Hello", "42"]}
    out = model.infer(batch)
    assert out["sr"].shape == (2, 4, 32, 128) and out["text_prior"].shape == (26, 2, 63)
    with pytest.raises(ValueError, match="one label per image"):
        model(batch["lr"])


# --- TSSIM and the warp ------------------------------------------------------------------------


def test_tri_ssim_is_one_for_three_equal_images_and_drops_otherwise() -> None:
    x = torch.rand(2, 4, 32, 128)
    assert tri_ssim(x, x, x).item() == pytest.approx(1.0, abs=1e-6)
    noisy = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    assert tri_ssim(x, noisy, torch.rand_like(x)) < tri_ssim(x, x, noisy) < 1
    with pytest.raises(ValueError, match="one shape"):
        tri_ssim(x, x, x[:1])


def test_rotate_warp_is_a_rotation() -> None:
    x = torch.nn.functional.interpolate(torch.rand(2, 4, 4, 16), (16, 64), mode="bilinear")
    offsets = torch.rand(2)
    torch.testing.assert_close(rotate_warp(x, torch.zeros(2), offsets), x, atol=1e-5, rtol=0)
    square = torch.rand(1, 3, 8, 8)  # H/W = 1, offset 0.5: an exact quarter turn
    quarter = rotate_warp(square, torch.tensor([math.pi / 2]), torch.tensor([0.5]))
    turned = [torch.rot90(square, k, dims=(2, 3)) for k in (1, -1)]
    assert min((quarter - t).abs().max().item() for t in turned) < 1e-5
    angle, off = torch.tensor([0.08, -0.08]), torch.tensor([0.5, 0.5])
    turned_x = rotate_warp(x, angle, off)
    back = rotate_warp(turned_x, -angle, off)
    inside = (..., slice(4, -4), slice(16, -16))
    assert (back - x)[inside].abs().mean() < 0.5 * (turned_x - x)[inside].abs().mean()


# --- objective ---------------------------------------------------------------------------------


def _ctx(weights: dict, teacher: torch.nn.Module | None = None) -> Context:
    objective = {"tsc", "text_prior_kl", "text_prior_ctc"}
    image = {k: v for k, v in weights.items() if k not in objective}
    assets = {"tp_teacher": teacher} if teacher is not None else {}
    return Context(weights=weights, image_loss=build_loss(image) if image else None, assets=assets)


def _batch(n: int = 4) -> dict:
    labels = ["ab", "hello", "7up", "x"][:n]
    return {"lr": torch.rand(n, 4, 16, 64), "hr": torch.rand(n, 4, 32, 128), "label": labels}


def test_declarations_and_param_groups() -> None:
    assert TATT.objective_losses == {"tsc", "text_prior_kl", "text_prior_ctc"}
    assert TATT.optimizer_options == {"tpg_lr"}
    assert TATT.needed_assets({"mse": 1.0, "text_prior_kl": 1.0}) == {"tp_teacher"}
    assert TATT.needed_assets({"mse": 1.0, "text_prior_ctc": 1.0, "tsc": 0.1}) == frozenset()
    model = TATT(TATTConfig(**TINY))
    assert model.tpg is not None
    groups = model.param_groups(1e-3, {"tpg_lr": 1e-4})
    assert [g["lr"] for g in groups] == [1e-3, 1e-4]
    assert {id(p) for p in groups[1]["params"]} == {id(p) for p in model.tpg.parameters()}
    assert sum(p.numel() for g in groups for p in g["params"]) == n_params(model)
    assert [g["lr"] for g in model.param_groups(2e-3, {})] == [2e-3, 2e-3]  # the code: one lr
    gt = TATT(TATTConfig(**TINY, text_prior="ground_truth"))
    assert len(gt.param_groups(1e-3, {})) == 1


def test_training_loss_has_a_part_per_loss_and_is_their_weighted_sum() -> None:
    model = TATT(TATTConfig(**TINY, **STILL)).eval()  # eval + no warp: recomputable
    teacher = CRNN(CRNNConfig(**TINY_CRNN)).eval()
    weights = {"mse": 1.0, "gradient_profile": 1e-4, "text_prior_kl": 1.0, "tsc": 0.1}
    batch = _batch()
    loss, parts = model.training_loss(batch, _ctx(weights, teacher))
    assert set(parts) == set(weights) and torch.isfinite(loss)
    assert all(not p.requires_grad and torch.isfinite(p) for p in parts.values())
    torch.testing.assert_close(loss.detach(), sum(weights[k] * parts[k] for k in weights))
    with torch.no_grad():
        prior, _ = model.text_prior(batch["lr"])
        target = teacher(teacher.preprocess(batch["hr"])).softmax(-1)
        sr = model(batch["lr"])
    torch.testing.assert_close(parts["text_prior_kl"], text_prior_loss(prior, target))
    torch.testing.assert_close(parts["mse"], torch.nn.functional.mse_loss(sr, batch["hr"]))
    ctc_model = TATT(TATTConfig(**TINY, tpg_loss="ctc"))
    loss, parts = ctc_model.training_loss(batch, _ctx({"mse": 1.0, "text_prior_ctc": 1.0}))
    assert set(parts) == {"mse", "text_prior_ctc"} and torch.isfinite(loss)
    with pytest.raises(ValueError, match="needs tpg_loss 'kl'"):
        ctc_model.training_loss(batch, _ctx({"mse": 1.0, "text_prior_kl": 1.0}, teacher))
    with pytest.raises(KeyError, match="tp_teacher"):
        model.training_loss(batch, _ctx({"mse": 1.0, "text_prior_kl": 1.0}))
    gt = TATT(TATTConfig(**TINY, text_prior="ground_truth"))
    with pytest.raises(ValueError, match="label prior"):
        gt.training_loss(batch, _ctx({"mse": 1.0, "text_prior_kl": 1.0}, teacher))
    assert set(gt.training_loss(batch, _ctx({"mse": 1.0, "tsc": 0.1}))[1]) == {"mse", "tsc"}


def test_tsc_is_zero_for_an_identity_warp_of_a_consistent_pair() -> None:
    model = TATT(TATTConfig(**TINY, **STILL)).eval()
    batch = _batch()
    with torch.no_grad():
        sr = model(batch["lr"])
    _, parts = model.training_loss({**batch, "hr": sr}, _ctx({"tsc": 1.0}))
    assert parts["tsc"].item() == pytest.approx(0.0, abs=1e-5)  # SR(D^-1 x) = SR(x) = HR
    _, parts = model.training_loss(batch, _ctx({"tsc": 1.0}))
    expected = 1 - tri_ssim(sr, sr, batch["hr"])
    torch.testing.assert_close(parts["tsc"], expected, atol=1e-5, rtol=1e-5)
    warped = TATT(TATTConfig(**TINY, deform_degrees=30.0)).eval()
    warped.load_state_dict(model.state_dict())
    _, parts = warped.training_loss({**batch, "hr": sr}, _ctx({"tsc": 1.0}))
    assert parts["tsc"] > 1e-3  # a random SR net is not rotation-equivariant


def test_the_sr_branch_reads_the_prior_detached() -> None:
    model = TATT(TATTConfig(**TINY)).train()
    assert model.tpg is not None
    loss, _ = model.training_loss(_batch(), _ctx({"mse": 1.0, "tsc": 0.1}))
    loss.backward()
    assert all(p.grad is None for p in model.tpg.parameters())  # image losses skip the TPG
    assert model.sr.block1[0].weight.grad is not None
    ctc = TATT(TATTConfig(**TINY, tpg_loss="ctc")).train()
    loss, _ = ctc.training_loss(_batch(), _ctx({"text_prior_ctc": 1.0}))
    loss.backward()
    assert ctc.tpg is not None and ctc.tpg.cnn.conv0.weight.grad is not None


def test_one_training_step_at_paper_shapes() -> None:
    model = TATT(TATTConfig(**CODE_VARIANT)).train()
    teacher = CRNN().eval().requires_grad_(False)
    weights = {"mse": 1.0, "gradient_profile": 1e-4, "text_prior_kl": 1.0, "tsc": 0.1}
    opt = torch.optim.Adam(model.param_groups(1e-3, {}), betas=(0.5, 0.999))
    before = model.sr.infoGen.fc_in.weight.detach().clone()
    loss, parts = model.training_loss(_batch(2), _ctx(weights, teacher))
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.sr.parameters(), 0.25)
    opt.step()
    assert torch.isfinite(loss) and set(parts) == set(weights)
    assert not torch.equal(before, model.sr.infoGen.fc_in.weight)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(p.grad is None for p in teacher.parameters())


# --- config ------------------------------------------------------------------------------------


def test_the_specs_tatt_runs_build() -> None:
    from stisr.losses import LOSSES
    from stisr.papers.spec import all_runs, load_specs

    runs = {k: r for k, r in all_runs(load_specs()).items() if r.model == "tatt"}
    assert {"lemma/tatt", "tcdm/tatt_gt", "tcdm/tatt_ctc"} <= set(runs)
    for run in runs.values():
        cfg = TATTConfig(**{**run.model_config, **TINY})
        assert set(run.losses) <= set(LOSSES) | TATT.objective_losses
        for name in set(run.losses) & {"text_prior_kl", "text_prior_ctc"}:
            assert name.endswith(cfg.tpg_loss)


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="text_alphabet"):
        TATTConfig(text_alphabet=63)  # the generator has 37 classes
    with pytest.raises(ValueError, match="text_alphabet"):
        TATTConfig(text_prior="ground_truth", text_alphabet=40)
    with pytest.raises(ValueError, match="TATTConfig.tpg_loss"):
        TATTConfig(tpg_loss="l2")
    with pytest.raises(ValueError, match="TATTConfig.tpg"):
        TATTConfig(tpg={"bogus": 1})
    with pytest.raises(ValueError, match="deform_jitter"):
        TATTConfig(deform_jitter=0.3)
    with pytest.raises(ValueError, match="nhead"):
        TATTConfig(hidden_units=3)
    with pytest.raises(ValueError, match=r"TATT expects \(B, 4, H, W\)"):
        TATT(TATTConfig(**TINY))(torch.rand(1, 3, 16, 64))


def test_the_spec_trains_tatt_with_its_teacher_and_generator_init(smoke_workdir) -> None:
    """Spec + params -> TrainConfig -> engine at smoke scale: zoo/crnn is the KL teacher and the
    TP generator's start (lemma/tatt); the ground-truth-prior variant needs neither."""
    from stisr.engine.train import train
    from stisr.papers.plan import run_dir
    from stisr.papers.training import train_config

    smoke, runs, stand_in = smoke_workdir
    path = stand_in("zoo/crnn")
    cfg = train_config(smoke, "lemma/tatt", runs)
    assert cfg.assets["tp_teacher"]["path"] == str(path)
    assert cfg.init_modules == {"tpg": str(path)}
    metrics = train(cfg, run_dir(smoke, "lemma/tatt"), progress=False)
    assert metrics["steps"] == 6
    history = (run_dir(smoke, "lemma/tatt") / "history.jsonl").read_text()
    assert all(f'"loss/{name}"' in history for name in ("mse", "text_prior_kl", "tsc"))
    gt = train_config(smoke, "tcdm/tatt_gt", runs)
    assert gt.assets == {} and gt.init_modules == {}
    assert train(gt, run_dir(smoke, "tcdm/tatt_gt"), progress=False)["steps"] == 6


def test_complexity_of_the_ground_truth_prior_variant_is_counted_with_a_label() -> None:
    """TCDM's TATT-with-GT-text reads text in forward: FLOP counts and latency pass one."""
    from stisr.config import load_params
    from stisr.metrics.complexity_run import measure_pair
    from stisr.papers.spec import all_runs, load_specs

    from .conftest import REPO

    params = load_params(REPO / "params.yaml")
    result = measure_pair(params, "tcdm/tatt_gt", "none", all_runs(load_specs()))
    assert result["parts"]["tcdm/tatt_gt"]["input"] == [1, 4, 16, 64]
    assert result["params"] == sum(
        p.numel()
        for p in TATT(TATTConfig(text_prior="ground_truth", text_alphabet=63)).parameters()
    )
    assert result["flops"] > 0
