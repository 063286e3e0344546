"""Deciding: from a workflow state to one checked, recorded decision.

The stages, in the order a decision goes through them (``pipeline.DecisionPipeline``):
``facts`` -> ``classifier`` (route and signals) -> ``machine`` reading ``table`` through
``guards`` (legal actions and the rules' decision; together ``analysis``) -> the deciders the
route calls for (``llm_decider`` with ``prompting``, ``script_decider``) -> ``reconcile`` ->
``record`` (fired and recorded). ``actions`` turns triggers into decisions and back;
``shadow`` asks the decider the route did not call, beside the decision (shadow mode).
"""

__all__ = [
    "actions",
    "analysis",
    "classifier",
    "facts",
    "guards",
    "llm_decider",
    "machine",
    "pipeline",
    "prompting",
    "reconcile",
    "record",
    "script_decider",
    "shadow",
    "table",
]
