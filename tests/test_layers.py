"""The package's import layering: no circles, lower layers never import higher ones.

The graph is read from the source with :mod:`ast`, so that an import inside a function (the
usual way round a circle) counts as much as one at the top of a module. Two graphs come of it:

- the **runtime** graph (every import but those under ``if TYPE_CHECKING:``) must have no
  circle, and every module must import on its own in a fresh interpreter, lowest first.
  Type-only imports are left out of this one: they never run, so they cannot make a module
  see another half-initialised (``from __future__ import annotations`` keeps them unevaluated).
- the **layer rules** hold on the whole graph, type-only imports included: a type from the
  engine in a config signature still ties the config layer to the engine (it is documented,
  type-checked and refactored with it, and it is one step from a runtime import).

Edges into the root package ``bulk`` are not followed for the rules: it is the public façade
on top of every layer, and every module loads it first as its parent package anyway (what
``import bulk`` itself loads is checked by :func:`test_import_bulk_is_light`).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import bulk

ROOT = Path(bulk.__file__).parent

# (modules the rule is about, modules they must never import, even through others)
RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bulk._config", ("bulk._engine", "bulk._cli")),
    ("bulk._plan", ("bulk._engine", "bulk._cli")),
    ("bulk._journal", ("bulk._engine", "bulk._cli")),
    ("bulk.backends", ("bulk._engine", "bulk._plan", "bulk._cli")),
)
CLI = ("bulk._cli", "bulk.__main__")  # the top: nothing else imports bulk._cli
# What a local run must not load: the HTTP stack, RSA signing, rich's terminal rendering.
HEAVY = ("aiohttp", "cryptography", "rich", "yarl")
LIGHT = ("bulk", "bulk._config", "bulk.backends.local")


@dataclass
class Module:
    """One module of the package and what it imports (bulk modules only)."""

    name: str
    path: Path
    runtime: set[str] = field(default_factory=set)  # executed imports (any depth)
    typing: set[str] = field(default_factory=set)  # under ``if TYPE_CHECKING:`` only
    lazy: set[str] = field(default_factory=set)  # of ``runtime``: inside a function only


def _name_of(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(
    node: ast.AST, package: str, *, typing: bool = False, lazy: bool = False
) -> Iterator[tuple[str, bool, bool]]:
    """``(imported name, type-only, inside a function)`` for every import under ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import):
            for alias in child.names:
                yield alias.name, typing, lazy
        elif isinstance(child, ast.ImportFrom):
            if child.level:
                base = package.split(".")[: len(package.split(".")) - child.level + 1]
                module = ".".join([*base, *([child.module] if child.module else [])])
            else:
                module = child.module or ""
            yield module, typing, lazy
            for alias in child.names:  # ``from bulk.backends import local`` names a module
                yield f"{module}.{alias.name}", typing, lazy
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for part in child.body:
                yield from _imports(ast.Module([part], []), package, typing=True, lazy=lazy)
            for part in child.orelse:
                yield from _imports(ast.Module([part], []), package, typing=typing, lazy=lazy)
        else:
            inner = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            yield from _imports(child, package, typing=typing, lazy=lazy or inner)


def _graph() -> dict[str, Module]:
    files = {_name_of(p): p for p in sorted(ROOT.rglob("*.py"))}
    graph = {name: Module(name, path) for name, path in files.items()}
    for mod in graph.values():
        package = mod.name if mod.path.name == "__init__.py" else mod.name.rpartition(".")[0]
        tree = ast.parse(mod.path.read_text(), str(mod.path))
        for name, typing, lazy in _imports(tree, package):
            if name not in graph or name == mod.name:
                continue  # a name imported from a module, or outside bulk
            # Importing a.b.c runs a and a.b first: edges to those packages too, except to
            # the importer's own parents (a submodule of a package is no circle with it).
            parts = name.split(".")
            targets = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
            own = {".".join(mod.name.split(".")[:i]) for i in range(1, mod.name.count(".") + 1)}
            targets -= own - {name}  # an explicit import of a parent still counts
            for target in targets & graph.keys():
                if typing:
                    mod.typing.add(target)
                else:
                    mod.runtime.add(target)
                    if lazy:
                        mod.lazy.add(target)
        mod.typing -= mod.runtime
        for done in (mod.runtime, mod.typing, mod.lazy):
            done.discard(mod.name)
    return graph


GRAPH = _graph()


