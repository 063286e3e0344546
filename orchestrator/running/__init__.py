"""Running: drives workflows durably through their steps, agents, gates and the store."""

__all__ = [
    "activity",
    "agent_context",
    "consistency",
    "replay",
    "runner",
    "updates",
    "worker",
    "workspace_commits",
]
