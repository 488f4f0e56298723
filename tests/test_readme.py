"""The README's tables are generated: a test fails when they disagree with the code."""

from __future__ import annotations

import pytest

from stisr.report import readme_blocks

from .conftest import REPO


def test_readme_generated_blocks_match_the_code():
    """The per-paper status (planner) and the SLURM job table (`snakemake -n`) are current."""
    text = (REPO / "README.md").read_text()
    assert readme_blocks.render(text, REPO) == text, (
        "README.md is stale: run `python -m stisr.report.readme_blocks`"
    )


def test_render_replaces_only_the_named_block(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(readme_blocks.BLOCKS, "status", lambda _repo: "| a |\n|---|")
    text = "intro\n<!-- generated: status -->\nold\n<!-- end generated: status -->\nrest\n"
    new = readme_blocks.render(text, REPO, ("status",))
    assert new == text.replace("\nold\n", "\n| a |\n|---|\n")
    with pytest.raises(ValueError, match="no block <!-- generated: slurm_jobs -->"):
        readme_blocks.render(text, REPO, ("slurm_jobs",))


def test_status_counts_every_declared_run():
    from stisr.papers.spec import load_specs

    table = readme_blocks.status_block(REPO)
    specs = load_specs()
    for paper, spec in specs.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {paper} |"))
        assert f"/ {len(spec.runs)} |" in row, row
