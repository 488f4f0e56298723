"""The `stisr` argument parser: what each command does, the values it takes, an example.

Valid values come from the specs and registries (`stisr.papers.ids`) and are looked up only when
help is printed, so a plain command does not pay for loading every spec or model. Parse errors are
one line on stderr with exit status 2, like the commands' own id checks.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from stisr.data.lr_benchmarks import LR_SETS
from stisr.papers import ids
from stisr.papers.spec import PSEUDO_SR

Command = Callable[[argparse.Namespace], None]


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (no usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


class Help(argparse.RawDescriptionHelpFormatter):
    """Appends an argument's valid values (`action.valid`, a callable) when help is shown."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        valid = getattr(action, "valid", None)
        if valid is not None:
            text += " (valid: " + ", ".join(valid()).replace("%", "%%") + ")"
        return text


def _valid(action: argparse.Action, fn: Callable[[], list[str]]) -> None:
    action.valid = fn  # type: ignore[attr-defined]


def _tables_by_paper() -> list[str]:
    return [f"{p}: {' '.join(ids.tables(p))}" for p in ids.papers() if ids.tables(p)]


def _figures_by_paper() -> list[str]:
    return [f"{p}: {' '.join(ids.figures(p))}" for p in ids.papers() if ids.figures(p)]


def _sub(sub: Any, name: str, fn: Command, summary: str, about: str, example: str):
    s = sub.add_parser(
        name,
        help=summary,
        description=f"{summary}.\n\n{about}" if about else f"{summary}.",
        epilog=f"example:\n  {example}",
        formatter_class=Help,
    )
    s.set_defaults(fn=fn)
    return s


def _data_commands(sub: Any, cmds: Mapping[str, Command]) -> None:
    s = _sub(
        sub,
        "synth",
        cmds["synth"],
        "Generate the embedded data (TextZoom-like pairs or STR-format sets)",
        "Sizes and seed come from params.yaml `embedded`.",
        "stisr --set scale=smoke synth textzoom --out data/embedded/smoke/textzoom",
    )
    s.add_argument("what", choices=["textzoom", "str"], help="which data")
    s.add_argument("--out", required=True, help="output folder")

    s = _sub(
        sub,
        "degrade",
        cmds["degrade"],
        "Make an LR benchmark set from STR LMDBs",
        "CommonLR, LEMMA, KD-LTR and IC15-352 (stisr/data/lr_benchmarks.py).",
        "stisr degrade commonlr --src ic13=data/str/ic13 ic15=data/str/ic15 ... --out lr",
    )
    s.add_argument("kind", choices=sorted(LR_SETS), help="which LR set")
    s.add_argument(
        "--src",
        nargs="+",
        required=True,
        metavar="NAME=LMDB",
        help="one STR benchmark LMDB per name",
    )
    s.add_argument("--out", required=True, help="output folder")

    s = _sub(
        sub,
        "fetch",
        cmds["fetch"],
        "Download an official source",
        "Resumable and checksummed; the registry is src/stisr/data/sources.yaml.",
        "stisr fetch textzoom",
    )
    _valid(s.add_argument("name", help="a source name"), ids.sources)
    s.add_argument("--root", default="data/official", help="where sources are installed")
    s.add_argument(
        "--partial-dir",
        default=".downloads",
        help="where interrupted downloads wait to be resumed (kept out of data/)",
    )

    s = _sub(
        sub,
        "import-weights",
        cmds["import-weights"],
        "Convert released recognizer weights to a stisr checkpoint",
        "Strict load after the key mapping of the recognizer module.",
        "stisr import-weights crnn --out data/official/weights/crnn.stisr.pt",
    )
    _valid(
        s.add_argument("name", help="a weights entry of sources.yaml"),
        lambda: ids.sources("weights"),
    )
    s.add_argument("--root", default="data/official", help="where the sources are installed")
    s.add_argument("--out", required=True, help="checkpoint to write")


