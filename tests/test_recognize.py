"""`stisr recognize`: a folder of word images in, predictions (and accuracy with gt.txt) out."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from stisr.cli import main
from stisr.data.folder_io import write_gt_folder
from stisr.engine.checkpoint import atomic_save, model_payload
from stisr.engine.recognize import load_recognizer, recognize_folder
from stisr.models.registry import build_model


def _word(text: str) -> Image.Image:
    img = Image.new("RGB", (100, 32), "white")
    ImageDraw.Draw(img).text((4, 8), text, fill="black")
    return img


def test_recognize_folder_with_released_and_stisr_weights(tmp_path, capsys):
    folder = tmp_path / "words"
    write_gt_folder(folder, [(_word("Hello"), "Hello"), (_word("42"), "42")])
    released = tmp_path / "crnn.pth"  # a plain state_dict, laid out like crnn.pytorch's release
    torch.save(build_model("crnn", {}).state_dict(), released)
    preds = recognize_folder(folder, "crnn", released, batch_size=1)
    assert [p.label for p in preds] == ["Hello", "42"]
    assert all(isinstance(p.correct, bool) for p in preds)

    tiny = {"cnn_widths": [4, 8, 8, 8, 8, 8, 8], "hidden": 8}
    ckpt = tmp_path / "model.pt"
    atomic_save(model_payload(build_model("crnn", tiny), "crnn", tiny), ckpt)
    assert load_recognizer("crnn", ckpt).cnn is not None
    out = tmp_path / "preds.tsv"
    assert main(["recognize", str(folder), "--recognizer", "crnn", "--weights", str(ckpt),
                 "--out", str(out)]) == 0  # fmt: skip
    rows = out.read_text().splitlines()
    assert rows[0] == "path\tprediction\tlabel\tcorrect" and len(rows) == 3
    assert "word accuracy (crnn, 2 images)" in capsys.readouterr().out


def test_folder_without_gt_lists_images(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    _word("x").save(tmp_path / "b.png")
    from stisr.engine.recognize import list_images

    assert [p.name for p, label in list_images(tmp_path)] == ["a.png", "b.png"]


def test_import_weights_makes_a_loadable_checkpoint(tmp_path):
    from stisr.engine.checkpoint import load_model

    root = tmp_path / "official"
    (root / "weights").mkdir(parents=True)
    state = build_model("crnn", {}).state_dict()
    torch.save({f"module.{k}": v for k, v in state.items()}, root / "weights" / "crnn.pth")
    out = tmp_path / "crnn.stisr.pt"
    assert main(["import-weights", "crnn", "--root", str(root), "--out", str(out)]) == 0
    model = load_model(out)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())


def test_released_files_load_without_running_pickled_code(tmp_path, monkeypatch):
    import argparse

    from stisr.engine.recognize import load_weights_file

    plain = tmp_path / "plain.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, plain)
    assert load_weights_file(plain)["epoch"] == 3
    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": {}, "opt": argparse.Namespace(lr=1)}, pickled)
    with pytest.raises(ValueError, match="STISR_TRUST_PICKLE"):
        load_weights_file(pickled)
    monkeypatch.setenv("STISR_TRUST_PICKLE", "1")
    assert load_weights_file(pickled)["opt"].lr == 1
