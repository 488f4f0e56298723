"""Bad input (issue 5): every fault gives an error naming the folder/key, or a counted skip.

Cases already covered elsewhere (not repeated here): corrupt image bytes and a missing label at
the reader (test_data_io.py), the skip policy and a structural hypothesis fuzz of LMDB records
(test_datasets.py), label normalization in evaluation (test_metrics.py), params.yaml values
(test_config.py) and downloads (test_fetch.py).
"""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from stisr.charset import EVAL_CHARSET
from stisr.data import images
from stisr.data.datasets import (
    DatasetNotFoundError,
    EmptyDatasetError,
    StrLmdbDataset,
    open_dataset,
)
from stisr.data.folder_io import write_gt_folder
from stisr.data.images import ImageDecodeError, encode_png
from stisr.data.lmdb_io import LmdbFormatError, LmdbReader, write_str_lmdb, write_textzoom_lmdb
from stisr.engine.evaluate import evaluate
from stisr.engine.train import TrainConfig, train
from tests.data_helpers import random_image as _img
from tests.data_helpers import raw_lmdb as _raw_lmdb


def _str_records(n: int, override: dict[str, bytes | None]) -> dict[str, bytes]:
    """An STR-layout LMDB's records; ``override`` replaces (bytes) or removes (None) a key."""
    recs = {"num-samples": str(n).encode()}
    for i in range(1, n + 1):
        recs[f"image-{i:09d}"] = encode_png(_img(12, 6, i))
        recs[f"label-{i:09d}"] = f"w{i}".encode()
    for key, value in override.items():
        if value is None:
            recs.pop(key)
        else:
            recs[key] = value
    return recs


def _tiny_textzoom(path: Path, n: int = 4) -> Path:
    write_textzoom_lmdb(path, [(_img(64, 16, i), _img(32, 8, 10 + i), f"w{i}") for i in range(n)])
    return path


# ------------------------------------------------------------------ (a) missing records


def test_missing_image_record_names_lmdb_and_key_or_is_counted(tmp_path: Path):
    """num-samples says 6 but image-000000005 is absent."""
    path = _raw_lmdb(tmp_path / "db", _str_records(6, {"image-000000005": None}))
    ds = open_dataset(path)
    assert ds[3]["label"] == "w4"
    with pytest.raises(LmdbFormatError, match=r"db:image-000000005: missing record") as info:
        ds[4]
    assert info.value.path == str(path) and info.value.key == "image-000000005"

    skip = open_dataset(path, on_error="skip")  # training: the next good sample instead
    assert skip[4]["label"] == "w6" and skip.skipped == 1 and skip.bad_keys == {"000000005"}
    drop = open_dataset(path, on_error="drop")  # evaluation: left out, counted
    assert drop[4] is None and drop.skipped == 1 and drop[5]["label"] == "w6"


def test_missing_label_is_reported_when_the_dataset_opens(tmp_path: Path):
    path = _raw_lmdb(tmp_path / "db", _str_records(3, {"label-000000002": None}))
    with pytest.raises(LmdbFormatError, match=r"db:label-000000002: missing record"):
        open_dataset(path, max_label_len=25)  # the label filter reads every label at open
    assert open_dataset(path, max_label_len=25, on_error="drop")[1] is None


# ----------------------------------------------------- (b) random bytes as the whole data.mdb


def _valid_mdb() -> bytes:
    tmp = Path(tempfile.mkdtemp())
    try:
        write_str_lmdb(tmp / "db", [(_img(10 + i, 6, i), f"w{i}") for i in range(12)])
        return (tmp / "db" / "data.mdb").read_bytes()
    finally:
        shutil.rmtree(tmp)


