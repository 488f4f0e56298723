"""SR models: shapes, official TSRN layout/parameter count, STN switch, bicubic, TPS layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stisr.models.layers.tps_stn import STNHead, TPSSpatialTransformer, edge_control_points
from stisr.models.sr.bicubic import Bicubic, BicubicConfig
from stisr.models.sr.srresnet import SRResNet, SRResNetConfig
from stisr.models.sr.tsrn import TSRN, TSRNConfig

LR_SHAPE = (2, 4, 16, 64)
SR_SHAPE = (2, 4, 32, 128)
TINY = {"hidden_units": 4, "srb_nums": 1}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- bicubic ---------------------------------------------------------------------------------


def test_bicubic_is_parameter_free_and_matches_interpolate() -> None:
    model = Bicubic()
    assert n_params(model) == 0
    assert model.scale_factor == 2
    lr = torch.rand(*LR_SHAPE)
    expected = F.interpolate(lr, size=(32, 128), mode="bicubic", align_corners=False).clamp(0, 1)
    out = model(lr)
    assert out.shape == SR_SHAPE
    torch.testing.assert_close(out, expected)
    assert out.min() >= 0 and out.max() <= 1


def test_bicubic_align_corners_switch_changes_output() -> None:
    lr = torch.rand(1, 3, 16, 64)
    a = Bicubic(BicubicConfig(align_corners=True, clamp=False))(lr)
    b = Bicubic(BicubicConfig(align_corners=False, clamp=False))(lr)
    torch.testing.assert_close(
        a, F.interpolate(lr, scale_factor=2, mode="bicubic", align_corners=True)
    )
    assert not torch.allclose(a, b)


# --- shapes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"rnn": "lstm", "activation": "prelu", "use_stn": True},
        {"rnn": "gru", "activation": "mish", "use_stn": True, "stn_in_train_only": True},
        {"rnn": "gru", "activation": "relu", "use_stn": False},
    ],
)
def test_tsrn_output_shape(overrides: dict) -> None:
    model = TSRN(TSRNConfig(**TINY, **overrides))
    assert model.scale_factor == 2
    for training in (True, False):
        out = model.train(training)(torch.rand(*LR_SHAPE))
        assert out.shape == SR_SHAPE
        assert out.abs().max() < 1  # tanh output, as the official code


def test_tsrn_rgb_and_no_srb_config() -> None:
    cfg = TSRNConfig(in_channels=3, out_channels=3, hidden_units=2, srb_nums=0, use_stn=False)
    assert TSRN(cfg)(torch.rand(2, 3, 16, 64)).shape == (2, 3, 32, 128)


def test_srresnet_output_shape_and_names() -> None:
    model = SRResNet(SRResNetConfig(num_blocks=2, channels=8))
    assert model(torch.rand(*LR_SHAPE)).shape == SR_SHAPE
    assert model.scale_factor == 2
    keys = set(model.state_dict())
    assert {"block2.conv1.weight", "block3.prelu.weight", "block4.1.running_mean"} <= keys
    assert {"block5.0.conv.weight", "block5.0.prelu.weight", "block5.1.weight"} <= keys


def test_srresnet_official_parameter_count() -> None:
    # TextZoom srresnet.py with mask (4 channels): 9x9 conv 4->64 + PReLU (20,801), 5 residual
    # blocks of 2x(conv3x3 64->64 + BN) + PReLU (74,113 each), conv3x3 + BN (37,056), pixel-shuffle
    # conv 64->256 + PReLU (147,713), 9x9 conv 64->4 (20,740).
    assert n_params(SRResNet()) == 20_801 + 5 * 74_113 + 37_056 + 147_713 + 20_740 == 596_875


# --- TSRN official layout ----------------------------------------------------------------------

# Facts read from TextZoom src/model/tsrn.py (TSRN(STN=True, mask=True), hidden_units=32 -> 64
# channels, srb_nums=5, bidirectional GRU(64, 32), Mish) and its stn_head / TPS modules.
OFFICIAL_TSRN_SHAPES = {
    "block1.0.weight": (64, 4, 9, 9),
    "block1.1.weight": (1,),
    "block2.conv1.weight": (64, 64, 3, 3),
    "block2.bn1.running_var": (64,),
    "block2.gru1.conv1.weight": (64, 64, 1, 1),
    "block2.gru1.gru.weight_ih_l0": (96, 64),
    "block2.gru1.gru.weight_hh_l0_reverse": (96, 32),
    "block6.gru2.gru.bias_hh_l0": (96,),
    "block7.0.weight": (64, 64, 3, 3),
    "block7.1.weight": (64,),
    "block8.0.conv.weight": (256, 64, 3, 3),
    "block8.1.weight": (4, 64, 9, 9),
    "stn_head.stn_convnet.0.0.weight": (32, 4, 3, 3),
    "stn_head.stn_convnet.10.0.weight": (256, 256, 3, 3),
    "stn_head.stn_fc1.0.weight": (512, 512),
    "stn_head.stn_fc1.1.running_mean": (512,),
    "stn_head.stn_fc2.weight": (40, 512),
    "tps.inverse_kernel": (23, 23),
    "tps.padding_matrix": (3, 2),
    "tps.target_coordinate_repr": (16 * 64, 23),
    "tps.target_control_points": (20, 2),
}
# Hand count of the official module:
#   block1 9x9 conv 4->64 + PReLU                                  20,801
#   5 x SRB: 2 x (conv3x3 64->64 + BN)  = 74,112                              (Mish: no params)
#            2 x (1x1 conv 64->64 = 4,160 + biGRU(64, 32) = 18,816) = 45,952  -> 120,064 each
#   block7 conv3x3 + BN                                            37,056
#   block8 pixel-shuffle conv 64->256 (147,712) + 9x9 conv 64->4 (20,740)
#   STN head: 6 conv3x3+BN blocks 4-32-64-128-256-256-256 (1,570,848), fc 512->512 + BN1d
#             (263,680), fc 512->40 (20,520)                        1,855,048
OFFICIAL_TSRN_CORE_PARAMS = 20_801 + 5 * 120_064 + 37_056 + 147_712 + 20_740
OFFICIAL_TSRN_STN_PARAMS = 1_855_048
OFFICIAL_TSRN_PARAMS = 2_681_677


def _code_variant(**kw) -> TSRN:
    return TSRN(TSRNConfig(rnn="gru", activation="mish", stn_in_train_only=True, **kw))


def test_tsrn_code_variant_matches_official_parameter_count_and_names() -> None:
    model = _code_variant()
    assert OFFICIAL_TSRN_CORE_PARAMS + OFFICIAL_TSRN_STN_PARAMS == OFFICIAL_TSRN_PARAMS
    assert n_params(model) == OFFICIAL_TSRN_PARAMS
    assert n_params(model.stn_head) == OFFICIAL_TSRN_STN_PARAMS
    assert n_params(_code_variant(use_stn=False)) == OFFICIAL_TSRN_CORE_PARAMS
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, shape in OFFICIAL_TSRN_SHAPES.items():
        assert shapes.get(key) == shape, key
    # Mish has no parameters, so no `prelu` keys inside the SRBs of the code variant.
    assert not any(".prelu." in k for k in shapes)
    assert max(int(k.split(".")[0][5:]) for k in shapes if k.startswith("block")) == 8


def test_tsrn_paper_variant_parameter_count() -> None:
    # Paper defaults (BLSTM, PReLU): each biLSTM(64, 32) has 25,088 params instead of the biGRU's
    # 18,816 (10 per model: +62,720), plus one PReLU slope per SRB and per upsampling block (+6).
    model = TSRN()
    assert model.config.rnn == "lstm" and model.config.activation == "prelu"
    assert model.config.use_stn and not model.config.stn_in_train_only
    assert n_params(model) == OFFICIAL_TSRN_PARAMS + 10 * (25_088 - 18_816) + 6 == 2_744_403


@pytest.mark.slow  # ~1-3 s alone on 2 cores; more on a loaded machine
def test_tsrn_paper_config_training_step_on_cpu() -> None:
    model = TSRN().train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))
    lr = torch.rand(2, 4, 16, 64)
    hr = torch.rand(2, 4, 32, 128)
    loss = F.mse_loss(model(lr), hr)
    opt.zero_grad()
    loss.backward()
    assert torch.isfinite(loss)
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert grads["stn_head.stn_fc2.weight"].abs().sum() > 0  # the STN is trained end to end
    before = model.block1[0].weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model.block1[0].weight)


# --- STN switch --------------------------------------------------------------------------------


def test_stn_train_only_versus_always() -> None:
    always = TSRN(TSRNConfig(**TINY, stn_in_train_only=False))
    train_only = TSRN(TSRNConfig(**TINY, stn_in_train_only=True))
    no_stn = TSRN(TSRNConfig(**TINY, use_stn=False))
    train_only.load_state_dict(always.state_dict())
    no_stn.load_state_dict(always.state_dict(), strict=False)
    lr = torch.rand(*LR_SHAPE)

    for m in (always, train_only, no_stn):
        m.eval()
    assert always.stn_active and not train_only.stn_active
    # eval: train-only skips the alignment (same as no STN); paper mode still rectifies
    torch.testing.assert_close(train_only(lr), no_stn(lr))
    assert not torch.allclose(always(lr), train_only(lr), atol=1e-4)

    for m in (always, train_only):
        m.train()
    assert always.stn_active and train_only.stn_active
    torch.testing.assert_close(always(lr), train_only(lr))


# --- TPS-STN layer ---------------------------------------------------------------------------


def test_tps_identity_when_source_equals_target() -> None:
    tps = TPSSpatialTransformer(output_size=(16, 64), num_control_points=20)
    img = torch.rand(2, 3, 16, 64)
    src = tps.target_control_points.expand(2, 20, 2)
    out, coords = tps(img, src)
    assert coords.shape == (2, 16 * 64, 2)
    torch.testing.assert_close(out, img, atol=1e-3, rtol=0)  # float32 TPS solve


def test_tps_output_size_is_configurable() -> None:
    tps = TPSSpatialTransformer(output_size=(32, 100), num_control_points=20)
    src = edge_control_points(20, 0.05, 0.05).float().expand(1, 20, 2)
    out, _ = tps(torch.rand(1, 3, 64, 256), src)
    assert out.shape == (1, 3, 32, 100)


def test_stn_head_initial_points_lie_on_top_and_bottom_edges() -> None:
    head = STNHead(in_channels=4, num_control_points=20, input_size=(32, 64)).eval()
    _, points = head(torch.rand(3, 4, 32, 64))
    assert points.shape == (3, 20, 2)
    torch.testing.assert_close(points[0], edge_control_points(20, 0.01, 0.01).float())
    assert torch.allclose(points[:, :10, 1], torch.tensor(0.01))
    assert torch.allclose(points[:, 10:, 1], torch.tensor(0.99))


def test_stn_head_input_size_configurable_and_checked() -> None:
    head = STNHead(in_channels=3, input_size=(64, 128)).eval()
    assert head.stn_fc1[0].in_features == 256 * 2 * 4
    assert head(torch.rand(2, 3, 64, 128))[1].shape == (2, 20, 2)
    with pytest.raises(ValueError, match="input"):
        head(torch.rand(2, 3, 32, 64))
    with pytest.raises(ValueError, match="multiples of 32"):
        STNHead(in_channels=3, input_size=(16, 64))


# --- config validation -----------------------------------------------------------------------


def test_tsrn_config_validation_and_list_coercion() -> None:
    cfg = TSRNConfig(stn_input_size=[32, 64], tps_margins=[0.05, 0.05])
    assert cfg.stn_input_size == (32, 64) and cfg.tps_margins == (0.05, 0.05)
    with pytest.raises(ValueError, match="TSRNConfig.rnn"):
        TSRNConfig(rnn="transformer")
    with pytest.raises(ValueError, match="TSRNConfig.activation"):
        TSRNConfig(activation="gelu")
    with pytest.raises(ValueError, match="scale_factor"):
        TSRNConfig(scale_factor=3)
    with pytest.raises(ValueError, match="stn_output_size"):
        TSRNConfig(stn_output_size=(16,))


def test_tsrn_rejects_wrong_channel_count() -> None:
    with pytest.raises(ValueError, match=r"\(B, 4, H, W\)"):
        TSRN(TSRNConfig(**TINY))(torch.rand(1, 3, 16, 64))
