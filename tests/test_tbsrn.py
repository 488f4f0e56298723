"""TBSRN and the STT text-focus losses: layouts, counts, losses, gradients, training."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from stisr.charset import normalize_label
from stisr.losses import build_loss
from stisr.losses.text_focus import (
    confusion_weight_table,
    text_focus_losses,
    weighted_cross_entropy,
)
from stisr.models.layers.tps_stn import LowResSTNHead, STNHead
from stisr.models.objective import Context
from stisr.models.rec import stt_transformer as stt
from stisr.models.rec.stt_transformer import STTTransformer, STTTransformerConfig
from stisr.models.sr import tbsrn
from stisr.models.sr.tbsrn import TBSRN, TBSRNConfig
from tests.test_models_sr import n_params

TINY_SR = {"hidden_units": 4, "srb_nums": 1, "heads": 2, "dropout": 0.0}
TINY_STT = {
    "embed_dim": 8,
    "heads": 2,
    "ff_dim": 16,
    "encoder_widths": (4, 4, 8, 8, 8, 8),
    "encoder_blocks": (1, 1, 1, 1),
    "dropout": 0.0,
    "max_positions": 64,
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _frozen_stt(**kw) -> STTTransformer:
    model = STTTransformer(STTTransformerConfig(**{**TINY_STT, **kw})).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# --- TBSRN: shapes and switches ----------------------------------------------------------------


@pytest.mark.parametrize("channels", [3, 4])
def test_tiny_tbsrn_maps_16x64_to_32x128(channels: int) -> None:
    model = TBSRN(TBSRNConfig(**TINY_SR, in_channels=channels, out_channels=channels))
    for train in (True, False):
        out = model.train(train)(torch.rand(2, channels, 16, 64))
        assert out.shape == (2, channels, 32, 128) and out.abs().max() < 1  # tanh
    # the self-attention module builds its position code for any map size
    no_stn = TBSRN(TBSRNConfig(**TINY_SR, use_stn=False)).eval()
    assert no_stn(torch.rand(1, 3, 8, 24)).shape == (1, 3, 16, 48)
    with pytest.raises(ValueError, match=r"TBSRN expects \(B, 3, H, W\)"):
        no_stn(torch.rand(1, 4, 8, 24))


def test_stn_switch_paper_versus_code() -> None:
    paper = TBSRN(TBSRNConfig(**TINY_SR)).eval()
    code = TBSRN(TBSRNConfig(**TINY_SR, stn_in_train_only=True)).eval()
    assert paper.stn_active and not code.stn_active and code.train().stn_active


def test_stt_stn_head_reads_16x64_with_the_tsrn_head_parameters() -> None:
    head = LowResSTNHead(3, 20, "none", (16, 64)).eval()
    _, points = head(torch.rand(2, 3, 16, 64))
    assert points.shape == (2, 20, 2)
    assert n_params(head) == n_params(STNHead(3, 20, "none", (32, 64)))
    with pytest.raises(ValueError, match="multiple of 16"):
        LowResSTNHead(3, 20, "none", (8, 64))


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="TBSRNConfig.hidden_units"):
        TBSRNConfig(hidden_units=3)
    with pytest.raises(ValueError, match="TBSRNConfig.srb_nums"):
        TBSRNConfig(srb_nums=-1)
    with pytest.raises(ValueError, match="TBSRNConfig.activation"):
        TBSRNConfig(activation="gelu")
    with pytest.raises(ValueError, match="STTTransformerConfig.encoder_widths"):
        STTTransformerConfig(encoder_widths=(4, 4))
    with pytest.raises(ValueError, match="divisible by heads"):
        STTTransformerConfig(embed_dim=6, heads=5)


# --- Official layouts and parameter counts -----------------------------------------------------

# Keys and shapes read from scene-text-telescope/model/tbsrn.py, stn_head.py and
# tps_spatial_transformer.py for TBSRN(scale_factor=2, width=128, height=32, STN=True, mask=False,
# srb_nums=5, hidden_units=32): 64 channels, FeatureEnhancer on 64 + 64 = 128, 4 heads.
OFFICIAL_TBSRN_SHAPES = {
    "conv.weight": (3, 3, 3, 3),  # built, never used
    "bn.running_mean": (3,),
    "block1.0.weight": (64, 3, 9, 9),
    "block1.1.weight": (1,),
    "block2.conv1.weight": (64, 64, 3, 3),
    "block2.bn1.running_var": (64,),
    "block2.gru1.conv1.weight": (64, 64, 1, 1),  # the unused GruBlocks
    "block2.gru1.gru.weight_ih_l0": (96, 64),
    "block6.gru2.gru.weight_hh_l0_reverse": (96, 32),
    "block3.conv2.bias": (64,),
    "block4.feature_enhancer.multihead.linears.3.weight": (128, 128),
    "block2.feature_enhancer.multihead.compress_attention_linear.weight": (1, 4),
    "block2.feature_enhancer.mul_layernorm1.a_2": (128,),
    "block5.feature_enhancer.pff.w_1.weight": (128, 128),
    "block6.feature_enhancer.mul_layernorm3.b_2": (128,),
    "block3.feature_enhancer.linear.weight": (64, 128),
    "block7.0.weight": (64, 64, 3, 3),
    "block7.1.running_var": (64,),
    "block8.0.conv.weight": (256, 64, 3, 3),
    "block8.1.weight": (3, 64, 9, 9),
    "stn_head.stn_convnet.0.0.weight": (32, 3, 3, 3),
    "stn_head.stn_convnet.10.0.weight": (256, 256, 3, 3),
    "stn_head.stn_fc1.0.weight": (512, 512),
    "stn_head.stn_fc1.1.running_mean": (512,),
    "stn_head.stn_fc2.weight": (40, 512),
    "tps.inverse_kernel": (23, 23),
    "tps.target_coordinate_repr": (16 * 64, 23),
    "tps.target_control_points": (20, 2),
}
# Key count: conv+bn 7, block1 3, 5 blocks x 54 (conv/BN 14, GruBlocks 20, enhancer 20), block7 7,
# block8 4, tps buffers 4, STN head 6 x 7 + 7 + 2 = 51.
OFFICIAL_TBSRN_KEYS = 7 + 3 + 5 * 54 + 7 + 4 + 4 + 51
# Hand count of the official module:
#   conv3x3 3->3 + BN (unused)                                       90
#   block1 9x9 conv 3->64 + PReLU                                    15,617
#   5 x block: 2 x (conv3x3 64->64 + BN) = 74,112; 2 unused GruBlocks (1x1 conv 4,160 +
#              biGRU(64, 32) 18,816) = 45,952; enhancer: 4 linears 128->128 (66,048) + unused
#              compress linear 4->1 (5) + 2 LayerNorms (512) + pff 2 x 128->128 (33,024) +
#              linear 128->64 (8,256) = 107,845                      -> 227,909 each
#   block7 conv3x3 + BN                                              37,056
#   block8 pixel-shuffle conv 64->256 (147,712) + 9x9 conv 64->3 (15,555)
#   STN head: 6 conv3x3+BN 3-32-64-128-256-256-256 (1,570,560) + fc 512->512 + BN1d (263,680)
#             + fc 512->40 (20,520)                                  1,854,760
OFFICIAL_TBSRN_STN_PARAMS = 1_854_760
OFFICIAL_TBSRN_PARAMS = 90 + 15_617 + 5 * 227_909 + 37_056 + 147_712 + 15_555 + 1_854_760

# Read from scene-text-telescope/loss/transformer.py, `Transformer()`.
OFFICIAL_STT_SHAPES = {
    "embedding_word.lut.weight": (37, 512),
    "pe.pe": (1, 5000, 512),  # a registered buffer: saved
    "encoder.cnn.conv1.weight": (64, 1, 3, 3),
    "encoder.cnn.bn2.running_mean": (128,),
    "encoder.cnn.layer1.0.downsample.0.weight": (256, 128, 3, 3),
    "encoder.cnn.layer1_conv.weight": (256, 256, 3, 3),
    "encoder.cnn.layer2.1.bn2.weight": (256,),
    "encoder.cnn.layer3.0.downsample.1.running_var": (512,),
    "encoder.cnn.layer3.4.conv2.weight": (512, 512, 3, 3),
    "encoder.cnn.layer3_bn.bias": (512,),
    "encoder.cnn.layer4.2.conv1.weight": (512, 512, 3, 3),
    "encoder.cnn.layer4_conv2.weight": (1024, 512, 3, 3),
    "encoder.cnn.layer4_conv2_bn.num_batches_tracked": (),
    "decoder.mask_multihead.linears.0.weight": (1024, 1024),
    "decoder.mask_multihead.compress_attention_linear.weight": (1, 16),
    "decoder.mul_layernorm1.a_2": (1024,),
    "decoder.multihead.linears.3.bias": (1024,),
    "decoder.mul_layernorm2.b_2": (1024,),
    "decoder.pff.w_1.weight": (2048, 1024),
    "decoder.pff.w_2.weight": (1024, 2048),
    "decoder.mul_layernorm3.a_2": (1024,),
    "generator_word.proj.weight": (37, 1024),
}
# Key count: embedding 1, pe 1; encoder stem 14, BasicBlock 14 (+7 with downsample): layer1 21,
# layer2 28, layer3 77, layer4 42, four conv+BN 28 -> 210; decoder 2 x 10 + 3 x 2 + 4; generator 2.
OFFICIAL_STT_KEYS = 1 + 1 + 210 + 30 + 2
# Hand count: embedding 37 x 512 = 18,944.
#   encoder: conv1 1->64 (640) + BN (128), conv2 64->128 (73,856) + BN (256);
#     layer1 BasicBlock(128, 256) with 3x3 downsample: 3 x conv + 3 x BN = 1,181,952;
#     layer1_conv + BN 590,592; layer2 2 x BasicBlock(256) 2 x 1,181,184; layer2_conv + BN 590,592;
#     layer3 BasicBlock(256, 512) + downsample 4,723,200 + 4 x BasicBlock(512) (4,721,664 each);
#     layer3_conv + BN 2,360,832; layer4 3 x 4,721,664; layer4_conv2 512->1024 + BN 4,721,664
#   decoder: 2 attentions x (4 linears 1024->1024 + compress 16->1) = 8,396,834; 3 LayerNorms
#     6,144; pff 1024->2048->1024 4,197,376                            -> 12,600,354
#   generator 1024->37                                                  37,925
OFFICIAL_STT_ENCODER = (
    640 + 128 + 73_856 + 256
    + 1_181_952 + 590_592
    + 2 * 1_181_184 + 590_592
    + 4_723_200 + 4 * 4_721_664 + 2_360_832
    + 3 * 4_721_664 + 4_721_664
)  # fmt: skip
OFFICIAL_STT_PARAMS = 18_944 + OFFICIAL_STT_ENCODER + 12_600_354 + 37_925


def test_tbsrn_official_layout_count_and_strict_load_of_a_dataparallel_checkpoint() -> None:
    model = TBSRN()
    cfg = model.config
    assert (cfg.in_channels, cfg.hidden_units, cfg.srb_nums, cfg.scale_factor) == (3, 32, 5, 2)
    assert OFFICIAL_TBSRN_PARAMS == 3_210_335
    assert n_params(model) == OFFICIAL_TBSRN_PARAMS
    assert n_params(model.stn_head) == OFFICIAL_TBSRN_STN_PARAMS
    state = model.state_dict()
    assert len(state) == OFFICIAL_TBSRN_KEYS
    for key, shape in OFFICIAL_TBSRN_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    # The release: {'state_dict_G': ..., 'info': ...}, keys with DataParallel's `module.`.
    ckpt = {
        "state_dict_G": {
            f"module.{k}": torch.randn_like(v.float()).to(v.dtype) for k, v in state.items()
        },
        "info": {"arch": "tbsrn"},
    }
    fresh = TBSRN()
    fresh.load_state_dict(tbsrn.official_state_dict(ckpt), strict=True)
    loaded = fresh.state_dict()["block2.gru1.gru.weight_ih_l0"]
    assert torch.equal(loaded, ckpt["state_dict_G"]["module.block2.gru1.gru.weight_ih_l0"])


def test_stt_transformer_official_layout_count_and_strict_load() -> None:
    model = STTTransformer()
    assert OFFICIAL_STT_PARAMS == 62_314_951
    assert n_params(model) == OFFICIAL_STT_PARAMS
    state = model.state_dict()
    assert len(state) == OFFICIAL_STT_KEYS
    for key, shape in OFFICIAL_STT_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    model.set_confusion_weights(torch.ones(37, 37))  # not saved: strict loading is unaffected
    raw = {f"module.{k}": v for k, v in state.items()}  # saved through DataParallel
    raw["module.generator_word.proj.bias"] = torch.randn(37)
    model.load_state_dict(stt.official_state_dict(raw), strict=True)
    assert torch.equal(model.generator_word.proj.bias, raw["module.generator_word.proj.bias"])
    assert stt.official_state_dict({"state_dict": {"a": 1}}) == {"a": 1}


# --- The STT transformer ------------------------------------------------------------------------


def test_teacher_forcing_tensors_follow_the_official_label_encoder() -> None:
    # label + '-', input [0, c1..cn] padded with 0, target c1..cn then 0 (end)
    inputs, targets, lengths = stt.teacher_forcing_tensors(["Ab-1", "", "z"])
    assert lengths.tolist() == [4, 1, 2]
    assert inputs.tolist() == [[0, 11, 12, 2], [0, 0, 0, 0], [0, 36, 0, 0]]
    assert targets.tolist() == [[11, 12, 2, 0], [0, 0, 0, 0], [36, 0, 0, 0]]


def test_stt_shapes_preprocess_greedy_decode() -> None:
    model = _frozen_stt()
    rgbm = torch.rand(2, 4, 16, 64)
    x = model.preprocess(rgbm)
    assert x.shape == (2, 1, 32, 128)  # bicubic to 32x128, luma, no normalization
    hr = torch.rand(2, 3, 32, 128)  # at 32x128 only the luma is taken
    expected = 0.299 * hr[:, 0:1] + 0.587 * hr[:, 1:2] + 0.114 * hr[:, 2:3]
    torch.testing.assert_close(model.preprocess(hr), expected)
    logits, maps = model.forward_teacher(x, ["ab", "hello"])
    assert logits.shape == (2, 6, 37) and maps.shape == (2, 2, 6, 8 * 32)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 6))  # softmax over positions
    out = model(x)
    assert out.dim() == 3 and out.shape[0] == 2 and out.shape[1] <= model.config.max_len + 1
    assert all(set(s) <= set(stt.ALPHABET[1:]) for s in model.decode(out))
    crafted = torch.full((1, 4, 37), -5.0)
    for step, cls in enumerate([11, 12, 0, 13]):  # "ab", end, then ignored
        crafted[0, step, cls] = 5.0
    assert model.decode(crafted) == ["ab"]


def test_stt_text_loss_trains_at_tiny_widths() -> None:
    model = STTTransformer(STTTransformerConfig(**TINY_STT, img_h=16, img_w=64)).train()
    x = torch.rand(4, 1, 16, 64)
    labels = ["ab", "c1", "hello", "7"]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = model.text_loss(x, labels)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


# --- Text-focus losses ----------------------------------------------------------------------------


class FakeSTT(nn.Module):
    """Known outputs: maps = gain * first channel on every head/step; logits linear in its mean."""

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(2.0), requires_grad=False)

    def preprocess(self, rgb: Tensor) -> Tensor:
        return rgb[:, :1]

    def forward_teacher(self, x: Tensor, labels: list[str]) -> tuple[Tensor, Tensor]:
        steps = max(len(normalize_label(s)) for s in labels) + 1
        flat = x.flatten(1)
        maps = (self.gain * flat)[:, None, None, :].expand(-1, 2, steps, -1)
        logits = flat.mean(1)[:, None, None] * torch.arange(37.0) / 10
        logits = logits + 0.1 * torch.arange(float(steps))[None, :, None]
        return logits, maps


def _logits(mean: float, step: int) -> list[float]:
    return [mean * c / 10 + 0.1 * step for c in range(37)]


def test_text_focus_losses_against_a_hand_computation() -> None:
    sr = torch.tensor([[[[0.1, 0.5], [0.9, 0.3]]], [[[0.2, 0.4], [0.6, 0.8]]]]).repeat(1, 3, 1, 1)
    hr = torch.tensor([[[[0.0, 0.5], [1.0, 0.5]]], [[[0.2, 0.2], [0.2, 0.2]]]]).repeat(1, 3, 1, 1)
    labels = ["A", "b2"]  # targets: [a, end] and [b, 2, end]; 5 supervised steps
    attention, content = text_focus_losses(FakeSTT(), sr, hr, labels)
    diffs = [0.1, 0.0, 0.1, 0.2, 0.0, 0.2, 0.4, 0.6]
    assert attention.item() == pytest.approx(2 * sum(diffs) / len(diffs), rel=1e-5)
    means = [sum([0.1, 0.5, 0.9, 0.3]) / 4, sum([0.2, 0.4, 0.6, 0.8]) / 4]
    steps = [(0, 0, 11), (0, 1, 0), (1, 0, 12), (1, 1, 3), (1, 2, 0)]  # (sample, step, target)
    nll = []
    for b, t, g in steps:
        row = _logits(means[b], t)
        nll.append(math.log(sum(math.exp(v) for v in row)) - row[g])
    assert content.item() == pytest.approx(sum(nll) / len(nll), rel=1e-5)


def test_weighted_cross_entropy_is_the_official_formula() -> None:
    logits, targets = torch.randn(6, 37), torch.tensor([0, 3, 11, 11, 36, 5])
    table = torch.rand(37, 37) + 0.5
    expected = 0.0
    for i, g in enumerate(targets.tolist()):  # -log(W[g,g] e^p_g / sum_j W[g,j] e^p_j), / N
        w, e = table[g], logits[i].double().exp()
        expected -= math.log(float(w[g] * e[g] / (w * e).sum()))
    got = weighted_cross_entropy(logits, targets, table)
    assert got.item() == pytest.approx(expected / 6, rel=1e-5)
    plain = torch.nn.functional.cross_entropy(logits, targets)
    torch.testing.assert_close(weighted_cross_entropy(logits, targets, torch.ones(37, 37)), plain)


def test_confusion_weight_table_follows_the_official_rearrangement() -> None:
    conf = torch.rand(62, 62, dtype=torch.float64) + 0.1  # rows/cols: digits, upper, lower
    conf[2, 5] = 0.0  # 1/0 becomes 1
    w = confusion_weight_table(conf).double()
    assert w.shape == (37, 37)
    assert torch.equal(w[0], torch.ones(37, dtype=w.dtype))  # end row
    assert torch.equal(w[:, 0], torch.ones(37, dtype=w.dtype))  # padding column
    assert w[3, 6] == 1.0  # digit '2' vs digit '5' had confusion 0
    torch.testing.assert_close(w[1, 4], 1 / conf[0, 3], check_dtype=False)
    # digit row, letter column k: the larger of 1/conf against upper k and lower k
    k = 4
    expected = max(1 / conf[0, 10 + k], 1 / conf[0, 36 + k])
    torch.testing.assert_close(w[1, 11 + k], expected.float().double())
    # letter rows are the lower-case rows of the matrix; off the diagonal columns are merged too
    expected = max(1 / conf[36 + 2, 10 + k], 1 / conf[36 + 2, 36 + k])
    torch.testing.assert_close(w[11 + 2, 11 + k], expected.float().double())
    # on the diagonal the (unmerged) column is the upper-case one, as in the official loop
    torch.testing.assert_close(w[11 + k, 11 + k], (1 / conf[36 + k, 10 + k]).float().double())


def test_gradients_reach_sr_only_and_the_transformer_stays_frozen() -> None:
    fake = FakeSTT()
    sr = torch.rand(2, 3, 2, 2, requires_grad=True)
    hr = torch.rand(2, 3, 2, 2, requires_grad=True)
    attention, content = text_focus_losses(fake, sr, hr, ["a", "bc"])
    (attention + content).backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert hr.grad is None and fake.gain.grad is None


# --- TBSRN objective ------------------------------------------------------------------------------


def test_needed_assets_depend_on_the_text_focus_weights() -> None:
    assert TBSRN.needed_assets({"mse": 1.0}) == frozenset()
    assert TBSRN.needed_assets({"text_focus_attention": 0.0, "text_focus_content": 0}) == set()
    assert TBSRN.needed_assets({"mse": 1, "text_focus_attention": 10}) == {"stt"}
    assert TBSRN.needed_assets({"text_focus_content": 5e-4}) == {"stt"}
    assert TBSRN.objective_losses == {"text_focus_attention", "text_focus_content"}


def test_training_loss_is_the_weighted_sum_and_trains_only_the_sr_network() -> None:
    model = TBSRN(TBSRNConfig(**TINY_SR)).train()
    transformer = _frozen_stt()
    weights = {"mse": 1.0, "text_focus_attention": 10.0, "text_focus_content": 5e-4}
    ctx = Context(weights=weights, image_loss=build_loss({"mse": 1.0}), assets={"stt": transformer})
    batch = {
        "lr": torch.rand(2, 4, 16, 64),
        "hr": torch.rand(2, 4, 32, 128),
        "label": ["ab", "C1d"],
    }
    loss, parts = model.training_loss(batch, ctx)
    assert set(parts) == {"mse", "text_focus_attention", "text_focus_content"}
    assert not any(v.requires_grad for v in parts.values())
    att, content = parts["text_focus_attention"], parts["text_focus_content"]
    assert att > 0 and content > 0
    assert torch.equal(loss.detach(), 1.0 * parts["mse"] + 10.0 * att + 5e-4 * content)
    loss.backward()
    assert model.block1[0].weight.grad is not None and model.block1[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in transformer.parameters())
    assert model.block2.gru1.gru.weight_ih_l0.grad is None  # the unused GRUs stay unused
    # image losses only: no asset needed; no loss at all: an error
    loss, parts = model.training_loss(batch, Context(image_loss=build_loss({"mse": 1.0})))
    assert set(parts) == {"mse"}
    with pytest.raises(KeyError, match="stt"):
        model.training_loss(batch, Context(weights={"text_focus_content": 1.0}))
    with pytest.raises(ValueError, match="neither an image loss"):
        model.training_loss(batch, Context())


def test_engine_trains_tbsrn_with_the_stt_asset_of_its_spec(tiny_textzoom, tiny_str, tmp_path):
    """The spec's objective end to end: a trained STT stand-in is the frozen `stt` asset."""
    from stisr.engine.train import TrainConfig, train
    from stisr.papers.spec import all_runs, load_specs

    run = all_runs(load_specs())["lemma/tbsrn"]
    assert run.assets == {"stt": "tp_transformer"}
    stt_cfg = {"embed_dim": 8, "heads": 2, "ff_dim": 16, "encoder_widths": [4, 8, 8, 8, 16, 16],
               "encoder_blocks": [1, 1, 1, 1]}  # fmt: skip
    rec = TrainConfig(run="t/stt", task="rec", model="stt_transformer", model_config=stt_cfg,
                      train_dirs=[str(tiny_str / "train")], steps=2, batch_size=4)  # fmt: skip
    train(rec, tmp_path / "stt", progress=False)
    cfg = TrainConfig(
        run="t/tbsrn",
        task="sr",
        model="tbsrn",
        model_config={"hidden_units": 4, "srb_nums": 1, "heads": 2},
        train_dirs=[str(tiny_textzoom / "train")],
        losses=run.losses,
        steps=2,
        batch_size=4,
        log_every=1,
        assets={"stt": {"kind": "checkpoint", "path": str(tmp_path / "stt/model.pt")}},
    )
    train(cfg, tmp_path / "tbsrn", progress=False)
    history = (tmp_path / "tbsrn/history.jsonl").read_text()
    assert '"loss/text_focus_attention"' in history and '"loss/text_focus_content"' in history
