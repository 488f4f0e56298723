"""LEMMA: shapes, objective, ablation switches, guide lr group, official layout and size."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

from stisr.losses import build_loss
from stisr.models.layers.lemma_blocks import compress_attention, ctc_band_maps
from stisr.models.objective import Context
from stisr.models.rec.abinet import ABINet, ABINetConfig
from stisr.models.sr.lemma import CODE_VARIANT, LEMMA, ABINetGuide, LEMMAConfig, official_state_dict
from tests.test_rec_abinet import TINY as TINY_ABINET
from tests.test_rec_abinet import _bn, _linear, _mha, encoder_layers, parameter_total
from tests.test_rec_abinet import official_vision_language_shapes as abinet_vl_shapes
from tests.test_tbsrn import _frozen_stt
from tests.test_tpgsr import _official_sr_shapes as tpgsr_shapes

TINY_CRNN = {"cnn_widths": (4, 8, 8, 8, 16, 16, 16), "hidden": 8}
TINY = {
    "hidden_units": 8,
    "srb_nums": 1,
    "nhead": 2,
    "d_inner": 16,
    "text_layers": 1,
    "align_layers": 1,
    "expansion_widths": (4, 8),
    "top_k": 100,
    "use_stn": False,
    "abinet_guide": {**TINY_ABINET, "iter_size": 1},
}
WEIGHTS = {
    "mse": 1.0,
    "text_focus_attention": 5.0,
    "text_focus_content": 2.5e-4,
    "finetune_ce": 0.01,
}
Shapes = dict[str, tuple[int, ...]]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny(**kw) -> LEMMA:
    return LEMMA(LEMMAConfig(**{**TINY, **kw}))


def _batch(n: int = 4) -> dict:
    labels = ["ab", "C1d", "", "hello"] * n
    return {"lr": torch.rand(n, 4, 16, 64), "hr": torch.rand(n, 4, 32, 128), "label": labels[:n]}


def _ctx(weights: dict = WEIGHTS) -> Context:
    image = {k: v for k, v in weights.items() if k == "mse"}
    return Context(weights=weights, image_loss=build_loss(image), assets={"stt": _frozen_stt()})


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- shapes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides", [{}, {"use_stn": True}, {"guide_recognizer": "crnn", "crnn_guide": TINY_CRNN}]
)
def test_forward_maps_16x64_rgbm_to_32x128(overrides: dict) -> None:
    model = tiny(**overrides)
    for training in (True, False):
        out = model.train(training).run(torch.rand(4, 4, 16, 64), with_guide=True)
        assert out.sr.shape == (4, 4, 32, 128) and out.sr.abs().max() < 1  # tanh
        assert out.guide is not None and out.guide.score.shape == (4, 1, 16, 64)
        assert out.guide.attn.shape[2:] == (16, 64) and out.guide.text_logits.shape[-1] == 37
    assert model.infer({"lr": torch.rand(2, 4, 16, 64)})["sr"].shape == (2, 4, 32, 128)
    with pytest.raises(ValueError, match=r"\(16, 64\)"):
        model(torch.rand(1, 4, 8, 32))
    with pytest.raises(ValueError, match=r"LEMMA expects \(B, 4, H, W\)"):
        model(torch.rand(1, 3, 16, 64))


def test_code_variant() -> None:
    # Not in the model registry yet: registering it makes the spec's LEMMA runs train in the demo
    # DAG, which waits for the demo recipes (issue: LEMMA paper).
    model = LEMMA(LEMMAConfig(**{**TINY, **CODE_VARIANT}))
    assert isinstance(model, LEMMA) and model.config.finetune_softmax
    stn = tiny(use_stn=True, stn_in_train_only=True)
    assert stn.train().stn_active and not stn.eval().stn_active
    with pytest.raises(ValueError, match="LEMMAConfig.alignment"):
        LEMMAConfig(alignment="both")
    with pytest.raises(ValueError, match="LEMMAConfig.abinet_guide"):
        LEMMAConfig(abinet_guide={"bogus": 1})
    with pytest.raises(ValueError, match="top_k"):
        LEMMAConfig(top_k=2000)


def test_compression_takes_the_first_l_maps_and_crnn_bands_cover_the_width() -> None:
    attn = torch.zeros(1, 4, 2, 3)
    attn[0, 0, 0, 0], attn[0, 2, 1, 1], attn[0, 3, 1, 2] = 0.5, 0.7, 0.9
    score = compress_attention(attn, torch.tensor([3]))  # maps 0..2 only
    assert score.shape == (1, 1, 2, 3) and score[0, 0, 0, 0] == 0.5 and score[0, 0, 1, 1] == 0.7
    assert score[0, 0, 1, 2] == 0  # map 3 is past the length
    probs = torch.softmax(torch.randn(26, 2, 37), dim=-1)
    maps, score = ctc_band_maps(probs, (16, 64))
    torch.testing.assert_close(maps.sum(dim=(2, 3)), torch.ones(2, 26))
    assert score.shape == (2, 1, 16, 64) and score.max() <= 1
    torch.testing.assert_close(score[:, 0, 0, 0], 1 - probs[0, :, 0])


# --- objective ---------------------------------------------------------------------------------


@pytest.mark.parametrize("guide", ["abinet", "crnn"])
def test_training_loss_has_a_part_per_loss_and_is_their_weighted_sum(guide: str) -> None:
    kw = {"guide_recognizer": "crnn", "crnn_guide": TINY_CRNN} if guide == "crnn" else {}
    model = tiny(**kw).eval()  # eval: deterministic (dropout), to compare the sum
    loss, parts = model.training_loss(_batch(), _ctx())
    assert set(parts) == set(WEIGHTS) and torch.isfinite(loss)
    assert all(torch.isfinite(v) and not v.requires_grad for v in parts.values())
    torch.testing.assert_close(loss.detach(), sum(WEIGHTS[k] * parts[k] for k in WEIGHTS))
    loss.backward()
    assert model.block1[0].weight.grad is not None
    first = next(model.position_prior.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0  # fine-tuned
    _, only_mse = model.training_loss(_batch(), Context(image_loss=build_loss({"mse": 1.0})))
    assert set(only_mse) == {"mse"}
    with pytest.raises(KeyError, match="stt"):
        model.training_loss(_batch(), Context(weights={"text_focus_attention": 1.0}))
    assert LEMMA.needed_assets(WEIGHTS) == {"stt"} and LEMMA.needed_assets({"mse": 1}) == set()
    assert {"text_focus_attention", "text_focus_content", "finetune_ce"} <= LEMMA.objective_losses


def test_finetune_ce_plain_versus_the_codes_softmax_quirk() -> None:
    model = tiny().eval()
    labels = ["ab", "c"]
    guide = model.run(torch.rand(2, 4, 16, 64), with_guide=True).guide
    assert guide is not None and len(guide.logits) == 2  # vision + language
    targets, _ = model.position_prior.encode_targets(labels, torch.device("cpu"))
    plain = sum(
        nn.functional.cross_entropy(x.flatten(0, 1), targets.flatten()) for x in guide.logits
    )
    torch.testing.assert_close(model.finetune_loss(guide, labels), plain)
    model.config.finetune_softmax = True
    quirk = sum(
        nn.functional.cross_entropy(x.flatten(0, 1).softmax(-1), targets.flatten())
        for x in guide.logits
    )
    torch.testing.assert_close(model.finetune_loss(guide, labels), quirk)


def test_param_groups_put_the_guide_in_its_own_group() -> None:
    assert LEMMA.optimizer_options == {"guide_lr"}
    model = tiny()
    groups = model.param_groups(1e-3, {"guide_lr": 1e-4})
    assert [g["lr"] for g in groups] == [1e-3, 1e-4]
    guide = {id(p) for p in model.position_prior.parameters()}
    assert {id(p) for p in groups[1]["params"]} == guide
    assert not guide & {id(p) for p in groups[0]["params"]}
    assert sum(p.numel() for g in groups for p in g["params"]) == n_params(model)
    assert model.param_groups(2e-3, {})[1]["lr"] == pytest.approx(2e-4)  # the paper's ratio


# --- ablation switches -------------------------------------------------------------------------

LEM_MODULES = {"attn_conv", "DWC", "IN", "select_pos"}
MAM_MODULES = {
    "text_proj",
    "vision_pos",
    "text_pos",
    "text_Encoder",
    "text_decoder",
    "sematic_decoder",
}


def _built(model: LEMMA) -> set[str]:
    gen = model.guidanceGen
    return {n for n in LEM_MODULES | MAM_MODULES if hasattr(gen, n)}


@pytest.mark.parametrize(
    ("switch", "absent"),
    [
        ({}, set()),
        ({"use_lem": False}, LEM_MODULES),
        ({"lem_char_attn": False}, {"attn_conv", "IN"}),
        ({"lem_expansion_conv": False}, {"attn_conv"}),
        ({"lem_feat_select": False}, {"DWC", "select_pos"}),
        ({"lem_pixel_to_region": False}, {"DWC"}),
        ({"use_mam": False}, MAM_MODULES),
        ({"alignment": "unidirectional"}, {"text_decoder"}),
        ({"alignment": "none"}, {"text_decoder", "sematic_decoder"} | LEM_MODULES),
        ({"use_lem": False, "use_mam": False}, LEM_MODULES | MAM_MODULES),
    ],
)
def test_each_switch_removes_its_modules(switch: dict, absent: set[str]) -> None:
    model = tiny(**switch)
    assert _built(model) == (LEM_MODULES | MAM_MODULES) - absent
    out = model.train().run(torch.rand(2, 4, 16, 64))
    assert out.sr.shape == (2, 4, 32, 128) and torch.isfinite(out.sr).all()
    full_k = 16 * 64
    assert model.guidanceGen.top_k == (100 if "select_pos" not in absent else full_k)
    if switch == {"use_lem": False, "use_mam": False}:
        assert not model.needs_guide and out.guide is None  # guidance = the shallow feature


def test_adafm_switch_and_uda_parameter_matching() -> None:
    assert hasattr(tiny().block2, "affine") and not hasattr(tiny().block2, "fuse")
    concat = tiny(use_adafm=False)
    assert hasattr(concat.block2, "fuse") and not hasattr(concat.block2, "affine")
    bda, uda = tiny(), tiny(alignment="unidirectional")
    matched = tiny(alignment="unidirectional", match_params=True)
    assert len(uda.guidanceGen.sematic_decoder.layers) == 1
    assert len(matched.guidanceGen.sematic_decoder.layers) == 2
    assert n_params(uda) < n_params(matched) == n_params(bda)  # Sec. 4.4: same complexity
    assert isinstance(tiny(guide_recognizer="crnn", crnn_guide=TINY_CRNN).position_prior, nn.Module)


def test_feature_selection_keeps_top_k_positions() -> None:
    # LEM only (no MAM): the guidance is X'_pos with all but the Top-K positions zero
    model = tiny(use_mam=False, top_k=100).eval()
    gen, feat = model.guidanceGen, torch.randn(2, 16, 16, 64)
    score = torch.rand(2, 1, 16, 64)
    out = gen(feat, torch.rand(2, 8, 16, 64), score, torch.randn(2, 8, 37))
    nonzero = out.abs().sum(1).flatten(1) > 0
    assert (nonzero.sum(1) == 100).all()
    top = score.flatten(1).topk(100, dim=1).indices
    assert nonzero.gather(1, top).all()
    everything = tiny(use_mam=False, lem_feat_select=False).eval().guidanceGen
    assert (everything(feat, torch.rand(2, 8, 16, 64), score, torch.randn(2, 8, 37)) != 0).all()


# --- official layout and size ------------------------------------------------------------------


def _srb_shapes(s: Shapes, p: str, c: int = 64) -> None:
    """`RecurrentResidualBlockAffine(64)` (model/lemma.py l. 186-214); GruBlock = `gru` only."""
    s[f"{p}.conv1.weight"], s[f"{p}.conv1.bias"] = (c, c, 3, 3), (c,)
    _bn(s, f"{p}.bn1", c)
    for gru in ("gru1", "gru2"):
        for suffix in ("", "_reverse"):
            s[f"{p}.{gru}.gru.weight_ih_l0{suffix}"] = (3 * c // 2, c)
            s[f"{p}.{gru}.gru.weight_hh_l0{suffix}"] = (3 * c // 2, c // 2)
            s[f"{p}.{gru}.gru.bias_ih_l0{suffix}"] = s[f"{p}.{gru}.gru.bias_hh_l0{suffix}"] = (
                3 * c // 2,
            )
    s[f"{p}.conv2.weight"], s[f"{p}.conv2.bias"] = (c, c, 3, 3), (c,)
    _bn(s, f"{p}.bn2", c)
    a = f"{p}.affine"  # AffineModulate (l. 18-64)
    _bn(s, f"{a}.BN", c)
    for proj, n_in in (
        ("conv1x1_1", 2 * c),
        ("conv1x1_2", 2 * c),
        ("conv1x1_3", 2 * c),
        ("aggregation", c),
    ):
        s[f"{a}.{proj}.0.weight"], s[f"{a}.{proj}.0.bias"] = (c, n_in, 1, 1), (c,)
        _bn(s, f"{a}.{proj}.1", c)
        s[f"{a}.{proj}.2.weight"] = (1,)
        s[f"{a}.{proj}.3.weight"], s[f"{a}.{proj}.3.bias"] = (c, c, 1, 1), (c,)
    s[f"{a}.channel_attn.0.weight"], s[f"{a}.channel_attn.0.bias"] = (c, 1, 16, 64), (c,)
    for i in (1, 3, 5):
        s[f"{a}.channel_attn.{i}.weight"], s[f"{a}.channel_attn.{i}.bias"] = (c, c, 1, 1), (c,)
    _bn(s, f"{a}.BN2", c)
    _bn(s, f"{p}.BN", c)


def _guidance_shapes(s: Shapes, d: int = 64) -> None:
    """`Location_enhancement_Multimodal_alignment` (Position_aware_module.py l. 259-292)."""
    g = "guidanceGen"
    _linear(s, f"{g}.text_proj", 37, d, bias=False)
    s[f"{g}.vision_pos.pe"], s[f"{g}.text_pos.pe"] = (1024, 1, d), (40, 1, d)
    encoder_layers(s, f"{g}.text_Encoder", 2, d, d)
    for dec in ("text_decoder", "sematic_decoder"):
        for i in range(3):
            p = f"{g}.{dec}.layers.{i}"
            _mha(s, f"{p}.multihead_attn", d)
            _linear(s, f"{p}.linear1", d, d)
            _linear(s, f"{p}.linear2", d, d)
            s[f"{p}.norm2.weight"] = s[f"{p}.norm2.bias"] = (d,)
            s[f"{p}.norm3.weight"] = s[f"{p}.norm3.bias"] = (d,)
    s[f"{g}.select_pos.pe"] = (500, 1, d)
    s[f"{g}.attn_conv.0.weight"] = (32, 1, 3, 3)
    _bn(s, f"{g}.attn_conv.1", 32)
    s[f"{g}.attn_conv.2.weight"] = (1,)
    s[f"{g}.attn_conv.3.weight"] = (64, 32, 3, 3)
    _bn(s, f"{g}.attn_conv.4", 64)
    s[f"{g}.attn_conv.5.weight"] = (1,)
    s[f"{g}.attn_conv.6.weight"] = (d, 64, 3, 3)
    s[f"{g}.DWC.weight"], s[f"{g}.DWC.bias"] = (d, d, 3, 3), (d,)


def official_lemma_shapes() -> Shapes:
    """`state_dict_G` of LEMMA(STN=True, mask=True, srb_nums=5, hidden_units=32) with the config
    `PositionAware` (ABINet vision + language, no alignment). Key prefixes: block1..block8, tps,
    stn_head, position_prior.{vision,language}, guidanceGen."""
    tsrn = tpgsr_shapes()  # TPGSR's TSRN_TL: the same block1, block7, block8, tps, stn_head
    s: Shapes = {k: v for k, v in tsrn.items() if k.startswith("block1.")}
    for b in range(2, 7):
        _srb_shapes(s, f"block{b}")
    s.update(
        {k: v for k, v in tsrn.items() if k.startswith(("block7.", "block8.", "tps.", "stn_head."))}
    )
    s.update({f"position_prior.{k}": v for k, v in abinet_vl_shapes().items()})
    _guidance_shapes(s)
    return s


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_layout_state_dict_loads_strictly(prefix: str) -> None:
    shapes = official_lemma_shapes()
    gen = torch.Generator().manual_seed(0)
    state = {
        prefix + k: torch.tensor(3) if not v else torch.randn(v, generator=gen)
        for k, v in shapes.items()
    }
    model = LEMMA()
    result = model.load_state_dict(
        official_state_dict({"state_dict_G": state, "info": {}}), strict=True
    )
    assert not result.missing_keys and not result.unexpected_keys
    key = "guidanceGen.sematic_decoder.layers.2.multihead_attn.in_proj_weight"
    torch.testing.assert_close(model.state_dict()[key], state[prefix + key])
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes


def test_full_abinet_state_dict_initialises_the_guide() -> None:
    full = ABINet(ABINetConfig(**TINY_ABINET))
    guide = ABINetGuide(ABINetConfig(**TINY_ABINET))
    guide.load_state_dict(full.state_dict(), strict=True)  # alignment keys dropped
    assert not hasattr(guide, "alignment")
    torch.testing.assert_close(guide.vision.cls.weight, full.vision.cls.weight)


def test_parameter_count_at_paper_scale() -> None:
    # Official architecture by hand (model/lemma.py, Position_aware_module.py): block1 20,801;
    # SRB (conv 36,928 x2, BN 128 x3, BiGRU(64, 32) 18,816 x2, AffineModulate 124,420 = BN 128
    # + 3 projections 12,545 + GDWConv 65,600 + 3 1x1 convs 12,480 + aggregation 8,449 + BN 128)
    # = 236,292, x5 = 1,181,460; block7 37,056; block8 168,452; STN head 1,855,048; guidanceGen
    # 296,802 (text_proj 2,368, encoder 2 x 25,216, decoders 6 x 25,216, attn_conv 55,778,
    # DWC 36,928); guide = ABINet 36,738,703 - alignment 543,781 = 36,194,922.
    shapes = official_lemma_shapes()
    official = parameter_total({k: v for k, v in shapes.items() if not k.startswith("tps.")})
    model = LEMMA()
    assert n_params(model) == official == 39_754_541
    assert n_params(model.position_prior) == 36_194_922
    sr_side = 20_801 + 1_181_460 + 37_056 + 168_452 + 1_855_048 + 296_802
    assert n_params(model) - n_params(model.position_prior) == sr_side == 3_559_619


@pytest.mark.slow
def test_one_training_step_at_paper_shapes() -> None:
    model = LEMMA().train()
    opt = torch.optim.Adam(model.param_groups(1e-3, {"guide_lr": 1e-4}), betas=(0.5, 0.999))
    loss, parts = model.training_loss(_batch(2), _ctx())
    assert set(parts) == set(WEIGHTS) and torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert model.guidanceGen.attn_conv[0].weight.grad is not None
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_spec_trains_lemma_then_a_warm_started_ablation(smoke_workdir) -> None:
    """Spec + params -> TrainConfig -> engine at smoke scale: the `stt` asset, the guide's init
    from zoo/abinet, and (at demo scale only) the ablation's warm start from lemma/lemma."""
    from stisr.config import load_params
    from stisr.engine.train import train
    from stisr.papers.plan import run_dir
    from stisr.papers.training import train_config

    from .conftest import REPO

    smoke, runs, stand_in = smoke_workdir
    for run_id in ("zoo/abinet", "zoo/stt_transformer"):  # untrained stand-ins: the wiring counts
        stand_in(run_id)
    base = train_config(smoke, "lemma/lemma", runs)
    assert base.assets["stt"]["path"] == str(run_dir(smoke, "zoo/stt_transformer") / "model.pt")
    assert base.init_modules == {"position_prior": str(run_dir(smoke, "zoo/abinet") / "model.pt")}
    assert base.warm_start is None
    metrics = train(base, run_dir(smoke, "lemma/lemma"), progress=False)
    assert metrics["steps"] == 6 and "deviations" not in metrics
    history = (run_dir(smoke, "lemma/lemma") / "history.jsonl").read_text()
    assert all(f'"loss/{name}"' in history for name in WEIGHTS)
    assert train_config(smoke, "lemma/no_lem", runs).warm_start is None  # demo only
    demo = {**smoke, "scale": "demo"}
    expected = str(run_dir(demo, "lemma/lemma") / "model.pt")
    assert train_config(demo, "lemma/no_lem", runs).warm_start == expected
    ablation = dataclasses.replace(
        train_config(smoke, "lemma/no_lem", runs),
        warm_start=str(run_dir(smoke, "lemma/lemma") / "model.pt"),
    )
    metrics = train(ablation, run_dir(smoke, "lemma/no_lem"), progress=False)
    assert any("warm-started from" in d for d in metrics["deviations"])
    official = load_params(REPO / "params.yaml", {"scale": "paper", "source": "official"})
    paper = train_config(official, "lemma/crnn_guide", runs)
    assert paper.warm_start is None
    assert paper.init_modules["position_prior"].endswith("crnn.stisr.pt")


def test_the_demo_guides_are_the_demo_recognizers_they_start_from() -> None:
    """LEMMA's demo guide configs equal zoo/abinet's and zoo/crnn's, so their weights load."""
    from stisr.config import load_params
    from stisr.engine.assets import init_submodules
    from stisr.engine.checkpoint import atomic_save, model_payload
    from stisr.models.registry import build_model
    from stisr.papers.spec import all_runs, load_specs
    from stisr.papers.training import train_config

    from .conftest import REPO

    demo = load_params(REPO / "params.yaml", {"scale": "demo"})
    runs = all_runs(load_specs())
    for run_id, guide in (("lemma/lemma", "zoo/abinet"), ("lemma/crnn_guide", "zoo/crnn")):
        cfg, rec = train_config(demo, run_id, runs), train_config(demo, guide, runs)
        model = build_model(cfg.model, cfg.model_config)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "guide.pt"
            recognizer = build_model(rec.model, rec.model_config)
            atomic_save(model_payload(recognizer, rec.model, rec.model_config), path)
            init_submodules(model, {"position_prior": str(path)}, run_id)
        ours = model.position_prior.state_dict()
        assert all(torch.equal(v, ours[k]) for k, v in recognizer.state_dict().items() if k in ours)
