"""Words for the embedded synthetic data: what the generated scene text says.

Split from :mod:`stisr.data.synth` so that the vocabulary (wordfreq words, numbers, case and
punctuation variants) can be read and changed apart from rendering and dataset assembly. The
order of the random draws is part of the embedded data's bytes: do not reorder them.
"""

from __future__ import annotations

import functools
import re

import numpy as np

__all__ = ["sample_text", "word_list"]


@functools.lru_cache(maxsize=1)
def word_list(n: int = 30000) -> tuple[str, ...]:
    """The ``n`` most frequent English words (wordfreq), letters and apostrophes only."""
    try:
        import wordfreq
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImportError("synthetic data needs the 'wordfreq' package") from exc
    keep = re.compile(r"[a-z][a-z']*[a-z]|[a-z]")
    words = tuple(w for w in wordfreq.top_n_list("en", n) if keep.fullmatch(w) and len(w) <= 14)
    if not words:
        raise RuntimeError("wordfreq returned no usable English words")
    return words


_PUNCT_SUFFIX = ("!", ".", ",", ":", "?", "'s", "!!")
_JOINERS = ("-", "&", "'", ".", "/")


def _number(rng: np.random.Generator) -> str:
    kind = int(rng.integers(6))
    if kind == 0:
        return str(int(rng.integers(0, 10 ** int(rng.integers(1, 5)))))
    if kind == 1:
        return f"${int(rng.integers(1, 200))}.{int(rng.integers(0, 100)):02d}"
    if kind == 2:
        return str(int(rng.integers(1950, 2030)))
    if kind == 3:
        return f"{int(rng.integers(100, 1000))}-{int(rng.integers(1000, 10000))}"
    if kind == 4:
        return f"{int(rng.integers(1, 100))}%"
    return f"{int(rng.integers(1, 24))}:{int(rng.integers(0, 60)):02d}"


def _case(word: str, rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.40:
        return word
    if r < 0.70:
        return word[:1].upper() + word[1:]
    if r < 0.97:
        return word.upper()
    return "".join(c.upper() if rng.random() < 0.5 else c for c in word)


def sample_text(rng: np.random.Generator) -> str:
    """A scene-text-like word: mostly dictionary words in mixed case, some numbers and
    punctuation. Always keeps at least one character of the evaluation alphabet."""
    words = word_list()
    r = rng.random()
    if r < 0.08:
        return _number(rng)
    # Half the words from the 2,000 most common (short, like signs), half from the long tail.
    top = 2000 if rng.random() < 0.5 else len(words)
    word = _case(words[int(rng.integers(min(top, len(words))))], rng)
    r = rng.random()
    if r < 0.05:
        word += _PUNCT_SUFFIX[int(rng.integers(len(_PUNCT_SUFFIX)))]
    elif r < 0.08:
        other = _case(words[int(rng.integers(500))], rng)
        word = word + _JOINERS[int(rng.integers(len(_JOINERS)))] + other
    elif r < 0.11:
        word = word + str(int(rng.integers(0, 100)))
    return word[:24]
