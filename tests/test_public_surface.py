"""Each package names its public surface in ``__all__``, and the names match the tree.

A package's surface is its public modules and subpackages (names not starting with ``_``)
and, for the few that are entry points (``orchestrator.cli``), the names they re-export.
Layer packages re-export nothing, so importing one never imports the layers above it.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TOP_LEVEL = ("state", "prompt_templates", "agents", "orchestrator")


def packages() -> list[Path]:
    """Every package directory of ours (a folder with an ``__init__.py``)."""
    return sorted(p.parent for top in TOP_LEVEL for p in (ROOT / top).rglob("__init__.py"))


def public_children(package: Path) -> set[str]:
    """The package's public modules and subpackages, from the files on disk."""
    names = {p.stem for p in package.glob("*.py") if not p.name.startswith("_")}
    names |= {
        p.name for p in package.iterdir() if (p / "__init__.py").exists() and p.name[0] != "_"
    }
    return names


def declared_all(package: Path) -> list[str] | None:
    """The literal ``__all__`` of the package's ``__init__.py`` (None when it has none)."""
    tree = ast.parse((package / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            value = ast.literal_eval(node.value)
            assert isinstance(value, list | tuple), f"{package}: __all__ must be a literal list"
            return [str(v) for v in value]
    return None


def dotted(package: Path) -> str:
    """``orchestrator/cli`` -> ``orchestrator.cli``."""
    return ".".join(package.relative_to(ROOT).parts)


def test_every_package_is_found() -> None:
    """The scan sees the top-level packages and their subpackages (not vacuous)."""
    found = {dotted(p) for p in packages()}
    assert set(TOP_LEVEL) <= found
    assert {"orchestrator.deciding", "orchestrator.running", "orchestrator.cli"} <= found


@pytest.mark.parametrize("package", packages(), ids=dotted)
def test_all_lists_every_public_module(package: Path) -> None:
    """``__all__`` lists each name once and names every public module (ruff keeps it sorted)."""
    declared = declared_all(package)
    assert declared is not None, f"{dotted(package)}/__init__.py has no __all__"
    assert len(declared) == len(set(declared)), f"{dotted(package)}: a name listed twice"
    missing = sorted(public_children(package) - set(declared))
    assert not missing, f"{dotted(package)}: public modules missing from __all__: {missing}"


@pytest.mark.parametrize("package", packages(), ids=dotted)
def test_each_listed_name_exists(package: Path) -> None:
    """Every name in ``__all__`` is a submodule or an attribute of its package."""
    module = importlib.import_module(dotted(package))
    for name in declared_all(package) or ():
        if name not in public_children(package):
            assert hasattr(module, name), f"{dotted(package)}.__all__ names a missing {name}"
        else:
            importlib.import_module(f"{dotted(package)}.{name}")
