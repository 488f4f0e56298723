"""The GPU-hour estimate (benchmarks/gpu_hours.py on `stisr.metrics.training_cost`) and the SLURM
runtimes the train rule reads."""

from __future__ import annotations

import importlib.util
import math
import re
import sys

import pytest
import yaml

from stisr.metrics.training_cost import MAX_MINUTES, MIN_MINUTES, minutes_for
from stisr.papers.plan import slug
from stisr.papers.spec import all_runs, load_specs
from stisr.slurm_runtimes import DEFAULT_MINUTES, RUNTIMES_PATH, load_runtimes, train_runtime

from .conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_hours.py"


@pytest.fixture(scope="module")
def gpu_hours():
    spec = importlib.util.spec_from_file_location("gpu_hours", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_hours"] = module  # as a script run has it (a dataclass looks it up)
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("gpu_hours", None)


def _table_rows(markdown: str, header_start: str) -> dict[str, dict[str, str]]:
    """First-cell -> {column: cell} of the markdown table whose header starts so."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = dict(zip(header, cells, strict=True))
    return rows


def test_smoke_estimate_has_a_row_per_run_and_runtimes_follow_the_formula(gpu_hours, tmp_path):
    rows = gpu_hours.main(["--smoke", "--out", str(tmp_path)])
    assert [r.run for r in rows] == list(gpu_hours.SMOKE_RUNS)
    markdown = (tmp_path / "gpu_hours.md").read_text()
    # the header says how it was made and that the rate is assumed, not measured
    assert "`python benchmarks/gpu_hours.py --smoke --out <out>`" in markdown
    assert "Assumption, not a measurement" in markdown and "15 TFLOP/s" in markdown
    table = _table_rows(markdown, "| run | slug |")
    assert set(table) == set(gpu_hours.SMOKE_RUNS)
    runtimes = yaml.safe_load((tmp_path / "runtimes.yaml").read_text())["train"]
    assert set(runtimes) == {slug(r) for r in gpu_hours.SMOKE_RUNS}
    for row in rows:
        cells = table[row.run]
        assert cells["slug"] == f"`{row.slug}`"
        assert int(cells["optimizer steps"].replace(",", "")) == row.steps > 0
        assert float(cells["train GFLOP/sample"]) > 0
        printed = float(cells["GPU hours"])
        assert printed > 0 and printed == pytest.approx(row.hours(15.0), rel=5e-3)
        minutes = runtimes[row.slug]
        assert 60 <= minutes <= 2880
        assert minutes == min(2880, max(60, math.ceil(row.hours(15.0) * 60 * 3)))
        assert int(cells["SLURM minutes"]) == minutes
        # what the table prints reproduces the limit up to its 3 significant digits
        assert abs(min(2880, max(60, math.ceil(printed * 180))) - minutes) <= max(1, minutes // 100)
    # steps = epochs x (17,367 // batch), the engine's total_steps on TextZoom's train set
    tsrn = next(r for r in rows if r.run == "tsrn/tsrn")
    assert tsrn.steps == 500 * (17_367 // 512)


def test_another_rate_scales_the_hours(gpu_hours, tmp_path):
    rows = gpu_hours.main(["--runs", "tsrn/srcnn", "--tflops", "30", "--out", str(tmp_path)])
    (row,) = rows
    assert row.hours(30.0) == pytest.approx(row.hours(15.0) / 2)
    assert "30 TFLOP/s" in (tmp_path / "gpu_hours.md").read_text()


def test_measure_times_one_cpu_step(gpu_hours, tmp_path):
    (row,) = gpu_hours.main(["--runs", "tsrn/srcnn", "--measure", "--out", str(tmp_path)])
    assert row.cpu_s is not None and row.cpu_s > 0
    table = _table_rows((tmp_path / "gpu_hours.md").read_text(), "| run | slug |")
    assert float(table["tsrn/srcnn"]["CPU s/sample (measured)"]) > 0


def test_minutes_follow_the_formula_within_the_partition_limits():
    assert (MIN_MINUTES, MAX_MINUTES) == (60, 2880)
    assert minutes_for(0.0) == 60
    assert minutes_for(1.0) == 180  # 1 GPU h x 60 x the safety factor 3
    assert minutes_for(0.501) == math.ceil(0.501 * 180)
    assert minutes_for(100.0) == 2880


def test_a_subset_never_replaces_the_shipped_estimate(gpu_hours):
    with pytest.raises(SystemExit):
        gpu_hours.main(["--smoke"])


def test_train_runtime_reads_the_yaml_and_defaults_to_48_hours(tmp_path):
    path = tmp_path / "runtimes.yaml"
    path.write_text("# comment\ntrain:\n  tsrn.tsrn: 125  # 0.689 GPU h\n  zoo.crnn: 1798\n")
    runtimes = load_runtimes(path)
    assert train_runtime("tsrn.tsrn", runtimes) == 125
    assert train_runtime("zoo.crnn", runtimes) == 1798
    assert train_runtime("lemma.not_a_run", runtimes) == DEFAULT_MINUTES == 2880
    assert load_runtimes(tmp_path / "missing.yaml") == {}
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    assert train_runtime("tsrn.tsrn", load_runtimes(tmp_path / "bad.yaml")) == 2880


def test_the_train_rule_and_profile_use_the_shipped_runtimes():
    rule = (REPO / "workflow" / "rules" / "train.smk").read_text()
    assert re.search(r"runtime=lambda wc: train_runtime\(wc\.run, TRAIN_RUNTIMES\)", rule)
    assert '"profiles" / "slurm" / "runtimes.yaml"' in rule
    profile = yaml.safe_load((REPO / "slurm" / "config.yaml").read_text())
    assert "runtime" not in profile["set-resources"]["train"]  # it would override every run's
    # the shipped file: one entry per known run slug, within the partition limit
    assert RUNTIMES_PATH.samefile(REPO / "slurm" / "runtimes.yaml")
    shipped = load_runtimes()
    known = {slug(r) for r in all_runs(load_specs())}
    assert shipped and set(shipped) <= known
    assert all(60 <= m <= 2880 for m in shipped.values())
    assert train_runtime("tsrn.tsrn", shipped) == shipped["tsrn.tsrn"]


def test_help_prints(gpu_hours, capsys):
    with pytest.raises(SystemExit) as done:
        gpu_hours.main(["--help"])
    assert done.value.code == 0 and "--tflops" in capsys.readouterr().out
