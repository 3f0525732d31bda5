"""The core's import graph: no cycle, and the explorer's engine apart from the model.

The graph is read from the source with :mod:`ast`, not by importing: every
``import`` and ``from ... import`` of an ``mmu_notifier`` module counts, at
module level or inside a function (a late import is still a dependency),
except those under ``if TYPE_CHECKING:``, which never run. ``from pkg import
name`` is an edge to the submodule ``pkg.name`` when there is one, else to
``pkg`` itself (its ``__init__``).
"""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

import mmu_notifier
import mmu_notifier.explore

PACKAGE_DIR = Path(mmu_notifier.__file__).parent
REPO = Path(__file__).resolve().parents[1]

#: what the engine may import besides itself
ENGINE = "mmu_notifier.explore"
ENGINE_ALLOWED = frozenset({"mmu_notifier.sync", "mmu_notifier.srcu", "mmu_notifier.errors"})


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.path.relative_to(REPO)}:{self.line})"


def _module_name(path: Path, root: Path, package: str) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: anywhere in the tree, but not under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []
    pending: list[ast.AST] = [tree]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If) and _is_type_checking(node):
            pending.extend(node.orelse)
            continue
        pending.extend(ast.iter_child_nodes(node))
    return found


def _resolve(target: str, modules: set[str]) -> str | None:
    """The module ``target`` names: itself, or its longest prefix that is a module (a name in it)."""
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def module_graph(root: Path = PACKAGE_DIR, package: str = "mmu_notifier") -> dict[str, list[Edge]]:
    """Every module of ``package`` (source under ``root``) with its import edges to the package's modules."""
    files = {_module_name(path, root, package): path for path in sorted(root.rglob("*.py"))}
    modules = set(files)
    graph: dict[str, list[Edge]] = {}
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: list[Edge] = []
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                subs = [f"{base}.{alias.name}" for alias in node.names]
                targets = [sub if sub in modules else base for sub in subs]
            for target in targets:
                resolved = _resolve(target, modules) if target.startswith(package) else None
                if resolved is not None and resolved != name:
                    edges.append(Edge(name, resolved, path, node.lineno))
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, list[Edge]]) -> list[Edge] | None:
    """One import cycle as its edges, or None (iterative depth-first search, white/grey/black)."""
    state: dict[str, int] = dict.fromkeys(graph, 0)  # 0 unvisited, 1 on the current path, 2 done
    for start in sorted(graph):
        if state[start]:
            continue
        path: list[Edge] = []
        stack = [(start, iter(graph[start]))]
        state[start] = 1
        while stack:
            node, edges = stack[-1]
            edge = next(edges, None)
            if edge is None:
                state[node] = 2
                stack.pop()
                if path:
                    path.pop()
                continue
            if state[edge.target] == 1:
                cycle = [*path, edge]
                first = next(i for i, e in enumerate(cycle) if e.source == edge.target)
                return cycle[first:]
            if state[edge.target] == 0:
                state[edge.target] = 1
                path.append(edge)
                stack.append((edge.target, iter(graph[edge.target])))
    return None


def reachable(graph: dict[str, list[Edge]], sources: list[str]) -> dict[str, list[Edge]]:
    """Every module imported (directly or not) from ``sources``, with one chain of edges leading to it."""
    chains: dict[str, list[Edge]] = {source: [] for source in sources}
    queue = deque(sources)
    while queue:
        node = queue.popleft()
        for edge in graph[node]:
            if edge.target not in chains:
                chains[edge.target] = [*chains[node], edge]
                queue.append(edge.target)
    return chains


def _chain(edges: list[Edge]) -> str:
    return "\n    ".join(str(edge) for edge in edges)


GRAPH = module_graph()


def test_the_graph_sees_the_core() -> None:
    # the reader itself: it finds the modules and the edges everyone knows are there
    assert {"mmu_notifier.kernel", "mmu_notifier.explore", "mmu_notifier.explore._scheduler"} <= set(GRAPH)
    targets = {edge.target for edge in GRAPH["mmu_notifier.cli"]}
    assert {"mmu_notifier.workload.cli", "mmu_notifier.scenarios.cli", "mmu_notifier.conformance.cli"} <= targets


