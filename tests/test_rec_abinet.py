"""ABINet: official checkpoint layout, parameter count, shapes, decoding, loss, preprocessing."""

from __future__ import annotations

import pytest
import torch

from stisr.metrics.complexity import count_flops, count_parameters
from stisr.models.layers.abinet_blocks import greedy_lengths
from stisr.models.rec.abinet import ABINet, ABINetConfig, official_state_dict
from stisr.models.registry import build_model
from tests.recognizer_checks import fit_losses

Shapes = dict[str, tuple[int, ...]]
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked", ".pe")


def _bn(out: Shapes, prefix: str, c: int) -> None:
    for name in _BN:
        out[f"{prefix}.{name}"] = () if name == "num_batches_tracked" else (c,)


def _linear(out: Shapes, prefix: str, n_in: int, n_out: int, bias: bool = True) -> None:
    out[f"{prefix}.weight"] = (n_out, n_in)
    if bias:
        out[f"{prefix}.bias"] = (n_out,)


def _mha(out: Shapes, prefix: str, d: int) -> None:
    out[f"{prefix}.in_proj_weight"] = (3 * d, d)
    out[f"{prefix}.in_proj_bias"] = (3 * d,)
    _linear(out, f"{prefix}.out_proj", d, d)


def encoder_layers(out: Shapes, prefix: str, n: int, d: int = 512, inner: int = 2048) -> None:
    """modules/transformer.py TransformerEncoderLayer: self_attn, linear1/2, norm1/2."""
    for i in range(n):
        p = f"{prefix}.layers.{i}"
        _mha(out, f"{p}.self_attn", d)
        _linear(out, f"{p}.linear1", d, inner)
        _linear(out, f"{p}.linear2", inner, d)
        for norm in ("norm1", "norm2"):
            out[f"{p}.{norm}.weight"] = out[f"{p}.{norm}.bias"] = (d,)


def position_attention(out: Shapes, prefix: str, d: int = 512, c: int = 64, t: int = 26) -> None:
    """modules/attention.py PositionAttention: k_encoder.i = (conv, bn, relu),
    k_decoder.i = (upsample, conv, bn, relu); convs have biases."""
    for i, (n_in, n_out) in enumerate([(d, c), (c, c), (c, c), (c, c)]):
        out[f"{prefix}.k_encoder.{i}.0.weight"] = (n_out, n_in, 3, 3)
        out[f"{prefix}.k_encoder.{i}.0.bias"] = (n_out,)
        _bn(out, f"{prefix}.k_encoder.{i}.1", n_out)
    for i, n_out in enumerate([c, c, c, d]):
        out[f"{prefix}.k_decoder.{i}.1.weight"] = (n_out, c, 3, 3)
        out[f"{prefix}.k_decoder.{i}.1.bias"] = (n_out,)
        _bn(out, f"{prefix}.k_decoder.{i}.2", n_out)
    out[f"{prefix}.pos_encoder.pe"] = (t, 1, d)
    _linear(out, f"{prefix}.project", d, d)