_MDB = _valid_mdb()
_META = 2 * 4096  # LMDB's two meta pages
whole_file = st.one_of(
    st.binary(max_size=3 * 4096),  # arbitrary bytes
    st.integers(0, len(_MDB) - 1).map(lambda n: _MDB[:n]),  # an interrupted copy
    st.binary(min_size=1, max_size=6 * 4096).map(lambda b: _MDB[:_META] + b),  # valid header
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=whole_file)
def test_random_data_mdb_gives_format_errors_never_a_crash(data: bytes):
    """Truncation used to kill the process (SIGBUS); now every read is an error naming the
    LMDB (LMDB has no page checksums: a flipped byte inside a valid file can still crash it,
    which the sha256 pins and DVC hashes detect)."""
    tmp = Path(tempfile.mkdtemp())
    try:
        (tmp / "db").mkdir()
        (tmp / "db" / "data.mdb").write_bytes(data)
        try:
            ds = open_dataset(tmp / "db", allow_empty=True)
            for i in range(len(ds)):
                try:
                    assert ds[i]["lr"].shape == (4, 16, 64)
                except (LmdbFormatError, ImageDecodeError) as exc:
                    assert str(tmp / "db") in str(exc)
        except (LmdbFormatError, ImageDecodeError) as exc:
            assert str(tmp / "db") in str(exc)
    finally:
        shutil.rmtree(tmp)


def test_truncated_data_mdb_is_refused_with_sizes(tmp_path: Path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "data.mdb").write_bytes(_MDB[: _META + 100])
    with pytest.raises(LmdbFormatError, match=r"db: data.mdb is truncated: 8292 bytes"):
        len(LmdbReader(tmp_path / "db"))


# ------------------------------------------------------ (b, c) random bytes as image values


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    _img(9, 5).save(buf, format=fmt)
    return buf.getvalue()


_ENCODED = [_encoded(fmt) for fmt in ("PNG", "JPEG", "BMP", "GIF")]
mutated = st.tuples(
    st.sampled_from(_ENCODED), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)))
).map(lambda t: bytes(_mutate(*t)))


def _mutate(data: bytes, edits: list[tuple[int, int]]) -> bytearray:
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=st.one_of(st.binary(max_size=64), mutated))
def test_arbitrary_image_bytes_decode_to_rgb_or_name_the_record(value: bytes):
    tmp = Path(tempfile.mkdtemp())
    old = images.MAX_PIXELS
    images.MAX_PIXELS = 1 << 16  # a mutated header must not make the test allocate gigabytes
    try:
        path = _raw_lmdb(tmp / "db", _str_records(1, {"image-000000001": value}))
        try:
            img = LmdbReader(path).image("image", 0)
            assert img.mode == "RGB" and img.width * img.height > 0
        except ImageDecodeError as exc:  # never a raw PIL exception
            assert exc.where == f"{path}:image-000000001"
    finally:
        images.MAX_PIXELS = old
        shutil.rmtree(tmp)


def test_undecodable_image_stops_evaluation_and_keeps_earlier_output(tmp_path: Path):
    """raise (default): names the record, earlier JSON and .npz untouched; drop: counted."""
    test_set = _tiny_textzoom(tmp_path / "easy")
    out = tmp_path / "eval" / "easy.json"
    kw = dict(sr="lr", recognizer="none", testset="t", subsets={"easy": [test_set]}, samples=2)
    evaluate(out_path=out, **kw)
    before = out.read_bytes(), out.with_suffix(".samples.npz").read_bytes()

    shutil.rmtree(test_set)
    recs = {"num-samples": b"4"}
    for i in range(1, 5):
        recs[f"image_hr-{i:09d}"] = encode_png(_img(64, 16, i)) if i != 3 else b"\x89PNG broken"
        recs[f"image_lr-{i:09d}"] = encode_png(_img(32, 8, i))
        recs[f"label-{i:09d}"] = f"w{i}".encode()
    _raw_lmdb(test_set, recs)
    with pytest.raises(ImageDecodeError, match=r"easy:image_hr-000000003"):
        evaluate(out_path=out, **kw)
    assert (out.read_bytes(), out.with_suffix(".samples.npz").read_bytes()) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["easy.json", "easy.samples.npz"]

    result = evaluate(out_path=out, on_error="drop", **kw)
    assert result["subsets"]["easy"] == {"size": 3, "dropped": 1}
    assert result["dropped_records"] == {"easy": [f"{test_set}:000000003"]}
    assert json.loads(out.read_text()) == result


# ------------------------------------------------------ (d) labels outside the charset


