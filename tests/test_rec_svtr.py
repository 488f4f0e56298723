"""SVTR: variant identification (IMAGE Table 1), Paddle -> torch key mapping, CTC protocol."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from stisr.charset import Charset
from stisr.models.layers.svtr_blocks import DownscaleInInferDropout, local_attention_mask
from stisr.models.rec.svtr import (
    PADDLE_TABLE_KEY,
    SVTR,
    SVTR_BASE_EN_RELEASE,
    SVTR_DEMO,
    SVTR_VARIANTS,
    SVTRConfig,
    official_state_dict,
    read_pdparams,
)
from tests.recognizer_checks import fit_losses

TINY = {
    "embed_dim": (8, 16, 16),
    "depth": (1, 1, 1),
    "num_heads": (1, 2, 2),
    "local_blocks": 1,
    "out_channels": 16,
}


def _paddle_shapes(
    dims: tuple[int, int, int],
    depth: tuple[int, int, int],
    out_channels: int,
    tokens: int,
    stn: bool,
    classes: int = 37,
) -> dict[str, tuple[int, ...]]:
    """Structured names/shapes of a PaddleOCR SVTR state dict (BaseModel: transform, backbone
    SVTRNet, neck without parameters, head CTCHead). Paddle Linear weights are [in, out];
    BatchNorm statistics are `_mean` / `_variance`; `self.mask` tensors are not saved."""
    s: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "_mean", "_variance"):
            s[f"{prefix}.{name}"] = (c,)

    if stn:  # ppocr/modeling/transforms/stn.py: STN_ON.stn_head
        widths = (3, 32, 64, 128, 256, 256, 256)
        for j in range(6):  # conv3x3_block j at Sequential index 2j (max-pools in between)
            p = f"transform.stn_head.stn_convnet.{2 * j}"
            s[f"{p}.0.weight"] = (widths[j + 1], widths[j], 3, 3)
            s[f"{p}.0.bias"] = (widths[j + 1],)
            bn(f"{p}.1", widths[j + 1])
        s["transform.stn_head.stn_fc1.0.weight"] = (512, 512)
        s["transform.stn_head.stn_fc1.0.bias"] = (512,)
        bn("transform.stn_head.stn_fc1.1", 512)
        s["transform.stn_head.stn_fc2.weight"] = (512, 40)
        s["transform.stn_head.stn_fc2.bias"] = (40,)
    b = "backbone."
    half = dims[0] // 2
    s[b + "patch_embed.proj.0.conv.weight"] = (half, 3, 3, 3)
    s[b + "patch_embed.proj.0.conv.bias"] = (half,)
    bn(b + "patch_embed.proj.0.norm", half)
    s[b + "patch_embed.proj.1.conv.weight"] = (dims[0], half, 3, 3)
    s[b + "patch_embed.proj.1.conv.bias"] = (dims[0],)
    bn(b + "patch_embed.proj.1.norm", dims[0])
    s[b + "pos_embed"] = (1, tokens, dims[0])
    for stage, (d, n) in enumerate(zip(dims, depth, strict=True), start=1):
        for i in range(n):
            p = f"{b}blocks{stage}.{i}."
            s.update({p + "norm1.weight": (d,), p + "norm1.bias": (d,)})
            s.update({p + "mixer.qkv.weight": (d, 3 * d), p + "mixer.qkv.bias": (3 * d,)})
            s.update({p + "mixer.proj.weight": (d, d), p + "mixer.proj.bias": (d,)})
            s.update({p + "norm2.weight": (d,), p + "norm2.bias": (d,)})
            s.update({p + "mlp.fc1.weight": (d, 4 * d), p + "mlp.fc1.bias": (4 * d,)})
            s.update({p + "mlp.fc2.weight": (4 * d, d), p + "mlp.fc2.bias": (d,)})
        if stage < 3:
            p = f"{b}sub_sample{stage}."
            s[p + "conv.weight"] = (dims[stage], d, 3, 3)
            s[p + "conv.bias"] = (dims[stage],)
            s.update({p + "norm.weight": (dims[stage],), p + "norm.bias": (dims[stage],)})
    s[b + "last_conv.weight"] = (out_channels, dims[2], 1, 1)
    s.update({b + "norm.weight": (dims[2],), b + "norm.bias": (dims[2],)})
    s.update({"head.fc.weight": (out_channels, classes), "head.fc.bias": (classes,)})
    return s


def _static_names(structured: list[str]) -> dict[str, str]:
    """Paddle-style generated parameter names (`layer_3.w_0`, BN stats `w_1` / `w_2`)."""
    owners: dict[str, int] = {}
    suffix = {"weight": "w_0", "bias": "b_0", "_mean": "w_1", "_variance": "w_2"}
    table = {}
    for key in structured:
        owner, _, leaf = key.rpartition(".")
        index = owners.setdefault(owner, len(owners))
        table[key] = f"layer_{index}.{suffix.get(leaf, 'w_0')}"
    return table


def _fake_paddle(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_released_base_checkpoint_maps_and_loads_strictly() -> None:
    cfg = SVTRConfig(**SVTR_BASE_EN_RELEASE)
    shapes = _paddle_shapes(cfg.embed_dim, cfg.depth, cfg.out_channels, 12 * 40, stn=True)
    raw: dict = _fake_paddle(shapes, seed=1)
    raw[PADDLE_TABLE_KEY] = {k: f"p_{i}.w_0" for i, k in enumerate(shapes)}  # dropped
    model = SVTR(cfg).eval()
    result = model.load_state_dict(official_state_dict(raw), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    sd = model.state_dict()
    np.testing.assert_array_equal(sd["head.fc.weight"].numpy(), raw["head.fc.weight"].T)
    np.testing.assert_array_equal(
        sd["backbone.blocks3.8.mixer.qkv.weight"].numpy(),
        raw["backbone.blocks3.8.mixer.qkv.weight"].T,
    )
    np.testing.assert_array_equal(
        sd["backbone.patch_embed.proj.1.norm.running_var"].numpy(),
        raw["backbone.patch_embed.proj.1.norm._variance"],
    )
    np.testing.assert_array_equal(sd["backbone.pos_embed"].numpy(), raw["backbone.pos_embed"])
    # The transposition makes our head compute Paddle's x @ W + b.
    feat = torch.randn(2, 40, cfg.out_channels)
    expected = feat.numpy() @ raw["head.fc.weight"] + raw["head.fc.bias"]
    np.testing.assert_allclose(model.head(feat).detach().numpy(), expected, rtol=1e-4, atol=1e-4)
    assert not any("mask" in k or k.startswith("transform.tps") for k in sd)


def test_static_parameter_names_are_renamed_through_the_table() -> None:
    cfg = SVTRConfig(**SVTR_VARIANTS["tiny"])
    shapes = _paddle_shapes(cfg.embed_dim, cfg.depth, cfg.out_channels, 8 * 25, stn=False)
    structured = _fake_paddle(shapes, seed=2)
    table = _static_names(list(shapes))
    assert len(set(table.values())) == len(table)
    raw: dict = {table[k]: v for k, v in structured.items()}
    raw[PADDLE_TABLE_KEY] = table
    mapped = official_state_dict(raw)
    model = SVTR(cfg)
    model.load_state_dict(mapped, strict=True)
    np.testing.assert_array_equal(
        model.backbone.blocks1[0].mlp.fc1.weight.detach().numpy(),
        structured["backbone.blocks1.0.mlp.fc1.weight"].T,
    )
    del raw[PADDLE_TABLE_KEY]
    with pytest.raises(ValueError, match="static Paddle parameter names"):
        official_state_dict(raw)
    with pytest.raises(ValueError, match="not an array"):
        official_state_dict({"head.fc.bias": object()})


def test_read_pdparams_from_a_pickled_file(tmp_path: Path) -> None:
    cfg = SVTRConfig(**TINY)
    shapes = _paddle_shapes(cfg.embed_dim, cfg.depth, cfg.out_channels, 8 * 25, stn=False)
    raw: dict = _fake_paddle(shapes, seed=3)
    raw[PADDLE_TABLE_KEY] = _static_names(list(shapes))
    path = tmp_path / "best_accuracy.pdparams"
    path.write_bytes(pickle.dumps(raw, protocol=2))  # paddle.save pickles numpy arrays
    loaded = read_pdparams(path)
    np.testing.assert_array_equal(loaded["head.fc.bias"], raw["head.fc.bias"])
    SVTR(cfg).load_state_dict(official_state_dict(loaded), strict=True)
    (tmp_path / "broken.pdparams").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="broken.pdparams"):
        read_pdparams(tmp_path / "broken.pdparams")


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_identify_svtr_base() -> None:
    # The four PaddleOCR variants at 32x100 with a 37-class CTC head, without STN. IMAGE
    # Table 1 lists SVTR with 22.70M parameters: only SVTR-Base is within 2%.
    counts = {name: _count(SVTR(SVTRConfig(**v))) for name, v in SVTR_VARIANTS.items()}
    assert counts == {
        "tiny": 4_167_845,
        "small": 8_472_069,
        "base": 22_695_333,
        "large": 38_857_829,
    }
    assert [n for n, c in counts.items() if abs(c / 22.70e6 - 1) < 0.02] == ["base"]
    assert _count(SVTR()) == counts["base"]  # the default config is IMAGE's SVTR
    # The released English SVTR-Base (48x160 + STN): pos_embed 480 tokens + STN 1,854,760.
    assert _count(SVTR(SVTRConfig(**SVTR_BASE_EN_RELEASE))) == 24_585_933


def test_forward_decode_shapes() -> None:
    model = SVTR(SVTRConfig(**TINY)).eval()
    x = model.preprocess(torch.rand(3, 3, 16, 64))
    assert x.shape == (3, 3, 32, 100)
    logits = model(x)
    assert logits.shape == (3, 25, 37)
    assert len(model.decode(logits)) == 3
    stn = SVTR(SVTRConfig(**TINY, stn=True, input_size=(64, 256))).eval()
    x = stn.preprocess(torch.rand(2, 4, 32, 128))
    assert x.shape == (2, 3, 64, 256)
    assert stn(x).shape == (2, 25, 37)
    with pytest.raises(ValueError, match="preprocess"):
        model(torch.rand(1, 3, 32, 128))


def test_decode_is_greedy_ctc() -> None:
    cs = Charset()
    path = [0, *cs.encode("aa"), 0, *cs.encode("a"), *cs.encode("7"), 0]
    logits = torch.nn.functional.one_hot(torch.tensor([path, [0] * len(path)]), 37).float()
    assert SVTR(SVTRConfig(**TINY)).decode(logits) == ["aa7", ""]


def test_local_mask_matches_paddle_construction() -> None:
    h, w, kh, kw = 4, 9, 3, 5
    # PaddleOCR: ones over a padded (H+kh-1, W+kw-1) canvas per query, zero the window at the
    # query position, crop the centre, turn ones into -inf.
    ref = torch.ones(h * w, h + kh - 1, w + kw - 1)
    for y in range(h):
        for x in range(w):
            ref[y * w + x, y : y + kh, x : x + kw] = 0.0
    ref = ref[:, kh // 2 : h + kh // 2, kw // 2 : w + kw // 2].flatten(1)
    ref = torch.where(ref < 1, ref, torch.full_like(ref, float("-inf")))
    assert torch.equal(local_attention_mask((h, w), (kh, kw)), ref)


def test_downscale_in_infer_dropout() -> None:
    drop = DownscaleInInferDropout(0.1)
    x = torch.rand(1000) + 1.0
    torch.testing.assert_close(drop.eval()(x), 0.9 * x)
    y = drop.train()(x)
    assert set(torch.unique((y == 0) | (y == x)).tolist()) == {True}
    assert 0 < int((y == 0).sum()) < 300


def test_training_loss_finite_and_decreasing() -> None:
    model = SVTR(SVTRConfig(**TINY)).train()
    x = model.preprocess(torch.rand(4, 3, 16, 64))
    labels = ["Ab1", "", "x-9!", "QQ"]
    losses = fit_losses(model, x, labels, steps=10, lr=3e-3)
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="labels"):
        model.text_loss(x, ["a"])


def test_preprocess_bgr_symmetric_range() -> None:
    model = SVTR(SVTRConfig(**TINY))
    rgbm = torch.zeros(2, 4, 16, 64)
    rgbm[:, 0], rgbm[:, 1], rgbm[:, 2], rgbm[:, 3] = 1.0, 0.25, 0.0, 1.0  # mask ignored
    out = model.preprocess(rgbm)
    assert out.shape == (2, 3, 32, 100)
    torch.testing.assert_close(out[:, 0], torch.full((2, 32, 100), -1.0))  # blue first
    torch.testing.assert_close(out[:, 1], torch.full((2, 32, 100), -0.5))
    torch.testing.assert_close(out[:, 2], torch.full((2, 32, 100), 1.0))  # red last
    rgb = SVTR(SVTRConfig(**TINY, bgr=False)).preprocess(rgbm)
    torch.testing.assert_close(rgb[:, 0], torch.full((2, 32, 100), 1.0))


def test_config_validation_and_demo() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        SVTRConfig(num_classes=40)
    with pytest.raises(ValueError, match="img_h"):
        SVTRConfig(img_h=40)
    with pytest.raises(ValueError, match="divisible"):
        SVTRConfig(embed_dim=(128, 256, 383))
    with pytest.raises(ValueError, match="local_blocks"):
        SVTRConfig(local_blocks=30)
    assert SVTRConfig(depth=[1, 2, 3], local_blocks=2).depth == (1, 2, 3)
    assert SVTR(SVTRConfig(**SVTR_DEMO))(torch.rand(1, 3, 32, 100)).shape == (1, 25, 37)
