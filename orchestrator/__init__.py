"""Deciding what a workflow does next: the state machine, classifier and coordinators."""
