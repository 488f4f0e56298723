"""The package's shape: no import circles at module level, small files, one-way model layers."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 430  # "about 400": a file past this is split, not squeezed


def _modules() -> dict[str, Path]:
    out = {}
    for f in SRC.rglob("*.py"):
        name = ".".join(f.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = f
    return out


def _module_level_imports(path: Path, known: set[str]) -> set[str]:
    """Imports executed when the module loads (function-level imports are lazy and may cross)."""
    deps: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            deps.add(node.module)
            deps.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            deps.update(a.name for a in node.names)
    return deps & known


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                found.append(stack[stack.index(d) :] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return found


def test_no_import_circles() -> None:
    mods = _modules()
    graph = {m: _module_level_imports(p, set(mods)) - {m} for m, p in mods.items()}
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_source_file_is_long() -> None:
    long = {
        str(p.relative_to(SRC)): n
        for p in SRC.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_model_layers_import_no_model() -> None:
    """models/layers/ are building blocks: a model file may use them, never the reverse."""
    mods = _modules()
    layers = {m: p for m, p in mods.items() if m.startswith("stisr.models.layers")}
    bad = {
        m: sorted(
            d
            for d in _module_level_imports(p, set(mods))
            if d.startswith(("stisr.models.rec", "stisr.models.sr"))
        )
        for m, p in layers.items()
    }
    assert {m: d for m, d in bad.items() if d} == {}
