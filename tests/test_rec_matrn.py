"""MATRN: official checkpoint layout, parameter count, shapes, visual masking, loss."""

from __future__ import annotations

import pytest
import torch

from stisr.metrics.complexity import count_flops, count_parameters
from stisr.models.rec.matrn import MATRN, MATRNConfig, official_state_dict
from stisr.models.registry import build_model
from tests.recognizer_checks import fit_losses
from tests.test_rec_abinet import (
    TINY,
    Shapes,
    _linear,
    encoder_layers,
    fake_release,
    official_vision_language_shapes,
    parameter_total,
    position_attention,
)

TINY_MATRN = {**TINY, "sv_layers": 1}


def official_matrn_shapes() -> Shapes:
    """ABINet's vision + language, then `semantic_visual` (BaseSemanticVisual_backbone_feature)."""
    out = official_vision_language_shapes()
    p = "semantic_visual"
    out[f"{p}.v_token"] = (1, 512)
    encoder_layers(out, f"{p}.model1", 2)
    out[f"{p}.pos_encoder_tfm.pe"] = (256, 1, 512)  # (32 // 4) * (128 // 4)
    position_attention(out, f"{p}.model2_vis")
    for head in ("cls_vis", "cls_sem", "cls"):
        _linear(out, f"{p}.{head}", 512, 37)
    _linear(out, f"{p}.w_att", 1024, 512)
    return out


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_official_checkpoint_loads_strictly() -> None:
    shapes = official_matrn_shapes()
    assert len(shapes) == 544  # state-dict entries of the official MATRN
    raw = fake_release(shapes, "module.")
    model = MATRN()
    result = model.load_state_dict(official_state_dict(raw), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(
        model.semantic_visual.v_token, raw["model"]["module.semantic_visual.v_token"]
    )
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == shapes
    abinet_like = {k: v for k, v in raw["model"].items() if "semantic_visual" not in k}
    with pytest.raises(ValueError, match="semantic_visual"):
        official_state_dict({"model": abinet_like})


def test_parameter_count_equals_official() -> None:
    # 44,158,489 = sum(p.numel()) of the official MATRN built from configs/train_matrn.yaml
    # (same total from the key list above); KD-LTR Table 5 lists MATRN-LTR at 44.16M params.
    assert parameter_total(official_matrn_shapes()) == 44_158_489
    n = count_parameters(MATRN())
    assert n == 44_158_489
    assert abs(n / 44.16e6 - 1) < 0.02


@pytest.mark.slow
def test_paper_scale_forward_and_macs() -> None:
    model = MATRN().eval()
    x = model.preprocess(torch.rand(1, 3, 16, 64))
    with torch.no_grad():
        assert model(x).shape == (1, 26, 37)
    assert count_flops(model, x)["macs"] > 9e9


def test_forward_branches_and_decode_shapes() -> None:
    model = MATRN(MATRNConfig(**TINY_MATRN)).eval()
    x = model.preprocess(torch.rand(2, 3, 16, 64))
    with torch.no_grad():
        logits = model(x)
        out = model.forward_all(x)
    assert logits.shape == (2, 8, 37)
    assert all(len(v) == 2 for v in (out.language, out.visual, out.semantic, out.final))
    torch.testing.assert_close(logits, out.final[-1])
    model.config.output_branch = "semantic"
    with torch.no_grad():
        torch.testing.assert_close(model(x), out.semantic[-1])
    texts = model.decode(logits)
    assert len(texts) == 2 and all(isinstance(t, str) and len(t) <= 8 for t in texts)


def test_eval_is_deterministic_and_training_hides_visual_features() -> None:
    model = MATRN(MATRNConfig(**TINY_MATRN, dropout=0.0))
    x = model.preprocess(torch.rand(2, 3, 32, 128))
    model.eval()  # no masking at inference
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
    sv = model.semantic_visual
    hw, n, e = 256, 3, 16
    v_seq = torch.randn(hw, n, e)
    v_attn = torch.rand(n, 8, hw).softmax(-1)
    sv.cfg.mask_example_prob, sv.cfg.mask_candidate_prob = 1.0, 1.0
    masked = sv.hide_character(v_seq, v_attn, torch.tensor([2, 5, 8]))
    hidden = (masked != v_seq).any(-1)  # (HW, N)
    assert hidden.sum(0).tolist() == [10, 10, 10]  # num_vis_mask positions per sample
    torch.testing.assert_close(masked[hidden], sv.v_token.expand(30, e))
    sv.cfg.mask_example_prob = 0.0
    torch.testing.assert_close(sv.hide_character(v_seq, v_attn, torch.tensor([2, 5, 8])), v_seq)


def test_training_loss_finite_and_decreasing() -> None:
    model = MATRN(MATRNConfig(**TINY_MATRN, dropout=0.0)).train()
    x = model.preprocess(torch.rand(4, 3, 32, 128))
    labels = ["cat", "", "Dog!", "a1"]
    losses = fit_losses(model, x, labels, steps=12, lr=1e-2)
    assert losses[-1] < 0.7 * losses[0]
    assert model.semantic_visual.v_token.grad is not None  # the mask token is learned


def test_preprocess_and_config_validation() -> None:
    model = MATRN(MATRNConfig(**TINY_MATRN))
    x = model.preprocess(torch.full((1, 4, 16, 64), 0.5))
    assert x.shape == (1, 3, 32, 128)
    torch.testing.assert_close(x[0, 1], torch.full((32, 128), (0.5 - 0.456) / 0.224))
    with pytest.raises(ValueError, match="output_branch"):
        MATRNConfig(output_branch="vision")
    with pytest.raises(ValueError, match="mask_example_prob"):
        MATRNConfig(mask_example_prob=1.5)
    assert isinstance(build_model("matrn", TINY_MATRN), MATRN)
