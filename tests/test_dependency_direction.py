"""The layout is the architecture: imports only point from outer layers to inner ones.

Layers, innermost first (a module may import its own layer and the layers listed for it):

``state``
    data, persistence and time (the one clock); knows nothing of ours.
``prompt_templates``, ``orchestrator.llm``, ``orchestrator.execution``, ``orchestrator.repository``
    shared infrastructure: the templates and their loader, the chat-model seam and the
    OpenAI-compatible adapter, the sandbox and the deterministic tools, git.
``agents``
    the planner, validator and programmer, built on the infrastructure.
``orchestrator.deciding``
    from a state to a checked decision; never imports the agents or the runner.
``orchestrator.running``
    drives workflows: steps, agents, gates, the store.
entry points (``orchestrator.cli``, ``orchestrator.composition``, ``orchestrator.__main__``)
    wire everything together.

Each outside system is imported by its one home module only (``openai`` by the adapter,
``transitions`` by the machine, ``sqlite3`` by the SQLite store, click/rich/HTTP frameworks
by entry points), so a second backend is a new module, not edits across the tree.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("state", "prompt_templates", "agents", "orchestrator")

_INFRA = (
    "state",
    "orchestrator.telemetry",
    "prompt_templates",
    "orchestrator.llm",
    "orchestrator.execution",
    "orchestrator.repository",
)
# layer -> the layers it may import besides itself
ALLOWED: dict[str, tuple[str, ...]] = {
    "state": (),
    "prompt_templates": ("state", "orchestrator.llm"),
    "orchestrator.llm": ("state", "orchestrator.telemetry"),
    "orchestrator.execution": ("state",),
    "orchestrator.repository": ("state",),
    "agents": _INFRA,
    "orchestrator.deciding": _INFRA,
    "orchestrator.reporting": (*_INFRA, "orchestrator.deciding"),
    "orchestrator.graph": (*_INFRA, "orchestrator.deciding"),
    "orchestrator.running": (
        *_INFRA,
        "agents",
        "orchestrator.deciding",
        "orchestrator.reporting",
    ),
    "orchestrator.web": (
        *_INFRA,
        "agents",
        "orchestrator.deciding",
        "orchestrator.running",
        "orchestrator.reporting",
        "orchestrator.graph",
        "orchestrator.composition",
    ),
    "orchestrator.logsetup": (),
    "orchestrator.telemetry": ("state",),
    "orchestrator.insights": ("state",),
}
ENTRY_POINTS = ("orchestrator.cli", "orchestrator.composition", "orchestrator.__main__")
OURS = PACKAGES

# outside system -> the module prefixes that may import it
LIBRARY_HOMES: dict[str, tuple[str, ...]] = {
    "openai": ("orchestrator.llm.openai_adapter",),
    "aiohttp": ("orchestrator.llm.openai_adapter",),
    "transitions": ("orchestrator.deciding.machine",),
    "sqlite3": ("state.sqlite_store",),
    "psycopg": ("state.postgres_store",),
    "psycopg_pool": ("state.postgres_store",),
    "click": ENTRY_POINTS,
    "rich": ENTRY_POINTS,
    "fastapi": ("orchestrator.web", *ENTRY_POINTS),
    "starlette": ("orchestrator.web", *ENTRY_POINTS),
    "uvicorn": ("orchestrator.web", *ENTRY_POINTS),
    "opentelemetry": ("orchestrator.telemetry",),
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
            if node.level or node.module not in OURS:
                yield node.lineno, module
            for alias in node.names:
                # "from orchestrator import cli" imports orchestrator.cli
                yield node.lineno, f"{module}.{alias.name}" if module else alias.name


def top(module: str) -> str:
    """The top-level package of a dotted module name."""
    return module.split(".", 1)[0]


def within(module: str, prefix: str) -> bool:
    """Whether ``module`` is ``prefix`` or lies inside it (dot boundaries respected)."""
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> str | None:
    """The layer of one of our modules (longest matching prefix), None for an entry point."""
    if any(within(module, e) for e in ENTRY_POINTS):
        return None
    matches = [layer for layer in ALLOWED if within(module, layer)]
    if not matches:
        return module  # e.g. the bare package "orchestrator": a layer of its own
    return max(matches, key=len)


def module_of(path: Path) -> str:
    """The dotted module of a file: ``orchestrator/cli/app.py`` is ``orchestrator.cli.app``."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def package_of(path: Path) -> str:
    """The dotted package of a file: ``orchestrator/cli/app.py`` is in ``orchestrator.cli``."""
    return ".".join(path.relative_to(ROOT).parent.parts)


