"""Running: drives workflows durably through their steps, agents, gates and the store."""
