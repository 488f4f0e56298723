"""PP-OCRv4 recognition as an off-the-shelf, independent judge.

The embedded data's recognizers are trained here; PP-OCRv4 (from the ``rapidocr-onnxruntime``
wheel, which ships the ONNX weights, so it runs offline) has never seen that data, so it measures
legibility without sharing the biases of our own models. Only the recognition model is used: the
inputs are word crops already, so detection and the angle classifier are skipped.

Preprocessing follows PaddleOCR / RapidOCR: BGR, resize to height 48 keeping the aspect ratio
(bilinear), scale to [-1, 1], right-pad with zeros to at least 320 pixels. Each image is padded as
if it were alone in its batch (width max(320, its own)), and only images of the same padded width
share a batch, so a prediction never depends on which other images were recognized with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

__all__ = ["PPOCRRecognizer", "load_rapidocr_recognizer"]

_INSTALL_HINT = (
    "the PP-OCRv4 judge needs the 'rapidocr-onnxruntime' package (it ships the ONNX weights): "
    "pip install rapidocr-onnxruntime"
)
_REC_MODEL = "ch_PP-OCRv4_rec_infer.onnx"


def load_rapidocr_recognizer(batch_size: int = 8, num_threads: int | None = None) -> Any:
    """rapidocr's ``TextRecognizer`` configured from the wheel's own config.yaml."""
    try:
        import rapidocr_onnxruntime
        from rapidocr_onnxruntime.ch_ppocr_rec import TextRecognizer
        from rapidocr_onnxruntime.utils import read_yaml
    except ImportError as exc:
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc
    root = Path(rapidocr_onnxruntime.__file__).resolve().parent
    config = dict(read_yaml(root / "config.yaml")["Rec"])
    model = root / "models" / _REC_MODEL
    if not model.is_file():
        raise FileNotFoundError(f"PP-OCRv4 recognition model missing from the wheel: {model}")
    config["model_path"] = str(model)
    config["rec_batch_num"] = int(batch_size)
    if num_threads is not None:
        config["intra_op_num_threads"] = int(num_threads)
        config["inter_op_num_threads"] = 1
    return TextRecognizer(config)


class PPOCRRecognizer:
    """Batched PP-OCRv4 word recognition; returns raw strings (normalize before scoring)."""

    name = "ppocr"

    def __init__(self, batch_size: int = 8, num_threads: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self._rec = load_rapidocr_recognizer(batch_size, num_threads)
        _, self.height, self.min_width = (int(v) for v in self._rec.rec_image_shape)

    # -- preprocessing ----------------------------------------------------------------------
    def _prepare(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB -> 3x48xW float32 in [-1, 1], zero-padded on the right."""
        import cv2

        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
            raise ValueError(f"expected an HxWx3 image, got shape {rgb.shape}")
        h, w = rgb.shape[:2]
        width = min(int(math.ceil(self.height * w / h)), 4096)
        padded = max(self.min_width, width)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        resized = cv2.resize(bgr, (width, self.height)).astype(np.float32)
        out = np.zeros((3, self.height, padded), np.float32)
        out[:, :, :width] = resized.transpose(2, 0, 1) / 127.5 - 1.0
        return out

    def _run(self, arrays: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        inputs = [self._prepare(a) for a in arrays]
        results: list[tuple[str, float]] = [("", 0.0)] * len(inputs)
        by_width: dict[int, list[int]] = {}
        for i, x in enumerate(inputs):
            by_width.setdefault(x.shape[2], []).append(i)
        for width in sorted(by_width):
            idx = by_width[width]
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start : start + self.batch_size]
                batch = np.stack([inputs[i] for i in chunk])
                preds = self._rec.session(batch)[0]
                for i, (text, score) in zip(chunk, self._rec.postprocess_op(preds), strict=True):
                    results[i] = (str(text), float(score))
        return results

    # -- public API -------------------------------------------------------------------------
    def recognize_with_scores(self, images: Sequence[Image.Image]) -> list[tuple[str, float]]:
        """(text, mean character confidence) per image."""
        arrays = []
        for i, img in enumerate(images):
            if not isinstance(img, Image.Image):
                raise TypeError(f"image {i}: expected a PIL image, got {type(img).__name__}")
            arrays.append(np.asarray(img.convert("RGB")))
        return self._run(arrays)

    def recognize(self, images: Sequence[Image.Image]) -> list[str]:
        """Raw predicted strings (case and punctuation kept), one per image."""
        return [text for text, _ in self.recognize_with_scores(images)]

    def recognize_tensor(self, batch: torch.Tensor) -> list[str]:
        """Recognize a (B, 3 or 4, H, W) batch in [0, 1]; only the RGB channels are read."""
        if batch.ndim != 4 or batch.shape[1] < 3:
            raise ValueError(f"expected a (B, 3|4, H, W) tensor, got shape {tuple(batch.shape)}")
        import torch

        rgb = batch[:, :3].detach().float().clamp(0, 1).mul(255).round().to("cpu", torch.uint8)
        arrays = list(rgb.permute(0, 2, 3, 1).numpy())
        return [text for text, _ in self._run(arrays)]
