"""`stisr` CLI: every command documents itself; unknown ids fail in one line with exit 2."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from stisr.cli import COMMANDS, build_parser, main
from stisr.papers import ids
from stisr.papers.spec import load_common, load_specs

REPO = Path(__file__).resolve().parents[1]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _one_line_error(capsys, argv: list[str]) -> str:
    with_exit = None
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors
        with_exit = exc.code
        rc = with_exit
    assert rc == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    return err


BAD = [
    (
        ["evaluate", "--testset", "nope", "--sr", "bicubic", "--recognizer", "crnn"],
        "nope",
        lambda: ids.testsets(),
    ),
    (
        ["evaluate", "--testset", "textzoom_test", "--sr", "bicubic", "--recognizer", "nope"],
        "nope",
        lambda: sorted(load_common().recognizers),
    ),
    (
        ["evaluate", "--testset", "textzoom_test", "--sr", "nope/x", "--recognizer", "crnn"],
        "nope/x",
        lambda: ids.runs("sr"),
    ),
    (["table", "nope", "t1"], "nope", lambda: sorted(load_specs())),
    (["table", "tsrn", "nope"], "nope", lambda: [t.id for t in load_specs()["tsrn"].tables]),
    (["figure", "tsrn", "nope"], "nope", lambda: [f.id for f in load_specs()["tsrn"].figures]),
    (["train", "--run", "nope/x"], "nope/x", lambda: ids.runs()),
    (["train", "--run", "tsrn/nope"], "tsrn/nope", lambda: list(load_specs()["tsrn"].runs)),
    (["complexity", "--sr", "nope", "--recognizer", "none"], "nope", lambda: ["bicubic"]),
    (["track", "--run", "nope/x", "--out", "unused.json"], "nope/x", lambda: ids.runs()),
    (["recognize", ".", "--recognizer", "nope"], "nope", lambda: ["crnn", "ppocr"]),
    (["fetch", "nope"], "nope", lambda: ids.sources()),
    (["degrade", "nope", "--src", "a=b", "--out", "x"], "nope", lambda: ["commonlr", "lemma"]),
]


@pytest.mark.parametrize(("argv", "bad", "valid"), BAD, ids=[" ".join(b[0][:3]) for b in BAD])
def test_unknown_id_is_one_line_exit_2_listing_valid_ids(capsys, argv, bad, valid) -> None:
    err = _one_line_error(capsys, argv)
    assert repr(bad) in err
    for name in valid():
        assert name.split("/")[-1] in err, name


def test_unknown_run_of_a_known_paper_lists_that_papers_runs(capsys) -> None:
    err = _one_line_error(capsys, ["train", "--run", "tsrn/nope"])
    assert "tsrn/tsrn" in err and "lemma/" not in err


def test_every_command_has_description_valid_values_and_example() -> None:
    subs = _subparsers()
    assert set(subs) == set(COMMANDS)
    for name, parser in subs.items():
        assert parser.description, name
        assert parser.epilog and parser.epilog.startswith("example:\n  stisr "), name
        text = parser.format_help()
        for action in parser._actions:
            if getattr(action, "valid", None):
                assert "(valid: " in text, name


def test_help_lists_ids_from_the_registries() -> None:
    from stisr.models.registry import REC_MODELS

    subs = _subparsers()
    evaluate = subs["evaluate"].format_help().replace("\n", " ")
    for testset in load_common().testsets:
        assert testset in evaluate
    recognize = subs["recognize"].format_help()
    assert all(name in recognize for name in REC_MODELS)


def test_examples_parse() -> None:
    """Each example names real ids (the degrade example elides its --src list)."""
    for name, parser in _subparsers().items():
        argv = parser.epilog.split("\n", 2)[1].split()[1:]
        if "..." in argv:
            continue
        args = build_parser().parse_args(argv)
        assert args.fn is COMMANDS[name]
        if name == "train":
            ids.check_run(args.run)
        if name in ("evaluate", "complexity"):
            ids.check("sr", args.sr, ids.srs())
            ids.check("recognizer", args.recognizer, ids.recognizers())
        if name in ("table", "figure"):
            assert getattr(args, name) in getattr(ids, f"{name}s")(args.paper)


def test_sync_dvc_writes_the_committed_file_atomically(tmp_path, capsys) -> None:
    out = tmp_path / "dvc.yaml"
    assert main(["sync-dvc", "--path", str(out)]) == 0
    assert out.read_text() == (REPO / "dvc.yaml").read_text()
    assert main(["sync-dvc", "--path", str(out), "--check"]) == 0
    assert not list(tmp_path.glob(".*tmp"))


def test_complexity_of_bicubic_alone() -> None:
    from stisr.metrics.complexity_run import measure_pair

    result = measure_pair({}, "bicubic", "none", {})
    assert result["params"] == 0 and set(result["parts"]) == {"bicubic"}
    assert result["architecture_scale"] == "paper"
