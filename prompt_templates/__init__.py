"""Prompt templates, one per workflow step (docs/workflow.md), plus the orchestrator's own."""

__all__ = [
    "loader",
]
