"""The package's modules form a layered graph: no module imports (directly or through others) one that imports it.

The graph comes from the source (every ``from . import x`` and ``from .x import y``, at module level, inside
functions and under ``if TYPE_CHECKING``), so an import hidden in a function to dodge a cycle still counts."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import blasgpt

PACKAGE = Path(blasgpt.__file__).resolve().parent


def module_name(path: Path) -> str:
    """A module's name inside the package: "train", "cli.train"; a package is named by its __init__ ("cli"), the
    top-level one is "__init__"."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


FILES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
MODULES = sorted(FILES)
COMPILED = {p.name.split(".")[0] for p in PACKAGE.glob("*.pyi")}  # compiled modules (_core): no edges of their own


def resolve(base: list[str], names: list[str]) -> str:
    """The module ``base + names`` names: that module if it exists, else the package whose name it is in."""
    parts = base + names
    while parts and ".".join(parts) not in FILES:
        parts.pop()
    return ".".join(parts) or "__init__"


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in FILES.items():
        edges = graph.setdefault(name, set())
        package = name.split(".") if path.name == "__init__.py" and name != "__init__" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level >= 1:  # relative: from .x import y, from .. import z
                base = package[:len(package) - (node.level - 1)]
                mod = node.module.split(".") if node.module else []
                for a in node.names:  # a name may be a module (from . import x) or a name defined in one
                    if not base and (mod or [a.name])[0] in COMPILED:
                        continue
                    edges.add(resolve(base, mod + [a.name]))
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mod = node.module if isinstance(node, ast.ImportFrom) else None
                for full in [mod] if mod else [a.name for a in node.names]:  # type: ignore[union-attr]
                    parts = (full or "").split(".")
                    if parts[0] == "blasgpt":
                        edges.add(resolve([], parts[1:]))
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


def test_the_graph_reaches_into_subpackages() -> None:
    graph = import_graph()
    assert "cli.train" in graph["cli"] and {"train", "corpus", "cli.common"} <= graph["cli.train"]


def test_every_module_imports_on_its_own() -> None:
    for name in MODULES:
        if name != "__main__":
            importlib.import_module(f"blasgpt.{name}" if name != "__init__" else "blasgpt")


def test_importing_the_package_loads_no_torch_and_no_benchmark() -> None:
    """``import blasgpt`` (and its command line) stays light: PyTorch and the benchmark (bench/, outside the
    package) load only when the bench command runs."""
    bench_modules = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "bench").glob("*.py"))
    assert "torch_gpt" in bench_modules  # the list below is the real one
    code = ("import sys, blasgpt, blasgpt.cli\n"
            f"bad = [m for m in sys.modules if m.split('.')[0] in {['torch', *bench_modules]!r}"
            " or m in ('blasgpt.bench', 'blasgpt.baselines', 'blasgpt_benchmark')]\n"
            "print(bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
