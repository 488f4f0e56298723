"""Tests for stisr.losses: hand-computed values of each named loss and the build_loss contract."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from stisr.losses import (
    LOSSES,
    PerceptualLoss,
    VGGFeatures,
    VGGFeaturesSpec,
    WeightedLoss,
    build_loss,
    charbonnier,
    gradient_field,
    gradient_profile,
    l1,
    mse,
    tv,
)
from stisr.losses.vgg import features_state_dict


def _pair(seed: int = 0, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = (2, channels, 4, 6)
    return torch.rand(shape, generator=gen), torch.rand(shape, generator=gen)


# ---------------------------------------------------------------- pixel losses


def test_mse_and_l1_constant_offset():
    hr = torch.zeros(1, 3, 2, 2)
    sr = hr + 0.5
    assert mse(sr, hr).item() == pytest.approx(0.25)
    assert l1(sr, hr).item() == pytest.approx(0.5)
    assert mse(hr, hr).item() == 0.0


def test_pixel_losses_use_the_mask_channel_too():
    hr = torch.zeros(1, 4, 2, 2)
    sr = hr.clone()
    sr[:, 3] = 1.0  # only the mask channel differs
    assert mse(sr, hr).item() == pytest.approx(0.25)


def test_charbonnier_is_eps_at_zero_and_near_l1_far_away():
    hr = torch.zeros(1, 3, 2, 2)
    assert charbonnier(hr, hr).item() == pytest.approx(1e-3)
    assert charbonnier(hr, hr, eps=0.1).item() == pytest.approx(0.1)
    sr = hr + 3.0
    assert charbonnier(sr, hr).item() == pytest.approx(math.sqrt(9 + 1e-6))
    with pytest.raises(ValueError, match="eps"):
        charbonnier(sr, hr, eps=0.0)


def test_tv_of_a_step_image_by_hand():
    sr = torch.tensor([[[[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]]])  # (1, 1, 2, 4)
    # horizontal: 2 rows x 3 differences, two of them 1 -> 2/6; vertical: all 0
    assert tv(sr).item() == pytest.approx(1 / 3)
    assert tv(sr, torch.rand_like(sr)).item() == pytest.approx(1 / 3)  # hr ignored
    assert tv(torch.ones(1, 3, 1, 1)).item() == 0.0  # single pixel: no neighbours


def test_pixel_losses_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="'mse'.*same"):
        mse(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 5))
    with pytest.raises(ValueError, match="'l1'"):
        l1(torch.rand(3, 4, 4), torch.rand(3, 4, 4))


# ---------------------------------------------------------------- gradient profile


def test_gradient_field_of_a_single_bright_pixel():
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0
    field = gradient_field(x, eps=0.0)
    expected = torch.tensor([[0.0, 0.5, 0.0], [0.5, 0.0, 0.5], [0.0, 0.5, 0.0]])
    assert torch.allclose(field[0, 0], expected)
    eps_field = gradient_field(x)  # default eps 1e-6 inside the root
    assert eps_field[0, 0, 0, 0].item() == pytest.approx(1e-3)
    assert eps_field[0, 0, 0, 1].item() == pytest.approx(math.sqrt(0.25 + 1e-6))


def test_gradient_field_of_a_step_image():
    # columns 0 0 0 1 1 1 repeated over 4 rows; zero padding makes the border read as an edge
    x = torch.tensor([0.0, 0, 0, 1, 1, 1]).repeat(1, 1, 4, 1)
    field = gradient_field(x, eps=0.0)[0, 0]
    inner = field[1:3]  # rows away from the top/bottom padding
    assert torch.allclose(inner, torch.tensor([0.0, 0, 0.5, 0.5, 0, 0.5]).repeat(2, 1))
    # top row, column 4: vertical (0 - 1)/2 from the padding, horizontal 0
    assert field[0, 4].item() == pytest.approx(0.5)
    # top row, column 5: both directions see the padding
    assert field[0, 5].item() == pytest.approx(math.sqrt(0.5))


def test_gradient_profile_by_hand_and_ignores_mask():
    hr = torch.zeros(1, 4, 3, 3)
    hr[0, :3, 1, 1] = 1.0  # bright pixel in R, G, B
    sr = torch.zeros(1, 4, 3, 3)
    sr[0, 3] = 1.0  # the mask channel differs everywhere: must not count
    # per channel: 4 of 9 positions differ by 0.5 -> mean 2/9
    assert gradient_profile(sr, hr, eps=0.0).item() == pytest.approx(2 / 9)
    with_eps = 4 / 9 * (math.sqrt(0.25 + 1e-6) - 1e-3)
    assert gradient_profile(sr, hr).item() == pytest.approx(with_eps)
    assert gradient_profile(hr, hr).item() == 0.0


def test_gradient_profile_eps_keeps_gradients_finite_on_flat_regions():
    hr = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(2))
    sr = torch.full((1, 3, 4, 4), 0.5, requires_grad=True)  # flat inside, edges at the border
    gradient_profile(sr, hr).backward()
    assert torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0
    sr.grad = None
    gradient_profile(sr, hr, eps=0.0).backward()  # sqrt'(0): why the code adds 1e-6
    assert torch.isnan(sr.grad).any()


# ---------------------------------------------------------------- perceptual


def test_perceptual_uses_the_given_extractor_on_rgb():
    features = nn.Conv2d(3, 2, 1, bias=False)
    nn.init.constant_(features.weight, 1.0)  # feature = R + G + B, twice
    loss = PerceptualLoss(features)
    hr = torch.zeros(1, 4, 2, 2)
    sr = hr.clone()
    sr[:, 0] = 1.0  # red up by 1 -> each feature up by 1
    sr[:, 3] = 5.0  # mask ignored
    assert loss(sr, hr).item() == pytest.approx(1.0)
    with pytest.raises(TypeError, match="nn.Module"):
        PerceptualLoss("vgg19")  # type: ignore[arg-type]


def test_perceptual_gradient_flows_to_sr_only():
    features = nn.Conv2d(3, 2, 1)
    loss = PerceptualLoss(features)
    sr, hr = _pair(3)
    sr.requires_grad_(True)
    hr.requires_grad_(True)
    loss(sr, hr).backward()
    assert sr.grad is not None and hr.grad is None


# ---------------------------------------------------------------- build_loss


def test_registry_names():
    assert set(LOSSES) == {"mse", "l1", "charbonnier", "tv", "gradient_profile", "perceptual"}


def test_build_loss_tsrn_weights():
    sr, hr = _pair(4, channels=4)
    crit = build_loss({"mse": 1.0, "gradient_profile": 1e-4})
    assert isinstance(crit, WeightedLoss)
    total, parts = crit(sr, hr)
    assert set(parts) == {"mse", "gradient_profile"}
    assert parts["mse"].item() == pytest.approx(mse(sr, hr).item())
    assert parts["gradient_profile"].item() == pytest.approx(gradient_profile(sr, hr).item())
    expected = parts["mse"] + 1e-4 * parts["gradient_profile"]
    assert total.item() == pytest.approx(expected.item())
    assert not parts["mse"].requires_grad


def test_build_loss_backward_and_zero_weight_dropped():
    sr, hr = _pair(5)
    sr.requires_grad_(True)
    crit = build_loss({"l1": 2.0, "charbonnier": 0.0, "tv": 0.5})
    total, parts = crit(sr, hr)
    assert set(parts) == {"l1", "tv"}
    assert total.item() == pytest.approx(2 * l1(sr, hr).item() + 0.5 * tv(sr).item())
    total.backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all()


def test_build_loss_unknown_name_lists_valid_ones():
    with pytest.raises(KeyError, match="'ssim_loss'.*valid names.*gradient_profile"):
        build_loss({"mse": 1.0, "ssim_loss": 1.0})
    with pytest.raises(KeyError, match="options"):
        build_loss({"mse": 1.0}, options={"vgg": {}})


def test_build_loss_bad_weights_and_options():
    with pytest.raises(ValueError, match="'mse'"):
        build_loss({"mse": -1.0})
    with pytest.raises(ValueError, match="'l1'"):
        build_loss({"l1": float("nan")})
    with pytest.raises(ValueError, match="'l1'"):
        build_loss({"l1": "1"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="every weight is 0"):
        build_loss({"l1": 0})
    with pytest.raises(ValueError, match="non-empty"):
        build_loss({})
    with pytest.raises(TypeError, match="'perceptual'"):
        build_loss({"perceptual": 1.0})  # no feature extractor given


def test_build_loss_with_options():
    features = nn.Identity()
    crit = build_loss(
        {"perceptual": 1.0, "charbonnier": 1.0},
        options={"perceptual": {"features": features}, "charbonnier": {"eps": 0.5}},
    )
    hr = torch.zeros(1, 3, 2, 2)
    total, parts = crit(hr, hr)
    assert parts["perceptual"].item() == 0.0
    assert parts["charbonnier"].item() == pytest.approx(0.5)
    assert total.item() == pytest.approx(0.5)
    # the extractor is a submodule, so .to(device) moves it with the loss
    assert any(m is features for m in crit.modules())


# ---------------------------------------------------------------- VGG features

# torchvision's `vgg19().features` by hand (configuration "E"): index -> (out, in) of each
# conv3x3; ReLUs follow each conv, max-pools sit at 4, 9, 18, 27 and 36 (37 modules).
VGG19_CONVS = {
    0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128),
    10: (256, 128), 12: (256, 256), 14: (256, 256), 16: (256, 256),
    19: (512, 256), 21: (512, 512), 23: (512, 512), 25: (512, 512),
    28: (512, 512), 30: (512, 512), 32: (512, 512), 34: (512, 512),
}  # fmt: skip
# `vgg16().features` ("D"): pools at 4, 9, 16, 23, 30 (31 modules; TextZoom uses all of them).
VGG16_CONVS = {
    0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128),
    10: (256, 128), 12: (256, 256), 14: (256, 256),
    17: (512, 256), 19: (512, 512), 21: (512, 512),
    24: (512, 512), 26: (512, 512), 28: (512, 512),
}  # fmt: skip


def _torchvision_layout(convs: dict[int, tuple[int, int]]) -> dict[str, torch.Tensor]:
    """A state dict keyed like torchvision's VGG file; conv i holds the value i everywhere."""
    raw = {}
    for i, (out, inp) in convs.items():
        raw[f"features.{i}.weight"] = torch.full((out, inp, 3, 3), float(i))
        raw[f"features.{i}.bias"] = torch.full((out,), float(i))
    # the classifier (4096 x 25088 and more) is dropped by the loader: placeholders suffice
    for key in ("0.weight", "0.bias", "3.weight", "3.bias", "6.weight", "6.bias"):
        raw[f"classifier.{key}"] = torch.zeros(1)
    return raw


