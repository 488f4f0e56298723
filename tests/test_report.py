"""Report: tables (long CSV + wide Markdown), figures (PNG + status JSON) and the results index."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from stisr.config import load_params
from stisr.models.rec.crnn import CRNN
from stisr.models.sr.tsrn import TSRN
from stisr.papers import plan
from stisr.papers.spec import all_runs, load_specs, parse_spec
from stisr.report.cell_provenance import COMPUTED
from stisr.report.figures import EMBEDDED_NOTE, write_figure
from stisr.report.index import coverage, write_index
from stisr.report.table_markdown import EMBEDDED_WARNING, MISSING, format_cell
from stisr.report.tables import NOT_YET, compute_table, write_table


def _params() -> dict:
    """The shipped params at embedded demo scale, every recognizer trained on embedded data."""
    params = load_params(Path(__file__).parents[1] / "params.yaml")
    params["scales"]["demo"]["recognizers"] = "all"
    return {**params, "source": "embedded", "scale": "demo", "papers": ["fake"]}


PARAMS = _params()
IMPLEMENTED = {"good_sr", "good_rec"}

SPEC = """
paper: fake
title: "A fake paper"
venue: Test 2024
runs:
  good: {task: sr, model: good_sr}
  bad: {task: sr, model: bad_sr}
  reader: {task: rec, model: good_rec, train_set: synth_text}
tables:
  - id: t1
    title: "Accuracy"
    metric_format: percent
    defaults: {testset: textzoom_test, metric: accuracy, recognizer: reader}
    text_columns: [Loss]
    columns:
      - {id: easy, label: easy, subset: easy}
      - {id: average, label: average, subset: average}
    extra_columns:
      - {id: judge, label: "PP-OCRv4 average", recognizer: ppocr, subset: average}
    rows:
      - {id: lr, label: LR, sr: lr, text: {Loss: "-"}, paper: [40.0, 30.0]}
      - {id: good, label: "Good | net", sr: good, text: {Loss: L2}, paper: [50.0, 41.0]}
      - {id: bad, label: Bad, sr: bad, text: {Loss: L1}, paper: [60.0, 45.5]}
      - {id: gain, label: Gain, derive: {op: sub, a: good, b: lr}, paper: [10.0, 11.0]}
      - {id: gain_bad, label: Gain bad, derive: {op: sub, a: bad, b: lr}, paper: [20.0, 15.5]}
  - id: t2
    title: "Size and fidelity"
    metric_format: float
    defaults: {testset: textzoom_test, subset: average}
    columns:
      - {id: params, label: "Params (M)", metric: params}
      - {id: psnr, label: PSNR, metric: psnr}
      - {id: ssim, label: "SSIM x100", metric: ssim, scale: 100}
    rows:
      - {id: good, label: Good, sr: good, recognizer: reader, paper: [1.5, 21.0, 75.0]}
      - {id: bicubic, label: Bicubic, sr: bicubic, paper: [null, 20.0, 70.0]}
figures:
  - {id: f1, title: "Accuracy by method", kind: accuracy_by_method, table: t1, rows: [lr, good],
     recognizers: [reader], subset: average, baseline: {sr: lr, style: dotted}}
  - {id: f2, title: "Architecture", kind: architecture}
  - id: f3
    title: "Samples"
    kind: image_grid
    testset: textzoom_test
    subset: easy
    recognizer: reader
    columns: [{label: LR, sr: lr}, {label: Good, sr: good}, {label: HR, sr: hr},
              {label: GT, show: label}]
    count: 2
  - {id: f4, title: "Sweep", kind: accuracy_vs_param, param: step, testset: textzoom_test,
     subset: average, recognizer: reader, points: [{x: 1, sr: lr, paper: 30.0}, {x: 2, sr: good}]}
  - {id: f5, title: "Degradation sweep", kind: accuracy_vs_param, x: [0, 1],
     series: [{label: Good, sr: good, recognizer: reader}]}
  - {id: f6, title: "Something new", kind: hologram}