def test_labels_without_charset_characters_are_dropped_and_counted(tmp_path: Path, caplog):
    labels = ["Hello!", "!!!", "中文", "ok", ""]
    write_str_lmdb(tmp_path / "s", [(_img(8, 4, i), lab) for i, lab in enumerate(labels)])
    ds = open_dataset(tmp_path / "s", label_charset=EVAL_CHARSET)
    assert [ds[i]["label"] for i in range(len(ds))] == ["Hello!", "ok"]  # labels stay raw
    assert ds.dropped_labels == ["000000002", "000000003", "000000005"]
    assert ds.filtered_labels == 1  # "Hello!" loses "!" (the recognizer lower-cases it)
    assert "dropped 3 of 5 samples" in caplog.text
    assert len(open_dataset(tmp_path / "s")) == 5  # without a charset nothing is dropped

    write_str_lmdb(tmp_path / "none", [(_img(8, 4), "#"), (_img(8, 4), "%")])
    with pytest.raises(EmptyDatasetError, match=r"none has no samples left after the label"):
        open_dataset(tmp_path / "none", label_charset=EVAL_CHARSET)


def test_recognizer_training_drops_and_counts_labels_it_cannot_emit(tmp_path: Path):
    from stisr.engine.train import train
    from tests.test_engine import _rec_cfg

    labels = ["word", "!!!", "ab", "??", "cd", "ef"]
    write_str_lmdb(tmp_path / "s", [(_img(40, 12, i), lab) for i, lab in enumerate(labels)])
    cfg = _rec_cfg([tmp_path / "s"], 1, batch_size=2)
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert metrics["dropped_labels"] == 2 and metrics["train_images"] == 4


# ------------------------------------------------------------------------ (e) empty sets


def test_empty_sets_are_an_error_unless_allowed(tmp_path: Path):
    write_str_lmdb(tmp_path / "lmdb", [])
    write_gt_folder(tmp_path / "folder", [])
    for root in (tmp_path / "lmdb", tmp_path / "folder"):
        with pytest.raises(EmptyDatasetError, match=f"dataset {root} has no samples$"):
            open_dataset(root)
        assert len(open_dataset(root, allow_empty=True)) == 0


def test_empty_subset_is_reported_as_size_zero_by_evaluation(tmp_path: Path, caplog):
    write_str_lmdb(tmp_path / "empty", [])
    write_str_lmdb(tmp_path / "full", [(_img(10, 5, i), f"w{i}") for i in range(3)])
    result = evaluate(
        sr="lr",
        recognizer="none",
        testset="t",
        subsets={"a": [tmp_path / "empty"], "b": [tmp_path / "empty", tmp_path / "full"]},
        out_path=tmp_path / "e.json",
        weighted=True,
    )
    assert result["subsets"] == {"a": {"size": 0}, "b": {"size": 3}, "average": {"size": 3}}
    assert "empty test set" in caplog.text


def _train_cfg(dirs: list[Path]) -> TrainConfig:
    return TrainConfig(
        run="t/tsrn", task="sr", model="tsrn", model_config={"hidden_units": 4, "srb_nums": 1},
        train_dirs=[str(d) for d in dirs], steps=1, batch_size=2,
    )  # fmt: skip