def _circle(graph: dict[str, Module]) -> list[str] | None:
    """One import circle of the runtime graph, as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for dep in sorted(graph[name].runtime):
            if state.get(dep) == 1:
                return [*path[path.index(dep) :], dep]
            if dep not in state and (found := visit(dep)) is not None:
                return found
        path.pop()
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state and (found := visit(name)) is not None:
            return found
    return None


def _lowest_first(graph: dict[str, Module]) -> list[str]:
    """Every module after everything it imports (the runtime graph has no circle)."""
    order: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        done.add(name)
        for dep in sorted(graph[name].runtime):
            if dep not in done:
                visit(dep)
        order.append(name)

    for name in sorted(graph):
        if name not in done:
            visit(name)
    return order


def _chain(graph: dict[str, Module], start: str, banned: tuple[str, ...]) -> list[str] | None:
    """The shortest import chain from ``start`` into ``banned``, type-only imports included."""

    def hit(name: str) -> bool:
        return any(name == b or name.startswith(b + ".") for b in banned)

    came: dict[str, str] = {start: ""}
    todo = [start]
    while todo:
        name = todo.pop(0)
        for dep in sorted(graph[name].runtime | graph[name].typing):
            if dep in came or dep == "bulk":
                continue
            came[dep] = name
            if hit(dep):
                chain = [dep]
                while chain[-1] != start:
                    chain.append(came[chain[-1]])
                return chain[::-1]
            todo.append(dep)
    return None


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_graph_sees_every_kind_of_import() -> None:
    # The reader itself: a function-level import, a TYPE_CHECKING import, a relative one.
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import _sweep\n"
        "if TYPE_CHECKING:\n    from bulk._engine import Engine\n"
        "def f():\n    import bulk._cli\n"
    )
    found = set(_imports(ast.parse(source), "bulk._config"))
    assert ("bulk._config._sweep", False, False) in found
    assert ("bulk._engine", True, False) in found
    assert ("bulk._cli", False, True) in found
    # and the package's graph holds the modules and edges known to be there
    assert {"bulk", "bulk.errors", "bulk._config._load", "bulk._journal._store"} <= GRAPH.keys()
    assert "bulk._journal._store" in GRAPH["bulk._journal._writer"].runtime


def test_no_import_circle() -> None:
    assert _circle(GRAPH) is None, f"import circle: {' -> '.join(_circle(GRAPH) or [])}"


def test_the_circle_finder_finds_one() -> None:
    a, b, c = Module("a", ROOT), Module("b", ROOT), Module("c", ROOT)
    a.runtime, b.runtime, c.runtime = {"b"}, {"c"}, {"a"}
    assert _circle({"a": a, "b": b, "c": c}) == ["a", "b", "c", "a"]
    c.runtime, c.typing = set(), {"a"}  # type-only: not a circle
    assert _circle({"a": a, "b": b, "c": c}) is None


@pytest.mark.parametrize(("package", "banned"), RULES, ids=[package for package, _ in RULES])
def test_lower_layers_never_import_higher_ones(package: str, banned: tuple[str, ...]) -> None:
    members = [name for name in GRAPH if _within(name, package)]
    assert members, f"{package}: no such package"
    chains = [c for name in members if (c := _chain(GRAPH, name, banned)) is not None]
    assert not chains, "\n".join(" -> ".join(c) for c in chains)


def test_nothing_below_the_cli_imports_it() -> None:
    below = [name for name in GRAPH if not any(_within(name, top) for top in CLI)]
    chains = [c for name in below if (c := _chain(GRAPH, name, CLI[:1])) is not None]
    assert not chains, "\n".join(" -> ".join(c) for c in chains)


_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


def _loaded(module: str) -> list[str]:
    """Every module loaded by importing ``module`` alone, in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, module],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"import {module} failed on its own:\n{done.stderr}"
    loaded: list[str] = json.loads(done.stdout)
    return loaded


# bulk.__main__ is ``python -m bulk``: importing it runs the CLI (its imports are in the graph).
@pytest.mark.parametrize("module", [m for m in _lowest_first(GRAPH) if m != "bulk.__main__"])
def test_every_module_imports_on_its_own(module: str) -> None:
    loaded = _loaded(module)
    assert module in loaded
    # what it really loaded obeys the rules too (module-level imports, through any chain,
    # including its parent packages')
    for package, banned in RULES:
        if _within(module, package):
            wrong = [n for n in loaded if any(_within(n, b) for b in banned)]
            assert not wrong, f"import {module} loads {', '.join(wrong)}"


@pytest.mark.parametrize("module", LIGHT)
def test_import_bulk_is_light(module: str) -> None:
    # A local run needs neither the HTTP stack nor RSA nor rich: they load with the
    # backends or commands that use them.
    heavy = sorted({n for n in _loaded(module) if n.split(".")[0] in HEAVY})
    assert not heavy, f"import {module} loads {', '.join(heavy)}"


def test_no_private_module_of_another_library() -> None:
    # A library's private modules (anyio._core, ...) change without notice between its
    # releases; bulk uses public APIs only.
    private = []
    for mod in GRAPH.values():
        tree = ast.parse(mod.path.read_text(), str(mod.path))
        for name, _, _ in _imports(tree, mod.name):
            parts = name.split(".")
            if parts[0] != "bulk" and any(
                p.startswith("_") and not p.startswith("__") for p in parts[1:]
            ):
                private.append(f"{mod.name}: {name}")
    assert not private, "\n".join(private)
