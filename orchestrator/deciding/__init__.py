"""Deciding: from a workflow state to one checked, recorded decision."""
