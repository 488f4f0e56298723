"""Where the workflow's time went: Snakemake `benchmark:` files -> `results/timing.md`.

Every rule writes `logs/<work>/benchmarks/<rule>/<wildcards>.tsv` (the Snakefile's BENCH). After
a successful run the Snakefile's `onsuccess` hook calls :func:`write_timing`, which reads all of
them (the cost of everything the results stand on, not only what this invocation re-ran), writes
CPU minutes per rule and per paper, and returns the console summary: this invocation's wall time
and its ten most expensive jobs. A job counts towards every paper whose tables or figures read it
(`plan.paper_jobs`), so a paper's line is its cost when run alone; data generation, tracking
and the index are listed as shared.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from stisr.atomic_io import atomic_write_text
from stisr.papers.plan import Jobs, unslug

SHARED = "shared (data, tracking, index)"


@dataclass(frozen=True)
class JobTime:
    rule: str
    job: str  # the wildcards as a relative path: "tsrn.tsrn", "bicubic/zoo.crnn/textzoom_test"
    wall_s: float
    cpu_s: float  # psutil's CPU seconds; the wall time when the job ended before any sample
    max_rss_mb: float | None
    finished: float  # when the benchmark file was written (epoch seconds)

    @property
    def name(self) -> str:
        return f"{self.rule} {self.job}"


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "", "NA", "-") else None
    except ValueError:
        return None


def read_benchmark(path: Path, root: Path) -> JobTime:
    """One benchmark TSV (a header and one line per repeat; repeats are averaged)."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or _number(rows[0].get("s")) is None:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no 's' column with a value)")
    rel = path.relative_to(root).with_suffix("")
    walls = [_number(r.get("s")) or 0.0 for r in rows]
    cpus = [_number(r.get("cpu_time")) for r in rows]
    rss = [v for r in rows if (v := _number(r.get("max_rss"))) is not None]
    wall = sum(walls) / len(walls)
    cpu = sum(c if c is not None else w for c, w in zip(cpus, walls, strict=True)) / len(rows)
    return JobTime(
        rule=rel.parts[0],
        job="/".join(rel.parts[1:]),
        wall_s=wall,
        cpu_s=cpu,
        max_rss_mb=max(rss) if rss else None,
        finished=path.stat().st_mtime,
    )


def read_benchmarks(root: Path) -> list[JobTime]:
    """All benchmark files under `root`; an unreadable one is reported, never fatal."""
    jobs = []
    for path in sorted(Path(root).rglob("*.tsv")):
        try:
            jobs.append(read_benchmark(path, Path(root)))
        except (OSError, ValueError) as err:
            print(f"timing: skipped {err}")
    return jobs


def job_papers(job: JobTime, paper_jobs: Mapping[str, Jobs]) -> set[str]:
    """The papers whose tables or figures read this job's output."""
    parts = tuple(unslug(p) for p in job.job.split("/"))
    if job.rule in ("table", "figure"):
        return {job.job.split("/")[0]} & set(paper_jobs)
    field = {"train": "trains", "evaluate": "evaluations", "complexity": "complexities"}.get(
        job.rule
    )
    if field is None:
        return set()
    key = parts[0] if job.rule == "train" else parts
    return {p for p, jobs in paper_jobs.items() if key in getattr(jobs, field)}


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f}"


def _rule_rows(jobs: Iterable[JobTime]) -> list[str]:
    by_rule: dict[str, list[JobTime]] = {}
    for j in jobs:
        by_rule.setdefault(j.rule, []).append(j)
    rows = [
        "| rule | jobs | CPU min | wall min (sum) | mean wall s | max RSS MB |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for rule, js in sorted(by_rule.items(), key=lambda kv: -sum(j.cpu_s for j in kv[1])):
        rss = [j.max_rss_mb for j in js if j.max_rss_mb is not None]
        rows.append(
            f"| {rule} | {len(js)} | {_minutes(sum(j.cpu_s for j in js))} "
            f"| {_minutes(sum(j.wall_s for j in js))} | {sum(j.wall_s for j in js) / len(js):.1f} "
            f"| {f'{max(rss):.0f}' if rss else 'n/a'} |"
        )
    return rows


def _paper_rows(jobs: list[JobTime], paper_jobs: Mapping[str, Jobs]) -> list[str]:
    owners = {j.name: job_papers(j, paper_jobs) for j in jobs}
    rows = [
        "| paper | jobs | CPU min (run alone) | of which shared with another paper |",
        "|---|--:|--:|--:|",
    ]
    for paper in paper_jobs:
        mine = [j for j in jobs if paper in owners[j.name]]
        shared = [j for j in mine if len(owners[j.name]) > 1]
        rows.append(
            f"| {paper} | {len(mine)} | {_minutes(sum(j.cpu_s for j in mine))} "
            f"| {_minutes(sum(j.cpu_s for j in shared))} |"
        )
    rest = [j for j in jobs if not owners[j.name]]
    rows.append(f"| {SHARED} | {len(rest)} | {_minutes(sum(j.cpu_s for j in rest))} | |")
    return rows


def _top(jobs: Iterable[JobTime], n: int) -> list[JobTime]:
    return sorted(jobs, key=lambda j: -j.wall_s)[:n]


def timing_markdown(
    jobs: list[JobTime],
    paper_jobs: Mapping[str, Jobs],
    work: str,
    started: float | None,
    ended: float,
) -> str:
    total_cpu = sum(j.cpu_s for j in jobs)
    ran = [j for j in jobs if started is not None and j.finished >= started]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(ended))
    machine = f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    lines = [
        f"# Timing of `{work}`",
        "",
        f"Written by the workflow's `onsuccess` hook ({when}; {machine}) from the Snakemake"
        " benchmark files under `logs/<work>/benchmarks/`: the cost of every job the results"
        " stand on.",
        "",
        f"- all jobs: {len(jobs)}, {_minutes(total_cpu)} CPU minutes",
    ]
    if started is not None:
        lines.append(
            f"- this invocation: {_minutes(ended - started)} minutes wall, {len(ran)} jobs run"
        )
    lines += [
        "",
        "## Per paper",
        "",
        *_paper_rows(jobs, paper_jobs),
        "",
        "## Per rule",
        "",
        *_rule_rows(jobs),
    ]
    lines += ["", "## Most expensive jobs", "", "| job | wall s | CPU s |", "|---|--:|--:|"]
    lines += [f"| {j.name} | {j.wall_s:.0f} | {j.cpu_s:.0f} |" for j in _top(jobs, 10)]
    return "\n".join(lines) + "\n"


def console_summary(
    jobs: list[JobTime], started: float, ended: float, out: Path, top: int = 10
) -> str:
    ran = [j for j in jobs if j.finished >= started]
    lines = [f"workflow finished in {_minutes(ended - started)} min wall ({len(ran)} jobs run)"]
    if ran:
        lines.append(f"the {min(top, len(ran))} most expensive jobs of this run (wall s):")
        lines += [f"  {j.wall_s:8.0f}  {j.name}" for j in _top(ran, top)]
    lines.append(f"CPU minutes per paper and per rule: {out}")
    return "\n".join(lines)


def write_timing(
    bench_root: Path, out: Path, paper_jobs: Mapping[str, Jobs], work: str, started: float | None
) -> str:
    """Write `out` (atomically) and return the console summary of this invocation."""
    ended = time.time()
    jobs = read_benchmarks(bench_root)
    atomic_write_text(Path(out), timing_markdown(jobs, paper_jobs, work, started, ended))
    return console_summary(jobs, started if started is not None else ended, ended, Path(out))
