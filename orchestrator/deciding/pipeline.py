"""The coordinator: who decides each state, reconciliation, budgets and the decision log.

Per workflow (``config.coordinator``):

``hybrid`` (default)
    standard -> the machine decides alone; complex -> the LLM decides, the machine checks;
    borderline -> both decide and are reconciled (WORKFLOW.md). A *forced move*, a state
    whose only legal action is the machine's, is not put to the LLM: whatever it answered,
    the outcome would be that action (the LLM chooses an action, never its parameters), so
    the call would cost seconds and tokens for nothing. It is recorded with its route and
    signals, and the reason no LLM was asked.
``programmatic``
    the machine alone, never an LLM call.
``llm``
    the LLM decides every state, still checked against the machine.
``script``
    the user's ``coordinator_script`` decides, checked like the LLM.

Whatever the mode, the decision applied is legal in the machine. When the LLM or the script
cannot give a usable answer, the programmatic decision stands (``programmatic_fallback``),
or, where the rules have no trustworthy answer (the report they would judge is anomalous),
the workflow escalates to a human.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from orchestrator.deciding import machine as m
from orchestrator.deciding.actions import build_decision
from orchestrator.deciding.engine import Analysis, DecisionEngine
from orchestrator.deciding.llm_decider import LLMDecider, LLMOutcome
from orchestrator.deciding.script_decider import ScriptFn, load_script, run_script
from orchestrator.llm.protocol import ChatModel
from state.build import replace
from state.config import Coordinator, WorkflowConfig
from state.decision import (
    Decision,
    DecisionRecord,
    DecisionSource,
    EscalationReason,
    LLMCallInfo,
    Route,
)
from state.workflow import WorkflowState

log = structlog.get_logger(__name__)

# Signals under which the programmatic verdict rests on a report that cannot be trusted.
UNTRUSTED_REPORT = frozenset(
    {"score_missing", "score_out_of_range", "report_contradiction", "tool_crashed"}
)


@dataclass(frozen=True, slots=True)
class Choice:
    """The decision to apply and its envelope."""

    decision: Decision
    source: DecisionSource
    alternative: Decision | None = None
    conflict: str | None = None
    llm: LLMCallInfo | None = None


class DecisionPipeline:
    """Routes each state to the machine, the LLM, both, or a script, and logs the result."""

    def __init__(
        self,
        engine: DecisionEngine,
        llm: LLMDecider | None = None,
        *,
        script_model: ChatModel | None = None,
    ) -> None:
        self.engine = engine
        self.llm = llm
        self.script_model = script_model
        self._scripts: dict[str, ScriptFn] = {}

    async def decide(
        self,
        state: WorkflowState,
        config: WorkflowConfig,
        before_slow_call: Callable[[], Awaitable[None] | None] | None = None,
    ) -> tuple[WorkflowState, DecisionRecord]:
        """Decide the next action for ``state``, apply it and log it.

        Args:
            before_slow_call: called once before an LLM or script is consulted (not for
                decisions the machine takes alone), e.g. to commit pending results first;
                what it returns, when awaitable, is awaited before the consultation.

        Raises:
            WorkflowFinishedError, AwaitingHumanError: nothing to decide.
            ConfigError: ``coordinator: script`` with a script that cannot be loaded.
        """
        analysis = self.engine.analyze(state, config)
        if before_slow_call is not None and not self._machine_alone(analysis, config):
            pending = before_slow_call()
            if pending is not None:
                await pending
        choice = await self._choose(analysis, config)
        new_state, record = self.engine.apply(
            analysis,
            choice.decision,
            choice.source,
            programmatic_alternative=choice.alternative,
            conflict_reason=choice.conflict,
            llm=choice.llm,
        )
        if choice.llm is not None and choice.llm.attempts:
            c = new_state.counters
            new_state = replace(
                new_state,
                counters=replace(
                    c,
                    llm_calls=c.llm_calls + choice.llm.attempts,
                    prompt_tokens=c.prompt_tokens + choice.llm.prompt_tokens,
                    completion_tokens=c.completion_tokens + choice.llm.completion_tokens,
                ),
            )
        log_decision(record, new_state)
        return new_state, record

    @property
    def _model_name(self) -> str:
        """The LLM's model name for records of decisions it was not asked about."""
        return self.llm.model.model_name if self.llm else "none"

    @staticmethod
    def _machine_alone(analysis: Analysis, config: WorkflowConfig) -> bool:
        """Whether the machine decides this state without an LLM or a script."""
        mode = config.coordinator
        return mode is Coordinator.PROGRAMMATIC or (
            mode is Coordinator.HYBRID
            and (analysis.route is Route.STANDARD or len(analysis.legal_actions) == 1)
        )

    async def _choose(self, analysis: Analysis, config: WorkflowConfig) -> Choice:
        mode = config.coordinator
        route = analysis.route
        if self._machine_alone(analysis, config):
            if mode is Coordinator.HYBRID and route is not Route.STANDARD:
                return self._forced(analysis)
            return self._programmatic(analysis)
        if mode is Coordinator.SCRIPT:
            return await self._script(analysis, config)
        spent = self._budget_spent(analysis.facts.state, config)
        if spent is not None or self.llm is None:
            why = spent or "no LLM is configured"
            info = LLMCallInfo(
                model=self._model_name,
                outcome="budget_exhausted" if spent else "no_llm",
                validation_errors=(why,),
            )
            return self._fallback(analysis, info, why)
        outcome = await self.llm.decide(analysis, config)
        if mode is Coordinator.HYBRID and route is Route.BORDERLINE:
            return self._reconcile(analysis, outcome)
        return self._from_llm(analysis, outcome)

    def _programmatic(self, analysis: Analysis) -> Choice:
        return Choice(analysis.programmatic, self.engine.programmatic_source(analysis))

    def _forced(self, analysis: Analysis) -> Choice:
        """A routed state with one legal action: the machine's move, the LLM not asked."""
        only = analysis.legal_actions[0]
        info = LLMCallInfo(
            model=self._model_name,
            outcome="not_needed",
            validation_errors=(f"only one legal action ({only}): nothing for the LLM to choose",),
        )
        return Choice(analysis.programmatic, self.engine.programmatic_source(analysis), llm=info)

    def _from_llm(self, analysis: Analysis, outcome: LLMOutcome) -> Choice:
        """Complex states and ``llm`` mode: the LLM's checked decision, or the fallback."""
        if outcome.decision is not None and outcome.confident:
            prog = analysis.programmatic
            differs = not outcome.decision.same_action(prog)
            return Choice(
                outcome.decision,
                DecisionSource.LLM,
                alternative=prog if differs else None,
                conflict=_conflict(outcome.decision, prog) if differs else None,
                llm=outcome.info,
            )
        why = "; ".join(outcome.info.validation_errors) or outcome.info.outcome
        return self._fallback(analysis, outcome.info, why)

    def _reconcile(self, analysis: Analysis, outcome: LLMOutcome) -> Choice:
        """Borderline states: agree -> programmatic; conflict -> LLM only if legal and sure."""
        prog = analysis.programmatic
        llm_decision = outcome.decision
        if llm_decision is None:
            why = "; ".join(outcome.info.validation_errors) or outcome.info.outcome
            return Choice(
                prog,
                DecisionSource.PROGRAMMATIC_FALLBACK,
                conflict=f"no usable LLM decision: {why}",
                llm=outcome.info,
            )
        if llm_decision.same_action(prog):
            return Choice(prog, DecisionSource.RECONCILED_AGREE, llm=outcome.info)
        conflict = _conflict(llm_decision, prog)
        if outcome.confident:
            return Choice(
                llm_decision,
                DecisionSource.LLM_OVERRIDE,
                alternative=prog,
                conflict=conflict,
                llm=outcome.info,
            )
        return Choice(
            prog,
            DecisionSource.PROGRAMMATIC_FALLBACK,
            alternative=llm_decision,
            conflict=f"{conflict}; the LLM's confidence is below the threshold",
            llm=outcome.info,
        )

    def _fallback(self, analysis: Analysis, info: LLMCallInfo | None, why: str) -> Choice:
        """The programmatic decision, or an escalation where the rules cannot be trusted."""
        names = {s.name for s in analysis.classification.signals}
        untrusted = names & UNTRUSTED_REPORT
        if untrusted and m.ESCALATE in analysis.legal_actions:
            decision = build_decision(
                m.ESCALATE,
                analysis.facts,
                rationale="no usable LLM decision and the report the rules would judge is "
                f"anomalous ({', '.join(sorted(untrusted))}): a human must decide",
                escalation_reason=EscalationReason.UNDECIDABLE,
            )
            return Choice(
                decision,
                DecisionSource.PROGRAMMATIC_FALLBACK,
                alternative=analysis.programmatic,
                conflict=why,
                llm=info,
            )
        return Choice(
            analysis.programmatic, DecisionSource.PROGRAMMATIC_FALLBACK, conflict=why, llm=info
        )

    async def _script(self, analysis: Analysis, config: WorkflowConfig) -> Choice:
        path = config.coordinator_script or ""
        fn = self._scripts.get(path)
        if fn is None:
            fn = self._scripts[path] = load_script(path)
        try:
            result = await run_script(fn, analysis, config, self.script_model)
            decision = self._script_decision(result, analysis)
        except Exception as exc:  # the user's code: every failure falls back
            log.warning(
                "script.failed", workflow_id=analysis.facts.state.workflow_id, error=repr(exc)
            )
            return self._fallback(analysis, None, f"coordinator script failed: {exc!r}")
        if decision is None:
            return Choice(analysis.programmatic, DecisionSource.SCRIPT)
        prog = analysis.programmatic
        differs = not decision.same_action(prog)
        return Choice(
            decision,
            DecisionSource.SCRIPT,
            alternative=prog if differs else None,
            conflict=_conflict(decision, prog) if differs else None,
        )

    @staticmethod
    def _script_decision(result: Any, analysis: Analysis) -> Decision | None:
        if result is None:
            return None
        if isinstance(result, str):
            result = {"action": result}
        if not isinstance(result, dict) or not isinstance(result.get("action"), str):
            raise ValueError(f"decide() returned {result!r}; return an action name or a dict")
        action = result["action"]
        if action not in analysis.legal_actions:
            raise ValueError(
                f"action '{action}' is not legal here; legal: {', '.join(analysis.legal_actions)}"
            )
        confidence = result.get("confidence")
        if confidence is not None and not (
            isinstance(confidence, int | float) and 0 <= confidence <= 1
        ):
            raise ValueError(f"confidence {confidence!r} is not a number in [0, 1]")
        return build_decision(
            action,
            analysis.facts,
            rationale=str(result.get("rationale") or "decided by the coordinator script"),
            confidence=float(confidence) if confidence is not None else None,
        )

    @staticmethod
    def _budget_spent(state: WorkflowState, config: WorkflowConfig) -> str | None:
        s, c = config.llm, state.counters
        if s.max_calls_per_workflow is not None and c.llm_calls >= s.max_calls_per_workflow:
            return f"LLM call budget spent ({c.llm_calls}/{s.max_calls_per_workflow} calls)"
        used = c.prompt_tokens + c.completion_tokens
        if s.max_tokens_per_workflow is not None and used >= s.max_tokens_per_workflow:
            return f"LLM token budget spent ({used}/{s.max_tokens_per_workflow} tokens)"
        return None


def _conflict(chosen: Decision, other: Decision) -> str:
    def name(d: Decision) -> str:
        step = f" step {int(d.step)}" if d.step is not None else ""
        gate = f" gate {d.gate.value}" if d.gate is not None else ""
        return f"{d.action.value}{step}{gate}"

    return f"LLM chose {name(chosen)}, the rules chose {name(other)}"


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
            llm_outcome=i.outcome,
            validation_errors=list(i.validation_errors),
        )
    log.info("decision.made", **fields)
