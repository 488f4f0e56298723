"""The one evaluator: (image source, recognizer, test set) -> accuracy, PSNR, SSIM per subset.

The image source is an SR model checkpoint or a pseudo input (`lr`, `hr`, `hr_bicubic_lr`,
`bicubic`); the recognizer is a trained/released model (through its own `preprocess`) or an
external one such as PP-OCRv4, or `none` (image-quality metrics only).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader, Subset
from tqdm import tqdm

from stisr.atomic_io import atomic_path, atomic_write_text
from stisr.data.datasets import collate_kept, open_dataset
from stisr.engine.checkpoint import load_model
from stisr.engine.provenance import provenance
from stisr.metrics.accuracy import correct_mask, weighted_average
from stisr.metrics.image_quality import psnr, ssim
from stisr.models.registry import build_model

log = logging.getLogger("stisr.engine.evaluate")
ImageSource = Callable[[Mapping[str, Any]], torch.Tensor]
Reader = Callable[[torch.Tensor], list[str]]


def image_source(sr: str, checkpoint: Path | None, device: str = "cpu") -> ImageSource:
    """Map a batch to the RGB images the recognizer reads (B, 3, H, W) in [0, 1]."""
    if sr == "lr":
        return lambda b: b["lr"][:, :3]
    if sr == "hr":
        return lambda b: b["hr"][:, :3]
    if sr == "hr_bicubic_lr":

        def syn_lr(b: Mapping[str, Any]) -> torch.Tensor:
            hr = b["hr"][:, :3]
            small = F.interpolate(hr, scale_factor=0.5, mode="bicubic", align_corners=False)
            return small.clamp(0, 1)

        return syn_lr
    model = build_model("bicubic", {}) if sr == "bicubic" else load_model(_need(checkpoint, sr))
    model.to(device).eval()

    @torch.no_grad()
    def run(b: Mapping[str, Any]) -> torch.Tensor:
        return model.infer({**b, "lr": b["lr"].to(device)})["sr"][:, :3].clamp(0, 1).cpu()

    return run


def _need(path: Path | None, what: str) -> Path:
    if path is None:
        raise ValueError(f"{what}: a checkpoint path is required")
    return path


def recognizer_reader(kind: str, checkpoint: Path | None, device: str = "cpu") -> Reader | None:
    """`none` -> None; `ppocr` -> the off-the-shelf judge; otherwise a stisr checkpoint."""
    if kind == "none":
        return None
    if kind == "ppocr":
        from stisr.recognizers.ppocr import PPOCRRecognizer

        judge = PPOCRRecognizer(num_threads=torch.get_num_threads())
        return judge.recognize_tensor
    model: nn.Module = load_model(_need(checkpoint, kind)).to(device).eval()

    def read(images: torch.Tensor) -> list[str]:
        return model.infer({"lr": images.to(device)})["text"]

    return read


def _to_uint8(t: torch.Tensor) -> np.ndarray:
    return (t.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def evaluate_subset(
    dirs: Sequence[Path],
    source: ImageSource,
    reader: Reader | None,
    *,
    batch_size: int = 64,
    max_images: int | None = None,
    samples: int = 0,
    progress: bool = True,
    desc: str = "",
    quality: bool = True,
    on_error: str = "raise",
    dropped_keys: list[str] | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics of one subset. ``on_error="drop"`` leaves bad records out: the result's
    ``dropped`` counts them and their ``<folder>:<record>`` keys are appended to ``dropped_keys``.
    """
    opened = [open_dataset(d, mask=True, allow_empty=True, on_error=on_error) for d in dirs]
    sets = [ds for ds in opened if len(ds) > 0]
    if not sets:  # e.g. no benchmark image is small enough at this scale: say so
        log.warning("empty test set: %s", ", ".join(map(str, dirs)))
        return ({"size": 0, "dropped": 0} if on_error == "drop" else {"size": 0}), {}
    data = ConcatDataset(sets)
    if max_images is not None and len(data) > max_images:
        data = Subset(data, range(max_images))
    loader = DataLoader(data, batch_size=batch_size, shuffle=False, collate_fn=collate_kept)
    correct: list[bool] = []
    psnrs: list[torch.Tensor] = []
    ssims: list[torch.Tensor] = []
    keep: dict[str, list] = {"images": [], "preds": [], "labels": [], "lr": [], "hr": []}
    for batch in tqdm(loader, desc=desc, disable=not progress, mininterval=5):
        if batch is None:  # every record of this batch was dropped
            continue
        images = source(batch)
        preds = reader(images) if reader is not None else [""] * len(images)
        correct += correct_mask(preds, batch["label"])
        if quality and "hr" in batch and images.shape[-2:] == batch["hr"].shape[-2:]:
            psnrs.append(psnr(images, batch["hr"][:, :3]))
            ssims.append(ssim(images, batch["hr"][:, :3]))
        if len(keep["labels"]) < samples:
            n = samples - len(keep["labels"])
            keep["images"].append(_to_uint8(images[:n]))
            keep["lr"].append(_to_uint8(batch["lr"][:n, :3]))
            if "hr" in batch:
                keep["hr"].append(_to_uint8(batch["hr"][:n, :3]))
            keep["preds"] += preds[:n]
            keep["labels"] += batch["label"][:n]
    result: dict[str, float] = {"size": len(correct)}
    if on_error == "drop":
        bad = [f"{ds.root}:{key}" for ds in sets for key in sorted(ds.bad_keys)]
        result["dropped"] = len(bad)
        if dropped_keys is not None:
            dropped_keys += bad
        if bad:
            log.warning("%s: %d bad records left out (first: %s)", desc, len(bad), bad[0])
    if reader is not None:
        result["accuracy"] = float(np.mean(correct))
    if psnrs:
        result["psnr"] = float(torch.cat(psnrs).mean())
        result["ssim"] = float(torch.cat(ssims).mean())
    arrays = {
        "images": np.concatenate(keep["images"]) if keep["images"] else np.zeros((0,), np.uint8),
        "preds": np.array(keep["preds"], dtype=str),
        "labels": np.array(keep["labels"], dtype=str),
        "lr": np.concatenate(keep["lr"]) if keep["lr"] else np.zeros((0,), np.uint8),
    }
    if keep["hr"]:
        arrays["hr"] = np.concatenate(keep["hr"])
    return result, arrays


