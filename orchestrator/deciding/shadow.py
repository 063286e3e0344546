"""Shadow mode: the decider the route did not call answers too, recorded, never applied.

With ``shadow: true`` in the workflow's configuration, the runner gives the pipeline one
``ShadowBook`` per run. After each decision the book is shown the analysis and the record:

- the rules decided (a standard state, or ``programmatic`` routing): the LLM is asked the same
  question in an ``asyncio`` task. The decision is committed and acted on at once; the
  shadow answer is handed to the sink (the runner records it as a ``shadow`` ledger entry)
  when it arrives. Shadow LLM requests have their own budget (``shadow.max_calls``), apart
  from the workflow's LLM budget, and are never charged to it;
- the LLM or a script decided: the rules' own decision (already computed) is recorded
  beside it at once.

States the human decided, states with a single legal action, and borderline states (where
both deciders already answered) have no shadow. A shadow failure is recorded as a shadow
outcome (``failed``) and never reaches the workflow. When the run ends (finished, waiting
for a human, or stopped by an error), ``close`` cancels the calls still running and records
a ``shadow_dropped`` event for each.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

import structlog

from orchestrator.deciding.analysis import Analysis
from state.clock import Clock
from state.config import WorkflowConfig
from state.decision import (
    Decision,
    DecisionRecord,
    DecisionSource,
    LLMCallInfo,
    LLMCallOutcome,
    ShadowDecider,
    ShadowOutcome,
    ShadowRecord,
)
from state.store import EventEntry, LedgerEntry, ShadowEntry

if TYPE_CHECKING:
    from orchestrator.deciding.llm_decider import LLMDecider

log = structlog.get_logger(__name__)

ShadowSink = Callable[[ShadowEntry | EventEntry], Awaitable[None]]
"""Records one shadow answer or event (the runner commits it to the ledger)."""

MAX_IN_FLIGHT = 4  # shadow calls running at once per workflow; more are skipped
_BESIDE_LLM = frozenset({DecisionSource.LLM, DecisionSource.SCRIPT})


def calls_recorded(entries: Iterable[LedgerEntry]) -> int:
    """The shadow LLM requests the ledger ``entries`` record (earlier runs' budget use)."""
    return sum(
        e.content.record.llm.attempts
        for e in entries
        if isinstance(e.content, ShadowEntry) and e.content.record.llm is not None
    )


class ShadowBook:
    """One workflow run's shadow consultations (see the module docstring).

    Args:
        llm: the LLM decider to ask beside rule decisions (None: no LLM shadows).
        clock: stamps the shadow records.
        config: the workflow's configuration (``shadow`` settings, the LLM's).
        sink: records each shadow answer and drop event, in the order they come.
        calls_used: shadow LLM requests already recorded for this workflow (earlier runs).
    """

    def __init__(
        self,
        llm: LLMDecider | None,
        clock: Clock,
        config: WorkflowConfig,
        sink: ShadowSink,
        calls_used: int = 0,
    ) -> None:
        self.llm = llm
        self.clock = clock
        self.config = config
        self.sink = sink
        self.calls_used = calls_used
        self._tasks: dict[asyncio.Task[None], int] = {}  # running -> the decision's seq
        self._keep: set[asyncio.Task[None]] = set()  # awaited by close, not cancelled
        self._warned = False

    @property
    def in_flight(self) -> int:
        """Shadow LLM calls still running."""
        return len(self._tasks)

    def observe(self, rules_decided: bool, analysis: Analysis, record: DecisionRecord) -> None:
        """Start the shadow of ``record``, if it has one; never delays or raises."""
        if not self.config.shadow.enabled or len(analysis.legal_actions) < 2:
            return
        if rules_decided:
            if record.source is not DecisionSource.HUMAN and self.llm is not None:
                self._ask_llm(analysis, record)
        elif record.source in _BESIDE_LLM:
            rules = analysis.programmatic
            outcome = (
                ShadowOutcome.AGREED
                if rules.same_action(record.decision)
                else ShadowOutcome.DISAGREED
            )
            shadow = self._shadow(record, ShadowDecider.RULES, outcome, rules)
            # Already decided: recorded as soon as the loop is free, and never dropped.
            self._spawn(record, self._record(shadow), keep=True)

    async def close(self) -> None:
        """Cancel the shadow calls still running and record a ``shadow_dropped`` for each.

        Rule shadows, already decided, are recorded rather than dropped.
        """
        while self._tasks:
            kept = [t for t in self._tasks if t in self._keep]
            if kept:  # answered (or rules): recorded, not dropped
                await asyncio.gather(*kept, return_exceptions=True)
                continue
            tasks = dict(self._tasks)
            self._tasks.clear()
            for task in tasks:
                task.cancel()
            for task, seq in tasks.items():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                if task.cancelled():
                    log.info("shadow.dropped", decision_seq=seq)
                    await self._sink(EventEntry("shadow_dropped", {"decision_seq": seq}))

    def _ask_llm(self, analysis: Analysis, record: DecisionRecord) -> None:
        budget = self.config.shadow.max_calls
        llm = self.llm
        assert llm is not None
        calls = len(self._tasks) - len(self._keep)
        if self.calls_used + calls >= budget or calls >= MAX_IN_FLIGHT:
            if not self._warned:
                self._warned = True
                log.info(
                    "shadow.skipped",
                    decision_seq=record.seq,
                    calls_used=self.calls_used,
                    in_flight=calls,
                    max_calls=budget,
                )
            return

        async def ask() -> None:
            try:
                outcome = await llm.decide(analysis, self.config)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._answered()  # a shadow failure must never reach the workflow
                self.calls_used += 1
                shadow = self._shadow(
                    record, ShadowDecider.LLM, ShadowOutcome.FAILED, None, error=repr(exc)
                )
            else:
                self._answered()
                self.calls_used += outcome.info.attempts
                if outcome.decision is None:
                    result = ShadowOutcome.NO_ANSWER
                elif outcome.decision.same_action(record.decision):
                    result = ShadowOutcome.AGREED
                else:
                    result = ShadowOutcome.DISAGREED
                if outcome.info.outcome is LLMCallOutcome.LOW_CONFIDENCE:
                    result = ShadowOutcome.NO_ANSWER
                shadow = self._shadow(
                    record, ShadowDecider.LLM, result, outcome.decision, llm=outcome.info
                )
            await self._record(shadow)

        self._spawn(record, ask())

    def _spawn(
        self, record: DecisionRecord, work: Coroutine[Any, Any, None], *, keep: bool = False
    ) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks[task] = record.seq
        if keep:
            self._keep.add(task)
        task.add_done_callback(self._done)

    def _answered(self) -> None:
        """The running shadow has its answer: from now on ``close`` records it, never drops it."""
        task = asyncio.current_task()
        if task is not None and task in self._tasks:
            self._keep.add(task)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.pop(task, None)
        self._keep.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("shadow.record.failed", error=repr(task.exception()))

    async def _record(self, shadow: ShadowRecord) -> None:
        log.info(
            "shadow.answered",
            decision_seq=shadow.decision_seq,
            decider=shadow.decider.value,
            outcome=shadow.outcome.value,
        )
        await self._sink(ShadowEntry(shadow))

    async def _sink(self, entry: ShadowEntry | EventEntry) -> None:
        try:
            await self.sink(entry)
        except Exception as exc:  # recording is best effort: the workflow goes on
            log.warning("shadow.record.failed", kind=entry.kind.value, error=repr(exc))

    def _shadow(
        self,
        record: DecisionRecord,
        decider: ShadowDecider,
        outcome: ShadowOutcome,
        decision: Decision | None,
        *,
        llm: LLMCallInfo | None = None,
        error: str | None = None,
    ) -> ShadowRecord:
        return ShadowRecord(
            decision_seq=record.seq,
            decided_at=self.clock.now(),
            decider=decider,
            outcome=outcome,
            state=record.state_before,
            route=record.route,
            signals=record.signals,
            applied=record.decision,
            decision=decision,
            llm=llm,
            error=error,
        )
