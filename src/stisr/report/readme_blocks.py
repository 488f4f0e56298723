"""The README's generated tables: what each paper can train and compute today (from the planner),
the jobs of the full SLURM replication (from a Snakemake dry run) and its estimated GPU hours
(from docs/gpu_hours.md, which benchmarks/gpu_hours.py writes).

`python -m stisr.report.readme_blocks` rewrites the blocks between
`<!-- generated: <name> -->` and `<!-- end generated: <name> -->` in README.md; `--check` exits 1
when the README disagrees with the code (a test runs it), so no number there is typed by hand.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from stisr.atomic_io import atomic_write_text
from stisr.config import load_params
from stisr.papers import plan
from stisr.papers.spec import PaperSpec, all_runs, load_specs

REPO = Path(__file__).resolve().parents[3]
REPLICATION = {"source": "official", "scale": "paper"}  # what the SLURM profile runs


def _replication_params(repo: Path) -> dict[str, Any]:
    params = load_params(repo / "params.yaml")
    return {**params, **REPLICATION, "papers": list(load_specs())}


def _cell_counts(params: Mapping[str, Any], spec: PaperSpec, runs) -> tuple[int, int]:
    """(cells with a job, cells with a paper number) over the paper's tables."""
    planned = total = 0
    for table in spec.tables:
        for row in table.rows:
            if row.derive:
                continue
            for col, paper in zip(table.columns, row.paper, strict=False):
                if paper is None or col.extra:
                    continue
                total += 1
                planned += plan.cell_status(params, table.cell_source(row, col), runs) is None
    return planned, total


def status_block(repo: Path = REPO) -> str:
    """Per paper: runs that train on official data at paper scale, runs still blocked (and the
    commonest reason), and the paper cells that have a job."""
    params = _replication_params(repo)
    specs = load_specs()
    runs = all_runs(specs)
    lines = [
        "| paper | runs that train | blocked runs (main reason) | paper cells with a job |",
        "|---|---|---|---|",
    ]
    order = [p for p in load_params(repo / "params.yaml")["papers"] if p in specs]
    for name in order + sorted(set(specs) - set(order)):
        spec = specs[name]
        problems = {r: plan.run_problems(params, r, runs) for r in runs if runs[r].paper == name}
        blocked = {r: why for r, why in problems.items() if why}
        reasons: dict[str, int] = {}
        for run_id, why in blocked.items():
            reason = why[0].removeprefix(f"{run_id}: ").replace(run_id, "the run")
            reasons[reason] = reasons.get(reason, 0) + 1
        main = max(reasons, key=reasons.__getitem__) if reasons else ""
        main = f" ({main})" if main else ""
        planned, total = _cell_counts(params, spec, runs)
        cells = f"{planned} / {total}" if total else "- (no paper table)"
        trains = f"{len(problems) - len(blocked)} / {len(problems)}"
        lines.append(f"| {name} | {trains} | {len(blocked)}{main} | {cells} |")
    return "\n".join(lines)


def slurm_block(repo: Path = REPO) -> str:
    """Jobs per rule of `snakemake -n` at the SLURM profile's setting."""
    cmd = [
        sys.executable, "-m", "snakemake", "-n", "--cores", "all", "--quiet", "rules",
        "--config", *(f"{k}={v}" for k, v in REPLICATION.items()),
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-2000:]}")
    stats = out.stdout.split("Job stats:", 1)[-1].split("\ntotal", 1)  # the first table only
    counts = re.findall(r"^(\S+)\s+(\d+)$", stats[0], flags=re.M)
    if len(stats) < 2 or not counts:
        raise RuntimeError(f"no job stats in the output of {' '.join(cmd)}:\n{out.stdout[-2000:]}")
    lines = ["| rule | jobs |", "|---|---|"]
    lines += [f"| `{rule}` | {n} |" for rule, n in counts]
    lines.append(f"| total | {sum(int(n) for _, n in counts)} |")
    return "\n".join(lines)


def gpu_hours_block(repo: Path = REPO) -> str:
    """The per-paper table of docs/gpu_hours.md (written by benchmarks/gpu_hours.py)."""
    path = repo / "docs" / "gpu_hours.md"
    section = path.read_text().split("\n## Per paper\n", 1)
    rows = [ln for ln in section[-1].split("\n## ", 1)[0].splitlines() if ln.startswith("|")]
    if len(section) < 2 or not rows:
        raise RuntimeError(f"{path}: no '## Per paper' table; run `python benchmarks/gpu_hours.py`")
    return "\n".join(rows)


BLOCKS: dict[str, Callable[[Path], str]] = {
    "status": status_block,
    "slurm_jobs": slurm_block,
    "gpu_hours": gpu_hours_block,
}


def render(text: str, repo: Path = REPO, names: tuple[str, ...] = tuple(BLOCKS)) -> str:
    """`text` with each named generated block replaced by what the code produces now."""
    for name in names:
        begin, end = f"<!-- generated: {name} -->", f"<!-- end generated: {name} -->"
        pattern = re.compile(re.escape(begin) + r"\n(?:.*?\n)?" + re.escape(end), flags=re.S)
        if not pattern.search(text):
            raise ValueError(f"README.md: no block {begin} ... {end}")
        block = f"{begin}\n{BLOCKS[name](repo)}\n{end}"
        text = pattern.sub(lambda _m, b=block: b, text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md")
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    new = render(text, args.readme.resolve().parent)
    if args.check:
        if new != text:
            print(f"{args.readme}: generated blocks are stale; run "
                  "`python -m stisr.report.readme_blocks`", file=sys.stderr)  # fmt: skip
            return 1
        return 0
    if new != text:
        atomic_write_text(args.readme, new)
    print(f"generated blocks of {args.readme} are up to date")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