def test_training_on_an_empty_set_names_the_folder_and_writes_nothing(tmp_path: Path):
    write_textzoom_lmdb(tmp_path / "train", [])
    with pytest.raises(EmptyDatasetError, match=f"dataset {tmp_path / 'train'} has no samples"):
        train(_train_cfg([tmp_path / "train"]), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------- (f) image modes in records


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _mode_cases() -> list[tuple[str, bytes, np.ndarray, int]]:
    """(name, record bytes, expected RGB (4, 8, 3), tolerance) per mode; expectations are
    computed by hand, not by PIL's converters."""
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, (4, 8), dtype=np.uint8)
    rgba = rng.integers(0, 256, (4, 8, 4), dtype=np.uint8)
    alpha = rgba[..., 3:].astype(float) / 255
    over_white = np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha))
    cmyk = np.zeros((4, 8, 4), np.uint8)
    cmyk[:, :4], cmyk[:, 4:] = (0, 255, 255, 0), (100, 50, 0, 80)  # flat blocks: JPEG-safe
    c = cmyk.astype(float)
    from_cmyk = np.rint((255 - c[..., :3]) * (255 - c[..., 3:]) / 255)
    deep = rng.integers(0, 65536, (4, 8), dtype=np.uint16)
    flat_grey = np.repeat(np.array([[30, 200]], np.uint8), 4, axis=1).repeat(4, axis=0)
    return [
        ("L png", _encode(Image.fromarray(grey, "L"), "PNG"), np.stack([grey] * 3, -1), 0),
        ("L jpeg", _encode(Image.fromarray(flat_grey, "L"), "JPEG"),
         np.stack([flat_grey] * 3, -1), 3),
        ("RGBA png", _encode(Image.fromarray(rgba, "RGBA"), "PNG"), over_white, 1),
        ("CMYK jpeg", _encode(Image.fromarray(cmyk, "CMYK"), "JPEG"), from_cmyk, 4),
        ("I;16 png", _encode(Image.fromarray(deep), "PNG"),
         np.stack([np.rint(deep / 257.0)] * 3, -1), 0),
    ]  # fmt: skip


def test_image_modes_in_records_decode_to_the_right_rgb_pixels(tmp_path: Path):
    cases = _mode_cases()
    recs = {"num-samples": str(len(cases)).encode()}
    for i, (name, data, _, _) in enumerate(cases, start=1):
        recs[f"image-{i:09d}"], recs[f"label-{i:09d}"] = data, name.encode()
    ds = StrLmdbDataset(_raw_lmdb(tmp_path / "modes", recs), mask=False, lr_size=(8, 4))
    assert Image.open(io.BytesIO(cases[-1][1])).mode == "I;16"  # really a 16-bit record
    for i, (name, _, expected, tol) in enumerate(cases):
        sample = ds[i]
        assert sample["label"] == name
        got = np.rint(sample["lr"].permute(1, 2, 0).numpy() * 255)
        assert np.abs(got - expected).max() <= tol, name


# ----------------------------------------------------------------- (h) missing data source


def test_missing_embedded_set_names_folder_and_the_command_that_makes_it(tmp_path: Path):
    missing = tmp_path / "data" / "embedded" / "smoke" / "textzoom" / "test" / "easy"
    with pytest.raises(DatasetNotFoundError, match="dataset not found") as info:
        open_dataset(missing)
    msg = str(info.value)
    assert str(missing) in msg
    assert f"snakemake --cores all {tmp_path}/data/embedded/smoke/textzoom`" in msg
    lr_set = tmp_path / "data" / "embedded" / "demo" / "str_lr" / "commonlr" / "all"
    assert f"{tmp_path}/data/embedded/demo/str_lr/commonlr`" in str(_not_found(lr_set))
    assert isinstance(info.value, FileNotFoundError)


def _not_found(path: Path) -> DatasetNotFoundError:
    with pytest.raises(DatasetNotFoundError) as info:
        open_dataset(path)
    return info.value


def test_missing_official_set_names_the_fetch_source(tmp_path: Path):
    root = tmp_path / "data" / "official"
    msg = str(_not_found(root / "textzoom" / "test" / "hard"))
    assert f"stisr fetch textzoom --root {root}" in msg and "manual step" in msg
    assert "stisr fetch str_eval" in str(_not_found(root / "str" / "eval" / "evaluation" / "SVT"))
    assert "no entry of src/stisr/data/sources.yaml" in str(_not_found(root / "nowhere"))


def test_missing_train_or_test_folder_stops_before_any_output(tmp_path: Path):
    missing = tmp_path / "data" / "embedded" / "smoke" / "textzoom" / "train"
    with pytest.raises(DatasetNotFoundError, match="snakemake --cores all"):
        train(_train_cfg([missing]), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()

    out = tmp_path / "e.json"
    out.write_text('{"earlier": true}')
    with pytest.raises(DatasetNotFoundError, match=str(missing)):
        evaluate(sr="lr", recognizer="none", testset="t", subsets={"x": [missing]}, out_path=out)
    assert out.read_text() == '{"earlier": true}'
