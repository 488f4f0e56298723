"""Words per second of every recognizer on this machine's CPU (paper-scale architectures).

Prints one line per recognizer: batch size, words/s and ms/word for inference on 128x32 RGB word
images (the size STISR outputs), including each recognizer's own preprocessing. Weights do not
change the speed, so randomly initialised models are timed.

    python benchmarks/recognizer_speed.py [--batch 32] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from stisr.models.registry import REC_MODELS, build_model


def words_per_second(read, images: torch.Tensor, repeats: int) -> float:
    read(images[:2])  # warm-up (lazy init, allocator)
    start = time.perf_counter()
    for _ in range(repeats):
        read(images)
    return repeats * len(images) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images = torch.rand(args.batch, 3, 32, 128)
    print(f"CPU threads: {args.threads}, batch {args.batch}, input 3x32x128")
    print(f"{'recognizer':<12}{'words/s':>10}{'ms/word':>10}")
    for name in sorted(REC_MODELS):
        model = build_model(name, {}).eval()

        @torch.inference_mode()
        def read(x: torch.Tensor, model=model) -> list[str]:
            return model.decode(model(model.preprocess(x)))

        wps = words_per_second(read, images, args.repeats)
        print(f"{name:<12}{wps:>10.1f}{1000 / wps:>10.2f}")
    try:
        from stisr.recognizers.ppocr import PPOCRRecognizer
    except ImportError as err:
        print(f"ppocr: skipped ({err})")
        return
    judge = PPOCRRecognizer(num_threads=args.threads)
    wps = words_per_second(judge.recognize_tensor, images, args.repeats)
    print(f"{'ppocr':<12}{wps:>10.1f}{1000 / wps:>10.2f}")


if __name__ == "__main__":
    main()
