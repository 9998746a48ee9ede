"""Arrows run down: no module of `bot/` imports, directly or through others, a module that
imports it back, and no sub-package of `bot/` does so with another.

Every import counts, read from the source with `ast`: those at a module's top, the lazy ones
inside functions, and those under `if TYPE_CHECKING:`. A type-only import is a dependency too:
to read or change either module one needs the other, and a cycle hidden behind
`TYPE_CHECKING` (or a lazy import) is a choice of layers not yet made, so it fails like any
other.

An import names the module it reads: `from a.b import c` is an edge to `a.b.c` when that is a
module, else to `a.b`. The package a module sits in is not an edge of its own (Python imports
it first, whatever the module says); importing a package by name, `from bot.chat import X`,
is an edge to its `__init__`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "bot"

Graph = Mapping[str, frozenset[str]]


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its `__init__`)."""
    found = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(node: ast.AST, name: str, path: Path) -> Iterator[str]:
    """The dotted names one import statement of module `name` (file `path`) may mean."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            anchor = package[: len(package) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            yield f"{base}.{alias.name}"
        yield base


def import_graph(root: Path = ROOT) -> dict[str, frozenset[str]]:
    """Module -> the modules of the package it imports, lazy and type-only imports included."""
    known = modules(root)
    graph = {}
    for name, path in known.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names = list(_imported(node, name, path))
            if not names:
                continue
            if isinstance(node, ast.ImportFrom):
                # `from a.b import c`: the module a.b.c if there is one, else a.b itself.
                *members, base = names
                hits = [m for m in members if m in known]
                targets.update(hits or ([base] if base in known else []))
            else:
                targets.update(_nearest(n, known) for n in names if _nearest(n, known))
        targets.discard(name)
        graph[name] = frozenset(targets)
    return graph


def _nearest(dotted: str, known: Mapping[str, Path]) -> str:
    """`import a.b.c` reads a.b.c, or the nearest enclosing module of the package."""
    while dotted and dotted not in known:
        dotted = dotted.rpartition(".")[0]
    return dotted


def folder_of(module: str) -> str:
    """A module's node in the folder graph: its sub-package of `bot/`, or itself for a module
    at the top (`bot.settings`, `bot.cli`) and for `bot` itself."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else module


def folder_graph(graph: Graph, root: Path = ROOT) -> dict[str, frozenset[str]]:
    packages = {folder_of(m) for m in graph}
    edges: dict[str, set[str]] = {p: set() for p in packages}
    for source, targets in graph.items():
        edges[folder_of(source)].update(folder_of(t) for t in targets)
    return {node: frozenset(t - {node}) for node, t in edges.items()}


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle through each strongly connected part of the graph, as a path that returns to
    its start (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    part = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        part.add(member)
                        if member == node:
                            break
                    if len(part) > 1:
                        found.append(_path_through(graph, part))
    return found


def _path_through(graph: Graph, part: set[str]) -> list[str]:
    """A shortest cycle through the first member of a strongly connected part."""
    start = min(part)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & part):
                if target == start:
                    return [*paths[node], start]
                if target not in paths:
                    paths[target] = [*paths[node], target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def _report(found: list[list[str]]) -> str:
    return "import cycles:\n" + "\n".join("  " + " -> ".join(cycle) for cycle in found)


def test_no_module_imports_itself_back() -> None:
    found = cycles(import_graph())
    assert not found, _report(found)


def test_no_folder_imports_itself_back() -> None:
    found = cycles(folder_graph(import_graph()))
    assert not found, _report(found)


def test_the_graph_sees_lazy_and_type_only_imports(tmp_path: Path) -> None:
    """The walker itself: a lazy import and a TYPE_CHECKING one close a cycle each."""
    package = tmp_path / PACKAGE
    (package / "low").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "low" / "__init__.py").write_text("")
    (package / "top.py").write_text("from bot.low import base\n")
    (package / "low" / "base.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from bot.low.helper import Helper\n"
        "def build():\n    from bot import top\n"
    )
    (package / "low" / "helper.py").write_text("from .base import build\n")
    graph = import_graph(tmp_path)
    assert graph["bot.low.base"] == {"bot.low.helper", "bot.top"}
    assert graph["bot.low.helper"] == {"bot.low.base"}
    assert sorted(map(tuple, cycles(graph))) == [("bot.low.base", "bot.low.helper", "bot.low.base")]
    assert cycles(folder_graph(graph)) == [["bot.low", "bot.top", "bot.low"]]
