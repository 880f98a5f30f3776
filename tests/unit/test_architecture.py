"""The shape of the ttsd package: no import cycles, dependencies pointing one way down the layers,
small modules, and a CLI that imports on its own.

The graph is read from the source with `ast`, so it sees every import (module level, inside
functions, under `if TYPE_CHECKING:`) whether or not the code path runs: a type-only import is a
dependency too. `from ttsd.x import y` counts as an import of the module `ttsd.x.y` when there is
one, else of `ttsd.x`.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Collection, Iterator, Mapping
from functools import cache
from pathlib import Path

import ttsd

PACKAGE_DIR = Path(ttsd.__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
MAX_MODULE_LINES = 420

FOUNDATION = frozenset(
    {
        "ttsd",  # the root package: only __version__
        "ttsd.errors",
        "ttsd.config",
        "ttsd.database_url",
        "ttsd.templates",
        "ttsd.fsutil",
        "ttsd.audio",
        "ttsd.encoding",
        "ttsd.names",
        "ttsd.faults",
        "ttsd.catalog",
        "ttsd.jobspec",
        "ttsd.joblog",
        "ttsd.privacy",
        "ttsd.markup",
        "ttsd.books",
        "ttsd.voicelib",
        "ttsd.voicelib.errors",
        "ttsd.voicelib.library",
        "ttsd.voicelib.prompt_file",
        "ttsd.subtitles",
    }
)
# Lowest first: a module may import from its own rank and the ranks below it, never above. A name
# is a module, or a package standing for everything in it.
RANKS: tuple[frozenset[str], ...] = (
    FOUNDATION,
    frozenset({"ttsd.jobqueue"}),
    frozenset({"ttsd.delivery"}),
    frozenset({"ttsd.intake", "ttsd.synth"}),
    frozenset({"ttsd.ops", "ttsd.client", "ttsd.http"}),
    frozenset({"ttsd.daemon"}),
    frozenset({"ttsd.cli", "ttsd.__main__"}),
)
# Peers of one rank that must stay independent: intake turns files into jobs, synth turns jobs
# into audio, and they meet only through the ranks below them (the queue, delivery).
APART = (("ttsd.intake", "ttsd.synth"),)

Graph = Mapping[str, frozenset[str]]
Edge = tuple[str, str]


def module_name(path: Path) -> str:
    """`ttsd/synth/worker.py` -> `ttsd.synth.worker`; a package's `__init__.py` is the package."""
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of ttsd, by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _nearest(name: str, known: Collection[str]) -> str | None:
    """`name` itself when it is a known module, else its nearest enclosing known module."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _from_base(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a `from ... import` names, relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    package = importer if is_package else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def imports_in(source: str, importer: str, is_package: bool, known: Collection[str]) -> frozenset[str]:
    """The modules of `known` (ttsd's) that the source of module `importer` imports, anywhere in it."""
    targets: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(importer, is_package, node)
            # `from ttsd.x import y`: y is the module ttsd.x.y when there is one, else a name in ttsd.x.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in names:
            target = _nearest(name, known)
            if target is not None and target != importer:
                targets.add(target)
    return frozenset(targets)


@cache
def import_graph() -> Graph:
    """importer -> the ttsd modules it imports."""
    known = modules()
    return {
        name: imports_in(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", known)
        for name, path in known.items()
    }


def edges(graph: Graph) -> Iterator[Edge]:
    """Every import, sorted."""
    for importer, targets in sorted(graph.items()):
        for target in sorted(targets):
            yield importer, target


def cycles(graph: Graph) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(graph, component) for component in components]


def _cycle_in(graph: Graph, component: list[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component."""
    members = set(component)
    start = component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node] & members):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if target not in parents:
                    parents[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"{component} is not strongly connected")


def rank_of(name: str) -> int | None:
    """The rank of a module: the rank naming it or a package that holds it."""
    for rank, units in enumerate(RANKS):
        if any(name == unit or (unit != "ttsd" and name.startswith(f"{unit}.")) for unit in units):
            return rank
    return None


def within(name: str, unit: str) -> bool:
    """Whether module `name` is `unit` or inside the package `unit`."""
    return name == unit or name.startswith(f"{unit}.")


def upward(graph: Graph) -> list[Edge]:
    """Imports from a lower rank to a higher one (a module in no rank is reported elsewhere)."""
    found = []
    for importer, target in edges(graph):
        low, high = rank_of(importer), rank_of(target)
        if low is not None and high is not None and low < high:
            found.append((importer, target))
    return found


def beyond_foundation(graph: Graph) -> list[Edge]:
    """Imports from a foundation module of anything that is not one."""
    return [
        (importer, target) for importer, target in edges(graph) if importer in FOUNDATION and target not in FOUNDATION
    ]


def crossing(graph: Graph) -> list[Edge]:
    """Imports between the packages of APART, either way."""
    return [
        (importer, target)
        for importer, target in edges(graph)
        for one, other in APART
        if (within(importer, one) and within(target, other)) or (within(importer, other) and within(target, one))
    ]


def show(found: list[Edge]) -> str:
    """The edges, one per line."""
    return "\n".join(f"  {importer} -> {target}" for importer, target in found)


# -- the tests ------------------------------------------------------------------------------------


SAMPLE = """
import numpy
import ttsd.jobqueue.store
import ttsd.audio as audio
from ttsd import __version__
from ttsd.cli import cache
from ttsd.cli.app import main
from . import chunking
from ..errors import EngineError
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ttsd.config import Settings


def load() -> None:
    from ttsd.daemon import run_daemon


class Later:
    def method(self) -> None:
        import ttsd.names
"""


def test_the_graph_sees_every_kind_of_import() -> None:
    found = imports_in(SAMPLE, "ttsd.synth.worker", is_package=False, known=modules())
    assert found == {
        "ttsd.jobqueue.store",
        "ttsd.audio",
        "ttsd",  # from ttsd import __version__: a name in the root package
        "ttsd.cli.cache",  # from ttsd.cli import cache: a module
        "ttsd.cli.app",  # from ttsd.cli.app import main: a name in a module
        "ttsd.synth.chunking",  # relative, from the worker's package
        "ttsd.errors",  # relative, two levels up
        "ttsd.config",  # under TYPE_CHECKING
        "ttsd.daemon",  # in a function
        "ttsd.names",  # in a method
    }


def test_the_graph_holds_the_real_package() -> None:
    graph = import_graph()
    assert "ttsd.cli.cache" in graph["ttsd.cli"]
    assert "ttsd.daemon" in graph["ttsd.cli.run"]
    assert graph["ttsd.errors"] == frozenset()


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join("  " + " -> ".join(cycle) for cycle in found)


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {
        "a": frozenset({"b"}),
        "b": frozenset({"c"}),
        "c": frozenset({"a", "d"}),
        "d": frozenset({"e"}),
        "e": frozenset({"d"}),
    }
    assert sorted(cycles(graph)) == [["a", "b", "c", "a"], ["d", "e", "d"]]
    assert cycles({"a": frozenset({"b"}), "b": frozenset()}) == []


def test_every_module_has_a_rank() -> None:
    unranked = sorted(name for name in modules() if rank_of(name) is None)
    assert not unranked, f"modules in no rank of RANKS (add them to one): {unranked}"


def test_the_rules_catch_what_they_forbid() -> None:
    graph: Graph = {
        "ttsd.errors": frozenset({"ttsd.jobqueue.store"}),  # foundation reaching up
        "ttsd.jobqueue.store": frozenset({"ttsd.errors"}),
        "ttsd.intake.intake": frozenset({"ttsd.synth.chunking", "ttsd.jobqueue.store"}),  # peers crossing
        "ttsd.synth.chunking": frozenset(),
        "ttsd.delivery.outbox": frozenset({"ttsd.cli.app", "ttsd.fsutil"}),  # two ranks up
        "ttsd.cli.app": frozenset({"ttsd.daemon"}),
        "ttsd.daemon": frozenset(),
    }
    assert upward(graph) == [("ttsd.delivery.outbox", "ttsd.cli.app"), ("ttsd.errors", "ttsd.jobqueue.store")]
    assert beyond_foundation(graph) == [("ttsd.errors", "ttsd.jobqueue.store")]
    assert crossing(graph) == [("ttsd.intake.intake", "ttsd.synth.chunking")]


def test_dependencies_point_down_the_ranks() -> None:
    found = upward(import_graph())
    assert not found, f"imports from a lower rank to a higher one:\n{show(found)}"


def test_foundation_modules_import_only_foundation_modules() -> None:
    found = beyond_foundation(import_graph())
    assert not found, f"foundation modules importing beyond the foundation:\n{show(found)}"


def test_intake_and_synth_do_not_import_each_other() -> None:
    found = crossing(import_graph())
    assert not found, f"imports between packages that must stay apart:\n{show(found)}"


def test_modules_are_short() -> None:
    lines = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in modules().values()}
    long = sorted(
        f"{path.relative_to(PROJECT_ROOT)} ({count} lines)" for path, count in lines.items() if count > MAX_MODULE_LINES
    )
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {', '.join(long)}"


def test_the_cli_imports_on_its_own() -> None:
    # A fresh interpreter: an import-order accident hidden by what other tests imported first shows here.
    result = subprocess.run(
        [sys.executable, "-c", "import ttsd.cli"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_daemon_process_never_imports_torch() -> None:
    """Synthesis runs in worker processes: the supervisor stays small and responsive."""
    heavy = "('torch', 'transformers', 'qwen_tts')"
    code = f"import sys, ttsd.daemon, ttsd.cli; print(sorted(m for m in {heavy} if m in sys.modules))"
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert found.stdout.strip() == "[]"
