"""Replay: rebuild the state before each recorded decision and decide it again.

The ledger holds, in order, every decision, every step attempt's end and every human
answer, so the state before decision k is what the workflow was after the entries before
it. ``checkpoints`` walks the ledger from a new workflow, applying each entry with the same
functions the runner used (the recorded decision is fired through the machine and its
stored record kept; a step's recorded result or error is applied with its LLM usage
charged; an answer is recorded as it was given), and yields each decision's state together
with its record.

``Replayer`` then decides every checkpoint again with the decision pipeline it is given,
and says what would flip: which decision, in which state with which signals, the old and
the new action, and the first one, where the workflow's path would have diverged. Every
decision is re-decided on the recorded path: after the divergence the states are the ones
the workflow really went through, not the ones the new decider would have led to.

In cassette mode (``Cassette``), each decision's LLM answer is the recorded one
(``recorded_answer``), so with nothing else changed every decision comes out exactly as
recorded and no model is asked. What cannot be rebuilt: the LLM usage of a coordinator
script's subagents is not in the record, so budgets that depend on it are counted without
it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from orchestrator.deciding.actions import trigger_of
from orchestrator.deciding.analysis import analyze
from orchestrator.deciding.pipeline import DecisionPipeline
from orchestrator.deciding.record import Choice
from orchestrator.llm.cassette import Cassette, RecordedAnswer
from orchestrator.running.updates import complete_step, fail_step, new_workflow, record_answer
from state.build import replace
from state.config import WorkflowConfig
from state.decision import DecisionRecord, DecisionSource, LLMCallOutcome
from state.errors import StateError
from state.steps import STEP_SPECS
from state.store import (
    DecisionEntry,
    HumanAnswerEntry,
    LedgerEntry,
    StepResultEntry,
    StoredWorkflow,
)
from state.usage import Purpose, charge
from state.workflow import StepRecord, StepStatus, WorkflowState

_LOW = re.compile(r"confidence ([0-9.eE+-]+) below the threshold")
# The LLM's own pick is the applied decision for these sources.
_LLM_PICKED = frozenset(
    {DecisionSource.LLM, DecisionSource.LLM_OVERRIDE, DecisionSource.RECONCILED_AGREE}
)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The state before a recorded decision, and that decision's record."""

    state: WorkflowState
    record: DecisionRecord


def checkpoints(
    pipeline: DecisionPipeline, stored: StoredWorkflow, ledger: Iterable[LedgerEntry]
) -> Iterator[Checkpoint]:
    """The state before each decision of the workflow, rebuilt from its ledger.

    Args:
        pipeline: fires the recorded decisions through its machine.
        stored: the workflow's snapshot (for its id, requirements, workspace, creation
            time) and configuration (the rules the decisions were taken under).
        ledger: the workflow's ledger entries, in order.

    Raises:
        StateError: the ledger does not fit together (a result with no running step, a
            decision the machine refuses), naming the entry.
    """
    snap, config = stored.state, stored.config
    created = snap.created_at
    if created is None:
        raise StateError(f"workflow {snap.workflow_id}: the snapshot has no creation time")
    state = new_workflow(snap.workflow_id, snap.requirements, snap.workspace, created)
    for entry in ledger:
        content = entry.content
        try:
            if isinstance(content, DecisionEntry):
                yield Checkpoint(state, content.record)
                state = _apply_decision(pipeline, state, config, content.record)
            elif isinstance(content, StepResultEntry):
                state = _apply_result(state, content.record)
            elif isinstance(content, HumanAnswerEntry):
                a = content.answer
                state = record_answer(
                    state,
                    a.gate,
                    a.answer,
                    by=a.by,
                    now=a.at,
                    changes=a.changes,
                    comment=a.comment,
                )
        except StateError:
            raise
        except Exception as exc:
            raise StateError(
                f"workflow {snap.workflow_id}: ledger entry {entry.seq} ({entry.kind.value}) "
                f"does not follow from the entries before it ({exc}); the ledger cannot be "
                "replayed"
            ) from exc


def _apply_decision(
    pipeline: DecisionPipeline,
    state: WorkflowState,
    config: WorkflowConfig,
    record: DecisionRecord,
) -> WorkflowState:
    """``state`` after the recorded decision: fired, charged, and its stored record kept."""
    analysis = analyze(pipeline.machine, state, config)
    choice = Choice(
        record.decision,
        record.source,
        alternative=record.programmatic_alternative,
        conflict=record.conflict_reason,
        llm=record.llm,
    )
    after, _ = pipeline.apply(analysis, choice)
    update: dict[str, object] = {
        "decisions": (*after.decisions[:-1], record),
        "updated_at": record.decided_at,
    }
    last = after.last_record
    if last is not None and last.decision_seq == record.seq and last.started_at is not None:
        update["history"] = (*after.history[:-1], replace(last, started_at=record.decided_at))
    return replace(after, **update)


