"""The programmer edits existing code: whole files or unified diffs, in a worktree or a directory.

Diffs are applied by real git (``git apply``) in a real worktree of a temp repository and in
a plain directory; the model is the scripted double.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agents.context import StepContext
from agents.programmer import ProgrammerAgent, parse_markdown_files
from agents.workspace import select_context
from orchestrator.llm.scripted import ScriptedChatModel
from orchestrator.repository import git as repo_git
from prompt_templates.loader import TemplateLoader
from state.errors import AgentError
from state.steps import Step

from support.gitrepo import git, make_repo

OLD = '"""Old prep."""\n\n\ndef old():\n    return 1\n'
GOOD_DIFF = """--- a/prep.py
+++ b/prep.py
@@ -2,4 +2,4 @@


 def old():
-    return 1
+    return 2
"""
BAD_DIFF = """--- a/prep.py
+++ b/prep.py
@@ -1,3 +1,3 @@
 def missing():
-    return 41
+    return 42
"""
PLAN = "# Plan\n\nChange `prep.py` so that `old()` returns 2. Leave README.md alone."


@pytest.fixture(scope="module")
def templates() -> TemplateLoader:
    return TemplateLoader()


@pytest.fixture(params=["worktree", "directory"])
def workspace(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A git worktree of a real repository, or a plain directory with the same files."""
    if request.param == "worktree":
        repo = make_repo(tmp_path / "repo")
        return repo_git.create_worktree(repo, "wf-e", tmp_path / "wt", None).path
    root = tmp_path / "plain"
    root.mkdir()
    (root / "README.md").write_text("# project\n")
    (root / "prep.py").write_text(OLD)
    return root


def ctx_for(workspace: Path, **extra: Any) -> StepContext:
    return StepContext(
        workflow_id="wf-e",
        step=Step.IMPLEMENTATION,
        workspace=workspace,
        requirements="make old() return 2",
        plan_markdown=PLAN,
        plan_version=1,
        timeout_s=5.0,
        **extra,
    )


def answer(*files: dict[str, str]) -> dict[str, Any]:
    return {"files": list(files), "summary": "edited"}


async def test_a_good_diff_edits_the_file(workspace: Path, templates: TemplateLoader) -> None:
    """A unified diff against the file as shown is applied; the result says it was a diff."""
    model = ScriptedChatModel([answer({"path": "prep.py", "diff": GOOD_DIFF})])
    change = await ProgrammerAgent(model, templates).run(ctx_for(workspace))
    assert (workspace / "prep.py").read_text() == OLD.replace("return 1", "return 2")
    assert change.files == ("prep.py",) and change.patched == ("prep.py",)


async def test_a_hunk_without_headers_is_for_its_file(
    workspace: Path, templates: TemplateLoader
) -> None:
    """A diff starting at ``@@`` applies to the path it is given for."""
    hunk = GOOD_DIFF.split("\n", 2)[2]
    model = ScriptedChatModel([answer({"path": "prep.py", "diff": hunk})])
    await ProgrammerAgent(model, templates).run(ctx_for(workspace))
    assert "return 2" in (workspace / "prep.py").read_text()


async def test_a_bad_diff_is_a_step_error_and_changes_nothing(
    workspace: Path, templates: TemplateLoader
) -> None:
    """A diff that does not apply: invalid_output naming git's reason; no file changed."""
    model = ScriptedChatModel(
        [answer({"path": "new.py", "content": "x = 1\n"}, {"path": "prep.py", "diff": BAD_DIFF})]
    )
    with pytest.raises(AgentError) as caught:
        await ProgrammerAgent(model, templates).run(ctx_for(workspace))
    assert caught.value.error_type == "invalid_output"
    assert "did not apply" in str(caught.value) and "prep.py" in str(caught.value)
    assert (workspace / "prep.py").read_text() == OLD
    assert not (workspace / "new.py").exists()  # the whole-file write was undone too