"""


@pytest.fixture
def spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "fake.yaml"
    path.write_text(SPEC)
    monkeypatch.setattr(plan, "is_implemented", lambda name: name in IMPLEMENTED)
    classes = {"good_sr": TSRN, "good_rec": CRNN}  # stand-ins for their objective declarations
    monkeypatch.setattr(plan, "model_class", classes.__getitem__)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return parse_spec(path)


def _write_eval(sr: str, rec: str, subsets: dict, samples: dict | None = None) -> Path:
    path = plan.eval_path(PARAMS, sr, rec, "textzoom_test")
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"sr": sr, "recognizer": rec, "testset": "textzoom_test", "source": "embedded",
            "scale": "demo", "subsets": subsets}  # fmt: skip
    if samples is not None:
        npz = path.with_suffix(".samples.npz")
        np.savez_compressed(npz, **samples)
        data["samples"] = npz.name
    path.write_text(json.dumps(data))
    return path


def _samples(subset: str, images: np.ndarray, preds: list[str]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    n = len(preds)
    return {
        f"{subset}/images": images,
        f"{subset}/preds": np.array(preds, dtype=str),
        f"{subset}/labels": np.array(["hello", "world"][:n], dtype=str),
        f"{subset}/lr": rng.integers(0, 256, (n, 16, 64, 3), dtype=np.uint8),
        f"{subset}/hr": rng.integers(0, 256, (n, 32, 128, 3), dtype=np.uint8),
    }


@pytest.fixture
def metrics(spec):
    """Metric files as the pipeline writes them (`bicubic` evaluations deliberately absent)."""
    rng = np.random.default_rng(1)
    lr_imgs = rng.integers(0, 256, (2, 16, 64, 3), dtype=np.uint8)
    sr_imgs = rng.integers(0, 256, (2, 32, 128, 3), dtype=np.uint8)
    _write_eval("lr", "fake/reader", {"easy": {"accuracy": 0.40, "size": 2},
                                      "average": {"accuracy": 0.32, "size": 6}},
                _samples("easy", lr_imgs, ["hallo", "world"]))  # fmt: skip
    _write_eval("fake/good", "fake/reader", {"easy": {"accuracy": 0.55, "size": 2},
                                             "average": {"accuracy": 0.43, "size": 6}},
                _samples("easy", sr_imgs, ["hello", "w0rd"]))  # fmt: skip
    _write_eval("fake/good", "ppocr", {"average": {"accuracy": 0.6, "size": 6}})
    _write_eval("fake/good", "none", {"average": {"psnr": 21.5, "ssim": 0.7612, "size": 6}})
    comp = plan.complexity_path(PARAMS, "fake/good", "fake/reader")
    comp.parent.mkdir(parents=True, exist_ok=True)
    comp.write_text(json.dumps({"params": 1234567, "flops": 0.5, "macs": 0.25, "latency_ms": 3}))
    return spec


def _cell(frame: pd.DataFrame, row: str, col: str) -> pd.Series:
    return frame[(frame["row"] == row) & (frame["column"] == col)].iloc[0]


def test_compute_table_values_delta_derived_and_status(metrics):
    runs = all_runs({"fake": metrics})
    t1 = compute_table(metrics.tables[0], PARAMS, runs)
    assert len(t1) == 5 * 3 and list(t1.columns[:3]) == ["table", "row", "row_label"]
    good = _cell(t1, "good", "easy")
    # embedded data: "computed", beside the paper's number, never a delta against it
    assert good["ours"] == pytest.approx(55.0) and pd.isna(good["delta"])
    assert good["status"] == COMPUTED and "sr=fake/good" in good["inputs"]
    assert t1["delta"].isna().all() and "reproduced" not in set(t1["status"])
    assert set(t1["source"]) == {"embedded"} and set(t1["scale"]) == {"demo"}
    done = t1[t1["status"].isin([COMPUTED, "no paper value"])]
    assert len(done) and done["params_hash"].str.len().eq(12).all()
    bad = _cell(t1, "bad", "average")
    assert math.isnan(bad["ours"]) and bad["paper"] == 45.5
    assert bad["status"] == f"{NOT_YET}: model of fake/bad not implemented yet"
    gain = _cell(t1, "gain", "average")  # (43 - 32) from our rows; the paper prints 11.0
    assert gain["ours"] == pytest.approx(11.0)
    assert gain["status"] == COMPUTED and gain["inputs"] == "sub(good, lr)"
    gain_bad = _cell(t1, "gain_bad", "easy")
    assert gain_bad["status"].startswith(NOT_YET) and "bad" in gain_bad["status"]
    judge = _cell(t1, "good", "judge")
    assert judge["extra"] and judge["ours"] == pytest.approx(60.0)
    assert judge["status"] == "no paper value" and math.isnan(judge["paper"])
    assert _cell(t1, "lr", "judge")["status"].startswith(MISSING)

    t2 = compute_table(metrics.tables[1], PARAMS, runs)
    assert _cell(t2, "good", "params")["ours"] == pytest.approx(1.234567)
    assert _cell(t2, "good", "psnr")["ours"] == pytest.approx(21.5)
    assert _cell(t2, "good", "ssim")["ours"] == pytest.approx(76.12)  # scale: 100
    missing = _cell(t2, "bicubic", "psnr")["status"]
    assert missing == f"{MISSING}: runs/embedded-demo/eval/bicubic/none/textzoom_test.json"


def test_write_table_csv_and_markdown(metrics, tmp_path: Path):
    runs = all_runs({"fake": metrics})
    out = tmp_path / "results"
    paths = write_table(metrics.tables[0], PARAMS, runs, out)
    assert paths == [out / "fake" / "t1.csv", out / "fake" / "t1.md"]
    back = pd.read_csv(paths[0])
    assert len(back) == 15 and set(back["status"]) >= {COMPUTED, "no paper value"}
    md = paths[1].read_text()
    assert EMBEDDED_WARNING in md and "embedded synthetic-data" in md
    assert "`embedded`" in md and "`demo`" in md
    assert "| Good \\| net | L2 | 55.0 / 50.0 | 43.0 / 41.0 | 60.0 |" in md
    assert "| Bad | L1 | n.c. / 60.0 |" in md
    assert "Coverage: 6 of 10 paper cells computed." in md
    assert "reproduced" not in md.replace(EMBEDDED_WARNING, "")
    assert not list((out / "fake").glob(".*"))  # no temp files left behind

    md2 = write_table(metrics.tables[1], PARAMS, runs, out)[1].read_text()
    assert "1.2 / 1.5 |" in md2 and "76.1 / 75.0 |" in md2  # the paper's precision
    assert "missing / 20.0" in md2

    official = {**PARAMS, "source": "official", "scale": "paper"}
    md3 = write_table(metrics.tables[1], official, runs, out)[1].read_text()
    assert EMBEDDED_WARNING not in md3 and "`official`" in md3 and "runs/official-paper" in md3
    assert "(ours - the paper's)" in md3  # official data at paper scale: the delta is shown


def test_delta_only_where_comparable():
    assert format_cell(50.0, 55.0, COMPUTED, 1) == "55.0 / 50.0"
    assert format_cell(50.0, 55.0, "reproduced", 1, with_delta=True) == "55.0 / 50.0 (+5.0)"
    assert format_cell(50.0, None, "not computed yet: x", 1) == "n.c. / 50.0"


def test_deviations_of_the_runs_behind_a_table_are_listed(metrics, tmp_path: Path):
    runs = all_runs({"fake": metrics})
    good = plan.run_dir(PARAMS, "fake/good") / "metrics.json"
    good.parent.mkdir(parents=True, exist_ok=True)
    good.write_text(json.dumps({"steps": 3, "deviations": ["perceptual loss on random VGG"]}))
    reader = plan.run_dir(PARAMS, "fake/reader") / "metrics.json"
    reader.parent.mkdir(parents=True, exist_ok=True)
    reader.write_text(json.dumps({"steps": 3}))
    md = write_table(metrics.tables[0], PARAMS, runs, tmp_path)[1].read_text()
    assert "Deviations from the paper's setting" in md
    assert "- fake/good: perceptual loss on random VGG" in md
    good.write_text(json.dumps({"steps": 3}))
    md = write_table(metrics.tables[0], PARAMS, runs, tmp_path)[1].read_text()
    assert "Deviations" not in md


def _png_text(path: Path) -> dict[str, str]:
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 100
        return dict(img.text)


def test_figures_reproduced_and_not(metrics, tmp_path: Path):
    runs = all_runs({"fake": metrics})
    out = tmp_path / "results" / "fake"
    figs = {f.id: f for f in metrics.figures}

    assert write_figure(figs["f1"], PARAMS, runs, out / "f1.png", spec=metrics) is True
    assert EMBEDDED_NOTE in _png_text(out / "f1.png")["Description"]
    status = json.loads((out / "f1.json").read_text())
    assert status["computed"] is True and status["reason"] == ""
    assert {status["source"], status["scale"]} == {"embedded", "demo"}

    assert write_figure(figs["f2"], PARAMS, runs, out / "f2.png", spec=metrics) is False
    assert "not computed yet" in _png_text(out / "f2.png")["Description"]
    assert json.loads((out / "f2.json").read_text())["reason"]

    assert write_figure(figs["f6"], PARAMS, runs, out / "f6.png", spec=metrics) is False
    assert "hologram" in json.loads((out / "f6.json").read_text())["reason"]

    assert write_figure(figs["f4"], PARAMS, runs, out / "f4.png", spec=metrics) is True
    assert write_figure(figs["f5"], PARAMS, runs, out / "f5.png", spec=metrics) is False
    assert "no evaluation per x" in json.loads((out / "f5.json").read_text())["reason"]


def test_image_grid_partial_then_complete(metrics, tmp_path: Path):
    runs = all_runs({"fake": metrics})
    fig = next(f for f in metrics.figures if f.id == "f3")
    out = tmp_path / "f3.png"
    # The HR column has images (from any evaluation) but no reading by the recognizer yet.
    assert write_figure(fig, PARAMS, runs, out, spec=metrics) is False
    reason = json.loads(out.with_suffix(".json").read_text())["reason"]
    assert reason.startswith("HR:") and "hr/fake.reader" in reason
    hr = np.random.default_rng(3).integers(0, 256, (2, 32, 128, 3), dtype=np.uint8)
    _write_eval("hr", "fake/reader", {"easy": {"accuracy": 1.0, "size": 2}},
                _samples("easy", hr, ["hello", "world"]))  # fmt: skip
    assert write_figure(fig, PARAMS, runs, out, spec=metrics) is True
    assert EMBEDDED_NOTE in _png_text(out)["Description"]
    # Only the misread samples (LR read "hallo" for "hello"): one grid row instead of two.
    picked = replace(fig, options={**fig.options, "select": "misrecognized"})
    assert write_figure(picked, PARAMS, runs, tmp_path / "sel.png", spec=metrics) is True
    with Image.open(out) as full, Image.open(tmp_path / "sel.png") as sel:
        assert sel.size[0] == full.size[0] and sel.size[1] < full.size[1] * 0.8
    odd = replace(fig, options={**fig.options, "select": "prettiest"})
    assert write_figure(odd, PARAMS, runs, tmp_path / "odd.png", spec=metrics) is False


def test_index_coverage(metrics, tmp_path: Path):
    runs = all_runs({"fake": metrics})
    results = tmp_path / "results"
    for table in metrics.tables:
        write_table(table, PARAMS, runs, results)
    for fig in metrics.figures[:2]:  # f1 reproduced, f2 not; the others never written
        write_figure(fig, PARAMS, runs, results / "fake" / f"{fig.id}.png", spec=metrics)
    cov = coverage(results)
    assert (cov["cells_computed"], cov["cells_total"]) == (9, 15)
    assert (cov["figures_computed"], cov["figures_total"]) == (1, 2)
    with_specs = coverage(results, {"fake": metrics})
    assert with_specs["figures_total"] == len(metrics.figures) and with_specs["cells_total"] == 15

    readme = write_index(PARAMS, {"fake": metrics}, results)
    text = readme.read_text()
    assert readme == results / "README.md" and EMBEDDED_WARNING in text
    assert "Coverage: 9 / 15 paper cells computed (60.0%); figures: 1 / 6 computed." in text
    assert "| t1 | Accuracy | 6 / 10 | [md](fake/t1.md) [csv](fake/t1.csv) |" in text
    assert "| [f1](fake/f1.png) | Accuracy by method | computed |" in text
    assert "| f3 | Samples | not computed yet - not generated yet |" in text
    assert "reproduced" not in text.replace(EMBEDDED_WARNING, "")


def test_index_refuses_to_mix_sources_or_scales(metrics, tmp_path: Path):
    runs = all_runs({"fake": metrics})
    results = tmp_path / "results"
    write_table(metrics.tables[0], PARAMS, runs, results)
    smoke = {**PARAMS, "scale": "smoke"}
    with pytest.raises(ValueError, match="t1.csv: made from embedded-demo, not embedded-smoke"):
        write_index(smoke, {"fake": metrics}, results)


def test_shipped_specs_without_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No model implemented, no metric file: every paper cell says why it is not reproduced."""
    monkeypatch.setattr(plan, "is_implemented", lambda name: False)
    monkeypatch.chdir(tmp_path)
    specs = load_specs()
    runs = all_runs(specs)
    params = {**PARAMS, "papers": list(specs)}
    n_tables = 0
    for spec in specs.values():
        for table in spec.tables:
            frame = compute_table(table, params, runs)
            n_tables += 1
            assert not set(frame["status"]) & {COMPUTED, "reproduced"}, table.key
            by_row = {r.id: r for r in table.rows}
            cols = {c.id: c for c in table.columns}
            for cell in frame[frame["paper"].notna() & ~frame["extra"]].itertuples():
                row = by_row[cell.row]
                pipeline_only = not row.derive and plan.cell_status(
                    params, table.cell_source(row, cols[cell.column]), runs) is None  # fmt: skip
                if pipeline_only:  # pseudo inputs (lr, hr, bicubic) and set sizes: a job is due
                    assert cell.status.startswith(MISSING), (table.key, cell.row, cell.column)
                elif row.derive:  # inherits the reason of its inputs
                    assert cell.status.startswith((NOT_YET, MISSING)), (table.key, cell.row)
                else:
                    assert cell.status.startswith(NOT_YET), (table.key, cell.row, cell.column)
    assert n_tables >= 5
    figs = [f for s in specs.values() for f in s.figures]
    for fig in figs:
        out = tmp_path / "results" / fig.paper / f"{fig.id}.png"
        assert write_figure(fig, params, runs, out) is False, fig.key
        assert json.loads(out.with_suffix(".json").read_text())["reason"], fig.key


