"""The package's import graph, read with ast (imports inside functions count): no cycle between
fedrouter modules, and no client-side module that reaches a server-side one."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fedrouter"
CLIENT_SIDE = ("fedrouter.client_app", "fedrouter.client_logic")
SERVER_SIDE = (
    "fedrouter.server_app",
    "fedrouter.federation",
    "fedrouter.strategies",
    "fedrouter.checkpoint",
)


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """Return the dotted name of a source file of the package (a package for __init__.py)."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, name: str, modules: set[str]) -> set[str]:
    """Return the package's modules that the file imports, anywhere in it."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's package, up level - 1
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            # `from a import b` imports the module a.b when there is one, else a
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Return {module: the package's modules it imports} for every file under ``root``."""
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    modules = set(files)
    return {name: imported_modules(path, name, modules) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return one cycle through each strongly connected group of modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [cycle_in(graph, group) for group in groups]


def cycle_in(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """Return a cycle within a strongly connected group, starting and ending at its first."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                frontier.append(nxt)
    raise AssertionError(f"{group} is not strongly connected")


def path_between(graph: dict[str, set[str]], start: str, goal) -> list[str] | None:
    """Return the shortest import chain from ``start`` to a module that ``goal`` accepts."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        node = frontier.pop(0)
        for nxt in sorted(graph[node]):
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                if goal(nxt):
                    return paths[nxt]
                frontier.append(nxt)
    return None


def is_server_side(module: str) -> bool:
    return any(module == s or module.startswith(s + ".") for s in SERVER_SIDE)


# --- the rules, on the package ---------------------------------------------------------------


def test_no_import_cycle_between_modules():
    found = [" -> ".join(cycle) for cycle in cycles(import_graph())]
    assert found == [], "import cycles"


def test_client_side_modules_reach_no_server_side_module():
    graph = import_graph()
    chains = {
        client: path_between(graph, client, is_server_side)
        for client in CLIENT_SIDE
        if client in graph
    }
    found = [" -> ".join(chain) for chain in chains.values() if chain]
    assert found == [], "client-side modules that import a server-side one"


# --- the reader, on small packages written here ----------------------------------------------


def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "fedrouter"
    for relative, text in files.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_imports_inside_functions_and_relative_ones_count(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "def f():\n    from fedrouter.b import g\n",
            "b.py": "from . import c\n",
            "c.py": "import fedrouter.sub.d as d\n",
            "sub/__init__.py": "",
            "sub/d.py": "from ..a import f\nfrom .e import x\n",
            "sub/e.py": "import os\n",
        },
    )
    graph = import_graph(package)
    assert graph["fedrouter.a"] == {"fedrouter.b"}
    assert graph["fedrouter.b"] == {"fedrouter.c"}
    assert graph["fedrouter.c"] == {"fedrouter.sub.d"}
    assert graph["fedrouter.sub.d"] == {"fedrouter.a", "fedrouter.sub.e"}
    assert cycles(graph) == [
        ["fedrouter.a", "fedrouter.b", "fedrouter.c", "fedrouter.sub.d"] + ["fedrouter.a"]
    ]


def test_a_client_reaching_the_server_through_another_module_is_found(tmp_path):
    package = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "client_app.py": "from fedrouter.protocol import KEY\n",
            "protocol.py": "def f():\n    from fedrouter.strategies.base import to_record\n",
            "strategies/__init__.py": "",
            "strategies/base.py": "",
        },
    )
    graph = import_graph(package)
    chain = path_between(graph, "fedrouter.client_app", is_server_side)
    assert chain == ["fedrouter.client_app", "fedrouter.protocol", "fedrouter.strategies.base"]
    assert cycles(graph) == []
