"""The hybrid orchestrator: deciding, running, and the infrastructure both share.

``orchestrator.llm``, ``orchestrator.execution`` and ``orchestrator.repository`` (git) sit
below ``agents/`` (the agents call the model, run code and apply diffs through them);
``orchestrator.deciding`` and ``orchestrator.running`` sit above it.
``tests/test_dependency_direction.py`` holds each subpackage to its layer.
"""

__all__ = [
    "cli",
    "composition",
    "deciding",
    "execution",
    "graph",
    "insights",
    "llm",
    "logsetup",
    "reporting",
    "repository",
    "running",
    "telemetry",
    "web",
]