def test_the_reader_counts_late_imports_and_skips_type_checking_ones(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import b\n"
        "def f():\n    from pkg.c import thing\n"
    )
    (package / "b.py").write_text("from . import a\n")
    (package / "c.py").write_text("thing = 1\n")
    graph = module_graph(package, "pkg")
    assert [e.target for e in graph["pkg.a"]] == ["pkg.c"]
    assert [e.target for e in graph["pkg.b"]] == ["pkg.a"]
    (package / "c.py").write_text("import pkg.b\nthing = 1\n")
    cycle = find_cycle(module_graph(package, "pkg"))
    assert cycle is not None
    assert sorted(e.source for e in cycle) == ["pkg.a", "pkg.b", "pkg.c"]


def test_no_import_cycle_in_the_core() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, (
        "import cycle in the core (break it: move the shared piece down, or make the import type-only):\n    "
        + _chain(cycle or [])
    )


def _in_engine(name: str) -> bool:
    return name == ENGINE or name.startswith(f"{ENGINE}.")


def test_the_engine_imports_nothing_of_the_model() -> None:
    # walk out from the engine through what it may import; every edge leaving that set is a fault
    chains = {name: [] for name in GRAPH if _in_engine(name)}
    queue = deque(chains)
    offending: list[list[Edge]] = []
    while queue:
        node = queue.popleft()
        for edge in GRAPH[node]:
            if not (_in_engine(edge.target) or edge.target in ENGINE_ALLOWED):
                offending.append([*chains[node], edge])
            elif edge.target not in chains:
                chains[edge.target] = [*chains[node], edge]
                queue.append(edge.target)
    assert not offending, (
        f"the explorer's engine ({ENGINE}) may import only {', '.join(sorted(ENGINE_ALLOWED))} and itself; "
        "whatever needs the model belongs in mmu_notifier.scenarios:\n    "
        + "\n    ".join(_chain(chain) for chain in offending)
    )


@pytest.mark.parametrize("plugin", ["mmu_notifier.conformance.plugin", "mmu_notifier.explore.pytest_plugin"])
def test_the_pytest_plugins_import_no_command_line_module(plugin: str) -> None:
    chains = reachable(GRAPH, [plugin])
    clis = {t: c for t, c in chains.items() if t.rpartition(".")[2] in ("cli", "cli_common", "__main__")}
    assert not clis, f"{plugin} imports a command-line module:\n    " + "\n    ".join(
        _chain(chain) for chain in clis.values()
    )


def _outside_files() -> list[Path]:
    """Source outside the engine that must use its public names: the core, plugins, examples, bench."""
    roots = [PACKAGE_DIR, REPO / "plugins", REPO / "examples", REPO / "bench"]
    engine_dir = PACKAGE_DIR / "explore"
    return [
        path
        for root in roots
        for path in sorted(root.rglob("*.py"))
        if engine_dir not in path.parents and "tests" not in path.relative_to(REPO).parts
    ]


def _private_engine_module(name: str) -> bool:
    """``mmu_notifier.explore._scheduler`` and the like: the engine's internals."""
    head, _, rest = name.partition(f"{ENGINE}.")
    return not head and rest.startswith("_")


def test_everything_outside_reaches_the_engine_by_its_public_names() -> None:
    offending = []
    for path in _outside_files():
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                names = [node.module or "", *(f"{node.module}.{alias.name}" for alias in node.names)]
            private = [name for name in names if _private_engine_module(name)]
            if private:
                offending.append(f"{path.relative_to(REPO)}:{node.lineno} imports {private[0]}")
    assert not offending, (
        f"import the engine's public names from {ENGINE} (its __all__), not its internal modules:\n    "
        + "\n    ".join(offending)
    )


def test_the_engine_all_lists_what_it_exports() -> None:
    names = mmu_notifier.explore.__all__
    assert len(names) == len(set(names)), f"{ENGINE}.__all__ repeats a name"
    missing = [name for name in names if not hasattr(mmu_notifier.explore, name)]
    assert not missing, f"{ENGINE}.__all__ names what the package does not define: {missing}"
    init = ast.parse((PACKAGE_DIR / "explore" / "__init__.py").read_text())
    exported = {
        alias.asname or alias.name
        for node in _imports(init)
        if not (isinstance(node, ast.ImportFrom) and node.module == "typing")  # TYPE_CHECKING: not an export
        for alias in node.names
    }
    assert exported == set(names), (
        f"{ENGINE}/__init__.py imports {sorted(exported - set(names))} without listing them in __all__, "
        f"or lists {sorted(set(names) - exported)} it does not import"
    )