def source_files() -> list[Path]:
    """Every .py file of our packages."""
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def violations(path: Path, tree: ast.AST) -> list[str]:
    """The imports of one file that point the wrong way, as ``file:line: message``."""
    rel = path.relative_to(ROOT).as_posix()
    source = module_of(path)
    layer = layer_of(source)
    found: list[str] = []
    for line, module in imported_modules(tree, package_of(path)):
        if top(module) in OURS:
            target = layer_of(module)
            if target is None:
                # Only a layer that lists an entry point (the web console builds runs with
                # the composition root) may import it.
                allowed = ALLOWED.get(layer, ()) if layer is not None else ()
                if layer is not None and not any(within(module, a) for a in allowed):
                    found.append(f"{rel}:{line}: {layer} imports the entry point {module}")
                continue
            # The bare package (e.g. ``orchestrator``) holds only a docstring.
            if (
                layer is not None
                and target != layer
                and target not in ALLOWED.get(layer, ())
                and module not in OURS
            ):
                found.append(f"{rel}:{line}: {layer} imports {module} (layer {target})")
        homes = LIBRARY_HOMES.get(top(module))
        if homes is not None and not any(within(source, h) for h in homes):
            found.append(f"{rel}:{line}: only {', '.join(homes)} may import {top(module)}")
    return sorted(set(found))


def check(path: Path) -> list[str]:
    """Parse ``path`` and return its wrong-way imports."""
    return violations(path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))


def test_the_packages_are_found() -> None:
    """The scan covers every layer, the CLI included (an empty scan would pass vacuously)."""
    files = source_files()
    tops = {top(module_of(p)) for p in files}
    assert tops == set(PACKAGES)
    layers = {layer_of(module_of(p)) for p in files}
    assert {"state", "agents", "orchestrator.deciding", "orchestrator.running"} <= layers
    assert any(package_of(p) == "orchestrator.cli" for p in files)
    assert len(files) > 20


def test_every_module_has_a_layer() -> None:
    """Each module of ours is in a named layer or is an entry point (none falls through)."""
    unplaced = [
        module_of(p)
        for p in source_files()
        if layer_of(module_of(p)) not in (None, *ALLOWED, *OURS)
    ]
    assert not unplaced, f"modules in no layer; add them to ALLOWED: {unplaced}"


def test_imports_point_inwards() -> None:
    """No file imports a layer above it, and each outside system has its one home."""
    problems = [v for path in source_files() for v in check(path)]
    assert not problems, "imports in the wrong direction:\n" + "\n".join(problems)