def _job_commands(sub: Any, cmds: Mapping[str, Command]) -> None:
    s = _sub(
        sub,
        "train",
        cmds["train"],
        "Train (or resume) one run",
        "Runs are declared in src/stisr/papers/*.yaml; a run that cannot be trained here "
        "exits 2 with every reason.",
        "stisr train --run tsrn/tsrn",
    )
    _valid(s.add_argument("--run", required=True, help="run id"), ids.runs)
    s.add_argument(
        "--restart",
        action="store_true",
        help="set aside checkpoints of another configuration (kept, renamed) and train afresh",
    )

    s = _sub(
        sub,
        "evaluate",
        cmds["evaluate"],
        "Evaluate one (sr, recognizer, testset)",
        "Writes runs/<source>-<scale>/eval/<sr>/<recognizer>/<testset>.json.",
        "stisr evaluate --sr bicubic --recognizer crnn --testset textzoom_test",
    )
    _valid(s.add_argument("--sr", required=True, help="SR run or pseudo input"), ids.srs)
    _valid(s.add_argument("--recognizer", required=True, help="recognizer"), ids.recognizers)
    _valid(s.add_argument("--testset", required=True, help="test set of common.yaml"), ids.testsets)

    s = _sub(
        sub,
        "complexity",
        cmds["complexity"],
        "Measure parameters, FLOPs and latency of sr + recognizer",
        "At the papers' architecture (paper scale), counted as each paper counted it.",
        "stisr complexity --sr tsrn/tsrn --recognizer none",
    )
    _valid(s.add_argument("--sr", required=True, help="SR run or pseudo input"), ids.srs)
    _valid(s.add_argument("--recognizer", required=True, help="recognizer"), ids.recognizers)

    s = _sub(
        sub,
        "track",
        cmds["track"],
        "Log a run and its evaluations to MLflow",
        "",
        "stisr track --run tsrn/tsrn --trained --evaluations a.json --out tracked.json",
    )
    _valid(
        s.add_argument("--run", required=True, help="a run id, or a parameter-free SR"),
        lambda: [*PSEUDO_SR, *ids.runs()],
    )
    s.add_argument("--trained", action="store_true", help="also log the run folder")
    s.add_argument("--evaluations", nargs="*", default=[], help="evaluation JSON files")
    s.add_argument("--out", required=True, help="record of the logged run (JSON)")


def _report_commands(sub: Any, cmds: Mapping[str, Command]) -> None:
    for name, by_paper in (("table", _tables_by_paper), ("figure", _figures_by_paper)):
        s = _sub(
            sub,
            name,
            cmds[name],
            f"Write one {name} of a paper into results/<source>-<scale>/",
            f"The {name} is declared in src/stisr/papers/<paper>.yaml.",
            f"stisr {name} tsrn {'table4' if name == 'table' else 'fig2'}",
        )
        _valid(s.add_argument("paper", help="paper id"), ids.papers)
        _valid(s.add_argument(name, help=f"{name} id of that paper"), by_paper)
        s.add_argument("--out", help="results folder (default: results/<source>-<scale>)")

    s = _sub(sub, "index", cmds["index"], "Write results/<source>-<scale>/README.md", "",
             "stisr index")  # fmt: skip
    s.add_argument("--out", help="results folder (default: results/<source>-<scale>)")

    s = _sub(
        sub,
        "recognize",
        cmds["recognize"],
        "Read a folder of word images",
        "A gt.txt in the folder (optional) gives labels and word accuracy.",
        "stisr recognize words/ --recognizer crnn --weights runs/x/model.pt",
    )
    s.add_argument("folder", help="folder of images")
    _valid(
        s.add_argument("--recognizer", required=True, help="registry recognizer or external"),
        ids.recognizer_models,
    )
    s.add_argument("--weights", help="a stisr model.pt or an official weight file")
    s.add_argument("--out", help="write predictions as TSV here (default: print)")
    s.add_argument("--show", type=int, default=20, help="predictions printed without --out")
    s.add_argument("--batch-size", type=int, default=64, help="images per batch")

    s = _sub(
        sub,
        "sync-dvc",
        cmds["sync-dvc"],
        "Regenerate dvc.yaml from the specs",
        "One stage per table and per source (stisr/dvc_stages.py).",
        "stisr sync-dvc --check",
    )
    s.add_argument("--path", default="dvc.yaml", help="the dvc.yaml to write or check")
    s.add_argument("--check", action="store_true", help="fail if dvc.yaml is out of date")

    _sub(
        sub,
        "plan",
        cmds["plan"],
        "Print the jobs the current params imply",
        "Also every run of the selected papers that cannot be trained here, and why.",
        "stisr --set scale=smoke plan",
    )


def make_parser(
    cmds: Mapping[str, Command], description: str | None = None
) -> argparse.ArgumentParser:
    """The parser; `cmds` maps each command name to its function (cli.COMMANDS)."""
    p = OneLineParser(
        prog="stisr",
        description=description,
        formatter_class=Help,
        epilog="example:\n  stisr --set scale=smoke train --run tsrn/tsrn",
    )
    p.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a top-level params key (e.g. scale=smoke)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _data_commands(sub, cmds)
    _job_commands(sub, cmds)
    _report_commands(sub, cmds)
    return p
