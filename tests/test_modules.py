"""The package's shape: every module says what it exports, and none reaches into another's privates."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
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
    assert subpackages == ["codecs", "filesystem", "memo", "redis", "s3", "sqlite", "testing"]
