"""Data and persistence: workflow states, decisions, configuration and the store.

This package knows nothing of the agents or the orchestrator.
"""
