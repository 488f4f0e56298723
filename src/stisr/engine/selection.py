"""Which weights a run keeps: the last ones (the papers) or the best-scoring ones (the code).

The TextZoom / TATT / LEMMA training code evaluates the SR model on the TextZoom *test* subsets
during training and keeps the checkpoint with the best summed word accuracy, read by CRNN
(docs/protocols.md, quirks). `test` reproduces that protocol; `validation` applies the same rule
to images held out from the training set, so no test image influences the model; `last` (the
default) keeps the final weights, which is what the papers describe.

Scoring draws no random numbers (plain slicing, no DataLoader), so evaluating during training
leaves the training RNG stream, and with it exact resumption, untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from stisr.data.datasets import collate
from stisr.metrics.accuracy import correct_mask

SELECTIONS = ("last", "validation", "test")
Reader = Callable[[torch.Tensor], list[str]]


def split_holdout(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """(training part, held-out part): a seeded `fraction` of the images, stable across runs."""
    n = len(data)  # type: ignore[arg-type]
    n_holdout = round(fraction * n)
    if not 0 < n_holdout < n:
        raise ValueError(
            f"params.yaml train.holdout={fraction} holds out {n_holdout} of {n} training images; "
            "it must leave at least one image on each side"
        )
    held = np.sort(np.random.default_rng([seed, 7]).choice(n, size=n_holdout, replace=False))
    keep = np.setdiff1d(np.arange(n), held)
    return Subset(data, keep.tolist()), Subset(data, held.tolist())


@dataclass
class Selector:
    """Scores an SR model by the summed accuracy of `reader` on its SR output of each set."""

    sets: Mapping[str, Dataset]
    reader: Reader
    batch_size: int = 64

    @torch.no_grad()
    def score(self, model: nn.Module, device: str = "cpu") -> dict[str, float]:
        """{'<set>': accuracy, ..., 'score': sum of the accuracies} (the code's criterion)."""
        was_training = model.training
        model.eval()
        result: dict[str, float] = {}
        try:
            for name, data in self.sets.items():
                correct: list[bool] = []
                for start in range(0, len(data), self.batch_size):  # type: ignore[arg-type]
                    idx = range(start, min(start + self.batch_size, len(data)))  # type: ignore[arg-type]
                    batch = collate([data[i] for i in idx])
                    batch = {k: v.to(device) if k == "lr" else v for k, v in batch.items()}
                    sr = model.infer(batch)["sr"][:, :3].clamp(0, 1)
                    correct += correct_mask(self.reader(sr), batch["label"])
                result[name] = float(np.mean(correct)) if correct else 0.0
        finally:
            model.train(was_training)
        result["score"] = sum(result.values())
        return result


def better(new: Mapping[str, float], best: Mapping[str, float] | None) -> bool:
    """Strictly better: ties keep the earlier checkpoint, as the official code does."""
    return best is None or new["score"] > best["score"]
