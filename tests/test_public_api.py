"""Each package's ``__all__`` is complete and every name in it resolves."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

PACKAGES = ["pipeline", "operators", "sinks"]


def public_modules(package: str) -> list[ModuleType]:
    root = importlib.import_module(package)
    names = [package] + [
        m.name
        for m in pkgutil.walk_packages(root.__path__, prefix=f"{package}.")
        if not any(part.startswith("_") or part == "migrations" for part in m.name.split("."))
    ]
    return [importlib.import_module(name) for name in names]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_name_in_all_resolves(package: str) -> None:
    for module in public_modules(package):
        exported = getattr(module, "__all__", None)
        assert exported is not None, f"{module.__name__} has no __all__"
        for name in exported:
            assert hasattr(module, name), f"{module.__name__}.__all__ names missing {name}"


@pytest.mark.parametrize("package", PACKAGES)
def test_all_lists_every_public_definition(package: str) -> None:
    for module in public_modules(package):
        if module.__name__ == package or module.__name__.endswith("__main__"):
            continue
        exported = set(getattr(module, "__all__", ()))
        for name, value in vars(module).items():
            if name.startswith("_") or isinstance(value, ModuleType):
                continue
            if getattr(value, "__module__", None) == module.__name__ and callable(value):
                assert name in exported, f"{module.__name__}.{name} is public but not in __all__"


def test_operators_package_exports_every_operator_module() -> None:
    import operators

    root = importlib.import_module("operators")
    for info in pkgutil.iter_modules(root.__path__):
        if not info.name.startswith("_"):
            assert hasattr(operators, info.name) or info.name in {
                "accumulate",
                "assemble_tool_calls",
                "batch_flush",
                "extract_deltas",
                "map_errors",
            }
