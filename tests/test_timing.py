"""results/timing.md from Snakemake benchmark files: per rule, per paper, the costliest jobs."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from stisr.papers.plan import Jobs
from stisr.report.timing import job_papers, read_benchmark, read_benchmarks, write_timing

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _bench(root: Path, rel: str, wall: float, cpu: str = "NA", rss: str = "NA") -> None:
    path = root / f"{rel}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{wall}\t0:00:01\t{rss}\tNA\tNA\tNA\tNA\tNA\tNA\t{cpu}\n")


PAPERS = {
    "tsrn": Jobs(("tsrn/tsrn", "zoo/crnn"), (("tsrn/tsrn", "zoo/crnn", "textzoom_test"),), ()),
    "zoo": Jobs(("zoo/crnn",), (), (("none", "zoo/crnn"),)),
}


def test_a_benchmark_without_cpu_samples_counts_its_wall_time(tmp_path):
    _bench(tmp_path, "train/tsrn.tsrn", 12.5)
    job = read_benchmark(tmp_path / "train/tsrn.tsrn.tsv", tmp_path)
    assert (job.rule, job.job, job.wall_s, job.cpu_s, job.max_rss_mb) == (
        "train",
        "tsrn.tsrn",
        12.5,
        12.5,
        None,
    )
    _bench(tmp_path, "train/zoo.crnn", 10.0, cpu="19.0", rss="300.5")
    job = read_benchmark(tmp_path / "train/zoo.crnn.tsv", tmp_path)
    assert (job.cpu_s, job.max_rss_mb) == (19.0, 300.5)


def test_jobs_are_attributed_to_every_paper_that_reads_them(tmp_path):
    _bench(tmp_path, "train/zoo.crnn", 1)
    _bench(tmp_path, "train/tsrn.tsrn", 1)
    _bench(tmp_path, "evaluate/tsrn.tsrn/zoo.crnn/textzoom_test", 1)
    _bench(tmp_path, "complexity/none/zoo.crnn", 1)
    _bench(tmp_path, "table/zoo/complexity", 1)
    _bench(tmp_path, "synth_textzoom/textzoom", 1)
    owners = {j.name: job_papers(j, PAPERS) for j in read_benchmarks(tmp_path)}
    assert owners == {
        "train zoo.crnn": {"tsrn", "zoo"},
        "train tsrn.tsrn": {"tsrn"},
        "evaluate tsrn.tsrn/zoo.crnn/textzoom_test": {"tsrn"},
        "complexity none/zoo.crnn": {"zoo"},
        "table zoo/complexity": {"zoo"},
        "synth_textzoom textzoom": set(),
    }


def test_timing_report_sums_per_paper_and_rule_and_lists_this_runs_top_jobs(tmp_path, capsys):
    bench = tmp_path / "bench"
    _bench(bench, "train/zoo.crnn", 120, cpu="118")
    _bench(bench, "train/tsrn.tsrn", 60, cpu="60")
    _bench(bench, "synth_textzoom/textzoom", 6, cpu="6")
    (bench / "broken").mkdir()
    (bench / "broken/x.tsv").write_text("not a benchmark\n")
    out = tmp_path / "results/timing.md"
    summary = write_timing(bench, out, PAPERS, "embedded-demo", started=time.time() - 200)
    text = out.read_text()
    assert "| tsrn | 2 | 3.0 | 2.0 |" in text  # both trainings; CRNN's 118 s is shared with zoo
    assert "| zoo | 1 | 2.0 | 2.0 |" in text
    assert "| shared (data, tracking, index) | 1 | 0.1 | |" in text
    assert "| train | 2 | 3.0 | 3.0 | 90.0 | n/a |" in text
    assert summary.splitlines()[0].startswith("workflow finished in 3.3 min wall (3 jobs run)")
    assert summary.splitlines()[2].split() == ["120", "train", "zoo.crnn"]
    assert "broken/x.tsv" in capsys.readouterr().out


@pytest.mark.parametrize("started", [None])
def test_no_start_time_still_writes_the_totals(tmp_path, started):
    _bench(tmp_path / "b", "index/index", 1)
    write_timing(tmp_path / "b", tmp_path / "t.md", PAPERS, "w", started)
    assert "- all jobs: 1" in (tmp_path / "t.md").read_text()
