"""Parameters, FLOPs and CPU latency of an (SR model, recognizer) pair (`stisr complexity`).

Architecture numbers are properties of the paper-scale configuration, so they are measured there
whatever the scale of the run (no weights needed). Each model is counted as the papers counted it
(`PAPER_COUNTS`: input size, decoding, profiler rules): `flops` is that count (multiply-accumulates,
in G), `flops_all` every multiply-accumulate incl. attention, and `true_flops` 2 per MAC of
`flops_all`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from stisr.engine.provenance import provenance
from stisr.metrics.complexity import (
    PAPER_COUNTS,
    PaperCount,
    count_parameters,
    measure_latency,
)

SUMMED = ("params", "flops", "flops_all", "true_flops", "latency_ms")


class ComplexityError(ValueError):
    """A pair whose complexity is not measured here (an external recognizer)."""


def _parts(params: Mapping[str, Any], sr: str, recognizer: str, runs: Mapping[str, Any]):
    from stisr.models.registry import build_model
    from stisr.papers.plan import resolve_recognizer
    from stisr.papers.spec import PSEUDO_SR

    parts: list[tuple[str, torch.nn.Module, tuple[Any, ...], PaperCount]] = []
    if sr not in PSEUDO_SR or sr == "bicubic":
        name = "bicubic" if sr == "bicubic" else runs[sr].model
        cfg = {} if sr == "bicubic" else runs[sr].model_config
        model = build_model(name, cfg)
        batch = {"lr": torch.rand(1, 4, 16, 64), "label": ["text"]}  # a label prior reads text
        parts.append((sr, model, model.forward_inputs(batch), PaperCount()))
    if recognizer != "none":
        rec = resolve_recognizer(params, recognizer, runs)
        if rec.external:
            raise ComplexityError(
                f"complexity of external recognizer {rec.external} is not measured"
            )
        count = PAPER_COUNTS.get(rec.model, PaperCount())
        cfg = {**count.config, **(runs[rec.run].model_config if rec.run else {})}
        model = build_model(rec.model, cfg)
        parts.append((recognizer, model, (model.preprocess(torch.rand(1, 3, 32, 128)),), count))
    return parts


def measure_pair(
    params: Mapping[str, Any], sr: str, recognizer: str, runs: Mapping[str, Any]
) -> dict[str, Any]:
    """The complexity JSON of `sr` + `recognizer`: totals and one entry per part.

    Seeds torch (random weights and inputs) so that data-dependent decoders count reproducibly.
    """
    torch.manual_seed(0)
    result: dict[str, Any] = {
        "params": 0,
        "flops": 0.0,
        "flops_all": 0.0,
        "true_flops": 0.0,
        "latency_ms": 0.0,
        "architecture_scale": "paper",
        "parts": {},
    }
    for name, model, inputs, count in _parts(params, sr, recognizer, runs):
        flops = count.count(model, *inputs)
        lat = measure_latency(count.wrap(model), *inputs, warmup=1, repeats=5)
        part = {
            "params": count_parameters(model),
            "flops": flops["paper_macs"] / 1e9,
            "flops_all": flops["macs"] / 1e9,
            "true_flops": flops["flops"] / 1e9,
            "latency_ms": lat["mean_ms"],
            "input": list(inputs[0].shape),
            "counted_as": count.why,
        }
        if count.fitted:
            part["fitted"] = count.fitted
            result.setdefault("fitted", {})["flops"] = f"{name}: {count.fitted}"
        result["parts"][name] = part
        for key in SUMMED:
            result[key] += part[key]
    result["provenance"] = provenance([])  # the commit that counted it
    return result