def official_vision_language_shapes() -> Shapes:
    """`vision.*` and `language.*` of the official release (train_abinet.yaml, shared by MATRN)."""
    out: Shapes = {}
    r = "vision.backbone.resnet"
    out[f"{r}.conv1.weight"] = (32, 3, 3, 3)
    _bn(out, f"{r}.bn1", 32)
    inplanes = 32
    # resnet45: BasicBlock(conv1 1x1, conv2 3x3), blocks [3, 4, 6, 6, 3], strides [2, 1, 2, 1, 1]
    for stage, (planes, blocks, stride) in enumerate(
        zip((32, 64, 128, 256, 512), (3, 4, 6, 6, 3), (2, 1, 2, 1, 1), strict=True), 1
    ):
        for b in range(blocks):
            p = f"{r}.layer{stage}.{b}"
            n_in = inplanes if b == 0 else planes
            out[f"{p}.conv1.weight"] = (planes, n_in, 1, 1)
            _bn(out, f"{p}.bn1", planes)
            out[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            _bn(out, f"{p}.bn2", planes)
            if b == 0 and (stride != 1 or inplanes != planes):
                out[f"{p}.downsample.0.weight"] = (planes, inplanes, 1, 1)
                _bn(out, f"{p}.downsample.1", planes)
        inplanes = planes
    out["vision.backbone.pos_encoder.pe"] = (256, 1, 512)  # 8 x 32 feature positions
    encoder_layers(out, "vision.backbone.transformer", 3)
    position_attention(out, "vision.attention")
    _linear(out, "vision.cls", 512, 37)
    _linear(out, "language.proj", 37, 512, bias=False)
    out["language.token_encoder.pe"] = out["language.pos_encoder.pe"] = (26, 1, 512)
    for i in range(4):  # TransformerDecoderLayer(self_attn=False): no self_attn, no norm1
        p = f"language.model.layers.{i}"
        _mha(out, f"{p}.multihead_attn", 512)
        _linear(out, f"{p}.linear1", 512, 2048)
        _linear(out, f"{p}.linear2", 2048, 512)
        for norm in ("norm2", "norm3"):
            out[f"{p}.{norm}.weight"] = out[f"{p}.{norm}.bias"] = (512,)
    _linear(out, "language.cls", 512, 37)
    return out


def official_abinet_shapes() -> Shapes:
    out = official_vision_language_shapes()
    _linear(out, "alignment.w_att", 1024, 512)
    _linear(out, "alignment.cls", 512, 37)
    return out


def fake_release(shapes: Shapes, prefix: str = "") -> dict:
    """A file laid out like fastai's Learner.save: {"model": state_dict, "opt": ...}."""
    gen = torch.Generator().manual_seed(0)
    state = {
        prefix + k: torch.tensor(7) if not s else torch.randn(s, generator=gen)
        for k, s in shapes.items()
    }
    return {"model": state, "opt": {"state": {}}}


def parameter_total(shapes: Shapes) -> int:
    return sum(
        torch.Size(s).numel() for k, s in shapes.items() if not any(b in k for b in _BUFFERS)
    )


TINY = {
    "d_model": 16,
    "nhead": 2,
    "d_inner": 32,
    "backbone_widths": (4, 4, 8, 8, 16, 16),
    "backbone_blocks": (1, 1, 1, 1, 1),
    "vision_layers": 1,
    "language_layers": 1,
    "attention_channels": 8,
    "iter_size": 2,
    "max_length": 7,
}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_official_checkpoint_loads_strictly(prefix: str) -> None:
    shapes = official_abinet_shapes()
    assert len(shapes) == 455  # state-dict entries of the official ABINetIterModel
    raw = fake_release(shapes, prefix)
    model = ABINet()
    result = model.load_state_dict(official_state_dict(raw), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    key = "language.model.layers.3.multihead_attn.in_proj_weight"
    torch.testing.assert_close(
        model.language.model.layers[3].multihead_attn.in_proj_weight, raw["model"][prefix + key]
    )
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes


def test_partial_or_foreign_checkpoints_are_rejected_clearly() -> None:
    vision_only = {
        k[len("vision.") :]: v
        for k, v in fake_release(official_abinet_shapes())["model"].items()
        if k.startswith("vision.")
    }
    with pytest.raises(ValueError, match="pretrain"):
        official_state_dict({"model": vision_only})
    with pytest.raises(ValueError, match="not a tensor"):
        official_state_dict({"model": {"vision.cls.weight": "x"}})
    with pytest.raises(TypeError, match="ABINet checkpoint"):
        official_state_dict([1, 2])


def test_parameter_count_equals_official() -> None:
    # 36,738,703 = sum(p.numel()) of the official ABINetIterModel built from train_abinet.yaml
    # (same total from the key list above); KD-LTR Table 5 lists ABINet-LTR at 36.74M params.
    assert parameter_total(official_abinet_shapes()) == 36_738_703
    n = count_parameters(ABINet())
    assert n == 36_738_703
    assert abs(n / 36.74e6 - 1) < 0.02


@pytest.mark.slow
def test_paper_scale_forward_and_macs() -> None:
    model = ABINet().eval()
    x = model.preprocess(torch.rand(1, 3, 16, 64))
    with torch.no_grad():
        assert model(x).shape == (1, 26, 37)
    # convolutions + linear layers; CPU flash attention is not counted by FlopCounterMode
    assert count_flops(model, x)["macs"] > 5e9


def test_forward_and_decode_shapes() -> None:
    model = ABINet(ABINetConfig(**TINY)).eval()
    x = model.preprocess(torch.rand(3, 4, 16, 64))
    assert x.shape == (3, 3, 32, 128)
    with torch.no_grad():
        logits = model(x)
        out = model.forward_all(x)
    assert logits.shape == (3, 8, 37)
    assert len(out.language) == len(out.alignment) == 2
    assert out.attn_scores.shape == (3, 8, 8, 32)
    torch.testing.assert_close(logits, out.alignment[-1])
    texts = model.decode(logits)
    assert len(texts) == 3 and all(len(t) <= 8 for t in texts)
    with pytest.raises(ValueError, match="preprocess"):
        model(torch.rand(3, 3, 16, 64))


def test_decode_stops_at_end_token_and_uses_official_class_order() -> None:
    model = ABINet(ABINetConfig(**TINY))
    # official charset_36.txt: class 1 = 'a', ..., 26 = 'z', 27 = '1', ..., 35 = '9', 36 = '0'
    path = [[8, 5, 27, 36, 0, 1, 1, 0], [1, 2, 3, 4, 5, 6, 7, 8]]
    logits = torch.nn.functional.one_hot(torch.tensor(path), 37).float()
    assert model.decode(logits) == ["he10", "abcdefgh"]
    assert greedy_lengths(logits).tolist() == [5, 8]


def test_encode_targets_filters_truncates_and_handles_empty() -> None:
    model = ABINet(ABINetConfig(**TINY))  # max_length 7 -> 8 positions
    targets, lengths = model.encode_targets(["Ab-0", "", "abcdefghij"], torch.device("cpu"))
    assert targets.shape == (3, 8)
    assert targets[0].tolist() == [1, 2, 36, 0, 0, 0, 0, 0]
    assert targets[1].tolist() == [0] * 8
    assert targets[2].tolist() == [1, 2, 3, 4, 5, 6, 7, 0]
    assert lengths.tolist() == [4, 1, 8]


def test_training_loss_finite_and_decreasing() -> None:
    model = ABINet(ABINetConfig(**TINY, dropout=0.0)).train()
    x = model.preprocess(torch.rand(4, 3, 32, 128))
    labels = ["cat", "", "Dog!", "a1"]
    losses = fit_losses(model, x, labels, steps=12, lr=1e-2)
    assert losses[-1] < 0.7 * losses[0]
    with pytest.raises(ValueError, match="labels"):
        model.text_loss(x, ["a"])


def test_preprocess_imagenet_normalization() -> None:
    model = ABINet(ABINetConfig(**TINY))
    rgbm = torch.zeros(2, 4, 32, 128)
    rgbm[:, 0], rgbm[:, 1], rgbm[:, 2], rgbm[:, 3] = 0.2, 0.6, 1.0, 1.0  # mask channel ignored
    x = model.preprocess(rgbm)
    assert x.shape == (2, 3, 32, 128)
    expected = [(0.2 - 0.485) / 0.229, (0.6 - 0.456) / 0.224, (1.0 - 0.406) / 0.225]
    for c in range(3):
        torch.testing.assert_close(x[:, c], torch.full((2, 32, 128), expected[c]))
    lr = torch.rand(2, 3, 16, 64)
    y = model.preprocess(lr)
    assert y.shape == (2, 3, 32, 128)
    up = torch.nn.functional.interpolate(lr, size=(32, 128), mode="bicubic", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(y, (up - mean) / std)
    ramp = torch.linspace(0, 1, 64).expand(1, 3, 16, 64)  # smooth: little bicubic overshoot
    z = model.preprocess(ramp)
    assert -0.485 / 0.229 - 0.02 <= z.min() < -2.0 and 2.5 < z.max() <= 0.594 / 0.225 + 0.02
    with pytest.raises(ValueError, match="preprocess"):
        model.preprocess(torch.rand(3, 16, 64))


def test_config_validation_and_registry() -> None:
    with pytest.raises(ValueError, match="backbone_widths"):
        ABINetConfig(d_model=64)
    with pytest.raises(ValueError, match="multiple of 32"):
        ABINetConfig(img_h=48)
    model = build_model("abinet", {**TINY, "backbone_widths": [4, 4, 8, 8, 16, 16]})
    assert isinstance(model, ABINet) and model.config.backbone_widths == (4, 4, 8, 8, 16, 16)
