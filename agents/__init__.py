"""The planner, validator and programmer agents."""

__all__ = [
    "base",
    "calls",
    "context",
    "human",
    "planner",
    "programmer",
    "validator",
    "validator_reports",
    "validator_tools",
    "workspace",
]
