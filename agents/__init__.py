"""The planner, validator and programmer agents."""
