"""House rules a linter does not check: tests say what they pin, the repo cites only itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("state", "prompt_templates", "agents", "orchestrator", "bench", "scripts", "docs")
# The repository carries its own spec (docs/): nothing may send a reader to a file outside it.
OUTSIDE = re.compile(r"WORKFLOW\.md|\.\./shared\b|/work/shared\b")


def test_every_test_has_a_docstring() -> None:
    """Each test function has a one-line docstring saying the behaviour it pins."""
    missing = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.name.startswith("test_")
                and not ast.get_docstring(node)
            ):
                missing.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not missing, "tests without a docstring:\n" + "\n".join(missing)


def test_nothing_cites_files_outside_the_repository() -> None:
    """No code, doc or script points at the spec or shared files this repo does not hold."""
    files = [ROOT / "README.md", ROOT / "pyproject.toml", ROOT / ".ci" / "run"]
    for folder in SOURCE_DIRS:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in {".py", ".md", ""}]
    cited = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in files
        if p.is_file()
        for n, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not cited, "lines citing files outside the repository:\n" + "\n".join(cited)
