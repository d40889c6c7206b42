"""The house stays layered: dags -> operators / plugins -> dataengine, with nothing importing back up, no
import cycle among the engine's modules (nor among the annotation tool's ES modules), and no module so long that
it holds several jobs without saying why.

Imports are read from the source with `ast` (nothing is imported). Which imports count:
- for layering, every import: at module level, inside functions (the lazy imports that defer heavy
  dependencies), and `importlib.import_module("...")` with a literal name;
- for cycles, module-level imports only (a class body and top-level `if`/`try` blocks count, `if TYPE_CHECKING:`
  does not): a function-level import runs when the function is called, after every module involved has
  finished loading, which is how heavy dependencies are deferred and cannot deadlock an import.
An import names the module it loads (`from a.b import c` is `a.b.c` when that is a module, else `a.b`). The
parent packages Python initialises on the way (`a`, `a.b`) are not counted as edges: a package `__init__` that
re-exports from its own submodules is the usual layout, not a cycle; importing the package itself is counted.
"""
from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYERS = ("dataengine", "operators", "plugins", "dags")
STATIC = REPO / "dataengine" / "service" / "static"
MAX_MODULE_LINES = 470      # issue 18: "no source module over ~450 lines without a reason written at its top"
LONG_MODULE_REASON = "Long module:"   # what the top of a longer module says, followed by its reason
# What each layer must never import (any import, at any level).
FORBIDDEN = {
    "dataengine": ("airflow", "operators", "plugins", "dags"),
    "operators": ("plugins", "dags"),
    "plugins": ("operators", "dags"),
}


@dataclass(frozen=True)
class Import:
    """One import statement: who imports what, whether at module level, and where."""

    importer: str
    imported: str
    module_level: bool
    where: str


