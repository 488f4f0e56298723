"""Datasets over TextZoom LMDBs, STR LMDBs and gt folders; bad-record policy; fuzzing."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from stisr.data.datasets import (
    FolderDataset,
    StrLmdbDataset,
    TextZoomDataset,
    collate,
    open_dataset,
)
from stisr.data.folder_io import write_gt_folder
from stisr.data.images import ImageDecodeError, encode_png
from stisr.data.lmdb_io import LmdbFormatError, LmdbReader, write_str_lmdb, write_textzoom_lmdb
from tests.data_helpers import random_image as _img
from tests.data_helpers import raw_lmdb as _raw_lmdb


@pytest.fixture
def textzoom(tmp_path: Path) -> Path:
    samples = [(_img(100 + i, 30, i), _img(50, 15, 9 + i), f"Lab{i}!") for i in range(4)]
    write_textzoom_lmdb(tmp_path / "tz", samples)
    return tmp_path / "tz"


def test_textzoom_samples_have_official_shapes(textzoom: Path):
    ds = TextZoomDataset(textzoom)
    assert len(ds) == 4
    s = ds[2]
    assert s["lr"].shape == (4, 16, 64) and s["hr"].shape == (4, 32, 128)
    assert s["lr"].dtype == torch.float32 and s["hr"].min() >= 0 and s["hr"].max() <= 1
    assert s["label"] == "Lab2!" and s["key"] == "000000003"  # raw label, 1-based record id
    assert set(s["lr"][3].unique().tolist()) <= {0.0, 1.0}
    rgb = TextZoomDataset(textzoom, mask=False, lr_size=(32, 8), hr_size=(64, 16))[0]
    assert rgb["lr"].shape == (3, 8, 32) and rgb["hr"].shape == (3, 16, 64)
    assert torch.equal(ds[-1]["hr"], ds[3]["hr"])
    with pytest.raises(IndexError):
        ds[4]


def test_str_and_folder_datasets_return_lr_only(tmp_path: Path):
    samples = [(_img(40, 12, i), lab) for i, lab in enumerate(["one", "Two", "three3"])]
    write_str_lmdb(tmp_path / "s", samples)
    write_gt_folder(tmp_path / "f", samples)
    for ds in (StrLmdbDataset(tmp_path / "s"), FolderDataset(tmp_path / "f", mask=False)):
        assert len(ds) == 3
        s = ds[1]
        assert "hr" not in s and s["label"] == "Two"
        assert s["lr"].shape == (4 if ds.mask else 3, 16, 64)
    assert FolderDataset(tmp_path / "f")[0]["key"] == "images/000000001.png"
    lmdb_lr = StrLmdbDataset(tmp_path / "s", mask=False)[2]["lr"]
    assert torch.equal(lmdb_lr, FolderDataset(tmp_path / "f", mask=False)[2]["lr"])


def test_open_dataset_picks_class_by_format(textzoom: Path, tmp_path: Path):
    write_str_lmdb(tmp_path / "s", [(_img(8, 4), "a")])
    write_gt_folder(tmp_path / "f", [(_img(8, 4), "a")])
    assert type(open_dataset(textzoom)) is TextZoomDataset
    assert type(open_dataset(tmp_path / "s", mask=False)) is StrLmdbDataset
    assert type(open_dataset(tmp_path / "f")) is FolderDataset
    with pytest.raises(FileNotFoundError):
        open_dataset(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither"):
        open_dataset(tmp_path / "empty")
    with pytest.raises(LmdbFormatError, match="expected 'str'"):
        StrLmdbDataset(textzoom)


def test_max_label_len_filters_on_raw_label(tmp_path: Path):
    write_str_lmdb(tmp_path / "s", [(_img(8, 4), lab) for lab in ["ab", "abcdef", "abc"]])
    ds = StrLmdbDataset(tmp_path / "s", max_label_len=3)
    assert len(ds) == 2 and [ds[i]["label"] for i in range(2)] == ["ab", "abc"]
    assert ds[1]["key"] == "000000003"


def test_collate_stacks_and_tolerates_missing_hr(textzoom: Path, tmp_path: Path):
    batch = collate([TextZoomDataset(textzoom)[i] for i in range(3)])
    assert batch["lr"].shape == (3, 4, 16, 64) and batch["hr"].shape == (3, 4, 32, 128)
    assert batch["label"] == ["Lab0!", "Lab1!", "Lab2!"] and len(batch["key"]) == 3
    write_str_lmdb(tmp_path / "s", [(_img(8, 4), "a"), (_img(8, 4), "b")])
    loader = DataLoader(StrLmdbDataset(tmp_path / "s"), batch_size=2, collate_fn=collate)
    only = next(iter(loader))
    assert "hr" not in only and only["lr"].shape == (2, 4, 16, 64) and only["label"] == ["a", "b"]
    with pytest.raises(ValueError):
        collate([])


def _bad_textzoom(path: Path) -> Path:
    good = encode_png(_img(8, 4))
    records = {"num-samples": b"3"}
    for i in (1, 2, 3):
        records[f"image_hr-{i:09d}"] = good if i != 2 else b"corrupt"
        records[f"image_lr-{i:09d}"] = good
        records[f"label-{i:09d}"] = f"w{i}".encode()
    return _raw_lmdb(path, records)


def test_bad_record_raises_by_default_naming_path_and_key(tmp_path: Path):
    ds = TextZoomDataset(_bad_textzoom(tmp_path / "bad"))
    assert ds[0]["label"] == "w1"
    with pytest.raises(ImageDecodeError, match=r"bad:image_hr-000000002"):
        ds[1]


def test_skip_policy_returns_next_good_record_and_counts(tmp_path: Path):
    ds = TextZoomDataset(_bad_textzoom(tmp_path / "bad"), on_error="skip")
    assert ds[1]["label"] == "w3" and ds[1]["key"] == "000000003"
    assert ds.skipped == 1 and ds.bad_keys == {"000000002"}
    assert [ds[i]["label"] for i in range(3)] == ["w1", "w3", "w3"]
    assert ds.skipped == 1  # distinct bad records, not skip events
    with pytest.raises(ValueError, match="on_error"):
        TextZoomDataset(tmp_path / "bad", on_error="ignore")


def test_skip_policy_wraps_around_and_gives_up_when_all_bad(tmp_path: Path):
    recs = {"num-samples": b"2", "image-000000001": encode_png(_img(4, 4)), "label-000000001": b"a"}
    recs |= {"image-000000002": b"bad", "label-000000002": b"b"}
    ds = StrLmdbDataset(_raw_lmdb(tmp_path / "w", recs), on_error="skip")
    assert ds[1]["label"] == "a"  # wrapped to index 0
    all_bad = {"num-samples": b"1", "image-000000001": b"x", "label-000000001": b"a"}
    ds = StrLmdbDataset(_raw_lmdb(tmp_path / "allbad", all_bad), on_error="skip")
    with pytest.raises(ImageDecodeError):
        ds[0]


def test_dataset_survives_pickling_into_workers(textzoom: Path):
    loader = DataLoader(
        TextZoomDataset(textzoom), batch_size=2, num_workers=2, collate_fn=collate,
        multiprocessing_context="fork",
    )  # fmt: skip
    labels = [label for batch in loader for label in batch["label"]]
    assert labels == ["Lab0!", "Lab1!", "Lab2!", "Lab3!"]


# ------------------------------------------------------------------------------- fuzzing

DOCUMENTED = (LmdbFormatError, ImageDecodeError)
_GOOD_PNG = encode_png(_img(6, 3))

# Valid-looking choices are repeated so that examples reach decoding, not just num-samples.
good_png = st.just(_GOOD_PNG)
value = st.one_of(good_png, good_png, st.binary(max_size=48), st.just(_GOOD_PNG[:30]), st.none())
small_int = st.integers(0, 4).map(lambda n: str(n).encode())
written = st.just(b"=written")  # replaced by the true count
num_samples = st.one_of(
    written,
    written,
    written,
    small_int,
    st.binary(max_size=6),
    st.text(max_size=4).map(lambda s: s.encode()),
    st.none(),
)
text = st.text(max_size=6).map(lambda s: s.encode())
label = st.one_of(text, text, st.binary(max_size=6), st.none())


def _records(layout: str, n_written: int, values, labels, num) -> dict[str, bytes]:
    kinds = ("image_hr", "image_lr") if layout == "textzoom" else ("image",)
    recs: dict[str, bytes] = {}
    for i in range(1, n_written + 1):
        for j, kind in enumerate(kinds):
            v = values[(i * 2 + j) % len(values)]
            if v is not None:
                recs[f"{kind}-{i:09d}"] = v
        if labels[i % len(labels)] is not None:
            recs[f"label-{i:09d}"] = labels[i % len(labels)]
    if num is not None:
        recs["num-samples"] = str(n_written).encode() if num == b"=written" else num
    return recs


def _check_sample(sample: dict, layout: str) -> None:
    assert isinstance(sample["label"], str) and isinstance(sample["key"], str)
    assert sample["lr"].shape == (4, 16, 64)
    assert ("hr" in sample) == (layout == "textzoom")
    assert torch.isfinite(sample["lr"]).all() and 0 <= sample["lr"].min() <= sample["lr"].max() <= 1


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    layout=st.sampled_from(["textzoom", "str"]),
    n_written=st.integers(0, 3),
    values=st.lists(value, min_size=1, max_size=6),
    labels=st.lists(label, min_size=1, max_size=4),
    num=num_samples,
    on_error=st.sampled_from(["raise", "skip"]),
)
def test_random_records_give_valid_data_or_documented_errors(
    layout, n_written, values, labels, num, on_error
):
    tmp = Path(tempfile.mkdtemp())
    try:
        path = _raw_lmdb(tmp / "db", _records(layout, n_written, values, labels, num))
        reader = LmdbReader(path)
        try:
            n = len(reader)
        except LmdbFormatError as exc:
            assert "num-samples" in str(exc)
            event("bad num-samples")
            return
        assert 0 <= n <= n_written * 3 + 1
        kind = "hr" if layout == "textzoom" else "image"
        for i in range(n):
            try:
                assert isinstance(reader.label(i), str)
            except LmdbFormatError as exc:
                assert str(path) in str(exc) and f"label-{i + 1:09d}" in str(exc)
            try:
                assert reader.image(kind, i).mode == "RGB"
            except DOCUMENTED as exc:
                assert str(path) in str(exc) and f"-{i + 1:09d}" in str(exc)
        cls = TextZoomDataset if layout == "textzoom" else StrLmdbDataset
        try:
            ds = cls(path, on_error=on_error, max_label_len=4 if n_written % 2 else None)
        except DOCUMENTED:
            event("dataset rejected at open")
            return
        for i in range(len(ds)):
            try:
                _check_sample(ds[i], layout)
                event("valid sample")
            except DOCUMENTED as exc:
                assert str(path) in str(exc)
                event(f"bad sample ({type(exc).__name__})")
        reader.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