def evaluate(
    *,
    sr: str,
    recognizer: str,
    testset: str,
    subsets: Mapping[str, Sequence[Path]],
    out_path: Path,
    sr_checkpoint: Path | None = None,
    rec_kind: str = "model",
    rec_checkpoint: Path | None = None,
    weighted: bool = False,
    meta: Mapping[str, Any] | None = None,
    batch_size: int = 64,
    max_images: int | None = None,
    samples: int = 0,
    device: str = "cpu",
    on_error: str = "raise",
) -> dict[str, Any]:
    """Evaluate and write the metrics JSON (+ an .npz of sample images for the figures).

    A bad record stops the evaluation naming its LMDB path and key (``on_error="raise"``, the
    papers' protocol counts every test image), or is left out and counted (``"drop"``: each
    subset's ``dropped``, the keys in ``dropped_records``). Outputs are written only at the end,
    atomically, so a failed evaluation leaves an earlier result as it was.
    """
    if on_error not in ("raise", "drop"):
        raise ValueError(f"on_error must be 'raise' or 'drop', got {on_error!r}")
    source = image_source(sr, sr_checkpoint, device)
    reader = (
        recognizer_reader(rec_kind if rec_kind != "model" else recognizer, rec_checkpoint, device)
        if recognizer != "none"
        else None
    )
    per_subset: dict[str, dict[str, float]] = {}
    arrays: dict[str, np.ndarray] = {}
    dropped: dict[str, list[str]] = {}
    for name, dirs in subsets.items():
        per_subset[name], arr = evaluate_subset(
            dirs,
            source,
            reader,
            batch_size=batch_size,
            max_images=max_images,
            samples=samples,
            desc=f"{sr}|{recognizer}|{testset}/{name}",
            quality=sr != "hr",  # HR against itself is not a measurement
            on_error=on_error,
            dropped_keys=dropped.setdefault(name, []),
        )
        arrays.update({f"{name}/{k}": v for k, v in arr.items()})
    if weighted:
        sizes = {k: int(v["size"]) for k, v in per_subset.items() if v["size"] > 0}
        avg: dict[str, float] = {"size": sum(sizes.values())}
        for metric in ("accuracy", "psnr", "ssim"):
            vals = {k: v[metric] for k, v in per_subset.items() if metric in v}
            if vals and len(vals) == len(sizes):
                avg[metric] = weighted_average(vals, sizes)
        if on_error == "drop":
            avg["dropped"] = sum(len(keys) for keys in dropped.values())
        per_subset["average"] = avg
    out_path = Path(out_path)
    samples_path = out_path.with_suffix(".samples.npz")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(samples_path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    result = {
        "sr": sr,
        "recognizer": recognizer,
        "testset": testset,
        **dict(meta or {}),
        "subsets": per_subset,
        "samples": samples_path.name,
        **({"dropped_records": dropped} if on_error == "drop" else {}),
        "provenance": provenance([d for dirs in subsets.values() for d in dirs]),
    }
    atomic_write_text(out_path, json.dumps(result, indent=2))
    log.info("evaluation %s | %s | %s written to %s", sr, recognizer, testset, out_path)
    return result
