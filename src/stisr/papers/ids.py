"""Every id a command accepts, read from the specs and registries (never a second list).

The CLI lists these in its help and checks a request against them before any work, so a typo
gives one line naming the bad value and the valid ones instead of a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable

from stisr.papers.spec import PSEUDO_SR, all_runs, load_common, load_specs


class UnknownId(ValueError):
    """An id that names nothing; the message is one line with the valid ids."""


def check(kind: str, value: str, valid: Iterable[str], of: str = "") -> str:
    """`value` if it is in `valid`, else UnknownId('unknown <kind> <value><of>; valid: ...')."""
    choices = list(valid)
    if value not in choices:
        raise UnknownId(f"unknown {kind} {value!r}{of}; valid: {', '.join(choices)}")
    return value


def check_run(value: str, extra: Iterable[str] = ()) -> str:
    """A run id (or one of `extra`); a known paper's unknown run lists that paper's runs only."""
    paper = value.split("/", 1)[0]
    if "/" in value and paper in load_specs() and value not in runs():
        return check("run", value, [r for r in runs() if r.startswith(f"{paper}/")], f" of {paper}")
    return check("run", value, [*extra, *runs()])


def papers() -> list[str]:
    return sorted(load_specs())


def runs(task: str | None = None) -> list[str]:
    """Declared run ids (`<paper>/<run>`), optionally of one task (sr | rec)."""
    return sorted(r for r, s in all_runs(load_specs()).items() if task in (None, s.task))


def tables(paper: str) -> list[str]:
    return [t.id for t in load_specs()[check("paper", paper, papers())].tables]


def figures(paper: str) -> list[str]:
    return [f.id for f in load_specs()[check("paper", paper, papers())].figures]


def testsets() -> list[str]:
    return sorted(load_common().testsets)


def srs() -> list[str]:
    """What may produce the image a recognizer reads: pseudo inputs, bicubic, SR runs."""
    return [*PSEUDO_SR, *runs("sr")]


def recognizers(with_none: bool = True) -> list[str]:
    """Catalogue recognizers (common.yaml), recognition runs, and `none` (no recognizer)."""
    return [*(["none"] if with_none else []), *sorted(load_common().recognizers), *runs("rec")]


def recognizer_models() -> list[str]:
    """What `stisr recognize` reads with: registry recognizers plus external ones (ppocr)."""
    from stisr.models.registry import REC_MODELS

    external = sorted(r["external"] for r in load_common().recognizers.values() if "external" in r)
    return [*sorted(REC_MODELS), *external]


def sources(kind: str | None = None) -> list[str]:
    """Fetch-registry names (src/stisr/data/sources.yaml), optionally of one kind."""
    from stisr.data.source_registry import load_sources

    return sorted(n for n, s in load_sources().items() if kind in (None, s.kind))
