"""Execution: the sandbox that runs generated code and the deterministic tools that judge it."""
