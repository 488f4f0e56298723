"""The LR benchmark sets derived from the STR benchmarks (`stisr degrade <kind>`).

CommonLR (TSRN), LEMMA's and KD-LTR's degraded sets and IMAGE's IC15-352 are all "select some STR
benchmark images, maybe degrade them": one table (`LR_SETS`) and one function say how, so the CLI
and the tests derive them the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from stisr.data.degrade import degrade, is_small, sample_rng

STR_BENCHMARKS = ("ic13", "ic15", "iiit5k", "svt", "svtp", "cute80")


@dataclass(frozen=True)
class LrSet:
    """How an LR benchmark set is derived from the STR benchmarks."""

    subsets: tuple[str, ...]
    keep: Callable[[Image.Image], bool]  # which source images enter the set
    pipeline: str | None = None  # degradation applied to them (seeded per image)
    options: dict[str, Any] = field(default_factory=dict)
    merge: bool = False  # one subset `all` instead of one per benchmark


def _all(img: Image.Image) -> bool:
    return True


def _short(img: Image.Image) -> bool:  # IMAGE's IC15-352: height below 16 pixels
    return img.height < 16


# is_small: smaller than 64x16 (TSRN CommonLR) / 16x64 (LEMMA), box rule
LR_SETS: dict[str, LrSet] = {
    "commonlr": LrSet(STR_BENCHMARKS, is_small, merge=True),
    "lemma": LrSet(STR_BENCHMARKS, is_small, "blur_noise", {"variant": "lemma"}),
    "kdltr": LrSet(STR_BENCHMARKS, _all, "blur_noise", {"variant": "kdltr"}),
    "ic15_352": LrSet(("ic15",), _short, merge=True),
}


class LrSetError(ValueError):
    """An LR set request that cannot be met (unknown kind, missing source benchmark)."""


def derived_samples(
    spec: LrSet, name: str, source: Path, seed: int
) -> Iterator[tuple[Image.Image, str]]:
    """(image, label) of benchmark `name` that enter the set; image i's rng is (seed, name, i)."""
    from stisr.data.lmdb_io import LmdbReader

    with LmdbReader(Path(source)) as reader:
        for i in range(len(reader)):
            img = reader.image("image", i)
            if not spec.keep(img):
                continue
            if spec.pipeline:  # independent of which images came before
                rng = sample_rng(seed + STR_BENCHMARKS.index(name), i)
                img = degrade(img, spec.pipeline, rng, **spec.options)
            yield img, reader.label(i)


def make_lr_benchmark(kind: str, sources: Mapping[str, Path | str], out: Path, seed: int) -> int:
    """Write LR set `kind` under `out` (one LMDB per benchmark, or `all`); returns the count.

    `seed` is the embedded-data seed + 7, as the workflow has always derived it.
    """
    from stisr.data.lmdb_io import write_str_lmdb

    if kind not in LR_SETS:
        raise LrSetError(f"unknown LR set {kind!r}; valid: {', '.join(sorted(LR_SETS))}")
    spec = LR_SETS[kind]
    missing = [s for s in spec.subsets if s not in sources]
    if missing:
        raise LrSetError(f"degrade {kind}: no --src given for {', '.join(missing)}")
    out = Path(out)

    def samples(name: str) -> Iterator[tuple[Image.Image, str]]:
        return derived_samples(spec, name, Path(sources[name]), seed)

    if spec.merge:
        return write_str_lmdb(out / "all", (x for name in spec.subsets for x in samples(name)))
    return sum(write_str_lmdb(out / name, samples(name)) for name in spec.subsets)
