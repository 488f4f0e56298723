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


def _str_lmdb(path, samples) -> str:
    from stisr.data.lmdb_io import write_str_lmdb

    write_str_lmdb(path, samples)
    return str(path)


def test_lr_benchmark_selects_small_and_is_reproducible(tmp_path) -> None:
    from stisr.data.lmdb_io import LmdbReader
    from stisr.data.lr_benchmarks import STR_BENCHMARKS, make_lr_benchmark

    samples = [
        (_word_image(128, 32), "big"),
        (_word_image(60, 14), "smalla"),
        (_word_image(40, 20), "tall"),
        (_word_image(48, 12), "smallb"),
    ]
    src = {name: _str_lmdb(tmp_path / "src" / name, samples) for name in STR_BENCHMARKS}

    def read(root) -> list[tuple[np.ndarray, str]]:
        with LmdbReader(root) as r:
            return [(_px(r.image("image", i)), r.label(i)) for i in range(len(r))]

    assert make_lr_benchmark("lemma", src, tmp_path / "a", seed=3) == 2 * len(STR_BENCHMARKS)
    assert make_lr_benchmark("lemma", src, tmp_path / "b", seed=3) == 2 * len(STR_BENCHMARKS)
    a, b = read(tmp_path / "a" / "ic13"), read(tmp_path / "b" / "ic13")
    assert [label for _, label in a] == ["smalla", "smallb"]
    assert [x.shape[:2] for x, _ in a] == [(14, 60), (12, 48)]
    assert all(np.array_equal(x, y) for (x, _), (y, _) in zip(a, b, strict=True))
    # A sample's generator depends on (seed, benchmark, position): benchmarks differ.
    assert not np.array_equal(a[0][0], read(tmp_path / "a" / "ic15")[0][0])
    make_lr_benchmark("commonlr", src, tmp_path / "c", seed=3)  # merged, not degraded
    merged = read(tmp_path / "c" / "all")
    assert len(merged) == 2 * len(STR_BENCHMARKS)
    assert np.array_equal(merged[0][0], _px(samples[1][0]))


def test_lr_benchmark_rejects_bad_arguments(tmp_path) -> None:
    from stisr.data.lr_benchmarks import LrSetError, make_lr_benchmark

    with pytest.raises(LrSetError, match="valid: commonlr"):
        make_lr_benchmark("nope", {}, tmp_path, seed=0)
    with pytest.raises(LrSetError, match="no --src given for ic15"):
        make_lr_benchmark("ic15_352", {}, tmp_path, seed=0)
