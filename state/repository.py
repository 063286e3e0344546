"""Where a workflow's git repository is: the user's repository, the base, the branch, the worktree.

Set by ``orchestrator run --repo PATH [--base BRANCH]`` and stored with the workflow's
configuration (``WorkflowConfig.repository``), so ``resume``, ``status`` and ``inspect`` know
the branch the workflow commits to and the worktree it works in. Empty (``path`` None) for a
workflow in a plain directory.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from state.validation import STRICT_FROZEN


class RepositorySettings(BaseModel):
    """The git repository a workflow works on; all None for a plain-directory workflow."""

    model_config = STRICT_FROZEN

    path: str | None = Field(None, description="the user's repository (its top level)")
    base: str | None = Field(None, description="the branch (or commit) the work starts from")
    base_commit: str | None = Field(None, description="the commit ``base`` named at the start")
    branch: str | None = Field(None, description="the workflow's own branch")
    worktree: str | None = Field(None, description="the git worktree the workflow works in")

    @property
    def enabled(self) -> bool:
        """Whether the workflow works in a git worktree."""
        return self.path is not None and self.worktree is not None and self.base_commit is not None