def test_figure_baseline_line_is_planned_and_never_silently_dropped(metrics, tmp_path: Path):
    """The dotted reference line (e.g. LR per recognizer) is in no table: the plan schedules its
    evaluation, and a figure without it says so instead of quietly leaving the line out."""
    runs = all_runs({"fake": metrics})
    f1 = next(f for f in metrics.figures if f.id == "f1")
    moved = replace(f1, options={**f1.options, "baseline": {"sr": "hr", "style": "dotted"}})
    sources = plan.figure_baseline_sources(moved, metrics)
    assert sources == {"fake/reader": {**sources["fake/reader"], "sr": "hr", "subset": "average"}}
    spec = replace(metrics, figures=[moved])
    assert plan.figure_jobs(PARAMS, spec, runs).evaluations == (
        ("hr", "fake/reader", "textzoom_test"),
    )
    out = tmp_path / "f1.png"
    assert write_figure(moved, PARAMS, runs, out, spec=metrics) is False
    reason = json.loads(out.with_suffix(".json").read_text())["reason"]
    assert reason.startswith("2 of 3 points computed") and "hr/fake/reader" in reason
    _write_eval("hr", "fake/reader", {"average": {"accuracy": 0.9, "size": 6}})
    assert write_figure(moved, PARAMS, runs, out, spec=metrics) is True


