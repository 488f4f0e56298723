"""TextZoom Table 4 SR baselines: shapes, official layouts and parameter counts, training."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from stisr.config import load_params
from stisr.engine.train import TrainConfig, train
from stisr.losses import build_loss
from stisr.models.registry import SR_MODELS, build_model
from stisr.models.sr.edsr import EDSR, EDSRConfig
from stisr.models.sr.lapsrn import LapSRN, LapSRNConfig, upsampler
from stisr.models.sr.srcnn import SRCNNConfig
from stisr.models.sr.vdsr import VDSRConfig
from stisr.papers import plan
from stisr.papers.spec import all_runs, load_specs
from tests.conftest import REPO
from tests.test_models_sr import n_params

BASELINES = ("srcnn", "vdsr", "rrdb", "edsr", "rdn", "lapsrn")
PARAMS = load_params(REPO / "params.yaml")
SMOKE = PARAMS["scales"]["smoke"]["models"]
RUNS = all_runs(load_specs())

# Parameter counts of the official TextZoom modules at x2 on RGB (their defaults; Table 4), by hand
# from the layer sizes in the code (conv k x k, in -> out: k*k*in*out weights + out biases):
OFFICIAL_PARAMS = {
    # srcnn.py: 9x9 3->64 (15,616) + 1x1 64->32 (2,080) + 5x5 32->3 (2,403)
    "srcnn": 15_616 + 2_080 + 2_403,
    # vdsr.py, no biases: 3x3 3->64 (1,728) + 18 x 3x3 64->64 (36,864 each) + 3x3 64->3 (1,728)
    "vdsr": 1_728 + 18 * 36_864 + 1_728,
    # esrgan.py RRDBNet(scale_factor=2), nf 64, gc 32: a dense block has 3x3 convs 64->32,
    # 96->32, 128->32, 160->32, 192->64 = 239,808; an RRDB 3 of them (719,424); 23 RRDBs;
    # conv_first 3->64 (1,792); trunk_conv, upconv1, HRconv 64->64 (36,928 each); conv_last 64->3
    # (1,731)
    "rrdb": 23 * 3 * 239_808 + 1_792 + 3 * 36_928 + 1_731,
    # edsr.py, no conv biases: 2 frozen mean shifts 1x1 3->3 + bias (12 each); conv_input 3->256
    # (6,912); 32 blocks of 2 x 3x3 256->256 (1,179,648 each); conv_mid (589,824); upscale conv
    # 256->1024 (2,359,296); conv_output 256->3 (6,912)
    "edsr": 2 * 12 + 6_912 + 32 * 1_179_648 + 589_824 + 2_359_296 + 6_912,
    # rdn.py, nFeat 64, 3 RDBs of 6 layers, growth 32: conv1 3->64 (1,792), conv2 (36,928); an RDB
    # has 3x3 convs (64 + 32i) -> 32 for i < 6 without bias (248,832) + 1x1 256->64 (16,384);
    # GFF_1x1 192->64 (12,352), GFF_3x3 (36,928); conv_up 64->256 (147,712); conv3 64->3 (1,731)
    "rdn": 1_792 + 36_928 + 3 * (248_832 + 16_384) + 12_352 + 36_928 + 147_712 + 1_731,
    # lapsrn.py, no biases: conv_input 3->64 (1,728); a level has 10 x 3x3 64->64 (368,640), a
    # 4x4 transposed conv 64->64 (65,536), convt_I 4x4 3->3 (144), convt_R 3x3 64->3 (1,728).
    # The code always builds 2 levels (873,824); at x2 only the first is used (see lapsrn.py).
    "lapsrn": 1_728 + 368_640 + 65_536 + 144 + 1_728,
}
OFFICIAL_LAPSRN_TWO_LEVELS = 1_728 + 2 * (368_640 + 65_536 + 144 + 1_728)

# Keys and shapes of the official state dicts (a sample per module), read from the TextZoom code.
OFFICIAL_SHAPES = {
    "srcnn": {"conv1.weight": (64, 3, 9, 9), "conv2.bias": (32,), "conv3.weight": (3, 32, 5, 5)},
    "vdsr": {
        "input.weight": (64, 3, 3, 3),
        "residual_layer.17.conv.weight": (64, 64, 3, 3),
        "output.weight": (3, 64, 3, 3),
    },
    "rrdb": {
        "conv_first.weight": (64, 3, 3, 3),
        "RRDB_trunk.22.RDB3.conv5.weight": (64, 192, 3, 3),
        "RRDB_trunk.0.RDB1.conv2.bias": (32,),
        "trunk_conv.weight": (64, 64, 3, 3),
        "upconv1.weight": (64, 64, 3, 3),
        "HRconv.bias": (64,),
        "conv_last.weight": (3, 64, 3, 3),
    },
    "edsr": {
        "sub_mean.weight": (3, 3, 1, 1),
        "add_mean.bias": (3,),
        "conv_input.weight": (256, 3, 3, 3),
        "residual.31.conv2.weight": (256, 256, 3, 3),
        "conv_mid.weight": (256, 256, 3, 3),
        "upscale.0.weight": (1024, 256, 3, 3),
        "conv_output.weight": (3, 256, 3, 3),
    },
    "rdn": {
        "conv1.weight": (64, 3, 3, 3),
        "RDB3.dense_layers.5.conv.weight": (32, 224, 3, 3),
        "RDB1.conv_1x1.weight": (64, 256, 1, 1),
        "GFF_1x1.weight": (64, 192, 1, 1),
        "conv_up.weight": (256, 64, 3, 3),
        "conv3.bias": (3,),
    },
    "lapsrn": {
        "conv_input.weight": (64, 3, 3, 3),
        "convt_I1.weight": (3, 3, 4, 4),
        "convt_R1.weight": (3, 64, 3, 3),
        "convt_F1.0.cov_block.0.weight": (64, 64, 3, 3),
        "convt_F1.0.cov_block.20.weight": (64, 64, 4, 4),
    },
}
# The loss each baseline is trained with in Table 4 (tsrn.yaml).
TABLE4_LOSSES = {name: RUNS[f"tsrn/{name}"].losses for name in BASELINES}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_all_baselines_are_registered() -> None:
    assert set(BASELINES) <= set(SR_MODELS)
    assert set(BASELINES) <= set(SMOKE) & set(PARAMS["scales"]["demo"]["models"])


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("channels", [3, 4])
def test_smoke_config_maps_16x64_to_32x128(name: str, channels: int) -> None:
    model = build_model(name, {**SMOKE[name], "in_channels": channels})
    assert model.scale_factor == 2 and model.in_channels == channels
    out = model(torch.rand(2, channels, 16, 64))
    assert out.shape == (2, channels, 32, 128) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", BASELINES)
def test_paper_config_parameter_count_names_and_shape(name: str) -> None:
    model = build_model(name).eval()
    assert n_params(model) == OFFICIAL_PARAMS[name]
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, shape in OFFICIAL_SHAPES[name].items():
        assert shapes.get(key) == shape, key
    with torch.no_grad():  # convolutional: a small LR keeps the 40M-parameter EDSR fast
        assert model(torch.rand(1, 3, 8, 32)).shape == (1, 3, 16, 64)


def test_lapsrn_x4_has_the_official_two_levels() -> None:
    # Official checkpoints always carry both levels: they load strictly into the x4 model, and
    # into the x2 one after dropping the unused `convt_*2` keys.
    x2, x4 = LapSRN(), LapSRN(LapSRNConfig(scale_factor=4, channels=8, depth=1))
    assert n_params(LapSRN(LapSRNConfig(scale_factor=4))) == OFFICIAL_LAPSRN_TWO_LEVELS
    extra = set(x4.state_dict()) - set(x2.state_dict())
    assert extra and all(k.startswith(("convt_I2", "convt_R2", "convt_F2")) for k in extra)
    assert x4(torch.rand(1, 3, 4, 16)).shape == (1, 3, 16, 64)


def test_lapsrn_transposed_convs_start_as_bilinear_upsamplers() -> None:
    up = upsampler(3, 3)
    img = torch.rand(1, 3, 6, 8)
    expected = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # zero padding at the border
    torch.testing.assert_close(up(img)[inner], expected[inner])


def test_edsr_mean_shift_is_frozen_and_leaves_the_mask_alone() -> None:
    model = EDSR(EDSRConfig(in_channels=4, channels=4, num_blocks=1))
    assert not model.sub_mean.weight.requires_grad and not model.add_mean.bias.requires_grad
    x = torch.rand(1, 4, 2, 2)
    shifted = model.sub_mean(x)
    torch.testing.assert_close(shifted[:, 3], x[:, 3])
    torch.testing.assert_close(shifted[:, 0], x[:, 0] - 0.4488)
    torch.testing.assert_close(model.add_mean(shifted), x)


@pytest.mark.parametrize("name", BASELINES)
def test_smoke_config_training_lowers_the_table4_loss(name: str) -> None:
    model = build_model(name, SMOKE[name]).train()
    criterion = build_loss(TABLE4_LOSSES[name])
    lr = torch.rand(4, 3, 16, 64)
    hr = F.interpolate(lr, scale_factor=2, mode="bilinear", align_corners=False)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, _ = criterion(model(lr), hr)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(map(torch.isfinite, map(torch.tensor, losses)))
    assert losses[-1] < 0.7 * losses[0], losses


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="SRCNNConfig.widths"):
        SRCNNConfig(widths=[8])
    with pytest.raises(ValueError, match="VDSRConfig.interpolation"):
        VDSRConfig(interpolation="area")
    with pytest.raises(ValueError, match="power of two"):
        build_model("rdn", {"scale_factor": 3})
    with pytest.raises(ValueError, match="EDSRConfig.in_channels"):
        EDSRConfig(in_channels=1)
    with pytest.raises(ValueError, match=r"RRDBNet expects \(B, 3, H, W\)"):
        build_model("rrdb", SMOKE["rrdb"])(torch.rand(1, 4, 16, 64))


# --- SRResNet with its perceptual loss --------------------------------------------------------


def test_srresnet_is_planned_with_source_dependent_vgg_features() -> None:
    run = RUNS["tsrn/srresnet"]
    embedded = {**PARAMS, "source": "embedded", "scale": "demo"}
    official = {**PARAMS, "source": "official", "scale": "paper"}
    assert plan.run_available(embedded, "tsrn/srresnet", RUNS)
    assert plan.asset_bindings(run) == {"vgg": "vgg16_features"}  # the perceptual loss's default
    assert plan.asset_bindings(RUNS["tsrn/tsrn"]) == {}
    emb = plan.resolve_asset(embedded, "vgg16_features", RUNS)
    assert {k: emb[k] for k in ("kind", "width_divisor", "seed")} == {
        "kind": "vgg_features",
        "width_divisor": 16,
        "seed": 0,
    }
    assert emb["deviation"].startswith("perceptual loss on random VGG features (embedded)")
    off = plan.resolve_asset(official, "vgg16_features", RUNS)
    assert off["weights"] == "data/official/weights/vgg16.pth" and "deviation" not in off


def test_srresnet_trains_end_to_end_with_random_vgg_features(tiny_textzoom, tmp_path) -> None:
    cfg = TrainConfig(
        run="test/srresnet",
        task="sr",
        model="srresnet",
        model_config=SMOKE["srresnet"],
        train_dirs=[str(tiny_textzoom / "train")],
        losses=RUNS["tsrn/srresnet"].losses,
        steps=2,
        batch_size=4,
        checkpoint_every=10,
        log_every=1,
        assets={"vgg": {"kind": "vgg_features", "width_divisor": 32, "seed": 0, "note": "random"}},
    )
    metrics = train(cfg, tmp_path, progress=False)
    assert metrics["assets"] == {"vgg": "random"}
    history = [json.loads(x) for x in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert history[-1]["loss/perceptual"] > 0
    recorded = json.loads((tmp_path / "params.json").read_text())["assets"]["vgg"]
    assert recorded["width_divisor"] == 32
