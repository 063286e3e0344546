"""The hybrid orchestrator: deciding, running, and the infrastructure both share.

``orchestrator.llm`` and ``orchestrator.execution`` sit below ``agents/`` (the agents call
the model and run code through them); ``orchestrator.deciding`` and ``orchestrator.running``
sit above it. ``tests/test_dependency_direction.py`` holds each subpackage to its layer.
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
    "running",
    "telemetry",
    "web",
]
