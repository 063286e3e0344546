"""Data and persistence: workflow states, decisions, configuration and the store.

This package knows nothing of the agents or the orchestrator.
"""

__all__ = [
    "async_store",
    "build",
    "check_settings",
    "clock",
    "codec",
    "config",
    "decision",
    "errors",
    "examples",
    "fast",
    "leasing",
    "memory_queue",
    "memory_store",
    "postgres_store",
    "queue",
    "reports",
    "repository",
    "sandbox_settings",
    "sql_core",
    "sql_queue",
    "sqlite_store",
    "steps",
    "store",
    "store_copy",
    "usage",
    "validation",
    "workflow",
]
