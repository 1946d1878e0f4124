"""The package's modules form a layered graph: no module imports (directly or through others) one that imports it.

The graph comes from the source (every ``from . import x`` and ``from .x import y``, at module level, inside
functions and under ``if TYPE_CHECKING``), so an import hidden in a function to dodge a cycle still counts."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import blasgpt

PACKAGE = Path(blasgpt.__file__).resolve().parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))
NAMES = set(MODULES) | {p.name.split(".")[0] for p in PACKAGE.glob("*.pyi")}  # + compiled ones (_core)


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        edges = graph.setdefault(name, set())
        for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:  # from .x import y
                    edges.add(node.module.split(".")[0])
                else:  # from . import x: a module if there is one of that name, else a name from __init__
                    edges.update(a.name if a.name in NAMES else "__init__" for a in node.names)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mod = node.module if isinstance(node, ast.ImportFrom) else None
                for full in [mod] if mod else [a.name for a in node.names]:  # type: ignore[union-attr]
                    parts = (full or "").split(".")
                    if parts[0] == "blasgpt":
                        edges.add(parts[1] if len(parts) > 1 and parts[1] in MODULES else "__init__")
        edges.discard(name)
        edges.intersection_update(MODULES)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle as a path [a, b, ..., a], or [] if the graph is acyclic (depth-first search, three colours)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str]:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        path.pop()
        state[n] = 2
        return []

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert graph["checkpoint"] >= {"model", "data", "config"}  # the parser sees the edges that exist
    cycle = find_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_every_module_imports_on_its_own() -> None:
    for name in MODULES:
        if name != "__main__":
            importlib.import_module(f"blasgpt.{name}" if name != "__init__" else "blasgpt")
