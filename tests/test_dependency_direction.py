"""The layout is the architecture: imports only point from outer layers to inner ones.

``state/`` knows nothing of ours; ``agents/`` may import ``state/``; ``orchestrator/`` may
import both; only ``orchestrator/cli/`` imports click or rich.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("state", "agents", "orchestrator")
UI_LIBRARIES = ("click", "rich")

# package -> top-level modules it must never import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "state": ("agents", "orchestrator"),
    "agents": ("orchestrator",),
    "orchestrator": (),
}


def imported_modules(tree: ast.AST, package: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``tree``, relative ones resolved."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield node.lineno, module
            for alias in node.names:
                # "from orchestrator import cli" imports orchestrator.cli
                yield node.lineno, f"{module}.{alias.name}" if module else alias.name


def top(module: str) -> str:
    """The top-level package of a dotted module name."""
    return module.split(".", 1)[0]


def package_of(path: Path) -> str:
    """The dotted package of a file: ``orchestrator/cli/app.py`` is in ``orchestrator.cli``."""
    return ".".join(path.relative_to(ROOT).parent.parts)


def source_files() -> list[Path]:
    """Every .py file of the three packages."""
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def violations(path: Path, tree: ast.AST) -> list[str]:
    """The imports of one file that point the wrong way, as ``file:line: message``."""
    rel = path.relative_to(ROOT).as_posix()
    package = package_of(path)
    layer = top(package)
    in_cli = package == "orchestrator.cli" or package.startswith("orchestrator.cli.")
    found: list[str] = []
    for line, module in imported_modules(tree, package):
        if top(module) in FORBIDDEN[layer]:
            found.append(f"{rel}:{line}: {layer}/ imports {module}")
        if top(module) in UI_LIBRARIES and not in_cli:
            found.append(f"{rel}:{line}: only orchestrator/cli/ may import {top(module)}")
    return sorted(set(found))


def check(path: Path) -> list[str]:
    """Parse ``path`` and return its wrong-way imports."""
    return violations(path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))


def test_the_packages_are_found() -> None:
    """The scan covers every layer, the CLI included (an empty scan would pass vacuously)."""
    files = source_files()
    layers = {top(package_of(p)) for p in files}
    assert layers == set(PACKAGES)
    assert any(package_of(p) == "orchestrator.cli" for p in files)
    assert len(files) > 20


def test_imports_point_inwards() -> None:
    """No file imports a layer above it, and only orchestrator/cli/ imports click or rich."""
    problems = [v for path in source_files() for v in check(path)]
    assert not problems, "imports in the wrong direction:\n" + "\n".join(problems)


def test_the_cli_itself_may_import_click() -> None:
    """orchestrator/cli/ imports click, and that is allowed (the check is not blanket)."""
    cli_files = [p for p in source_files() if package_of(p) == "orchestrator.cli"]
    assert any(
        top(m) == "click" for p in cli_files
        for _, m in imported_modules(ast.parse(p.read_text(encoding="utf-8")), "orchestrator.cli")
    )
    assert all(check(p) == [] for p in cli_files)


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("state/x.py", "from orchestrator.rules import Facts\n", "state/x.py:1: state/ imports"),
        ("state/x.py", "import agents.base\n", "state/x.py:1: state/ imports agents.base"),
        ("state/x.py", '"""Doc."""\n\nfrom orchestrator import rules\n', "state/x.py:3: state/"),
        ("agents/x.py", "from orchestrator import machine\n", "agents/x.py:1: agents/ imports"),
        ("agents/llm/x.py", "from ...orchestrator import engine\n", "agents/llm/x.py:1:"),
        ("state/x.py", "import click\n", "state/x.py:1: only orchestrator/cli/ may import click"),
        ("orchestrator/engine.py", "from rich.console import Console\n",
         "orchestrator/engine.py:1: only orchestrator/cli/ may import rich"),
        ("agents/x.py", "def f():\n    import rich\n", "agents/x.py:2: only orchestrator/cli/"),
    ],
)
def test_a_wrong_way_import_is_reported(path: str, source: str, expected: str) -> None:
    """The checker flags each kind of wrong-way import with its file and line."""
    problems = violations(ROOT / path, ast.parse(source))
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("agents/x.py", "from state.steps import Step\n"),
        ("orchestrator/x.py", "from agents.base import Agent\nfrom state import build\n"),
        ("orchestrator/cli/x.py", "import click\nfrom rich.table import Table\n"),
        ("state/x.py", "from .steps import Step\nimport json\n"),
        ("state/x.py", "import clickhouse\n"),
    ],
)
def test_a_right_way_import_passes(path: str, source: str) -> None:
    """Inward imports, the CLI's click and rich, and look-alike names are not flagged."""
    assert violations(ROOT / path, ast.parse(source)) == []
