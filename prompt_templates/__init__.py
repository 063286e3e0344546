"""Prompt templates, one per workflow step (WORKFLOW.md), plus the orchestrator's own."""
