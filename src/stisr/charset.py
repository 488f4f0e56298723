"""Label normalization and character sets, defined once for the whole repository.

Every paper evaluates case-insensitive alphanumeric word accuracy: both the prediction and the
label are lower-cased and stripped of anything outside [0-9a-z]
(docs/protocols.md#word-accuracy).
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

EVAL_CHARSET = string.digits + string.ascii_lowercase  # 36 characters
# The 94 printable characters of the PARSeq/ASTER-style case-sensitive tokenizers.
FULL_CHARSET = string.digits + string.ascii_lowercase + string.ascii_uppercase + string.punctuation

_NOT_EVAL = re.compile(r"[^0-9a-z]")


def normalize_label(text: str) -> str:
    """Lower-case and drop every character outside the 36-character evaluation alphabet."""
    return _NOT_EVAL.sub("", text.lower())


@dataclass(frozen=True)
class Charset:
    """A CTC/attention alphabet: index 0 is reserved (CTC blank or end-of-sequence)."""

    chars: str = EVAL_CHARSET
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars):
            raise ValueError(f"charset has duplicate characters: {self.chars!r}")
        object.__setattr__(self, "_index", {c: i + 1 for i, c in enumerate(self.chars)})

    @property
    def num_classes(self) -> int:
        """Alphabet size plus the reserved index 0."""
        return len(self.chars) + 1

    def filter(self, text: str) -> str:
        """Keep only characters of this alphabet (lower-casing first when it has no capitals)."""
        if not any(c.isupper() for c in self.chars):
            text = text.lower()
        return "".join(c for c in text if c in self._index)

    def encode(self, text: str) -> list[int]:
        """Indices (1-based) of `text`; raises on characters outside the alphabet."""
        try:
            return [self._index[c] for c in text]
        except KeyError as err:
            raise ValueError(
                f"character {err.args[0]!r} of {text!r} is not in the charset"
            ) from None

    def decode(self, indices: Iterable[int]) -> str:
        """Indices back to text; 0 and out-of-range indices are dropped."""
        n = len(self.chars)
        return "".join(self.chars[i - 1] for i in indices if 0 < i <= n)

    def ctc_greedy(self, best_path: Sequence[int]) -> str:
        """Collapse repeats, then drop blanks (index 0): the standard greedy CTC decoding."""
        out: list[int] = []
        prev = 0
        for i in best_path:
            if i != prev and i != 0:
                out.append(i)
            prev = i
        return self.decode(out)
