"""Image decoding, LMDB and gt-folder I/O, tensor transforms."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stisr.data import images, lmdb_io, transforms
from stisr.data.folder_io import read_gt_folder, write_gt_folder
from stisr.data.images import ImageDecodeError, decode_image, encode_png
from stisr.data.lmdb_io import LmdbFormatError, LmdbReader, write_str_lmdb, write_textzoom_lmdb
from tests.data_helpers import random_image as _img
from tests.data_helpers import raw_lmdb as _raw_lmdb


def _encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


# ---------------------------------------------------------------------------------- images


def test_png_round_trip_is_lossless_and_deterministic():
    img = _img(13, 7)
    data = encode_png(img)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert encode_png(img) == data
    out = decode_image(data, "mem:0")
    assert out.mode == "RGB" and out.size == (13, 7)
    assert np.array_equal(np.asarray(out), np.asarray(img))


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [("L", "PNG"), ("1", "PNG"), ("LA", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"),
     ("CMYK", "TIFF"), ("I;16", "PNG"), ("I", "TIFF"), ("F", "TIFF"), ("YCbCr", "JPEG")],
)  # fmt: skip
def test_every_mode_decodes_to_rgb(mode: str, fmt: str):
    src = _img(8, 4).convert(mode) if mode not in ("I;16", "I", "F") else None
    if src is None:
        arr = np.linspace(0, 65535 if mode != "F" else 255, 32).reshape(4, 8)
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        src = Image.fromarray(arr.astype(dtype), mode if mode != "I;16" else None)
        if mode == "I;16":
            assert src.mode == "I;16"
    out = decode_image(_encode(src, fmt), f"mem:{mode}")
    assert out.mode == "RGB" and out.size == (8, 4)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    arr = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    out = np.asarray(decode_image(_encode(Image.fromarray(arr), "PNG"), "x"))
    assert out[0, :, 0].tolist() == [0, 100, 255]
    assert (out[..., 0] == out[..., 2]).all()


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    out = np.asarray(decode_image(encode_png(rgba), "x"))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [10, 20, 30]
    la = Image.new("LA", (1, 1), (0, 128))  # black at half opacity over white
    assert np.asarray(decode_image(encode_png(la), "x"))[0, 0, 0] in (127, 128)


@pytest.mark.parametrize("data", [b"", b"not an image", encode_png(_img(4, 4))[:40]])
def test_corrupt_bytes_raise_image_decode_error_naming_where(data: bytes):
    where = "data/x/train1:image_hr-000000012"
    with pytest.raises(ImageDecodeError, match="image_hr-000000012") as info:
        decode_image(data, where)
    assert info.value.where == where
    assert isinstance(info.value, ValueError)


def test_absurd_size_is_rejected(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 10)
    with pytest.raises(ImageDecodeError, match="implausible size"):
        decode_image(encode_png(_img(4, 4)), "k")


# ------------------------------------------------------------------------------------ LMDB


def test_textzoom_lmdb_round_trip(tmp_path: Path):
    samples = [(_img(128, 32, i), _img(64, 16, 10 + i), f"Wörd{i}") for i in range(3)]
    assert write_textzoom_lmdb(tmp_path / "tz", samples) == 3
    assert sorted(os.listdir(tmp_path)) == ["tz"]  # no temp leftovers
    assert os.listdir(tmp_path / "tz") == ["data.mdb"]  # no lock.mdb shipped
    reader = LmdbReader(tmp_path / "tz")
    assert len(reader) == 3 and reader.format == "textzoom"
    assert reader.get("num-samples") == b"3"
    assert reader.get("label-000000001") == "Wörd0".encode()
    for i, (hr, lr, label) in enumerate(samples):
        assert reader.label(i) == label
        assert np.array_equal(np.asarray(reader.image("hr", i)), np.asarray(hr))
        assert np.array_equal(np.asarray(reader.image("image_lr", i)), np.asarray(lr))
    assert reader.key("hr", 2) == "image_hr-000000003"
    with pytest.raises(IndexError):
        reader.label(3)


def test_str_lmdb_round_trip_and_pickling(tmp_path: Path):
    samples = [(_img(20, 9, i), label) for i, label in enumerate(["a b", "", "Z9"])]
    assert write_str_lmdb(tmp_path / "s", samples) == 3
    reader = LmdbReader(tmp_path / "s")
    assert reader.format == "str" and len(reader) == 3
    assert [reader.label(i) for i in range(3)] == ["a b", "", "Z9"]
    clone = pickle.loads(pickle.dumps(reader))
    assert clone._env is None  # environments never cross process boundaries
    assert np.array_equal(np.asarray(clone.image("image", 2)), np.asarray(samples[2][0]))


def test_writer_grows_map_beyond_initial_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(lmdb_io, "_INITIAL_MAP_SIZE", 64 << 10)
    noise = _img(160, 120)  # ~57 KB of incompressible PNG each
    assert write_str_lmdb(tmp_path / "big", [(noise, "n")] * 8) == 8
    assert len(LmdbReader(tmp_path / "big")) == 8


def test_rewrite_replaces_existing_lmdb(tmp_path: Path):
    write_str_lmdb(tmp_path / "s", [(_img(4, 4), "old")] * 2)
    write_str_lmdb(tmp_path / "s", [(_img(4, 4), "new")])
    reader = LmdbReader(tmp_path / "s")
    assert len(reader) == 1 and reader.label(0) == "new"
    assert sorted(os.listdir(tmp_path)) == ["s"]


def test_atomic_write_leaves_nothing_when_samples_fail(tmp_path: Path):
    def broken():
        yield _img(4, 4), "ok"
        raise RuntimeError("generator died")

    with pytest.raises(RuntimeError, match="generator died"):
        write_str_lmdb(tmp_path / "new", broken())
    assert os.listdir(tmp_path) == []

    write_textzoom_lmdb(tmp_path / "tz", [(_img(8, 4), _img(4, 2), "keep")])
    with pytest.raises(RuntimeError):
        write_textzoom_lmdb(tmp_path / "tz", ((hr, hr, lab) for hr, lab in broken()))
    assert sorted(os.listdir(tmp_path)) == ["tz"]
    assert LmdbReader(tmp_path / "tz").label(0) == "keep"  # old data untouched


def test_missing_num_samples_names_path_and_key(tmp_path: Path):
    path = _raw_lmdb(tmp_path / "x", {"label-000000001": b"a", "image-000000001": b"z"})
    with pytest.raises(LmdbFormatError, match="num-samples") as info:
        len(LmdbReader(path))
    assert str(path) in str(info.value) and info.value.key == "num-samples"


@pytest.mark.parametrize("value", [b"three", b"-1", b"1.5", b"", b"\xff", b"9"])
def test_bad_num_samples_is_a_format_error(tmp_path: Path, value: bytes):
    path = _raw_lmdb(tmp_path / "x", {"num-samples": value, "label-000000001": b"a"})
    with pytest.raises(LmdbFormatError, match="num-samples"):
        len(LmdbReader(path))


def test_missing_record_names_path_and_key(tmp_path: Path):
    path = _raw_lmdb(tmp_path / "x", {"num-samples": b"2", "image-000000001": b"x", "label-1": b""})
    reader = LmdbReader(path)
    with pytest.raises(LmdbFormatError, match="label-000000002") as info:
        reader.label(1)
    assert str(path) in str(info.value)


def test_corrupt_image_record_names_path_and_key(tmp_path: Path):
    path = _raw_lmdb(
        tmp_path / "x", {"num-samples": b"1", "image-000000001": b"junk", "label-000000001": b"a"}
    )
    with pytest.raises(ImageDecodeError, match=r"x:image-000000001"):
        LmdbReader(path).image("image", 0)


def test_non_utf8_label_is_a_format_error(tmp_path: Path):
    path = _raw_lmdb(tmp_path / "x", {"num-samples": b"1", "label-000000001": b"\xff\xfe"})
    with pytest.raises(LmdbFormatError, match="label-000000001"):
        LmdbReader(path).label(0)


def test_open_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="nope"):
        LmdbReader(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(LmdbFormatError, match="not an LMDB"):
        LmdbReader(tmp_path / "plain")
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "data.mdb").write_bytes(b"\0" * 10000)
    with pytest.raises(LmdbFormatError, match="fake"):
        LmdbReader(tmp_path / "fake").get("num-samples")


def test_reader_on_read_only_copy_creates_no_lock_file(tmp_path: Path):
    write_str_lmdb(tmp_path / "src", [(_img(6, 3), "ro")])
    ro = tmp_path / "ro"
    shutil.copytree(tmp_path / "src", ro)
    (ro / "data.mdb").chmod(stat.S_IRUSR)
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        reader = LmdbReader(ro)
        assert len(reader) == 1 and reader.label(0) == "ro"
        assert reader.image("image", 0).size == (6, 3)
        reader.close()
        assert os.listdir(ro) == ["data.mdb"]
    finally:
        ro.chmod(stat.S_IRWXU)


def test_two_readers_of_one_lmdb_share_safely(tmp_path: Path):
    write_str_lmdb(tmp_path / "s", [(_img(4, 4), "a")])
    first, second = LmdbReader(tmp_path / "s"), LmdbReader(tmp_path / "s")
    assert first.label(0) == second.label(0) == "a"
    first.close()
    assert second.label(0) == "a"  # closing one reader leaves the other working


# --------------------------------------------------------------------------------- folders


def test_gt_folder_round_trip(tmp_path: Path):
    samples = [(_img(10, 5, i), label) for i, label in enumerate(["hello world", "X", ""])]
    assert write_gt_folder(tmp_path / "f", samples) == 3
    items = read_gt_folder(tmp_path / "f")
    assert [label for _, label in items] == ["hello world", "X", ""]
    for (path, _), (img, _) in zip(items, samples, strict=True):
        assert np.array_equal(np.asarray(decode_image(path.read_bytes(), str(path))), img)
    assert sorted(os.listdir(tmp_path)) == ["f"]


def test_gt_folder_blank_lines_and_errors(tmp_path: Path):
    root = tmp_path / "f"
    root.mkdir()
    (root / "a.png").write_bytes(encode_png(_img(3, 3)))
    (root / "gt.txt").write_text("\na.png\tone\n  \n")
    assert [(p.name, lab) for p, lab in read_gt_folder(root)] == [("a.png", "one")]

    (root / "gt.txt").write_text("a.png\tone\nno-tab-here\n")
    with pytest.raises(ValueError, match=r"gt\.txt:2"):
        read_gt_folder(root)
    (root / "gt.txt").write_text("a.png\tone\nmissing.png\ttwo\n")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_gt_folder(root)
    (root / "gt.txt").write_text("../a.png\tx\n")
    with pytest.raises(ValueError, match="outside"):
        read_gt_folder(root)
    with pytest.raises(FileNotFoundError, match="gt.txt"):
        read_gt_folder(tmp_path)


def test_gt_folder_rejects_multiline_labels_atomically(tmp_path: Path):
    with pytest.raises(ValueError, match="sample 2"):
        write_gt_folder(tmp_path / "f", [(_img(2, 2), "ok"), (_img(2, 2), "a\tb")])
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------------------ transforms


def test_rgbm_mask_marks_pixels_darker_than_mean():
    grey = np.array([[0, 100], [200, 255]], dtype=np.uint8)  # mean 138.75
    img = Image.fromarray(np.stack([grey] * 3, axis=-1), "RGB")
    t = transforms.rgbm(img)
    assert t.shape == (4, 2, 2) and t.dtype == torch.float32
    assert t[3].tolist() == [[1.0, 1.0], [0.0, 0.0]]
    assert torch.allclose(t[0], torch.tensor(grey, dtype=torch.float32) / 255)
    assert t.min() >= 0.0 and t.max() <= 1.0


def test_rgbm_mask_uses_pil_luma_and_keeps_pixels_equal_to_mean():
    rgb = np.array([[[255, 0, 0], [0, 255, 0]]], dtype=np.uint8)  # luma 76 and 150
    assert transforms.rgbm(Image.fromarray(rgb, "RGB"))[3].tolist() == [[1.0, 0.0]]
    flat = Image.new("RGB", (3, 2), (90, 90, 90))  # every pixel equals the mean
    assert transforms.rgbm(flat)[3].eq(1).all()


def test_to_tensor_sizes_and_bicubic_resize():
    img = _img(37, 11)
    lr = transforms.to_tensor(img, (64, 16), mask=True)
    hr = transforms.to_tensor(img, (128, 32), mask=False)
    assert lr.shape == (4, 16, 64) and hr.shape == (3, 32, 128)
    ref = np.asarray(img.resize((128, 32), Image.BICUBIC), dtype=np.float32) / 255
    assert np.allclose(hr.permute(1, 2, 0).numpy(), ref)
    assert transforms.to_tensor(img.convert("L"), (8, 4), mask=False).shape == (3, 4, 8)
    with pytest.raises(ValueError, match="size"):
        transforms.to_tensor(img, (0, 16), mask=False)


def test_atomic_path_keeps_the_old_file_when_the_write_fails(tmp_path: Path):
    from stisr.atomic_io import atomic_path, atomic_write_text

    target = atomic_write_text(tmp_path / "metrics.json", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