def module_name(path: Path) -> str:
    """Return the dotted module name of a source file under the repository (`pkg/__init__.py` is `pkg`)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def source_files(layer: str) -> list[Path]:
    """Return the Python files of one layer (a folder at the repository's top)."""
    return sorted(p for p in (REPO / layer).rglob("*.py") if "__pycache__" not in p.parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _absolute(importer: str, is_package: bool, module: str | None, level: int) -> str:
    """Return the absolute name of `from <level dots><module> import ...` written in `importer`."""
    if not level:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[:len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(path: Path, known: set[str]) -> list[Import]:
    """Return every import in one file, resolved against the `known` module names of the repository."""
    importer = module_name(path)
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            where = f"{path.relative_to(REPO)}:{getattr(child, 'lineno', 0)}"
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
                continue
            if isinstance(child, ast.If) and _is_type_checking(child):
                visit(child, False)
                continue
            if isinstance(child, ast.Import):
                found.extend(Import(importer, alias.name, module_level, where) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _absolute(importer, is_package, child.module, child.level)
                for alias in child.names:
                    target = f"{base}.{alias.name}"
                    found.append(Import(importer, target if target in known else base, module_level, where))
            elif (isinstance(child, ast.Call) and isinstance(child.func, (ast.Attribute, ast.Name))
                  and getattr(child.func, "attr", getattr(child.func, "id", None)) in ("import_module", "__import__")
                  and child.args and isinstance(child.args[0], ast.Constant) and isinstance(child.args[0].value, str)):
                found.append(Import(importer, child.args[0].value, False, where))
            visit(child, module_level)

    visit(tree, True)
    return found


@functools.cache
def all_imports() -> tuple[Import, ...]:
    """Return the imports of every module of every layer."""
    files = [path for layer in LAYERS for path in source_files(layer)]
    known = {module_name(path) for path in files}
    return tuple(record for path in files for record in imports_of(path, known))


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return the import cycles of `graph` (module -> modules it imports): each strongly connected group of
    two or more modules, or a module importing itself, as a sorted list of names (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return cycles


def engine_graph(imports: tuple[Import, ...]) -> dict[str, set[str]]:
    """Return dataengine's module-level import graph (edges between dataengine modules only)."""
    graph: dict[str, set[str]] = {}
    for record in imports:
        if record.module_level and _in_layer(record.importer, "dataengine") and _in_layer(record.imported,
                                                                                            "dataengine"):
            if record.imported != record.importer:
                graph.setdefault(record.importer, set()).add(record.imported)
    return graph


def _in_layer(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def js_graph(entry: Path) -> dict[str, set[str]]:
    """Return the static import graph of the ES modules reachable from `entry` (paths relative to static/)."""
    graph: dict[str, set[str]] = {}
    waiting = [entry.resolve()]
    while waiting:
        path = waiting.pop()
        name = str(path.relative_to(STATIC))
        if name in graph:
            continue
        targets = re.findall(r'^import (?:[^"]*? from )?"(\.{1,2}/[^"]+)";', path.read_text(encoding="utf-8"), re.M)
        resolved = [(path.parent / target).resolve() for target in targets]
        graph[name] = {str(p.relative_to(STATIC)) for p in resolved}
        waiting.extend(resolved)
    return graph


# ---- the tests ---------------------------------------------------------------------------------------------
def test_the_import_reader_sees_module_and_function_level_imports():
    imports = all_imports()
    seen = {(r.importer, r.imported, r.module_level) for r in imports}
    assert ("dataengine.storage.s3", "dataengine.storage.interface", True) in seen       # from X import names
    assert ("dataengine.storage.uris", "dataengine.storage.s3", False) in seen           # lazy, in a function
    assert ("dataengine.storage", "dataengine.storage.files", True) in seen              # a package __init__
    assert ("dataengine.service.app", "dataengine.service.ui", False) in seen            # importlib.import_module
    assert ("operators.hooks", "airflow.sdk", True) in seen
    assert len({r.importer for r in imports if _in_layer(r.importer, "dataengine")}) > 50


def test_the_cycle_finder_finds_cycles_and_only_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"a"}}) == [["a"]]
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}) == [["a", "b"], ["c", "d"]]


def test_no_layer_imports_one_above_it_or_beside_it():
    upward = sorted({f"{r.where}: {r.importer} imports {r.imported}"
                     for r in all_imports() for layer, banned in FORBIDDEN.items()
                     if _in_layer(r.importer, layer) and any(_in_layer(r.imported, top) for top in banned)})
    assert not upward, "imports against the layering (dags -> operators/plugins -> dataengine):\n" + "\n".join(upward)


def test_engine_modules_import_each_other_without_a_cycle():
    cycles = find_cycles(engine_graph(all_imports()))
    assert not cycles, "module-level import cycles among dataengine modules: " + "; ".join(
        " <-> ".join(group) for group in cycles)


def test_the_store_interface_sits_below_both_backends_and_the_factory():
    """Issue 18: storage.py and s3store.py imported each other (one lazily, so the cycle test alone would miss it):
    now nothing under the factory imports it back, at any level."""
    below = {"dataengine.storage.interface": set(),
             "dataengine.storage.files": {"dataengine.storage.interface"},
             "dataengine.storage.s3": {"dataengine.storage.interface"}}
    for module, allowed in below.items():
        inside = {r.imported for r in all_imports()
                  if r.importer == module and _in_layer(r.imported, "dataengine.storage")}
        assert inside <= allowed, f"{module} imports {sorted(inside - allowed)} from the storage package above it"


def test_annotation_tool_modules_import_each_other_without_a_cycle():
    graph = js_graph(STATIC / "annotate.js")
    assert {"annotate/state.js", "annotate/session.js", "api.js"} <= set(graph)
    cycles = find_cycles(graph)
    assert not cycles, "import cycles among the annotation tool's ES modules: " + "; ".join(
        " <-> ".join(group) for group in cycles)


def _top_of(path: Path) -> str:
    """Return a module's opening text: its docstring (Python) or its leading comment block (JavaScript)."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        return ast.get_docstring(ast.parse(text)) or ""
    lines = []
    for line in text.splitlines():
        if not line.startswith("//"):
            break
        lines.append(line[2:].strip())
    return "\n".join(lines)


def test_no_source_module_is_long_without_a_reason_at_its_top():
    sources = [path for layer in LAYERS for path in source_files(layer)] + sorted(STATIC.rglob("*.js"))
    long_ones = [f"{path.relative_to(REPO)}: {lines} lines" for path in sources
                 if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
                 and LONG_MODULE_REASON not in _top_of(path)]
    assert len(sources) > 100
    assert not long_ones, (f"modules over {MAX_MODULE_LINES} lines whose top does not say "
                           f"'{LONG_MODULE_REASON} <why>' (split them by concern, or say why not):\n"
                           + "\n".join(long_ones))
