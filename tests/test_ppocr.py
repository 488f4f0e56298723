"""The off-the-shelf PP-OCRv4 judge (rapidocr-onnxruntime, offline weights)."""

from __future__ import annotations

import builtins
import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from stisr.charset import normalize_label
from stisr.data.synth_render import font_paths

HAVE_RAPIDOCR = importlib.util.find_spec("rapidocr_onnxruntime") is not None
needs_rapidocr = pytest.mark.skipif(
    not HAVE_RAPIDOCR, reason="rapidocr-onnxruntime is not installed (PP-OCRv4 weights ship in it)"
)


def _word(text: str, size: tuple[int, int] = (256, 64)) -> Image.Image:
    fonts = font_paths()
    font = ImageFont.truetype(str(fonts[0][0]), 40) if fonts else ImageFont.load_default(40)
    img = Image.new("RGB", size, (245, 240, 230))
    ImageDraw.Draw(img).text((12, 8), text, fill=(20, 20, 20), font=font)
    return img


@pytest.fixture(scope="module")
def judge():
    from stisr.recognizers.ppocr import PPOCRRecognizer

    return PPOCRRecognizer(batch_size=4, num_threads=1)


@needs_rapidocr
def test_reads_a_clean_word(judge) -> None:
    preds = judge.recognize([_word("Street"), _word("OPEN24")])
    assert [normalize_label(p) for p in preds] == ["street", "open24"]


@needs_rapidocr
def test_prediction_does_not_depend_on_batch(judge) -> None:
    imgs = [_word("coffee"), _word("Hotel", (300, 60)), _word("PARKING", (400, 64))]
    together = judge.recognize(imgs)
    alone = [judge.recognize([img])[0] for img in imgs]
    assert together == alone
    scored = judge.recognize_with_scores(imgs[:1])
    assert scored[0][0] == together[0] and 0.5 < scored[0][1] <= 1.0


@needs_rapidocr
def test_tensor_input_uses_rgb_channels(judge) -> None:
    img = _word("market").resize((128, 32), Image.BICUBIC)
    rgb = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255.0
    rgbm = torch.cat([rgb, torch.ones(1, 32, 128)], 0)[None]
    assert judge.recognize_tensor(rgbm) == judge.recognize([img])
    assert normalize_label(judge.recognize_tensor(rgbm)[0]) == "market"
    with pytest.raises(ValueError, match="B, 3"):
        judge.recognize_tensor(torch.zeros(2, 32, 128))


def test_missing_rapidocr_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from stisr.recognizers import ppocr

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("rapidocr_onnxruntime"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match="pip install rapidocr-onnxruntime"):
        ppocr.PPOCRRecognizer()
