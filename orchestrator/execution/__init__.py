"""Execution: the sandbox that runs generated code and the deterministic tools that judge it."""

__all__ = [
    "checks",
    "environments",
    "launch",
    "limits",
    "plan_alignment",
    "pytest_bootstrap",
    "reports",
    "results",
    "sandbox",
    "supervisor",
    "tools",
    "workdirs",
]