def _apply_result(state: WorkflowState, record: StepRecord) -> WorkflowState:
    """``state`` after a step attempt ended as ``record`` says, its LLM usage charged."""
    now = record.finished_at or state.updated_at
    assert now is not None
    if record.status is StepStatus.COMPLETED and record.result is not None:
        state = complete_step(state, record.result, now)
    elif record.error is not None:
        state = fail_step(
            state, record.error.type, record.error.message, now, retryable=record.error.retryable
        )
    else:
        raise StateError(
            f"workflow {state.workflow_id}: a step result with neither result nor error"
        )
    counters = state.counters
    if record.llm_usage is not None and record.llm_usage.calls:
        counters = charge(counters, Purpose(STEP_SPECS[record.step].agent.value), record.llm_usage)
    return replace(state, history=(*state.history[:-1], record), counters=counters)


def recorded_answer(record: DecisionRecord) -> RecordedAnswer | None:
    """What the LLM answered at ``record``'s decision, for a cassette (None: not asked).

    The applied decision is the LLM's own pick when it decided, overrode or agreed; when a
    borderline conflict fell back for low confidence, the LLM's pick is the recorded
    alternative. When a sole LLM pick fell back for low confidence, only its confidence is
    recorded: any legal action at that confidence falls back the same way.
    """
    info = record.llm
    if info is None or info.attempts == 0:
        return None
    prompt = info.prompt_tokens // max(info.attempts, 1)
    completion = info.completion_tokens // max(info.attempts, 1)
    if info.outcome is LLMCallOutcome.UNAVAILABLE:
        return RecordedAnswer(unavailable="; ".join(info.validation_errors) or "unavailable")
    if info.outcome is LLMCallOutcome.INVALID:
        return RecordedAnswer(None, None, prompt, completion)
    if info.outcome is not LLMCallOutcome.OK and info.outcome is not LLMCallOutcome.LOW_CONFIDENCE:
        return None
    decision = record.decision
    if record.source not in _LLM_PICKED:
        alt = record.programmatic_alternative
        decision = alt if alt is not None and alt.confidence is not None else decision
    confidence = decision.confidence
    if info.outcome is LLMCallOutcome.LOW_CONFIDENCE:
        found = next((m for e in info.validation_errors if (m := _LOW.search(e))), None)
        confidence = float(found.group(1)) if found else 0.0
    data = {
        "action": trigger_of(decision),
        "rationale": decision.rationale,
        "confidence": 1.0 if confidence is None else confidence,
    }
    return RecordedAnswer(data, None, prompt, completion)


@dataclass(frozen=True, slots=True)
class Flip:
    """A recorded decision that the replay decided otherwise."""

    seq: int
    machine_state: str
    signals: tuple[str, ...]
    old_action: str
    new_action: str
    old_source: str
    new_source: str


@dataclass
class ReplayReport:
    """What replaying one workflow found.

    Attributes:
        decisions: how many recorded decisions were re-decided.
        identical: how many came out exactly as recorded (decision and source).
        flips: the decisions whose action would change, in order.
        llm_requests: the requests the replay's decider made (to the cassette in cassette
            mode, where none reaches a model).
    """

    workflow_id: str
    decisions: int = 0
    identical: int = 0
    flips: list[Flip] = field(default_factory=list)
    llm_requests: int = 0

    @property
    def diverged_at(self) -> Flip | None:
        """The first decision where the workflow's path would have gone another way."""
        return self.flips[0] if self.flips else None


class Replayer:
    """Re-decides a workflow's recorded decisions with a decision pipeline.

    Args:
        rebuild: the pipeline whose machine fires the recorded decisions (the rules the
            workflow ran under).
        decide: the pipeline that decides again (new rules, model or prompt).
        cassette: when given, ``decide``'s LLM: each decision's recorded answer is cued
            before it is re-decided.
    """

    def __init__(
        self,
        rebuild: DecisionPipeline,
        decide: DecisionPipeline,
        cassette: Cassette | None = None,
    ) -> None:
        self.rebuild = rebuild
        self.decide = decide
        self.cassette = cassette

    async def replay(
        self,
        stored: StoredWorkflow,
        ledger: Iterable[LedgerEntry],
        config: WorkflowConfig | None = None,
    ) -> ReplayReport:
        """Re-decide every recorded decision of ``stored`` under ``config``.

        ``config`` defaults to the workflow's own.

        Raises:
            StateError: the ledger cannot be replayed.
            ConfigError: the new configuration's coordinator script cannot be loaded.
        """
        config = config or stored.config
        report = ReplayReport(stored.state.workflow_id)
        for point in checkpoints(self.rebuild, stored, ledger):
            old = point.record
            if self.cassette is not None:
                model = old.llm.model if old.llm is not None else None
                self.cassette.cue(recorded_answer(old), model)
            _, new = await self.decide.decide(point.state, config)
            report.decisions += 1
            if new.llm is not None:
                report.llm_requests += new.llm.attempts
            if new.decision == old.decision and new.source is old.source:
                report.identical += 1
            if not new.decision.same_action(old.decision):
                report.flips.append(
                    Flip(
                        seq=old.seq,
                        machine_state=old.state_before.value,
                        signals=tuple(s.name for s in old.signals),
                        old_action=trigger_of(old.decision),
                        new_action=trigger_of(new.decision),
                        old_source=old.source.value,
                        new_source=new.source.value,
                    )
                )
        return report