@pytest.mark.parametrize(
    ("network", "convs", "pools"),
    [("vgg16", VGG16_CONVS, [4, 9, 16, 23, 30]), ("vgg19", VGG19_CONVS, [4, 9, 18, 27, 36])],
)
def test_vgg_features_match_torchvision_layout(network, convs, pools):
    model = VGGFeatures(network)
    assert len(model) == pools[-1] + 1
    assert [i for i, m in enumerate(model) if isinstance(m, nn.MaxPool2d)] == pools
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == {
        **{f"{i}.weight": (o, c, 3, 3) for i, (o, c) in convs.items()},
        **{f"{i}.bias": (o,) for i, (o, _) in convs.items()},
    }


def test_vgg19_torchvision_state_dict_loads_strictly():
    raw = _torchvision_layout(VGG19_CONVS)
    model = VGGFeatures("vgg19")
    model.load_state_dict(features_state_dict(raw, len(model)), strict=True)
    assert all(model[i].weight.detach()[0, 0, 0, 0] == i for i in VGG19_CONVS)
    srgan = VGGFeatures("vgg19", layers=36)  # SRGAN's VGG54: through conv5_4 + ReLU
    srgan.load_state_dict(features_state_dict(raw, 36), strict=True)


def test_vgg16_file_builds_the_textzoom_extractor_frozen(tmp_path):
    path = tmp_path / "vgg16.pth"
    torch.save(_torchvision_layout(VGG16_CONVS), path)
    spec = VGGFeaturesSpec(weights=str(path))
    model = spec.build()
    assert (spec.network, spec.layers) == ("vgg16", 31) and len(model) == 31
    assert float(model[28].bias[0]) == 28.0
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert spec.note == "ImageNet vgg16 features[:31] (vgg16.pth)"
    with pytest.raises(ValueError, match="width_divisor"):
        VGGFeaturesSpec(weights=str(path), width_divisor=2)


