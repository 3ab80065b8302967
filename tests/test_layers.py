"""The package's layering, checked on its source: no import cycles, the core reaches adapters only lazily, and
adapters use public names only (ARCHITECTURE.md, "Layers")."""

import ast
import pathlib

import pytest

import mmap_ninja

PACKAGE = pathlib.Path(mmap_ninja.__file__).parent
NOT_CORE = ("mmap_ninja.adapters", "mmap_ninja.testing", "mmap_ninja.tools.cli", "mmap_ninja.__main__",
            "mmap_ninja.cli")  # the command line's path before the relayout (a compatibility module)


def _module_names() -> dict[str, pathlib.Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = _module_names()


def _is_type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST, module_level: bool) -> list[tuple[str, list[str], int]]:
    """``(module, names, line)`` of every runtime import of ``tree`` (not under ``if TYPE_CHECKING:``), at module
    level only or anywhere."""
    found = []
    pending = list(ast.iter_child_nodes(tree))
    while pending:
        node = pending.pop()
        if _is_type_checking(node):
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
        if module_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            continue
        pending += list(ast.iter_child_nodes(node))
    return found


def _graph(module_level: bool, only: tuple[str, ...] = ()) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        if only and name.startswith(only):
            continue
        edges = set()
        for module, names, _ in _imports(ast.parse(path.read_text()), module_level):
            if not module.startswith("mmap_ninja"):
                continue
            for imported in names or [""]:
                target = f"{module}.{imported}" if f"{module}.{imported}" in MODULES else module
                if target in MODULES and target != name and not (only and target.startswith(only)):
                    edges.add(target)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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
                    components.append(sorted(component))
    return components


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_at_module_level():
    assert _cycles(_graph(module_level=True)) == []


def test_no_import_cycle_in_the_core_even_through_imports_inside_functions():
    # A lazy import inside a function hides a cycle from Python, not from the design: records -> ingest -> records
    # was one. Lazy imports of adapters (``to_arrow``, ``from_dask``) are the core's declared entry points.
    assert _cycles(_graph(module_level=False, only=NOT_CORE)) == []


def test_the_core_imports_no_adapter_at_module_level():
    offending = []
    for name, path in MODULES.items():
        if name.startswith(NOT_CORE):
            continue
        for module, _, line in _imports(ast.parse(path.read_text()), module_level=True):
            if module.startswith(NOT_CORE):
                offending.append(f"{name}:{line} imports {module}")
    assert not offending


@pytest.mark.parametrize("adapter", sorted(n for n in MODULES if n.startswith("mmap_ninja.adapters.")))
def test_adapters_import_only_public_names(adapter):
    private = []
    for module, names, line in _imports(ast.parse(MODULES[adapter].read_text()), module_level=False):
        if not module.startswith("mmap_ninja") or module.startswith("mmap_ninja.adapters"):
            continue  # an adapter may share helpers with another adapter: the rule is about the core's names
        parts = module.split(".")
        private += [f"line {line}: {module}" for part in parts if part.startswith("_")]
        private += [f"line {line}: {module}.{name}" for name in names if name.startswith("_")]
    assert not private


@pytest.mark.parametrize("adapter", sorted(n for n in MODULES if n.startswith("mmap_ninja.adapters.")))
def test_adapters_import_only_names_their_module_publishes(adapter):
    import importlib

    unlisted = []
    for module, names, line in _imports(ast.parse(MODULES[adapter].read_text()), module_level=False):
        if not module.startswith("mmap_ninja") or module.startswith("mmap_ninja.adapters"):
            continue
        published = set(getattr(importlib.import_module(module), "__all__", ()))
        unlisted += [f"line {line}: {module}.{name}" for name in names
                     if f"{module}.{name}" not in MODULES and name not in published]
    assert not unlisted


# ---------------------------------------------------------------------------------------------- the tests' own layout

TESTS = pathlib.Path(__file__).resolve().parent


def _test_sources() -> list[pathlib.Path]:
    return sorted(p for p in TESTS.rglob("*.py")
                  if not any(part.startswith(".") or part == "data" for part in p.relative_to(TESTS).parts[:-1]))


