"""The engine's layering, read from the source with `ast` (nothing is imported).

Every `import` / `from … import` in every file under explorer/, at module level and inside functions
(an import inside a function still runs, it only runs later), except those under `if TYPE_CHECKING:`.
An import names the most specific module it reaches: `from explorer.native import gcn` is an edge to
explorer/native/gcn.py, `from explorer.native import NATIVE_BUILDERS` one to explorer/native/__init__.py.
(Importing a submodule also initialises its parent packages; that implicit step is not an edge, or every
package that imports its own submodules would be a cycle.)

Rules:
1. No import cycle between files, except the KNOWN_CYCLES below (each with its reason and its way out).
   Nor does a file import its own package's __init__ (`from explorer.native import gcn` inside
   explorer/native/): that __init__ is still running when its submodules load. This was the
   explorer.native ↔ native/more_cnns.py ↔ native/transformers.py cycle; family files now import
   explorer.native.registry and explorer.native.layers, below every model.
2. No explorer module imports `ui`, `pages` or `streamlit`: the engine runs without the app.
3. The backend façade `explorer.backend` is for the engine's callers, not for the engine: only
   BACKEND_IMPORTERS may import it: explorer/cli.py (the command line, a caller like the pages) and
   explorer/job_kinds.py (the job kinds, run in worker processes, call the same backend the pages would).
   `explorer.backend` itself imports the engine; an engine module importing it back would be a cycle in
   waiting and would let a worker-side computation reach for the façade.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "explorer"

FORBIDDEN_TOP_LEVEL = {"ui", "pages", "streamlit"}
BACKEND = "explorer.backend"
BACKEND_IMPORTERS = {"explorer.cli", "explorer.job_kinds"}

# Cycles that are known and allowed for now, as sorted tuples of module names. Each must still exist
# (a test fails when one is gone, so that the entry is removed with it).
KNOWN_CYCLES: set[tuple[str, ...]] = set()  # none now (jobs ↔ ray_workers went with explorer.workers)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve_relative(current: str, level: int, module: str | None) -> str:
    base = current.split(".")
    if not _is_package(current):
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([module] if module else []))


def _innermost_module(dotted: str) -> str | None:
    """The longest prefix of a dotted name that is a module under explorer/."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def _type_checking_only(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every import statement, at any depth, except those guarded by `if TYPE_CHECKING:`."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking_only(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


@functools.lru_cache(maxsize=None)
def imports_of(name: str) -> list[tuple[str, int, bool]]:
    """(dotted name imported, line, inside a function) for every import in the module."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    in_function = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(child) for child in ast.walk(node) if child is not node)
    found = []
    for node in _import_nodes(tree):
        nested = id(node) in in_function
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, nested) for alias in node.names]
            continue
        base = _resolve_relative(name, node.level, node.module) if node.level else node.module or ""
        if node.module == "__future__":
            continue
        for alias in node.names:
            # `from package import submodule` reaches the submodule; `from module import thing`, the module.
            full = f"{base}.{alias.name}"
            found.append((full if full in MODULES else base, node.lineno, nested))
    return found


@functools.lru_cache(maxsize=1)
def graph() -> dict[str, frozenset[str]]:
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for dotted, _, _ in imports_of(name):
            target = _innermost_module(dotted)
            if target is not None and target != name:
                edges[name].add(target)
    return {name: frozenset(targets) for name, targets in edges.items()}


def cycles(edges) -> set[tuple[str, ...]]:
    """Strongly connected components of more than one module (Tarjan), as sorted tuples."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: set[tuple[str, ...]] = set()
    counter = [0]

    def visit(node: str):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


@pytest.mark.slow
def test_the_walk_sees_module_and_function_level_imports():
    # Two facts of this checkout, one of each kind, so that the walk cannot silently see nothing.
    models = imports_of("explorer.models")
    assert ("explorer.native", False) in {(dotted, nested) for dotted, _, nested in models}
    assert ("explorer.ray_workers", True) in {(dotted, nested) for dotted, _, nested in imports_of("explorer.jobs")}
    assert "explorer.native.registry" in graph()["explorer.native.lenet"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {("a", "b", "c")}


def test_no_import_cycles_between_files():
    found = cycles(graph())
    assert found - KNOWN_CYCLES == set(), "import cycles: " + "; ".join(" ↔ ".join(c) for c in sorted(found))


def test_known_cycles_still_exist():
    gone = KNOWN_CYCLES - cycles(graph())
    assert gone == set(), f"{sorted(gone)} gone: remove them from KNOWN_CYCLES"


def test_no_file_imports_its_own_package_init():
    offenders = [f"{name}:{line} imports {dotted}" for name, path in MODULES.items() if path.name != "__init__.py"
                 for dotted, line, _ in imports_of(name) if _innermost_module(dotted) == name.rpartition(".")[0]]
    assert offenders == []


def test_the_engine_never_imports_the_app_or_streamlit():
    offenders = [f"{name}:{line} imports {dotted}" for name in MODULES for dotted, line, _ in imports_of(name)
                 if dotted.split(".")[0] in FORBIDDEN_TOP_LEVEL]
    assert offenders == []


def test_only_the_callers_import_the_backend_facade():
    importers = {name for name in MODULES for dotted, _, _ in imports_of(name)
                 if _innermost_module(dotted) == BACKEND and name != BACKEND}
    assert importers <= BACKEND_IMPORTERS, sorted(importers - BACKEND_IMPORTERS)
    assert "explorer.cli" in importers  # the allowlist names real importers


PROJECT_PACKAGES = ("explorer", "ui", "benchmarks")


def private_imports(source: str) -> list[str]:
    """`module:name` for every `from <project module> import _name` in a file (dunder names are not private)."""
    found = []
    for node in _import_nodes(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in PROJECT_PACKAGES:
            found += [f"{node.module}:{alias.name}" for alias in node.names
                      if alias.name.startswith("_") and not alias.name.startswith("__")]
    return found


@pytest.mark.slow
def test_no_file_imports_another_modules_private_names():
    assert private_imports("from explorer.cost import _x, y\nfrom explorer import __version__\nimport os") == [
        "explorer.cost:_x"]
    files = [path for package in PROJECT_PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]
    files += sorted((ROOT / "pages").glob("*.py")) + [ROOT / "app.py"]
    offenders = [f"{path.relative_to(ROOT)} imports {name}" for path in files
                 for name in private_imports(path.read_text(encoding="utf-8"))]
    assert offenders == []