def test_random_vgg_is_seeded_narrow_frozen_and_leaves_the_global_rng():
    state = torch.random.get_rng_state()
    a = VGGFeaturesSpec(width_divisor=16, seed=3)
    m1, m2, m3 = a.build(), a.build(), VGGFeaturesSpec(width_divisor=16, seed=4).build()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(m1.state_dict()[k], v) for k, v in m2.state_dict().items())
    assert not torch.equal(m1[0].weight, m3[0].weight)
    assert m1[0].out_channels == 4 and m1[28].out_channels == 32  # 64 / 16, 512 / 16
    assert not any(p.requires_grad for p in m1.parameters())
    assert a.note.startswith("random VGG features (embedded)")
    assert m1(torch.rand(2, 3, 32, 128)).shape == (2, 32, 1, 4)


def test_perceptual_with_vgg_is_differentiable_in_sr_only():
    features = VGGFeaturesSpec(width_divisor=32).build()
    crit = build_loss({"mse": 1.0, "perceptual": 6e-3}, {"perceptual": {"features": features}})
    sr = torch.rand(2, 4, 32, 128, requires_grad=True)
    hr = torch.rand(2, 4, 32, 128)
    total, parts = crit(sr, hr)
    assert parts["perceptual"].item() > 0
    total.backward()
    assert torch.isfinite(sr.grad).all() and sr.grad[:, :3].abs().sum() > 0
    assert all(p.grad is None for p in features.parameters())
