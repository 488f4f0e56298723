"""The named LR pipelines: seeded determinism, output sizes, errors, small-image selection."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from stisr.data import degrade as dg


def _word_image(w: int = 128, h: int = 32) -> Image.Image:
    rng = np.random.default_rng(0)
    arr = (rng.uniform(150, 230, size=(h, w, 3))).astype(np.uint8)
    img = Image.fromarray(arr)
    ImageDraw.Draw(img).text((w // 10, h // 6), "Text", fill=(10, 20, 30), font_size=h * 2 // 3)
    return img


def _px(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.uint8)


CASES = [
    ("bicubic", {}, (64, 16)),
    ("blur_noise", {}, (128, 32)),
    ("blur_noise", {"variant": "kdltr"}, (128, 32)),
    ("blur_noise", {"scale": 0.5}, (64, 16)),
    ("bsrgan", {}, (64, 16)),
    ("realesrgan", {}, (64, 16)),
    ("camera", {}, (64, 16)),
    ("camera", {"strength": 1.0, "scale": 1.0, "misalign": False}, (128, 32)),
]


@pytest.mark.parametrize(("name", "params", "size"), CASES)
def test_pipeline_is_seeded_and_sized(name: str, params: dict, size: tuple[int, int]) -> None:
    img = _word_image()
    a = dg.degrade(img, name, np.random.default_rng(5), **params)
    b = dg.degrade(img, name, np.random.default_rng(5), **params)
    assert a.mode == "RGB"
    assert a.size == size
    assert np.array_equal(_px(a), _px(b))
    if name != "bicubic":  # every random pipeline must actually use its generator
        outs = [_px(dg.degrade(img, name, np.random.default_rng(s), **params)) for s in range(6)]
        assert any(not np.array_equal(outs[0], o) for o in outs[1:])


def test_registry_lists_every_pipeline() -> None:
    assert set(dg.PIPELINES) == {"bicubic", "blur_noise", "bsrgan", "realesrgan", "camera"}


def test_bicubic_matches_pil_and_honours_scale() -> None:
    img = _word_image()
    out = dg.degrade(img, "bicubic", np.random.default_rng(0), scale=0.25)
    assert out.size == (32, 8)
    assert np.array_equal(_px(out), _px(img.resize((32, 8), Image.BICUBIC)))


def test_unknown_pipeline_names_valid_ones() -> None:
    with pytest.raises(KeyError) as err:
        dg.degrade(_word_image(), "nope", np.random.default_rng(0))
    msg = str(err.value)
    assert "nope" in msg and "camera" in msg and "bsrgan" in msg


def test_bad_parameters_are_reported() -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="camera"):
        dg.degrade(_word_image(), "camera", rng, bogus=1)
    with pytest.raises(ValueError, match="strength"):
        dg.camera(_word_image(), rng, strength=1.5)
    with pytest.raises(ValueError, match="variant"):
        dg.blur_noise(_word_image(), rng, variant="other")  # type: ignore[arg-type]


def test_camera_strength_increases_degradation() -> None:
    img = _word_image()
    ref = _px(img.resize((64, 16), Image.BICUBIC)).astype(np.float64)

    def err(strength: float) -> float:
        outs = [
            _px(dg.camera(img, np.random.default_rng(s), strength=strength, misalign=False))
            for s in range(8)
        ]
        return float(np.mean([np.abs(o.astype(np.float64) - ref).mean() for o in outs]))

    assert err(0.0) < err(0.5) < err(1.0)


def test_is_small_rules() -> None:
    assert dg.is_small(Image.new("RGB", (64, 16)))
    assert dg.is_small(Image.new("RGB", (30, 10)))
    assert not dg.is_small(Image.new("RGB", (65, 16)))
    assert not dg.is_small(Image.new("RGB", (40, 20)))
    assert dg.is_small(Image.new("RGB", (40, 20)), rule="area")  # 800 <= 1024
    assert not dg.is_small(Image.new("RGB", (100, 16)), rule="area")
    with pytest.raises(ValueError, match="rule"):
        dg.is_small(Image.new("RGB", (4, 4)), rule="diag")  # type: ignore[arg-type]


def test_make_lr_set_selects_small_and_is_reproducible() -> None:
    samples = [
        (_word_image(128, 32), "big"),
        (_word_image(60, 14), "small1"),
        (_word_image(40, 20), "tall"),
        (_word_image(48, 12), "small2"),
    ]
    small = list(dg.make_lr_set(samples, "blur_noise", seed=3, select="small"))
    assert [label for _, label in small] == ["small1", "small2"]
    assert [img.size for img, _ in small] == [(60, 14), (48, 12)]
    again = list(dg.make_lr_set(samples, "blur_noise", seed=3, select="small"))
    assert all(np.array_equal(_px(a), _px(b)) for (a, _), (b, _) in zip(small, again, strict=True))
    # A sample's generator depends on its position only, not on what was selected before it.
    everything = list(dg.make_lr_set(samples, "blur_noise", seed=3, select="all"))
    assert len(everything) == 4
    assert np.array_equal(_px(everything[3][0]), _px(small[1][0]))
    other = list(dg.make_lr_set(samples, "blur_noise", seed=4, select="small"))
    assert not np.array_equal(_px(other[0][0]), _px(small[0][0]))


def test_make_lr_set_rejects_bad_arguments() -> None:
    with pytest.raises(KeyError, match="valid"):
        list(dg.make_lr_set([], "nope", seed=0))
    with pytest.raises(ValueError, match="select"):
        list(dg.make_lr_set([], "bicubic", seed=0, select="some"))  # type: ignore[arg-type]
