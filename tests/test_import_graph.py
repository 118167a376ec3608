"""gvbench's modules import one another without a circle, and the estimators stand alone.

The graph is read from the source, not from a running interpreter: every ``import`` and
``from … import`` of a gvbench module, at module level and inside functions (a function-local
import only postpones a circle to the first call), with relative imports resolved and
``from gvbench import x`` read as the submodule ``x`` where there is one. Imports under
``if TYPE_CHECKING:`` never run and are not edges. Importing ``a.b`` runs the package ``a``
first, but that is ``a``'s own imports, not an edge of the importer's: a package whose
``__init__`` imports its children lazily (PEP 562) stays out of its children's circles.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gvbench

PACKAGE = Path(gvbench.__path__[0])

# (importer, imported) → where: "file:line" of the first import statement that makes the edge.
Edges = dict[tuple[str, str], str]


def module_names() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its ``__init__``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: at any depth, outside ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _type_checking(node):
            yield from (n for child in node.orelse for n in _imports(ast.Module([child], [])))
        else:
            yield from _imports(node)


def imported(name: str, path: Path, node: ast.Import | ast.ImportFrom, known: set[str]) -> set[str]:
    """The gvbench modules that the statement ``node`` of module ``name`` imports."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names if alias.name in known}
    if node.level:
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    found = set()
    for alias in node.names:
        if f"{base}.{alias.name}" in known:
            found.add(f"{base}.{alias.name}")  # a submodule: `from gvbench import plugins`
        elif base in known:
            found.add(base)  # a name the module defines
    return found


def import_graph() -> Edges:
    modules = module_names()
    known = set(modules)
    edges: Edges = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in _imports(tree):
            for target in imported(name, path, node, known) - {name}:
                where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
                edges.setdefault((name, target), where)
    return edges


def components(edges: Edges) -> list[set[str]]:
    """The strongly connected components of more than one module: each is one or more
    circles (Tarjan's algorithm, iterative)."""
    graph: dict[str, list[str]] = {}
    for source, target in sorted(edges):
        graph.setdefault(source, []).append(target)
        graph.setdefault(target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(set(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(graph[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def circle(edges: Edges, component: set[str]) -> list[str]:
    """A shortest circle through the component's first module (breadth-first), as the list
    of its modules with the first repeated at the end."""
    graph: dict[str, list[str]] = {}
    for source, target in sorted(edges):
        graph.setdefault(source, []).append(target)
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in graph.get(node, []):
                if child not in component:
                    continue
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no circle in a strongly connected component {component}")


def test_the_graph_reader_sees_every_kind_of_import():
    """Function-local, relative and ``from package import submodule`` imports are edges;
    imports under TYPE_CHECKING are not."""
    known = {
        "gvbench",
        "gvbench.plugins",
        "gvbench.report",
        "gvbench.harness",
        "gvbench.estimators",
        "gvbench.estimators.registry",
        "gvbench.tasks",
        "gvbench.tasks.toy",
    }
    source = (
        "from typing import TYPE_CHECKING\n"
        "from .. import plugins\n"
        "from ..estimators import registry\n"
        "from gvbench.harness import read\n"
        "if TYPE_CHECKING:\n"
        "    from gvbench import report\n"
        "def later():\n"
        "    import gvbench.tasks.toy\n"
    )
    path = PACKAGE / "harness" / "example.py"
    statements = list(_imports(ast.parse(source)))
    found = set().union(*(imported("gvbench.harness.example", path, n, known) for n in statements))
    assert found == {
        "gvbench.plugins",
        "gvbench.estimators.registry",
        "gvbench.harness",
        "gvbench.tasks.toy",
    }
    package = ast.parse("from .toy import Toy\nfrom . import toy").body
    for node in package:
        assert imported("gvbench.tasks", PACKAGE / "tasks" / "__init__.py", node, known) == {
            "gvbench.tasks.toy"
        }


def test_the_cycle_finder_names_a_circle():
    edges = {("a", "b"): "", ("b", "c"): "", ("c", "a"): "", ("c", "d"): "", ("d", "d2"): ""}
    assert components(edges) == [{"a", "b", "c"}]
    assert circle(edges, {"a", "b", "c"}) == ["a", "b", "c", "a"]
    assert components({("a", "b"): "", ("b", "c"): ""}) == []


def test_no_module_of_gvbench_imports_itself_through_others():
    edges = import_graph()
    assert len(edges) > 50  # the reader found the package's imports
    found = components(edges)
    described = []
    for component in found:
        modules = circle(edges, component)
        steps = (f"{a} → {b} ({edges[a, b]})" for a, b in itertools.pairwise(modules))
        described.append(
            f"{' → '.join(modules)}, one circle among {', '.join(sorted(component))}:\n    "
            + "\n    ".join(steps)
        )
    assert not found, "import circles:\n" + "\n".join(described)


def test_the_estimators_import_no_data_stack_and_no_harness():
    """``import gvbench.estimators`` is torch and the estimators: no xarray, Dask, harness or
    task (the root package loads ``gvbench.sweep`` lazily)."""
    heavy = ("xarray", "dask", "pandas", "gvbench.harness", "gvbench.tasks")
    probe = f"import sys, gvbench.estimators\nprint([m for m in {heavy!r} if m in sys.modules])\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_root_package_keeps_its_lazy_attributes():
    probe = (
        "import sys, gvbench\n"
        "assert 'gvbench.harness' not in sys.modules\n"
        "from gvbench.harness.sweep import sweep\n"
        "assert gvbench.sweep is sweep and isinstance(gvbench.__version__, str)\n"
        "assert {'sweep', '__version__'} <= set(dir(gvbench))\n"
        "try:\n"
        "    gvbench.no_such_name\n"
        "except AttributeError as error:\n"
        "    print(error)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "module 'gvbench' has no attribute 'no_such_name'"
