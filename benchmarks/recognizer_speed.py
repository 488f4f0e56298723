"""Words per second of every recognizer on this CPU, through the evaluator's reading path.

Each recognizer is timed at `paper` scale (the papers' architectures) and, where it differs, at
`demo` scale (the configuration the workflow trains: params.yaml `scales.demo.models` merged
with the zoo run's own config, as `stisr train` builds it). A randomly initialised model is
saved as a stisr checkpoint and read back with `stisr.engine.evaluate.recognizer_reader`, so the
timed call is the evaluator's own preprocess -> forward -> decode under `torch.no_grad`;
PP-OCRv4 goes through the same function. Inputs are random 3x32x128 RGB images (the size STISR
outputs). Weights do not change the cost of fixed-length models; decoders that stop at an end
token (PARSeq's autoregressive decoding, ASTER's beam search) rarely see one with random weights
and run to their maximum length, so their figures are lower bounds.

    python benchmarks/recognizer_speed.py [--batch 32] [--repeats 3] [--threads 1 2]

Numbers are only comparable on an otherwise idle CPU: the header prints the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from stisr.config import load_params, model_config
from stisr.engine.checkpoint import atomic_save, model_payload
from stisr.engine.evaluate import recognizer_reader
from stisr.metrics.complexity import count_parameters
from stisr.models.registry import REC_MODELS, build_model
from stisr.papers.spec import all_runs, load_specs

Reader = Callable[[torch.Tensor], list[str]]


def words_per_second(read: Reader, images: torch.Tensor, repeats: int) -> float:
    """Batch size / median wall time of `repeats` timed calls, after one untimed call."""
    read(images)  # warm-up: lazy init, allocator, oneDNN kernel selection
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        read(images)
        times.append(time.perf_counter() - start)
    return len(images) / statistics.median(times)


def configs(params_path: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(scale, recognizer, model config) as the workflow builds them; a demo config equal to the
    paper one (no `scales.demo.models` entry yet) is left out: its speed is the paper row's."""
    runs = all_runs(load_specs())
    built: dict[str, dict[str, dict[str, Any]]] = {}
    for scale in ("demo", "paper"):
        params = load_params(params_path, {"scale": scale})
        built[scale] = {
            name: model_config(params, name, runs[f"zoo/{name}"].model_config)
            for name in sorted(REC_MODELS)
        }
    return [
        (scale, name, cfg)
        for scale, models in built.items()
        for name, cfg in models.items()
        if scale == "paper" or cfg != built["paper"][name]
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1])
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args()
    torch.manual_seed(0)
    images = torch.rand(args.batch, 3, 32, 128)
    cols = "".join(f"{f'{t} thr w/s':>12}" for t in args.threads)
    print(
        f"CPU: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; batch {args.batch}, "
        f"input 3x32x128, median of {args.repeats}"
    )
    print(f"{'scale':<7}{'recognizer':<12}{'params':>12}{cols}{'ms/word':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for scale, name, cfg in configs(args.params):
            path = Path(tmp) / f"{scale}-{name}.pt"
            model = build_model(name, cfg)
            atomic_save(model_payload(model, name, cfg), path)
            speeds = []
            for threads in args.threads:
                torch.set_num_threads(threads)
                read = recognizer_reader(name, path)
                speeds.append(words_per_second(read, images, args.repeats))
            row = "".join(f"{s:>12.1f}" for s in speeds)
            size = f"{count_parameters(model):,}"
            print(f"{scale:<7}{name:<12}{size:>12}{row}{1000 / speeds[0]:>10.2f}", flush=True)
    speeds = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        try:
            read = recognizer_reader("ppocr", None)
        except ImportError as err:
            print(f"ppocr: skipped ({err})")
            return
        speeds.append(words_per_second(read, images, args.repeats))
    row = "".join(f"{s:>12.1f}" for s in speeds)
    print(f"{'-':<7}{'ppocr':<12}{'(ONNX)':>12}{row}{1000 / speeds[0]:>10.2f}")


if __name__ == "__main__":
    main()
