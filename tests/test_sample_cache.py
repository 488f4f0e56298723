"""The in-memory sample cache returns bitwise what decoding returns, and keeps to its size."""

from __future__ import annotations

import torch

from stisr.data.datasets import open_dataset
from stisr.data.sample_cache import SampleCache


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert value.dtype == b[key].dtype and torch.equal(value, b[key]), key
        else:
            assert value == b[key], key


def test_cached_samples_equal_decoded_ones(tiny_textzoom, tiny_str) -> None:
    for root in (tiny_textzoom / "train", tiny_str / "train"):
        plain = open_dataset(root)
        cached = open_dataset(root, cache_mb=16)
        for _ in range(2):  # the first pass fills the cache, the second reads it
            for i in range(len(plain)):
                assert_same(cached[i], plain[i])
        assert cached._cache.used > 0 and len(cached._cache._store) == len(plain)


def test_cache_stops_at_its_size(tiny_textzoom) -> None:
    data = open_dataset(tiny_textzoom / "train", cache_mb=1e-6)  # one byte: the first sample only
    for i in range(4):
        data[i]
    assert len(data._cache._store) == 1


def test_values_off_the_uint8_grid_are_not_cached() -> None:
    cache = SampleCache(1 << 20)
    cache.put(0, {"lr": torch.full((1, 2, 2), 0.3), "label": "a"})  # 0.3 is no k/255
    cache.put(1, {"lr": torch.full((1, 2, 2), 3 / 255), "label": "b"})
    assert cache.get(0) is None
    got = cache.get(1)
    assert got["label"] == "b" and torch.equal(got["lr"], torch.full((1, 2, 2), 3 / 255))
    got["lr"].add_(1)  # a caller's in-place edit does not reach the cache
    assert torch.equal(cache.get(1)["lr"], torch.full((1, 2, 2), 3 / 255))
