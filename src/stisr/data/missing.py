"""How to produce a dataset folder that is not there.

A missing train or test folder is almost always a step that was not run (or a source that was not
downloaded), so the error says which command makes it instead of only "not found". The layout is
the one of ``stisr.papers.plan.data_root``: ``data/embedded/<scale>/...`` (``synth``, ``degrade``)
and ``data/official/<dest>`` (``fetch``, ``src/stisr/data/sources.yaml``).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

__all__ = ["how_to_make"]


def how_to_make(path: Path | str) -> str:
    """One sentence naming the command that produces ``path`` (a dataset folder)."""
    parts = Path(path).parts
    if "official" in parts:
        i = len(parts) - 1 - parts[::-1].index("official")
        return _official(Path(*parts[: i + 1]), parts[i + 1 :])
    if "embedded" in parts:
        i = len(parts) - 1 - parts[::-1].index("embedded")
        rest = parts[i + 1 :]
        depth = 3 if len(rest) > 1 and rest[1] == "str_lr" else 2  # <scale>/<set>[/<kind>]
        target = Path(*parts[: i + 1], *rest[:depth])
        return (
            f"generate it with `snakemake --cores all {target}` (embedded data: the `synth` and "
            "`degrade_str` rules, sizes from params.yaml `embedded.sizes`)"
        )
    return (
        "expected an LMDB folder (data.mdb) or an image folder with gt.txt; the pipeline writes "
        "datasets under data/<source>/ (`snakemake --cores all`)"
    )


def _official(root: Path, rest: tuple[str, ...]) -> str:
    if len(rest) > 0 and rest[0] == "str_lr":
        target = Path(root, *rest[:2])
        return f"derive it with `snakemake --cores all {target}` (the `degrade_str` rule)"
    from stisr.data.source_registry import load_sources

    rel = PurePosixPath(*rest) if rest else PurePosixPath(".")
    for src in load_sources().values():
        if rel.is_relative_to(src.dest):
            how = f"download it with `stisr fetch {src.name} --root {root}`"
            if not src.download_urls and src.manual:
                how += f"; it needs a manual step: {src.manual}"
            return how
    return f"no entry of src/stisr/data/sources.yaml provides it under {root}"
