"""The decision pipeline: one decision, stage by stage.

``DecisionPipeline.decide`` reads as the stages, in order:

1. ``analyze`` (``analysis.py``): the facts of the state (``facts.py``), the classifier's
   route and signals (``classifier.py``), the legal actions and the machine's own decision
   (``machine.py`` reading the rule table of ``table.py``);
2. ``plan``: which deciders the route calls for under the workflow's coordinator mode;
3. the deciders: the machine alone, the LLM (``llm_decider.py``), both, or the user's
   script (``script_decider.py``);
4. reconciliation and fallbacks (``reconcile.py``);
5. ``record_decision`` (``record.py``): fired through the machine, recorded, the new state.

The runner then carries the decision out. Per workflow (``config.coordinator``), or per
machine state where the config's ``routing:`` names one (recorded in ``DecisionRecord.routing``):

``hybrid`` (default)
    standard -> the machine decides alone; complex -> the LLM decides, the machine checks;
    borderline -> both decide and are reconciled. A *forced move*, a state whose only legal
    action is the machine's, is not put to the LLM; it is recorded with its route and
    signals, and the reason no LLM was asked.
``programmatic``
    the machine alone, never an LLM call.
``llm``
    the LLM decides every state, still checked against the machine.
``script``
    the user's ``coordinator_script`` decides, checked like the LLM.

In every mode, a human's ``accept`` (at an escalation) and ``reject`` are carried out by
the machine: only a human may override convergence, and a rejection ends the workflow.

With ``shadow:`` on, the runner passes a ``ShadowBook`` (``shadow.py``): after each decision
it is shown the plan and the record, and asks the decider the route did not call, without
holding the decision back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import Any, assert_never

import structlog

from orchestrator import telemetry
from orchestrator.deciding import reconcile
from orchestrator.deciding.analysis import Analysis, analyze
from orchestrator.deciding.llm_decider import LLMDecider
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.record import Choice, machine_choice, record_decision
from orchestrator.deciding.script_decider import ScriptDecider
from orchestrator.deciding.shadow import ShadowBook, ShadowSink
from orchestrator.llm.metering import UsageMeter
from orchestrator.llm.protocol import ChatModel
from state.build import replace
from state.clock import Clock
from state.config import Coordinator, WorkflowConfig
from state.decision import DecisionRecord, LLMCallOutcome, Route, Routing
from state.errors import ConfigError
from state.fast import ANSWER_ACCEPT, ANSWER_REJECT
from state.usage import budget_spent, charge_decision
from state.workflow import WorkflowState

log = structlog.get_logger(__name__)


class Plan(StrEnum):
    """Which deciders a state calls for."""

    MACHINE = "machine"  # the machine decides alone
    FORCED = "forced"  # routed to the LLM, but only one action is legal: the machine's move
    LLM = "llm"  # the LLM decides, the machine checks
    BOTH = "both"  # the machine and the LLM decide, then are reconciled
    SCRIPT = "script"  # the user's script decides, the machine checks


# Answers no decider may reinterpret: accepting unconverged work (only a human overrides
# convergence) and rejecting it (the workflow ends at once).
_CARRIED_OUT = frozenset({ANSWER_ACCEPT, ANSWER_REJECT})


# One shared, frozen record of each (mode, per-state) pair: nothing is built per decision.
_ROUTINGS = {
    (c, p): Routing(coordinator=c.value, per_state=p) for c in Coordinator for p in (False, True)
}


_WORKFLOW_WIDE = {c: _ROUTINGS[c, False] for c in Coordinator}


def routing_of(analysis: Analysis, config: WorkflowConfig) -> Routing:
    """The coordinator mode for the analysed state: its ``routing:`` entry, or ``coordinator``."""
    if not config.routing:  # the usual case, on the hot path: one lookup
        return _WORKFLOW_WIDE[config.coordinator]
    return _ROUTINGS[config.coordinator_for(analysis.facts.machine_state)]


def plan(analysis: Analysis, config: WorkflowConfig) -> Plan:
    """The deciders for ``analysis`` under the coordinator mode of its state."""
    answer = analysis.facts.answer
    if answer is not None and answer.answer in _CARRIED_OUT:
        return Plan.MACHINE  # the human decided; the machine carries it out
    mode, _ = config.coordinator_for(analysis.facts.machine_state)
    match mode:
        case Coordinator.PROGRAMMATIC:
            return Plan.MACHINE
        case Coordinator.LLM:
            return Plan.LLM
        case Coordinator.SCRIPT:
            return Plan.SCRIPT
        case Coordinator.HYBRID:
            route = analysis.route
            match route:
                case Route.STANDARD:
                    return Plan.MACHINE
                case Route.COMPLEX:
                    return Plan.FORCED if len(analysis.legal_actions) == 1 else Plan.LLM
                case Route.BORDERLINE:
                    return Plan.FORCED if len(analysis.legal_actions) == 1 else Plan.BOTH
                case _:
                    assert_never(route)
        case _:
            assert_never(mode)


_FAST = frozenset({Plan.MACHINE, Plan.FORCED})


class DecisionPipeline:
    """Decides each state through the stages above and logs the result."""

    def __init__(
        self,
        machine: WorkflowMachine,
        clock: Clock,
        llm: LLMDecider | None = None,
        *,
        script_model: ChatModel | None = None,
    ) -> None:
        self.machine = machine
        self.clock = clock
        self.llm = llm
        self.script = ScriptDecider(script_model)

    def analyze(self, state: WorkflowState, config: WorkflowConfig) -> Analysis:
        """Stage 1: facts, route, legal actions and the machine's decision (see ``analyze``)."""
        return analyze(self.machine, state, config)

    async def decide(
        self,
        state: WorkflowState,
        config: WorkflowConfig,
        before_slow_call: Callable[[], Awaitable[None] | None] | None = None,
        shadow: ShadowBook | None = None,
    ) -> tuple[WorkflowState, DecisionRecord]:
        """Decide the next action for ``state``, apply it and log it.

        Args:
            before_slow_call: called once before an LLM or script is consulted (not for
                decisions the machine takes alone), e.g. to commit pending results first;
                what it returns, when awaitable, is awaited before the consultation.
            shadow: shown each decision, to ask the decider the route did not call in the
                background (``shadow.py``); the decision never waits for it.

        Raises:
            WorkflowFinishedError, AwaitingHumanError: nothing to decide.
            ConfigError: ``coordinator: script`` with a script that cannot be loaded.
        """
        if not telemetry.enabled():
            return await self._decide(state, config, before_slow_call, shadow)
        with telemetry.decision_span(state.workflow_id) as span:
            new_state, record = await self._decide(state, config, before_slow_call, shadow)
            telemetry.describe_decision(span, record)
            return new_state, record

    async def _decide(
        self,
        state: WorkflowState,
        config: WorkflowConfig,
        before_slow_call: Callable[[], Awaitable[None] | None] | None,
        shadow: ShadowBook | None,
    ) -> tuple[WorkflowState, DecisionRecord]:
        analysis = self.analyze(state, config)
        deciders = plan(analysis, config)
        if before_slow_call is not None and deciders not in _FAST:
            pending = before_slow_call()
            if pending is not None:
                await pending
        choice = await self._consult(deciders, analysis, config)
        choice.routing = routing_of(analysis, config)
        new_state, record = self.apply(analysis, choice)
        log_decision(record, new_state)
        if shadow is not None:
            shadow.observe(deciders is Plan.MACHINE, analysis, record)
        return new_state, record

    def shadow_book(self, config: WorkflowConfig, sink: ShadowSink, calls_used: int) -> ShadowBook:
        """A workflow's ``ShadowBook``, asking this pipeline's LLM; ``sink`` records answers."""
        return ShadowBook(self.llm, self.clock, config, sink, calls_used)

    def decide_by_rule(
        self, state: WorkflowState, config: WorkflowConfig
    ) -> tuple[WorkflowState, DecisionRecord]:
        """The machine's decision for ``state``, applied and recorded, whatever the mode.

        The programmatic path in one call, without an event loop and without the log line
        (benchmarks, tests, and a human's answer that the rules carry out at once).
        """
        analysis = analyze(self.machine, state, config)
        choice = machine_choice(analysis)
        choice.routing = routing_of(analysis, config)
        # The machine's choice costs no LLM call: nothing to count.
        return record_decision(self.machine, self.clock, analysis, choice)

    def apply(self, analysis: Analysis, choice: Choice) -> tuple[WorkflowState, DecisionRecord]:
        """Stage 5: fire and record ``choice`` and count its LLM usage.

        Raises:
            IllegalTransitionError: the decision is not legal in the state; nothing changes.
        """
        new_state, record = record_decision(self.machine, self.clock, analysis, choice)
        if choice.llm is not None and choice.llm.attempts:
            prices = analysis.facts.config.llm.prices
            counters = charge_decision(new_state.counters, choice.llm, prices)
            new_state = replace(new_state, counters=counters)
        if choice.script_usage is not None:
            new_state = replace(new_state, counters=choice.script_usage.charged(new_state.counters))
        return new_state, record

    async def _consult(self, deciders: Plan, analysis: Analysis, config: WorkflowConfig) -> Choice:
        """Stages 3 and 4: ask the deciders ``deciders`` names, and reconcile."""
        match deciders:
            case Plan.MACHINE:
                return machine_choice(analysis)
            case Plan.FORCED:
                return reconcile.forced(analysis, self._model_name)
            case Plan.SCRIPT:
                return await self._script(analysis, config)
            case Plan.LLM | Plan.BOTH:
                spent = self._budget_spent(analysis.facts.state, config)
                if spent is not None:
                    return reconcile.not_asked(
                        analysis, self._model_name, LLMCallOutcome.BUDGET_EXHAUSTED, spent
                    )
                if self.llm is None:
                    return reconcile.not_asked(
                        analysis, self._model_name, LLMCallOutcome.NO_LLM, "no LLM is configured"
                    )
                outcome = await self.llm.decide(analysis, config)
                if deciders is Plan.BOTH:
                    return reconcile.reconcile(analysis, outcome)
                return reconcile.from_llm(analysis, outcome)
            case _:
                assert_never(deciders)

    @property
    def _model_name(self) -> str:
        """The LLM's model name for records of decisions it was not asked about."""
        return self.llm.model.model_name if self.llm else "none"

    async def _script(self, analysis: Analysis, config: WorkflowConfig) -> Choice:
        meter = UsageMeter(analysis.facts.state, config.llm)
        try:
            decision = await self.script.decide(analysis, config, meter)
        except ConfigError:
            raise  # the script cannot be loaded: a configuration problem, not a bad answer
        except Exception as exc:  # the user's code: every failure falls back
            log.warning(
                "script.failed", workflow_id=analysis.facts.state.workflow_id, error=repr(exc)
            )
            choice = reconcile.fallback(analysis, None, f"coordinator script failed: {exc!r}")
        else:
            choice = reconcile.from_script(analysis, decision)
        choice.script_usage = meter
        return choice

    @staticmethod
    def _budget_spent(state: WorkflowState, config: WorkflowConfig) -> str | None:
        return budget_spent(state.counters, config.llm, state.budget_base)


