"""The planner, validator and programmer agents, and the sandbox their code runs in."""
