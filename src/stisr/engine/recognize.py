"""Read word images with any recognizer: a folder (optionally with gt.txt) in, predictions out.

Weights are a stisr checkpoint (`model.pt` of a run or an imported release) or an official release
file, mapped through the recognizer module's `official_state_dict` and loaded strictly.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from stisr.data.folder_io import GT_FILE, read_gt_folder
from stisr.data.images import decode_image
from stisr.data.transforms import to_tensor
from stisr.engine.checkpoint import load_model
from stisr.metrics.accuracy import correct_mask
from stisr.models.registry import REC_MODELS, build_model

log = logging.getLogger("stisr.engine.recognize")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
READ_SIZE = (128, 32)  # the HR size every STISR recognizer reads (then its own preprocess)


@dataclass
class Prediction:
    path: Path
    prediction: str
    label: str | None = None
    correct: bool | None = None


def load_weights_file(path: Path) -> Any:
    """`torch.load(weights_only=True)`: a downloaded file cannot run code while it is read.

    A release that pickles other objects (an argparse Namespace, say) is refused with the name of
    what it holds; `STISR_TRUST_PICKLE=1` reads such a file you trust in full.
    """
    if os.environ.get("STISR_TRUST_PICKLE") == "1":
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: holds objects beyond tensors and plain containers, refused by "
            f"weights_only loading ({str(err).splitlines()[0]}); if you trust the file, set "
            "STISR_TRUST_PICKLE=1"
        ) from None


def load_official(name: str, weights: Path) -> tuple[nn.Module, dict]:
    """A released weight file -> (model, config), loaded strictly after the module's key mapping.

    A recognizer module may define `official_state_dict(raw)` (key mapping), `OFFICIAL_CONFIG`
    (the release's architecture when it differs from the paper default) and
    `read_official_file(path)` (for files that are not torch archives, e.g. Paddle's).
    """
    if name not in REC_MODELS:
        raise KeyError(f"unknown recognizer {name!r}; known: {', '.join(sorted(REC_MODELS))}")
    module = importlib.import_module(REC_MODELS[name][1].__module__)
    config = dict(getattr(module, "OFFICIAL_CONFIG", {}))
    reader = getattr(module, "read_official_file", None)
    raw = reader(weights) if reader else load_weights_file(weights)
    mapping: Callable[[dict], dict] = getattr(module, "official_state_dict", lambda d: d)
    model = build_model(name, config)
    try:
        model.load_state_dict(mapping(raw), strict=True)
    except RuntimeError as err:
        raise ValueError(f"{weights}: not a {name} release checkpoint: {err}") from err
    return model, config


def load_recognizer(name: str, weights: Path | None) -> nn.Module:
    """A recognizer by registry name, from a stisr checkpoint or an official weight file."""
    if weights is None:
        raise ValueError(f"recognizer {name!r} needs --weights (a model.pt or an official file)")
    if Path(weights).suffix in (".pt", ".pth", ".tar"):
        raw = load_weights_file(Path(weights))
        if isinstance(raw, dict) and {"state_dict", "model", "config"} <= raw.keys():
            return load_model(weights).eval()
    return load_official(name, Path(weights))[0].eval()


def list_images(folder: Path) -> list[tuple[Path, str | None]]:
    if (folder / GT_FILE).is_file():
        return [(p, label) for p, label in read_gt_folder(folder)]
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images (and no {GT_FILE}) in {folder}")
    return [(p, None) for p in files]


def reader_for(name: str, weights: Path | None) -> Callable[[torch.Tensor], list[str]]:
    if name == "ppocr":
        from stisr.recognizers.ppocr import PPOCRRecognizer

        return PPOCRRecognizer(num_threads=torch.get_num_threads()).recognize_tensor
    model = load_recognizer(name, weights)

    @torch.no_grad()
    def read(images: torch.Tensor) -> list[str]:
        return model.decode(model(model.preprocess(images)))

    return read


def recognize_folder(
    folder: Path, name: str, weights: Path | None, batch_size: int = 64
) -> list[Prediction]:
    items = list_images(folder)
    read = reader_for(name, weights)
    out: list[Prediction] = []
    for start in tqdm(range(0, len(items), batch_size), desc=f"{name} on {folder.name}"):
        chunk = items[start : start + batch_size]
        images = [decode_image(p.read_bytes(), str(p)) for p, _ in chunk]
        batch = torch.stack([to_tensor(img, READ_SIZE, mask=False) for img in images])
        preds = read(batch)
        for (path, label), pred in zip(chunk, preds, strict=True):
            ok = correct_mask([pred], [label])[0] if label is not None else None
            out.append(Prediction(path, pred, label, ok))
    return out


def accuracy(preds: Sequence[Prediction]) -> float | None:
    judged = [p.correct for p in preds if p.correct is not None]
    return sum(judged) / len(judged) if judged else None
