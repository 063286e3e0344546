"""Repository: the git repository a workflow works on (its branch, worktree and commits)."""

__all__ = ["git"]
