"""pgraft's modules import each other without cycles, and layers only import downwards
(docs/design.md, "Layers").

The graph is read from the source (ast), without importing anything: every import that runs
when a module is imported (module level, class bodies, ``try``/``if`` blocks) and the ones under
``if TYPE_CHECKING:`` — a cycle hidden from the interpreter is still a cycle between the modules.
Imports inside functions are left out: they run later, and deferring one is how a module keeps
an optional or heavy dependency out of its import. An import of a
package (``from ..raft import RawNode``) is an edge to its ``__init__``; ``from . import x``
is an edge to the submodule ``x`` when there is one. The implicit import of a module's parent
packages is not an edge (a package's ``__init__`` may import its submodules).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2] / "pgraft"


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """The imports of a module outside function bodies."""
    found: list[ast.Import | ast.ImportFrom] = []
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append(child)
            else:
                todo.append(child)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                # ``from pkg import sub`` imports the submodule ``pkg.sub`` (and ``pkg`` only
                # as its parent, as every import of a submodule does: not an edge)
                subs = [f"{prefix}.{a.name}" for a in node.names
                        if f"{prefix}.{a.name}" in modules]
                targets = subs if len(subs) == len(node.names) else [prefix, *subs]
            for target in targets:
                while target and target not in modules:  # pgraft.x.Name -> pgraft.x
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for dep in sorted(graph[m]):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert "pgraft.raft.rawnode" in graph["pgraft.raft"]
    assert "pgraft.raft.core" in graph["pgraft.raft.rawnode"]
    assert "pgraft.node.node" in graph["pgraft.node.process"]
    assert "pgraft.failpoints" in graph["pgraft.node.snapfile"]  # from .. import failpoints


def test_no_import_cycles() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


LAYERS = [
    # (importer prefix, prefixes it must never import)
    ("pgraft.raft", ("pgraft.state", "pgraft.node", "pgraft.client", "pgraft.cli")),
    ("pgraft.state", ("pgraft.node", "pgraft.client", "pgraft.cli")),
    ("pgraft.node", ("pgraft.client", "pgraft.cli")),
]


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


@pytest.mark.parametrize(("layer", "forbidden"), LAYERS, ids=[lay for lay, _ in LAYERS])
def test_layers_import_downwards(layer: str, forbidden: tuple[str, ...]) -> None:
    graph = _graph()
    wrong = sorted(f"{m} -> {dep}" for m, deps in graph.items() if _within(m, layer)
                   for dep in deps if any(_within(dep, f) for f in forbidden))
    assert not wrong, wrong


def test_node_collaborators_do_not_import_the_node() -> None:
    """The Node's collaborators reach it only through the Protocols they declare
    (MessageSink, PeerEvents, SnapshotHost, TransferHost): none imports pgraft.node.node, and
    only the composition root, the client server (which serves the Node) and, in the layer
    above, the HA controller and the health view (which drive and read it, for type hints
    only) do."""
    graph = _graph()
    importers = sorted(m for m, deps in graph.items() if "pgraft.node.node" in deps)
    assert importers == ["pgraft.ha.controller", "pgraft.ha.view", "pgraft.node",
                         "pgraft.node.process", "pgraft.node.server"]