def test_stand_in_model_settings_are_listed_as_deviations():
    """A demo stand-in is not the paper's architecture: every overridden setting is named."""
    from stisr.report.cell_provenance import model_deviations

    runs = all_runs(load_specs())
    (aster,) = model_deviations(PARAMS, runs["zoo/aster"])
    assert aster.startswith("model `aster` at scale demo: ")
    assert "use_stn=False (paper: True)" in aster and "aux_ctc=1.0 (paper: 0.0)" in aster
    assert "beam_width=1 (paper: 5)" in aster
    assert model_deviations({**PARAMS, "scale": "paper"}, runs["zoo/aster"]) == []


@pytest.mark.parametrize("scale", ["smoke", "demo", "paper"])
def test_every_table_lists_its_deviations_and_blocked_runs_are_left_out(scale):
    """A blocked run (KD-LTR's students name config keys the models lack) has no deviation to
    list, and must not break the tables of the runs that do train."""
    from stisr.report.cell_provenance import run_deviations

    specs = load_specs()
    runs = all_runs(specs)
    params = {**PARAMS, "scale": scale}
    notes = [n for s in specs.values() for t in s.tables for n in run_deviations(t, params, runs)]
    assert not any(n.startswith("kdltr/abinet_ltr") for n in notes)
    if scale == "demo":
        assert any(n.startswith("lemma/no_lem: model `lemma` at scale demo") for n in notes)


def test_a_fitted_cell_is_marked_and_its_agreement_not_counted_as_evidence(metrics, tmp_path):
    """A number chosen to match the paper (PARSeq's decoded length in its FLOPs) says so."""
    runs = all_runs({"fake": metrics})
    comp = plan.complexity_path(PARAMS, "fake/good", "fake/reader")
    data = json.loads(comp.read_text())
    comp.write_text(json.dumps({**data, "fitted": {"params": "decoded length chosen to match"}}))
    frame = compute_table(metrics.tables[1], PARAMS, runs)
    assert _cell(frame, "good", "params")["fitted"] == "decoded length chosen to match"
    assert pd.isna(_cell(frame, "good", "psnr")["fitted"])
    md = write_table(metrics.tables[1], PARAMS, runs, tmp_path)[1].read_text()
    assert "1.2 / 1.5 (fitted)" in md and "(1 of them fitted:" in md
    assert "- Good / Params (M): decoded length chosen to match" in md