def log_decision(record: DecisionRecord, state: WorkflowState) -> None:
    """Emit ``decision.made`` with the whole envelope, bound to the workflow."""
    d = record.decision
    fields: dict[str, Any] = {
        "workflow_id": state.workflow_id,
        "seq": record.seq,
        "source": record.source.value,
        "route": record.route.value,
        "signals": [s.name for s in record.signals],
        "legal_actions": list(record.legal_actions),
        "action": d.action.value,
        "step": int(d.step) if d.step is not None else None,
        "agent": d.agent.value if d.agent else None,
        "gate": d.gate.value if d.gate else None,
        "state_before": record.state_before.value,
        "state_after": record.state_after.value,
        "rationale": d.rationale,
        "confidence": d.confidence,
    }
    if record.programmatic_alternative is not None:
        fields["programmatic_alternative"] = record.programmatic_alternative.action.value
    if record.conflict_reason:
        fields["conflict_reason"] = record.conflict_reason
    if record.llm is not None:
        i = record.llm
        fields.update(
            llm_model=i.model,
            prompt_tokens=i.prompt_tokens,
            completion_tokens=i.completion_tokens,
            latency_ms=round(i.latency_ms, 1),
            attempts=i.attempts,
            llm_outcome=i.outcome.value,
            validation_errors=list(i.validation_errors),
        )
    log.info("decision.made", **fields)
