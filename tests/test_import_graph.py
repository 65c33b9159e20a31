"""No import cycles between the modules of ``seqjax/``.

The test parses every module with :mod:`ast` (so it sees imports inside functions too, which a
run-time check of ``sys.modules`` would miss) and builds a directed graph "module A needs module B
to have been executed". It fails on any cycle.

What counts as an edge, and why (this is what Python executes on an import):

- ``import a.b.c`` and ``from a.b.c import name`` need ``a.b.c``; ``from a.b import c`` needs
  ``a.b.c`` when ``c`` is a submodule, and needs ``a.b`` (its ``__init__``) when ``c`` is a name
  defined there.
- Importing ``a.b.c`` first executes the package ``__init__`` modules ``a`` and ``a.b``, so those
  are edges too, **except** the packages that contain the importing module: they are already being
  executed when the importing module runs, and taking a sibling submodule from them executes
  nothing more. This is the one place a package may "import itself": a package ``__init__`` that
  imports its own submodules is fine, as long as no submodule needs a *name* from that
  ``__init__`` (``from seqjax import scan`` inside ``seqjax/x.py`` is an edge to ``seqjax`` and so
  closes a cycle), or needs the package ``__init__`` of another package that imports it back.
- Imports inside ``if TYPE_CHECKING:`` blocks are never executed and are not counted; every other
  import, at module level or inside a function, is. ``importlib.import_module`` with a constant
  string counts like ``import``.
"""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "seqjax"


def _modules() -> dict[str, pathlib.Path]:
    """Every module of the package by dotted name (a package by its ``__init__``'s name)."""
    out = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_package(name: str, modules: dict[str, pathlib.Path]) -> bool:
    return modules[name].name == "__init__.py"


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) blocks."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = getattr(test, "id", None) or getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skip.update(id(n) for n in ast.walk(child))
    return skip


def _imported(module: str, modules: dict[str, pathlib.Path]) -> set[str]:
    """The seqjax modules ``module`` needs executed, by the rules in the module docstring."""
    tree = ast.parse(modules[module].read_text(), filename=str(modules[module]))
    skip = _type_checking_nodes(tree)
    package = module if _is_package(module, modules) else module.rpartition(".")[0]
    targets: set[str] = set()

    def need(name: str) -> None:
        # name and every ancestor package that does not contain the importing module
        parts = name.split(".")
        for k in range(1, len(parts) + 1):
            prefix = ".".join(parts[:k])
            if prefix not in modules:
                continue
            contains_importer = module == prefix or module.startswith(prefix + ".")
            if prefix == name or not contains_importer:
                targets.add(prefix)

    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                need(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:
                    need(sub)
                else:
                    need(source)
                    if source in modules:
                        targets.add(source)  # a name from that module, even an ancestor
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", None) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            need(node.args[0].value)
    targets.discard(module)
    return {t for t in targets if t.split(".")[0] == PACKAGE}


def import_graph() -> dict[str, set[str]]:
    """``{module: modules it needs}`` over every module of ``seqjax/``."""
    modules = _modules()
    return {name: _imported(name, modules) for name in modules}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle ``[a, b, ..., a]`` of ``graph``, or None (iterative depth-first search)."""
    WHITE, GREY, BLACK = 0, 1, 2
    color = dict.fromkeys(graph, WHITE)
    for root in sorted(graph):
        if color[root] != WHITE:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        color[root] = GREY
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                color[node] = BLACK
                stack.pop()
                path.pop()
            elif color.get(child, BLACK) == GREY:
                return path[path.index(child) :] + [child]
            elif color.get(child) == WHITE:
                color[child] = GREY
                path.append(child)
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_no_import_cycles_between_seqjax_modules():
    graph = import_graph()
    assert "seqjax.cells.base" in graph and "seqjax.scan" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_and_edge_rules():
    # the finder itself, on graphs with and without a cycle
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    graph = import_graph()
    # a package's own __init__ importing its submodules is allowed ...
    assert "seqjax.cells.lstm" in graph["seqjax.cells"]
    # ... and a sibling import does not count an edge back to the containing package
    assert "seqjax.cells" not in graph["seqjax.cells.lstm"]
    assert "seqjax.cells.base" in graph["seqjax.cells.lstm"]
    # an import from another package needs that package's __init__ as well
    assert {"seqjax.cells", "seqjax.cells.lstm"} <= graph["seqjax.kernels.fused_specs"]


def test_cells_never_import_kernels_scan_or_combinators():
    graph = import_graph()
    for module, needs in graph.items():
        if module.startswith("seqjax.cells"):
            bad = {n for n in needs if n.startswith(("seqjax.kernels", "seqjax.combinators"))}
            bad |= {n for n in needs if n == "seqjax.scan" or n.startswith("seqjax.train")}
            assert not bad, f"{module} imports {sorted(bad)}"


def test_no_in_function_imports_of_seqjax_modules():
    # Lazy imports are kept for optional dependencies (torch, Flax, jiwer, ...) only: a seqjax
    # module imported inside a function would hide an edge of the graph from a reader.
    offenders = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _type_checking_nodes(tree)
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if id(node) in skip:
                    continue
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
                    offenders.append(f"{name}:{node.lineno} from {node.module} import ...")
                elif isinstance(node, ast.Import):
                    offenders += [
                        f"{name}:{node.lineno} import {a.name}"
                        for a in node.names
                        if a.name.split(".")[0] == PACKAGE
                    ]
    assert not offenders, "in-function imports of seqjax modules: " + "; ".join(offenders)
