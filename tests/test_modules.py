"""The package's shape: every module says what it exports, and none reaches into another's privates."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import backends

PACKAGE = Path(backends.__file__).parent
MODULES = sorted(
    "backends." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    for path in PACKAGE.rglob("*.py")
    if path.name not in ("__init__.py", "__main__.py")
)


@pytest.mark.parametrize("name", MODULES)
def test_all_lists_every_public_class_and_function_defined_there(name: str) -> None:
    module = importlib.import_module(name)
    exported = module.__dict__.get("__all__")
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), "duplicates in __all__"
    assert [item for item in exported if not hasattr(module, item)] == []
    defined = {
        item
        for item, value in vars(module).items()
        if not item.startswith("_")
        and (inspect.isclass(value) or inspect.isfunction(value))
        and getattr(value, "__module__", None) == name
    }
    assert sorted(defined - set(exported)) == []


@pytest.mark.parametrize(
    "path", sorted(PACKAGE.rglob("*.py")), ids=lambda path: str(path.relative_to(PACKAGE))
)
def test_no_module_imports_another_modules_private_names(path: Path) -> None:
    tree = ast.parse(path.read_text())
    private = [
        f"{node.module}.{alias.name}"
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level > 0
        for alias in node.names
        if alias.name.startswith("_") and alias.name != "__version__"
    ]
    assert private == []


def test_the_package_exports_are_complete_and_importable() -> None:
    assert [item for item in backends.__all__ if not hasattr(backends, item)] == []
    subpackages = [info.name for info in pkgutil.iter_modules(backends.__path__) if info.ispkg]
    assert subpackages == [
        "cli",
        "codecs",
        "events",
        "filesystem",
        "memo",
        "memory",
        "redis",
        "s3",
        "sqlite",
        "testing",
        "tier",
    ]


def test_the_console_script_runs_the_command() -> None:
    scripts = (PACKAGE.parent / "pyproject.toml").read_text().split("[project.scripts]", 1)[1]
    target = re.search(r'^backends = "([\w.]+):(\w+)"$', scripts, re.MULTILINE)
    assert target is not None
    module, name = target.groups()
    assert getattr(importlib.import_module(module), name) is backends.cli.main


#: the optional packages (extras), imported only by the part that needs them
OPTIONAL = ("boto3", "botocore", "obstore", "redis", "opentelemetry", "tqdm", "moto", "flask")


def test_the_package_and_its_parts_import_no_optional_package() -> None:
    code = (
        "import sys, backends, backends.cli, backends.events, backends.tier\n"
        f"print(sorted({{name.split('.')[0] for name in sys.modules}} & set({OPTIONAL!r})))"
    )
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "[]"


# -- the import graph: no circle ------------------------------------------------------------------


def module_name(path: Path) -> str:
    """``backends/redis/store.py`` -> ``backends.redis.store``; a package's ``__init__.py`` is the package."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[int]:
    """The nodes under ``if TYPE_CHECKING:``: read by the type checker only, never imported."""
    return {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for statement in block.body
        for node in ast.walk(statement)
    }


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every module of ``backends`` that ``path`` imports, at any depth (lazy imports inside functions
    included), except those under ``if TYPE_CHECKING:``.

    ``from .x import name`` is an import of ``x.name`` when that is a module, else of ``x``; an
    import of ``a.b.c`` counts as one of ``a.b.c`` only, not of the packages ``a`` and ``a.b`` that
    Python runs first (the convention of import checkers such as import-linter's grimp).
    """
    tree = ast.parse(path.read_text())
    skipped = _type_checking_only(tree)
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
    return {module for module in found if module in known and module != name}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imports_of(path, set(paths)) for name, path in sorted(paths.items())}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of imports (``[a, b, ..., a]``), or None: a depth-first walk, in sorted order."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(graph):
        if (cycle := visit(start)) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle_and_names_it() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) is None


def test_the_graph_sees_lazy_imports_and_skips_type_checking_ones() -> None:
    graph = import_graph()
    assert "backends.views" in graph["backends.urls"]  # inside a function
    assert "backends.aio" not in graph["backends.base"]  # only under TYPE_CHECKING
    assert "backends.redis.client" in graph["backends.redis.store"]


def test_no_module_imports_one_that_imports_it_back() -> None:
    assert find_cycle(import_graph()) is None  # lazy imports included: no exception


# -- sizes ----------------------------------------------------------------------------------------

#: The size the code keeps: a module over it is split along a seam one can name.
MAX_LINES = 400


def test_no_module_is_over_400_lines() -> None:
    sizes = {
        str(path.relative_to(PACKAGE.parent)): len(path.read_text().splitlines())
        for path in PACKAGE.rglob("*.py")
    }
    assert {path: lines for path, lines in sizes.items() if lines > MAX_LINES} == {}  # no exception


# -- the layers of docs/architecture.rst -----------------------------------------------------------

#: The layers, bottom up, as docs/architecture.rst draws them: a module belongs to the layer of the
#: longest name here it starts with, and imports only its own layer and those below.
LAYERS: dict[str, tuple[str, ...]] = {
    "foundation": ("errors", "keys", "bounds", "forkgate", "codecs", "events"),
    "contracts": ("locks", "hooks", "cache", "info"),
    "the API": ("core", "bulk", "base", "aio", "aiolock", "transfers", "schemes"),
    "stores": ("memory", "filesystem", "sqlite", "s3", "redis"),
    "composition": ("tier", "viewbase", "viewcalls", "views", "memo", "rotation", "urls"),
    "observers": ("events.otel", "redis.stream", "redis.streamread"),
    "the package": ("",),
    "the contract suite": ("testing",),
    "the command": ("__main__", "cli"),
}


def layer_of(module: str) -> int:
    name = module.removeprefix("backends").removeprefix(".")
    matches = [
        (len(prefix), index)
        for index, prefixes in enumerate(LAYERS.values())
        for prefix in prefixes
        if name == prefix or name.startswith(prefix + ".") or (prefix == "" and name == "")
    ]
    assert matches, f"{module} is in no layer of LAYERS (and of docs/architecture.rst)"
    return max(matches)[1]


def test_every_module_imports_only_its_layer_and_those_below() -> None:
    graph = import_graph()
    layers = list(LAYERS)
    upward = sorted(
        (source.removeprefix("backends."), target.removeprefix("backends."))
        for source, targets in graph.items()
        for target in targets
        if layer_of(target) > layer_of(source)
    )
    crossings = {
        f"{a} ({layers[layer_of('backends.' + a)]}) -> {b} ({layers[layer_of('backends.' + b)]})"
        for a, b in upward
    }
    assert sorted(crossings) == []  # no exception


def test_the_architecture_page_shows_the_layers_of_the_test() -> None:
    page = (PACKAGE.parent / "docs" / "architecture.rst").read_text()
    table = page[page.index("What each part imports") :]
    rows = [row.split("\n", 1)[0].strip() for row in table.split("   * - ")[2:]]
    assert rows == list(LAYERS)
    for layer, prefixes in LAYERS.items():
        row = table.split(f"   * - {layer}\n", 1)[1].split("   * - ", 1)[0]
        assert [prefix for prefix in prefixes if prefix and f"``{prefix}" not in row] == [], layer


# -- the paths the layout change kept -------------------------------------------------------------


def test_the_moved_names_keep_their_paths_in_a_fresh_interpreter() -> None:
    """What moved (#28) is still where a program imported it from, in a new process: the paths are
    set at import (``backends.codecs.reencrypt`` by the package), not by an earlier test."""
    import subprocess
    import sys

    program = (
        "from backends.codecs import reencrypt\n"
        "from backends.memory import MemoryCache, VolatileBackend, DEFAULT_MAXSIZE\n"
        "from backends.aio import AsyncLock\n"
        "from backends.base import Versioned\n"
        "from backends.views import View, check_prefix, refuses_writes, view_class\n"
        "import backends, backends.rotation, backends.aiolock, backends.hooks\n"
        "assert reencrypt is backends.reencrypt is backends.rotation.reencrypt\n"
        "assert AsyncLock is backends.aiolock.AsyncLock and Versioned is backends.hooks.Versioned\n"
        "view = VolatileBackend().namespace('a').readonly()\n"
        "assert isinstance(view, View) and refuses_writes(view) and view.prefix == check_prefix('a')\n"
        "assert MemoryCache().maxsize == DEFAULT_MAXSIZE\n"
    )
    done = subprocess.run([sys.executable, "-c", program], check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