async def test_a_whole_file_replaces_the_existing_one(
    workspace: Path, templates: TemplateLoader
) -> None:
    """``content`` replaces the file; the untouched README stays as it was."""
    model = ScriptedChatModel([answer({"path": "prep.py", "content": "def new():\n    pass\n"})])
    change = await ProgrammerAgent(model, templates).run(ctx_for(workspace))
    assert (workspace / "prep.py").read_text() == "def new():\n    pass\n"
    assert (workspace / "README.md").read_text() == "# project\n"
    assert change.patched == ()


async def test_a_diff_leaving_the_workspace_is_refused(
    workspace: Path, templates: TemplateLoader
) -> None:
    """A diff whose headers name a path outside the workspace is refused before git runs."""
    escape = GOOD_DIFF.replace("a/prep.py", "a/../outside.py").replace("b/prep.py", "b/../x.py")
    model = ScriptedChatModel([answer({"path": "prep.py", "diff": escape})])
    with pytest.raises(AgentError) as caught:
        await ProgrammerAgent(model, templates).run(ctx_for(workspace))
    assert caught.value.error_type == "workspace_violation"
    assert (workspace / "prep.py").read_text() == OLD


async def test_the_prompt_shows_the_layout_and_the_planned_files(
    workspace: Path, templates: TemplateLoader
) -> None:
    """The plan's files come first in the prompt; the budget and what it showed are reported."""
    (workspace / "zz_unrelated.py").write_text("# " + "z" * 5000 + "\n")
    model = ScriptedChatModel([answer({"path": "prep.py", "diff": GOOD_DIFF})])
    change = await ProgrammerAgent(model, templates, max_context_chars=4_000).run(
        ctx_for(workspace)
    )
    prompt = model.calls[0].messages[-1].content
    assert "### Layout" in prompt and "- zz_unrelated.py" in prompt
    assert set(change.context_files[:2]) == {"README.md", "prep.py"}  # both named by the plan
    assert change.context_files[-1] == "zz_unrelated.py"
    assert "[... truncated" in prompt  # the unrelated file got only what the budget left
    assert change.context_budget_tokens == 1_000
    assert change.context_tokens == 1_000


def test_relevance_orders_by_how_plainly_the_plan_names_a_file(tmp_path: Path) -> None:
    """Path, then file name, then module name, then the rest."""
    for rel in ("a/deep/prep.py", "tests/test_prep.py", "other.py", "named.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    chosen = select_context(tmp_path, "edit a/deep/prep.py and named.py", budget_tokens=10_000)
    assert chosen.files[:2] == ("a/deep/prep.py", "named.py")
    assert chosen.files[-1] == "other.py"


def test_markdown_diff_blocks_are_diffs() -> None:
    """Under ``# File: path`` a ``diff``-fenced block is a diff, a ``python`` one a file."""
    text = (
        "# File: prep.py\n```diff\n" + GOOD_DIFF + "```\n\n"
        "# File: new.py\n```python\nx = 1\n```\n\n## Summary\nok"
    )
    files, summary = parse_markdown_files(text)
    assert [(f.path, f.is_diff) for f in files] == [("prep.py", True), ("new.py", False)]
    assert summary == "ok"


async def test_a_worktree_edit_leaves_the_index_alone(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """In a worktree the diff changes the working tree only: nothing is staged by the edit."""
    repo = make_repo(tmp_path / "repo")
    worktree = repo_git.create_worktree(repo, "wf-i", tmp_path / "wt", None).path
    model = ScriptedChatModel([answer({"path": "prep.py", "diff": GOOD_DIFF})])
    await ProgrammerAgent(model, templates).run(ctx_for(worktree))
    assert git(worktree, "diff", "--cached", "--name-only") == ""
    assert git(worktree, "diff", "--name-only").split() == ["prep.py"]


def test_git_runs_only_from_its_home_module() -> None:
    """No module outside ``orchestrator/repository/`` starts git (the one home of git)."""
    root = Path(__file__).resolve().parent.parent
    starts = ('which("git")', "['git'", '["git"', "'git', ", '"git", ')
    offenders = [
        path.relative_to(root).as_posix()
        for top in ("state", "agents", "orchestrator", "prompt_templates")
        for path in (root / top).rglob("*.py")
        if not path.relative_to(root).as_posix().startswith("orchestrator/repository/")
        and any(s in path.read_text(encoding="utf-8") for s in starts)
    ]
    assert offenders == []