def _bare_imports_of_test_modules(source: str) -> list[str]:
    """Imports in ``source`` of ``conftest`` or of a module of the tests' folders by a bare name (``import
    conftest``, ``from legacy_090 import ...``): they work only from the folder the module is in. The tests' own
    modules are imported by their package path (``from tests.support import snapshot``); fixtures come from
    ``conftest.py`` by name, never by import."""
    # The tests' own folders only: tests/ also holds 0.9.0's virtualenv after a first run (.venv-090), whose
    # folders (numpy, tests, ...) are not the tests' modules.
    sources = _test_sources()
    folders = {part for p in sources for part in p.relative_to(TESTS).parts[:-1]}
    local = {p.stem for p in sources} | folders | {"conftest"}
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if a.name.split(".")[0] in local]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if node.module.split(".")[0] in local:
                found.append(f"line {node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.ImportFrom) and node.level:
            found.append(f"line {node.lineno}: a relative import")
    return found


def test_the_check_of_test_imports_finds_conftest_and_bare_names():
    assert _bare_imports_of_test_modules("from conftest import snapshot") == ["line 1: from conftest import ..."]
    assert _bare_imports_of_test_modules("def f():\n    import conftest") == ["line 2: import conftest"]
    assert _bare_imports_of_test_modules("from support.legacy_090 import copy_map") != []
    assert _bare_imports_of_test_modules("from . import support") != []
    assert _bare_imports_of_test_modules("from tests.support import snapshot\nimport numpy") == []


def test_no_test_module_imports_conftest_or_a_test_module_by_a_bare_name():
    found = {str(p.relative_to(TESTS)): _bare_imports_of_test_modules(p.read_text()) for p in _test_sources()}
    assert not {name: imports for name, imports in found.items() if imports}


def test_every_folder_of_tests_is_a_package():
    # Test modules are named by their package path (tests.<folder>.test_x), so the same file name may be used in
    # two folders, and tests.support imports the same way from every depth.
    folders = {p.parent for p in _test_sources()}
    assert sorted(str(f.relative_to(TESTS.parent)) for f in folders if not (f / "__init__.py").exists()) == []


# ------------------------------------------------------------------------------------------- layers as folders

# Bottom to top (ARCHITECTURE.md, "Layers as folders"): a module of a layer imports its own layer and the layers
# below, and the foundation every layer may use; a layer reaches an adapter only inside a function (the declared
# lazy entry points: ``to_arrow``, ``from_dask``, URLs). The top-level modules other than the foundation are
# compatibility paths that only re-export (tests/test_public_paths.py); no layer imports them.
LAYERS = ("storage", "kinds", "containers", "tools")
ROOT_TESTS = ['test_errors.py', 'test_extras.py', 'test_layers.py', 'test_public_paths.py', 'test_typing.py']
FOUNDATION = ("mmap_ninja.errors", "mmap_ninja.extras", "mmap_ninja._version")


def _layer_of(name: str):
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


def _targets(module: str, names: list[str]) -> list[str]:
    return [f"{module}.{n}" if f"{module}.{n}" in MODULES else module for n in names or [""]]


def _layer_violations(name: str, source: str) -> list[str]:
    layer = _layer_of(name)
    tree = ast.parse(source)
    at_top = {(m, line) for m, _, line in _imports(tree, module_level=True)}
    wrong = []
    for module, names, line in _imports(tree, module_level=False):
        if not module.startswith("mmap_ninja"):
            continue
        for target in _targets(module, names):
            if target in FOUNDATION or (target.startswith("mmap_ninja.adapters") and (module, line) not in at_top):
                continue
            if target == "mmap_ninja" and LAYERS[layer] == "tools":
                continue  # the command line may use the package's public names
            other = _layer_of(target)
            if other is None or other > layer:
                wrong.append(f"{name}:{line} imports {target}")
    return wrong


def test_the_layer_check_finds_an_import_from_above():
    assert _layer_violations("mmap_ninja.storage.x", "from mmap_ninja.kinds.maps import MapBase") == [
        "mmap_ninja.storage.x:1 imports mmap_ninja.kinds.maps"]
    assert _layer_violations("mmap_ninja.kinds.x", "import mmap_ninja.string") != []  # a compatibility path
    assert _layer_violations("mmap_ninja.kinds.x", "def f():\n    from mmap_ninja.adapters.arrow import y") == []
    assert _layer_violations("mmap_ninja.containers.x", "from mmap_ninja.storage.format import read_header") == []


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_imports_only_itself_the_layers_below_and_the_foundation(layer):
    wrong = []
    for name, path in MODULES.items():
        if _layer_of(name) == LAYERS.index(layer):
            wrong += _layer_violations(name, path.read_text())
    assert not wrong


def test_every_module_is_in_a_layer_folder_or_is_the_foundation_or_a_compatibility_path():
    top = sorted(n for n in MODULES if n.count(".") == 1 and _layer_of(n) is None
                 and not n.startswith(("mmap_ninja.adapters", "mmap_ninja.testing")))
    for name in top:
        if name in FOUNDATION or name in ("mmap_ninja.__main__", "mmap_ninja.base"):
            continue
        body = ast.parse(MODULES[name].read_text()).body
        statements = [n for n in body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
        assert all(isinstance(n, (ast.ImportFrom, ast.Assign, ast.AnnAssign)) for n in statements), \
            f"{name} is at the top of the package: a new module goes into its layer's folder"


def test_the_tests_mirror_the_package():
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    package = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert package <= folders, sorted(package - folders)
    assert sorted(p.name for p in TESTS.glob("test_*.py")) == ROOT_TESTS, \
        "a test of one layer goes into that layer's folder of tests"
