"""Word accuracy and its size-weighted average, the headline metric of every paper replicated here.

Predictions and labels are compared after `stisr.charset.normalize_label` (lower case, [0-9a-z]
only), so case and punctuation never count (docs/protocols.md, "Word accuracy"). A label that
normalizes to the empty string is matched by an empty (normalized) prediction, as in the TextZoom
evaluation code, which compares the filtered strings directly.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

from stisr.charset import normalize_label

# Test-subset sizes of TextZoom; the "average" column of the papers weights subsets by these.
TEXTZOOM_TEST_SIZES: dict[str, int] = {"easy": 1619, "medium": 1411, "hard": 1343}


def correct_mask(preds: Sequence[str], labels: Sequence[str]) -> list[bool]:
    """Per-sample correctness after normalization (kept for figures and error analysis)."""
    if isinstance(preds, str) or isinstance(labels, str):
        raise TypeError("preds and labels must be sequences of strings, not a single string")
    if len(preds) != len(labels):
        raise ValueError(f"preds has {len(preds)} entries but labels has {len(labels)}")
    return [normalize_label(p) == normalize_label(t) for p, t in zip(preds, labels, strict=True)]


def word_accuracy(preds: Sequence[str], labels: Sequence[str]) -> float:
    """Fraction in [0, 1] of exactly matching normalized words; an empty set is an error."""
    mask = correct_mask(preds, labels)
    if not mask:
        raise ValueError("word_accuracy needs at least one prediction/label pair")
    return sum(mask) / len(mask)


def weighted_average(values: Mapping[str, float], sizes: Mapping[str, int]) -> float:
    """Average of per-subset `values` weighted by subset `sizes` (keys of `sizes` may be extra).

    With `TEXTZOOM_TEST_SIZES` this is the papers' (easy*1619 + medium*1411 + hard*1343) / 4373.
    """
    if not values:
        raise ValueError("weighted_average needs at least one subset value")
    missing = [name for name in values if name not in sizes]
    if missing:
        raise KeyError(f"subset(s) {missing} have no size; known subsets: {sorted(sizes)}")
    total = 0
    acc = 0.0
    for name, value in values.items():
        size = sizes[name]
        if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 0:
            raise ValueError(f"size of subset {name!r} must be a non-negative int, got {size!r}")
        total += int(size)
        acc += float(value) * size
    if total == 0:
        raise ValueError(f"subsets {sorted(values)} have total size 0")
    return acc / total


def wrong_char_positions(pred: str, label: str, *, normalize: bool = True) -> list[int]:
    """Indices into the (normalized) prediction of characters a minimal edit alignment marks wrong.

    A character is wrong when the Levenshtein alignment substitutes it or treats it as an
    insertion; characters missing from the prediction have no position and are not reported.
    Draw `normalize_label(pred)` when using these indices (or pass `normalize=False`). Ties are
    broken deterministically from the end of the strings: match, then substitution, then
    insertion, then deletion.
    """
    if normalize:
        pred, label = normalize_label(pred), normalize_label(label)
    n, m = len(pred), len(label)
    # dist[i][j]: edit distance between pred[:i] and label[:j]
    dist = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        dist[i][0] = i
    for j in range(m + 1):
        dist[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost = 0 if pred[i - 1] == label[j - 1] else 1
            dist[i][j] = min(dist[i - 1][j - 1] + cost, dist[i - 1][j] + 1, dist[i][j - 1] + 1)
    wrong: list[int] = []
    i, j = n, m
    while i > 0 or j > 0:
        here = dist[i][j]
        if i > 0 and j > 0 and pred[i - 1] == label[j - 1] and here == dist[i - 1][j - 1]:
            i, j = i - 1, j - 1
        elif i > 0 and j > 0 and here == dist[i - 1][j - 1] + 1:
            wrong.append(i - 1)
            i, j = i - 1, j - 1
        elif i > 0 and here == dist[i - 1][j] + 1:
            wrong.append(i - 1)
            i -= 1
        else:
            j -= 1
    return sorted(wrong)
