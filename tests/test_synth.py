"""Embedded synthetic data: official LMDB layouts, shapes, seeded byte-level determinism."""

from __future__ import annotations

import time
from pathlib import Path

import lmdb
import numpy as np
import pytest

from stisr.charset import normalize_label
from stisr.data import synth
from stisr.data.lmdb_io import LmdbReader

TZ_SIZES = {"train": 4, "easy": 3, "medium": 2, "hard": 2}


def _records(path: Path) -> dict[bytes, bytes]:
    env = lmdb.open(str(path), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            return {bytes(k): bytes(v) for k, v in txn.cursor()}
    finally:
        env.close()


def _all_records(root: Path) -> dict[str, dict[bytes, bytes]]:
    return {
        str(p.parent.relative_to(root)): _records(p.parent) for p in sorted(root.rglob("data.mdb"))
    }


@pytest.fixture(scope="module")
def textzoom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tz")
    counts = synth.make_textzoom(out, TZ_SIZES, seed=11)
    assert counts == TZ_SIZES
    return out


def test_textzoom_layout_and_shapes(textzoom: Path) -> None:
    for split, n in TZ_SIZES.items():
        path = textzoom / "train" if split == "train" else textzoom / "test" / split
        keys = set(_records(path))
        expected = {b"num-samples"}
        for i in range(1, n + 1):
            expected |= {f"{k}-{i:09d}".encode() for k in ("image_hr", "image_lr", "label")}
        assert keys == expected, split
        with LmdbReader(path) as reader:
            assert reader.format == "textzoom" and len(reader) == n
            for i in range(n):
                assert reader.image("hr", i).size == synth.HR_SIZE
                assert reader.image("lr", i).size == synth.LR_SIZE
                assert normalize_label(reader.label(i))
    assert not list(textzoom.rglob("lock.mdb"))


def test_textzoom_same_seed_same_bytes(textzoom: Path, tmp_path: Path) -> None:
    synth.make_textzoom(tmp_path / "again", TZ_SIZES, seed=11)
    assert _all_records(tmp_path / "again") == _all_records(textzoom)
    synth.make_textzoom(tmp_path / "other", TZ_SIZES, seed=12)
    other, first = _all_records(tmp_path / "other"), _all_records(textzoom)
    for split in first:
        assert other[split][b"image_hr-000000001"] != first[split][b"image_hr-000000001"]


def test_split_does_not_depend_on_other_sizes(textzoom: Path, tmp_path: Path) -> None:
    synth.make_textzoom(tmp_path, {"easy": 3}, seed=11)
    assert _records(tmp_path / "test" / "easy") == _records(textzoom / "test" / "easy")
    assert not (tmp_path / "train").exists()


def test_lr_is_a_degraded_view_of_hr(textzoom: Path) -> None:
    with LmdbReader(textzoom / "test" / "hard") as reader:
        hr = np.asarray(reader.image("hr", 0).resize(synth.LR_SIZE), dtype=np.float64)
        lr = np.asarray(reader.image("lr", 0), dtype=np.float64)
    # Same scene (correlated), but not a plain resize of the HR image.
    corr = np.corrcoef(hr.mean(-1).ravel(), lr.mean(-1).ravel())[0, 1]
    assert corr > 0.3
    assert np.abs(hr - lr).mean() > 1.0


def test_str_sets_layout_and_variable_sizes(tmp_path: Path) -> None:
    sizes = {"ic15": 12, "cute80": 2, "train": 5}
    assert synth.make_str_sets(tmp_path, sizes, seed=3) == sizes
    for name, n in sizes.items():
        keys = set(_records(tmp_path / name))
        expected = {b"num-samples"}
        for i in range(1, n + 1):
            expected |= {f"image-{i:09d}".encode(), f"label-{i:09d}".encode()}
        assert keys == expected
    with LmdbReader(tmp_path / "ic15") as reader:
        assert reader.format == "str"
        shapes = {reader.image("image", i).size for i in range(len(reader))}
    assert len(shapes) > 1
    # ICDAR 2015 style: some crops are below 64x16 (what LEMMA/TSRN select as low-resolution).
    assert any(w <= 64 and h <= 16 for w, h in shapes)
    synth.make_str_sets(tmp_path / "again", {"cute80": 2}, seed=3)
    assert _records(tmp_path / "again" / "cute80") == _records(tmp_path / "cute80")


def test_every_benchmark_has_low_resolution_crops_at_demo_size(tmp_path: Path) -> None:
    """LEMMA's Table 5 reads the crops below 16x64 of each benchmark: none may be empty."""
    from stisr.data.degrade import is_small
    from stisr.data.lr_benchmarks import STR_BENCHMARKS

    synth.make_str_sets(tmp_path, dict.fromkeys(STR_BENCHMARKS, 200), seed=20201)
    for name in STR_BENCHMARKS:
        with LmdbReader(tmp_path / name) as reader:
            small = sum(is_small(reader.image("image", i)) for i in range(len(reader)))
        assert small >= 3, name


def test_bad_sizes_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="valid"):
        synth.make_textzoom(tmp_path, {"test": 3}, seed=0)
    with pytest.raises(ValueError, match="easy"):
        synth.make_textzoom(tmp_path, {"easy": -1}, seed=0)
    with pytest.raises(KeyError, match="ic13"):
        synth.make_str_sets(tmp_path, {"mnist": 3}, seed=0)
    assert not any(tmp_path.iterdir())


def test_sample_text_is_seeded_and_scorable() -> None:
    texts = [synth.sample_text(np.random.default_rng([1, i])) for i in range(300)]
    assert texts == [synth.sample_text(np.random.default_rng([1, i])) for i in range(300)]
    assert all(normalize_label(t) for t in texts)
    assert any(t.isupper() for t in texts) and any(t.islower() for t in texts)
    assert any(any(c.isdigit() for c in t) for t in texts)
    assert any(not c.isalnum() for t in texts for c in t)
    assert len(set(texts)) > 250


def test_render_text_respects_size() -> None:
    style = synth.TEXTZOOM_PROFILES["easy"]
    img = synth.render_text("Hello", np.random.default_rng(0), style, size=(100, 20))
    assert img.size == (100, 20) and img.mode == "RGB"
    with pytest.raises(ValueError, match="empty"):
        synth.render_text("", np.random.default_rng(0), style)


@pytest.mark.slow
def test_generation_is_fast() -> None:
    start = time.perf_counter()
    n = sum(1 for _ in synth.iter_textzoom("train", 2000, seed=0))
    assert n == 2000
    assert time.perf_counter() - start < 60.0