def test_the_cli_itself_may_import_click() -> None:
    """orchestrator/cli/ imports click, and that is allowed (the check is not blanket)."""
    cli_files = [p for p in source_files() if package_of(p) == "orchestrator.cli"]
    assert any(
        top(m) == "click"
        for p in cli_files
        for _, m in imported_modules(ast.parse(p.read_text(encoding="utf-8")), "orchestrator.cli")
    )
    assert all(check(p) == [] for p in cli_files)


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        ("state/x.py", "from orchestrator.deciding.facts import Facts\n", "state/x.py:1: state"),
        ("state/x.py", "import agents.base\n", "state/x.py:1: state imports agents.base"),
        ("state/x.py", '"""Doc."""\n\nfrom orchestrator.deciding import facts\n', "state/x.py:3:"),
        ("agents/x.py", "from orchestrator.deciding import machine\n", "agents/x.py:1: agents"),
        (
            "agents/x.py",
            "from orchestrator.running.runner import WorkflowRunner\n",
            "agents/x.py:1:",
        ),
        ("orchestrator/llm/x.py", "from agents import base\n", "orchestrator/llm/x.py:1:"),
        (
            "orchestrator/execution/x.py",
            "from ...agents import base\n",
            "orchestrator/execution/x.py:1:",
        ),
        (
            "orchestrator/deciding/x.py",
            "from orchestrator.running import runner\n",
            "orchestrator/deciding/x.py:1:",
        ),
        ("orchestrator/deciding/x.py", "import agents.planner\n", "orchestrator/deciding/x.py:1:"),
        (
            "orchestrator/running/x.py",
            "from orchestrator.cli import app\n",
            "orchestrator/running/x.py:1:",
        ),
        ("state/x.py", "import click\n", "state/x.py:1: only orchestrator.cli"),
        (
            "orchestrator/deciding/record.py",
            "from rich.console import Console\n",
            "orchestrator/deciding/record.py:1: only orchestrator.cli",
        ),
        ("agents/x.py", "def f():\n    import rich\n", "agents/x.py:2: only orchestrator.cli"),
        (
            "orchestrator/composition.py",
            "from openai import AsyncOpenAI\n",
            "orchestrator/composition.py:1: only",
        ),
        (
            "orchestrator/running/x.py",
            "import sqlite3\n",
            "orchestrator/running/x.py:1: only state.sqlite_store",
        ),
        (
            "orchestrator/deciding/pipeline.py",
            "from transitions import Machine\n",
            "orchestrator/deciding/pipeline.py:1:",
        ),
        (
            "orchestrator/running/x.py",
            "from orchestrator.composition import build_agents\n",
            "orchestrator/running/x.py:1: orchestrator.running imports the entry point",
        ),
        ("orchestrator/web/x.py", "from orchestrator.cli import app\n", "orchestrator/web/x.py:1:"),
        ("agents/x.py", "import fastapi\n", "agents/x.py:1: only orchestrator.web"),
    ],
)
def test_a_wrong_way_import_is_reported(path: str, source: str, expected: str) -> None:
    """The checker flags each kind of wrong-way import with its file and line."""
    problems = violations(ROOT / path, ast.parse(source))
    assert any(p.startswith(expected) for p in problems), problems


@pytest.mark.parametrize(
    ("path", "source"),
    [
        (
            "agents/x.py",
            "from state.steps import Step\nfrom orchestrator.llm.protocol import ChatModel\n",
        ),
        ("agents/x.py", "from orchestrator.execution.sandbox import Sandbox\n"),
        ("orchestrator/running/x.py", "from agents.base import Agent\nfrom state import build\n"),
        ("orchestrator/deciding/x.py", "from orchestrator.llm.protocol import ChatModel\n"),
        ("orchestrator/cli/x.py", "import click\nfrom rich.table import Table\n"),
        ("orchestrator/cli/x.py", "from orchestrator.running.runner import WorkflowRunner\n"),
        ("state/x.py", "from .steps import Step\nimport json\n"),
        ("state/x.py", "import clickhouse\n"),
        ("state/sqlite_store/x.py", "import sqlite3\n"),
        ("orchestrator/deciding/machine.py", "from transitions import Machine\n"),
        ("orchestrator/llm/openai_adapter.py", "import openai\n"),
        ("orchestrator/web/x.py", "from orchestrator.composition import build_agents\n"),
        ("orchestrator/web/x.py", "import fastapi\nfrom starlette.requests import Request\n"),
    ],
)
def test_a_right_way_import_passes(path: str, source: str) -> None:
    """Inward imports, each library in its home, and look-alike names are not flagged."""
    assert violations(ROOT / path, ast.parse(source)) == []
