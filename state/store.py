"""The durable store: the ``Store`` protocol and the values it takes and returns.

A store keeps, per workflow:

- the configuration and the latest state snapshot, with a ``version`` that grows by one at
  each commit (optimistic concurrency: a commit names the version it read);
- an append-only ledger of what happened: decisions, step results, human answers and
  free-form events, numbered ``seq`` 1, 2, 3... by the store;
- the paths of the artifacts the workflow produced (plans, code files);
- at most one lease: which worker runs the workflow, from which host and pid, until when.

Nothing here assumes one process: ids, owners and versions are plain values and leases
expire, so a server database and workers on several machines can implement the same
protocol. ``SQLiteStore`` (``state.sqlite_store``) is the embedded default,
``PostgresStore`` (``state.postgres_store``) a database shared by hosts, and
``MemoryStore`` (``state.memory_store``) keeps everything in this process; the composition
root (``orchestrator.composition.open_store``) picks one from a directory or a URL.

Why the protocol is synchronous, and how the runner awaits it: a store call is one short
transaction, and most callers (the CLI's read commands, tools, tests, the benchmarks) have
no event loop, so the protocol stays plain method calls and each backend stays simple and
thread-safe. The runner, which does have a loop, goes through ``AsyncStore``
(``state.async_store``): it runs each call of a store that may block (``blocking``: SQLite
waits on the disk, on fsync with ``durability="full"``, and on other processes' write locks
for up to its busy timeout) on one worker thread of its own, in order, so the loop keeps
serving the other workflows, lease renewals and LLM calls meanwhile; a store that never
blocks (memory) is called inline. An async protocol instead would have made every
synchronous caller start a loop, or every backend carry two faces. The price is a thread
hand-off per call, paid only where there is a loop to keep free: 40 to 100 microseconds
on a loaded 2-core machine (``python -m bench.awaited``), which costs a trace of instant
stub steps about a third of its durable decisions per second with ``durability="normal"``
and nothing measurable with ``"full"``, and is lost in the noise beside a real step.

The caller commits each decision, in one ``commit`` with its ledger entry, before the action
it starts; a crash after that commit leaves the started step visible as running.
"""

from __future__ import annotations

import os
import sys
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, NamedTuple, Protocol, Self

from pydantic import BaseModel

from state.config import WorkflowConfig
from state.decision import DecisionRecord, ShadowRecord
from state.steps import Gate, MachineState, Step, WorkflowStatus
from state.workflow import HumanAnswer, StepRecord, WorkflowState


class LedgerKind(StrEnum):
    """What a ledger entry records."""

    DECISION = "decision"
    STEP_RESULT = "step_result"
    HUMAN_ANSWER = "human_answer"
    EVENT = "event"
    SHADOW = "shadow"  # what the decider the route did not call would have decided


@dataclass(frozen=True, slots=True)
class DecisionEntry:
    """A ledger entry for an orchestration decision."""

    kind: ClassVar[LedgerKind] = LedgerKind.DECISION
    record: DecisionRecord


@dataclass(frozen=True, slots=True)
class StepResultEntry:
    """A ledger entry for a finished attempt at a step (completed or failed, never running)."""

    kind: ClassVar[LedgerKind] = LedgerKind.STEP_RESULT
    record: StepRecord


@dataclass(frozen=True, slots=True)
class HumanAnswerEntry:
    """A ledger entry for a human's answer at a gate."""

    kind: ClassVar[LedgerKind] = LedgerKind.HUMAN_ANSWER
    answer: HumanAnswer


@dataclass(frozen=True, slots=True)
class EventEntry:
    """A free-form ledger entry, e.g. ``EventEntry("resumed", {"by": "alice"})``.

    It is stored as the JSON object ``{"event": event, **data}``, so ``data`` must be
    JSON-serializable and must not have an ``"event"`` key.
    """

    kind: ClassVar[LedgerKind] = LedgerKind.EVENT
    event: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ShadowEntry:
    """A ledger entry for a shadow answer: recorded beside a decision, never applied."""

    kind: ClassVar[LedgerKind] = LedgerKind.SHADOW
    record: ShadowRecord


LedgerEntryIn = DecisionEntry | StepResultEntry | HumanAnswerEntry | EventEntry | ShadowEntry
"""What a caller appends to the ledger; the store assigns ``seq`` and ``recorded_at``."""


@dataclass(frozen=True, slots=True)
class ArtifactIn:
    """A file a commit records as the workflow's (``Store.commit``'s ``artifacts``)."""

    kind: str
    path: str


def distinct_artifacts(artifacts: Sequence[ArtifactIn]) -> list[ArtifactIn]:
    """``artifacts`` without repeats, in their first order: a path is one row."""
    return list(dict.fromkeys(artifacts))


@dataclass(frozen=True, slots=True)
class Commit:
    """The arguments of one ``Store.commit``, for ``Store.commit_many``."""

    workflow_id: str
    state: WorkflowState
    expected_version: int
    entries: Sequence[LedgerEntryIn] = ()
    owner: str | None = None
    wake: bool = False
    artifacts: Sequence[ArtifactIn] = ()


CommitOutcome = int | Exception
"""What one commit of ``Store.commit_many`` came to: its new version, or the error it met."""


def commit_each(store: Store, commits: Sequence[Commit]) -> list[CommitOutcome]:
    """``commits`` one by one, each in its own transaction; the outcome of each.

    What a backend that cannot write several commits together does for ``commit_many``, and
    what one that can falls back to when their shared transaction failed before its end.
    """
    outcomes: list[CommitOutcome] = []
    for c in commits:
        try:
            outcomes.append(commit_one(store, c))
        except Exception as exc:  # the caller of this commit re-raises it
            outcomes.append(exc)
    return outcomes


def commit_one(store: Store, c: Commit) -> int:
    """``store.commit`` with the arguments ``c`` holds."""
    return store.commit(
        c.workflow_id,
        c.state,
        expected_version=c.expected_version,
        entries=c.entries,
        owner=c.owner,
        wake=c.wake,
        artifacts=c.artifacts,
    )


def distinct_runs(commits: Sequence[Commit]) -> Iterator[Sequence[Commit]]:
    """``commits`` cut, in order, into runs in which no workflow appears twice.

    A commit's snapshot delta is made against the workflow's last written state, so a
    second commit of one workflow waits for the first's transaction.
    """
    start = 0
    seen: set[str] = set()
    for i, c in enumerate(commits):
        if c.workflow_id in seen:
            yield commits[start:i]
            start, seen = i, set()
        seen.add(c.workflow_id)
    if start < len(commits):
        yield commits[start:]


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A ledger entry as stored, its content validated.

    Attributes:
        workflow_id: the workflow it belongs to.
        seq: its 1-based position in the workflow's ledger (contiguous, whatever the kind).
        recorded_at: when the store wrote it.
        content: the entry itself, as it was appended.
    """

    workflow_id: str
    seq: int
    recorded_at: datetime
    content: LedgerEntryIn

    @property
    def kind(self) -> LedgerKind:
        """What the entry records."""
        return self.content.kind


class RawLedgerEntry(NamedTuple):
    """A ledger entry as ``scan_ledger`` streams it: as stored, not validated.

    Attributes:
        workflow_id: the workflow it belongs to.
        seq: its position in the workflow's ledger.
        kind: its ``LedgerKind`` value, as stored.
        recorded_at: when the store wrote it, as stored (ISO-8601 UTC text).
        payload: its JSON text, as ``ledger`` would validate it.
    """

    workflow_id: str
    seq: int
    kind: str
    recorded_at: str
    payload: str


@dataclass(frozen=True, slots=True)
class StoredWorkflow:
    """A workflow as loaded: its latest snapshot, its configuration and the snapshot's version."""

    state: WorkflowState
    config: WorkflowConfig
    version: int


@dataclass(frozen=True, slots=True)
class WorkflowSummary:
    """One row of ``list_workflows``: what a user needs to pick a workflow."""

    workflow_id: str
    status: WorkflowStatus
    phase: int
    machine_state: MachineState
    current_step: Step | None
    waiting_gate: Gate | None
    version: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Artifact:
    """A file a workflow produced (a plan, a code file, a report)."""

    workflow_id: str
    kind: str
    path: str
    recorded_at: datetime


ACTIVITY_CHARS = 500
"""The longest ``Lease.activity`` a store keeps; a longer note is cut, ending in "…"."""


def clip_activity(activity: str | None) -> str | None:
    """``activity`` as a store keeps it: at most ``ACTIVITY_CHARS`` characters."""
    if activity is None or len(activity) <= ACTIVITY_CHARS:
        return activity
    return activity[: ACTIVITY_CHARS - 1] + "…"


@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's claim to run a workflow until ``expires_at``.

    Attributes:
        workflow_id: the workflow.
        owner: who holds it (an id the worker chose, unique per run).
        host: the holder's host name, so a stale lease of a dead local process can be taken.
        pid: the holder's process id on ``host``.
        expires_at: when the claim lapses unless renewed (timezone-aware).
        activity: what the holder last said it is doing (``Store.note_activity``: an
            environment build's latest line, say), or None. It goes with the lease: a
            renewal keeps it, a new holder starts without one.
        activity_at: when ``activity`` was said.
    """

    workflow_id: str
    owner: str
    host: str
    pid: int
    expires_at: datetime
    activity: str | None = None
    activity_at: datetime | None = None

    def is_live(self, now: datetime) -> bool:
        """Whether the lease has not expired at ``now``."""
        return now < self.expires_at

    def describe(self) -> str:
        """Who holds the lease and until when, for messages."""
        until = self.expires_at.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
        return f"{self.owner} on {self.host} (pid {self.pid}) until {until}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host.

    Conservative: when it cannot tell (no permission, or Windows, where signalling a process
    would end it) it answers True, so only the lease's expiry frees the workflow.
    """
    if pid <= 0:
        return False
    if sys.platform == "win32":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    # A killed process its parent has not reaped yet is a zombie: it holds nothing.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def lease_is_stale(lease: Lease, *, now: datetime, host: str) -> bool:
    """Whether another worker may take ``lease`` over.

    A lease is stale when it expired, or when its holder ran on ``host`` (this host) and that
    process is gone, so a workflow can be resumed right after its process was killed
    without waiting for the lease to expire. Holders on other hosts are trusted until expiry.
    """
    if not lease.is_live(now):
        return True
    return lease.host == host and not pid_alive(lease.pid)


@dataclass(frozen=True, slots=True)
class SnapshotDelta:
    """What a commit changes in the stored form of a workflow's state (``SnapshotEncoder``).

    The stored form is the state's head (every field but the ``SPLICED`` lists) as JSON, plus
    one JSON text per record of those lists, keyed by (list name, index).

    Attributes:
        workflow_id: the workflow.
        head: the head's JSON text.
        counts: the length of each ``SPLICED`` list, in that order.
        rows: (list name, index, JSON text) of each record to write (insert or replace).
        cuts: (list name, index): the stored records of that list from that index on go.
        rewrite: the stored records are unknown: delete them all, then write ``rows``
            (which then hold every record).
        records: the state's ``SPLICED`` lists.
        texts: the JSON text of each of their records.
    """

    workflow_id: str
    head: str
    counts: tuple[int, ...]
    rows: tuple[tuple[str, int, str], ...]
    cuts: tuple[tuple[str, int], ...]
    rewrite: bool
    records: tuple[tuple[BaseModel, ...], ...] = field(repr=False)
    texts: tuple[tuple[str, ...], ...] = field(repr=False)

    def text_of(self, record: BaseModel) -> str:
        """A record's JSON text: the one just written when it is new, else serialized."""
        for records, texts in zip(self.records, self.texts, strict=True):
            # A ledger entry mirrors a record its commit adds: one of the last ones.
            for i in range(len(records) - 1, max(len(records) - 3, -1), -1):
                if records[i] is record:
                    return texts[i]
        return record.model_dump_json()

    def json(self) -> str:
        """The whole state's JSON text, the records spliced into the head."""
        parts = [self.head[:-1]]
        for name, texts in zip(SnapshotEncoder.SPLICED, self.texts, strict=True):
            parts.append(f',"{name}":[{",".join(texts)}]')
        parts.append("}")
        return "".join(parts)


@dataclass(frozen=True, slots=True)
class _Written:
    """The records of a workflow's last stored (or encoded) state, and the store's version."""

    version: int | None
    records: tuple[tuple[BaseModel, ...], ...]
    texts: tuple[tuple[str, ...], ...]


class SnapshotEncoder:
    """Serializes workflow states for storage, writing down only what changed.

    States are immutable, and each new state shares its step history, human answers and
    decisions (``SPLICED``) with the state it was made from: those lists only grow, except
    that the last step record is replaced when its step ends. Serializing them whole at
    each commit made a commit's cost grow with the workflow's length, so the encoder keeps,
    per workflow, the records of the last state it wrote or read with their JSON texts and
    the store version they are stored at. ``delta`` compares a new state's lists with them
    (identity first, then equality: a record equal to a stored one serializes the same) and
    returns the head, the new or replaced records' texts, and which stored ones to drop;
    when the store's version is not the one remembered (another handle wrote since, or
    nothing is remembered), the delta rewrites every record, reusing cached texts. A cached
    text is used only for the very object it was made from, so it cannot go stale.

    Safe to share between threads; a race only costs a cache miss or a full rewrite.

    The cache must hold every workflow the process is writing, or each commit rewrites all
    its records: a worker driving 250 workflows at once with room for 32 did that on almost
    every commit. So it sizes itself: a commit that finds its workflow gone while the cache
    is full (it was evicted between its load and this commit) doubles the room, up to
    ``most``. A process that only reads (a console listing thousands) keeps the first size.

    Args:
        max_workflows: how many workflows' records to keep at first (the least recently
            written or read go first).
        most: the most it grows to.
    """

    SPLICED: ClassVar[tuple[str, ...]] = ("history", "human_answers", "decisions")

    def __init__(self, max_workflows: int = 32, *, most: int = 65_536) -> None:
        self._max = max_workflows
        self._most = max(most, max_workflows)
        self._cache: OrderedDict[str, _Written] = OrderedDict()
        self._exclude = set(self.SPLICED)
        self._lock = threading.Lock()

    def head(self, state: WorkflowState) -> str:
        """The JSON text of the state without its ``SPLICED`` lists."""
        return state.model_dump_json(exclude=self._exclude)

    def delta(self, state: WorkflowState, stored_version: int | None) -> SnapshotDelta:
        """What to write to turn the stored records at ``stored_version`` into ``state``'s.

        Args:
            state: the state to store.
            stored_version: the version the store holds now (the commit's expected
                version); None when it holds nothing yet (create) or nothing is stored.
        """
        wid = state.workflow_id
        with self._lock:
            known = self._cache.get(wid)
            if known is None and stored_version is not None and len(self._cache) >= self._max:
                self._max = min(2 * self._max, self._most)  # evicted while still in use
        same = known is not None and stored_version is not None and known.version == stored_version
        rows: list[tuple[str, int, str]] = []
        cuts: list[tuple[str, int]] = []
        all_records: list[tuple[BaseModel, ...]] = []
        all_texts: list[tuple[str, ...]] = []
        for j, name in enumerate(self.SPLICED):
            records: tuple[BaseModel, ...] = getattr(state, name)
            texts: tuple[str, ...] = ()
            if known is None:
                keep, old_len = 0, 0
            else:
                old = known.records[j]
                if records is old:  # an untouched list: states share it, nothing to write
                    all_records.append(records)
                    all_texts.append(known.texts[j])
                    continue
                keep, old_len = _common_prefix(old, records), len(old)
                texts = known.texts[j] if keep == len(known.texts[j]) else known.texts[j][:keep]
            n = len(records)
            if keep < n:
                texts += tuple([r.model_dump_json() for r in records[keep:]])
            start = keep if same else 0
            if start < n:
                rows += [(name, i, texts[i]) for i in range(start, n)]
            if same and n < old_len:
                cuts.append((name, n))
            all_records.append(records)
            all_texts.append(texts)
        return SnapshotDelta(
            wid,
            self.head(state),
            tuple(map(len, all_records)),
            tuple(rows),
            tuple(cuts),
            not same,
            tuple(all_records),
            tuple(all_texts),
        )

    def wrote(self, delta: SnapshotDelta, version: int | None) -> None:
        """Remember that the store now holds ``delta``'s state at ``version``."""
        self._remember(delta.workflow_id, _Written(version, delta.records, delta.texts))

    def loaded(self, state: WorkflowState, texts: Sequence[Sequence[str]], version: int) -> None:
        """Remember a state just read from the store at ``version`` with its records' texts."""
        records = tuple(getattr(state, name) for name in self.SPLICED)
        self._remember(state.workflow_id, _Written(version, records, tuple(map(tuple, texts))))

    @property
    def room(self) -> int:
        """How many workflows' records it keeps now."""
        return self._max

    def forget(self, workflow_id: str) -> None:
        """Forget what is stored for ``workflow_id`` (a commit failed: it may or may not be)."""
        with self._lock:
            self._cache.pop(workflow_id, None)

    def _remember(self, workflow_id: str, written: _Written) -> None:
        with self._lock:
            self._cache[workflow_id] = written
            self._cache.move_to_end(workflow_id)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)

    def encode(self, state: WorkflowState) -> str:
        """The whole state's JSON text, reusing the texts of records encoded before.

        It parses to the same JSON value as ``state.model_dump_json()``; only the order of
        the keys differs.
        """
        delta = self.delta(state, None)
        self.wrote(delta, None)
        return delta.json()

    def record_json(self, workflow_id: str, record: BaseModel) -> str:
        """A record's JSON text, from the cache when ``encode`` just wrote it."""
        with self._lock:
            known = self._cache.get(workflow_id)
        if known is None:
            return record.model_dump_json()
        cached = SnapshotDelta(workflow_id, "", (), (), (), False, known.records, known.texts)
        return cached.text_of(record)


def _common_prefix(old: tuple[BaseModel, ...], new: tuple[BaseModel, ...]) -> int:
    """How many leading records ``old`` and ``new`` share (the same or equal objects)."""
    n = min(len(old), len(new))
    # Tuple comparison tries identity before equality, in C: cheap for shared records.
    if old[:n] == new[:n]:
        return n
    if n and old[: n - 1] == new[: n - 1]:
        return n - 1  # the usual change: the last step record replaced when it ends
    return next(i for i in range(n) if old[i] is not new[i] and old[i] != new[i])


class ClosesOnExit(ABC):
    """A store used as a context manager: ``with`` gives the store and closes it at the end.

    Every backend inherits it, so the context-manager half of ``Store`` is written once.
    """

    @abstractmethod
    def close(self) -> None:
        """Release the store's resources (each backend says what)."""

    def __enter__(self) -> Self:
        """The store itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        self.close()


class Store(Protocol):
    """Durable storage of workflows, their ledgers, artifacts and leases.

    Every method raises ``StoreError`` (or a subclass) and nothing else on failure:
    ``UnknownWorkflowError`` for an id it does not hold, ``ConcurrencyError`` when another
    writer got there first, ``StoreCorruptError`` for damaged data and ``StoreVersionError``
    for data from a newer schema. Implementations are safe to share between threads.
    """

    @property
    def blocking(self) -> bool:
        """Whether calls may wait on a disk, a network or another process's lock.

        Async callers run the calls of a blocking store off their event loop (``AsyncStore``).
        """
        ...

    def create(self, state: WorkflowState, config: WorkflowConfig, *, wake: bool = False) -> int:
        """Store a new workflow and return its first version (1).

        Args:
            state: its first snapshot.
            config: its configuration.
            wake: also queue it, ready, in the store's work queue, in the same transaction
                (as ``commit``'s ``wake``): a submitted workflow is never stored without
                its queue entry. A store without a work queue ignores it.

        Raises:
            StoreError: a workflow with this id already exists; nothing is changed.
        """
        ...

    def load(self, workflow_id: str) -> StoredWorkflow:
        """The latest snapshot, configuration and version of a workflow.

        Raises:
            UnknownWorkflowError: no workflow has this id.
            StoreCorruptError: the stored snapshot or configuration fails validation.
            StoreVersionError: the snapshot comes from a newer schema.
        """
        ...

    def commit(
        self,
        workflow_id: str,
        state: WorkflowState,
        *,
        expected_version: int,
        entries: Sequence[LedgerEntryIn] = (),
        owner: str | None,
        wake: bool = False,
        artifacts: Sequence[ArtifactIn] = (),
    ) -> int:
        """Replace the snapshot and append ledger entries, all or nothing.

        Args:
            workflow_id: the workflow; ``state.workflow_id`` must be the same.
            state: the new snapshot.
            expected_version: the version the caller loaded or last committed.
            entries: appended in order, numbered after the ledger's last entry.
            owner: when given, the commit happens only while this owner holds a live lease;
                None commits without checking leases (single-writer tools, tests).
            wake: also make the workflow ready in the store's work queue, in the same
                transaction (``WorkQueue.enqueue``), and wake idle workers: an answer and
                its wake-up are recorded together or not at all. A store without a work
                queue ignores it.
            artifacts: files the workflow produced, recorded as ``add_artifact`` records
                them, in the same transaction: a refused commit (a stale owner's, say)
                records none, and a step's files are listed exactly when its result is.

        Returns:
            The new version (``expected_version + 1``).

        Raises:
            UnknownWorkflowError: no workflow has this id.
            ConcurrencyError: the version moved on, or ``owner`` holds no live lease.
            StoreError: an entry cannot be stored (a running step, unserializable data).
        """
        ...

    def commit_many(self, commits: Sequence[Commit]) -> list[CommitOutcome]:
        """Several commits, in order, in as few transactions as the backend can (group commit).

        Each commit is all or nothing, as ``commit`` makes it, and its outcome is what
        ``commit`` would have returned or raised: its new version, or the error (a refused
        commit does not stop the others). Every commit that succeeded is durable when this
        returns. A backend may write them in one transaction, so that a batch of concurrent
        workflows' decisions costs one disk write (SQLite) or one WAL flush (PostgreSQL)
        instead of one each; ``AsyncStore`` hands it the commits that queue up while the
        previous batch is written.

        Returns:
            One outcome per commit, in the order given.
        """
        ...

    def list_workflows(
        self, status: WorkflowStatus | None = None, *, ids: Collection[str] | None = None
    ) -> list[WorkflowSummary]:
        """Every workflow, the most recently updated first.

        Args:
            status: only the workflows with this status.
            ids: only the workflows among these ids (an unknown id is left out, not
                refused); with ``versions``, what a watcher re-reads of those that changed.
        """
        ...

    def versions(self) -> dict[str, int]:
        """Each workflow's current version, by id.

        The cheapest way to see which workflows changed since an earlier look: a watcher
        compares these with the versions it knows, then lists only the ones that moved
        (``list_workflows(ids=...)``).
        """
        ...

    def ledger(
        self,
        workflow_id: str,
        *,
        after_seq: int = 0,
        kinds: Collection[LedgerKind] | None = None,
    ) -> list[LedgerEntry]:
        """The workflow's ledger entries with ``seq > after_seq``, in order, validated.

        Args:
            workflow_id: the workflow.
            after_seq: only entries after this one (0 for all).
            kinds: only entries of these kinds (None for all).

        Raises:
            UnknownWorkflowError: no workflow has this id.
            StoreCorruptError: an entry fails validation (naming its seq and the problem).
        """
        ...

    def scan_ledger(
        self, kinds: Collection[LedgerKind] | None = None, *, since: datetime | None = None
    ) -> Iterator[RawLedgerEntry]:
        """Every workflow's ledger entries (of ``kinds``; None for all), unvalidated.

        The read path of readers that go over the whole record (``orchestrator insights``):
        one scan, ordered by workflow id (in the database's order of text) and, within a
        workflow, by seq, fetched in batches, each payload as its stored JSON text. Nothing
        is decoded or validated: the reader decodes what it needs and reports a damaged
        entry by its ``workflow_id`` and ``seq``. Workflows without such entries do not
        appear. Each batch is read by itself: entries appended during the scan may or may
        not be in it, but the entries it yields for a workflow are contiguous in seq among
        those of ``kinds``. With ``since`` only entries recorded at or after it come back
        (by ``recorded_at``, the committing store's clock), filtered by the database, so a
        reader of the last day does not decode the years before it.

        Raises:
            StoreError: the store cannot be read.
        """
        ...

    def acquire_lease(
        self,
        workflow_id: str,
        owner: str,
        ttl_s: float,
        *,
        host: str | None = None,
        pid: int | None = None,
    ) -> Lease:
        """Claim the workflow for ``owner`` for ``ttl_s`` seconds.

        A lease ``owner`` already holds is extended; a stale one (``lease_is_stale``) is
        taken over.

        Args:
            workflow_id: the workflow.
            owner: the claimant.
            ttl_s: how long the claim lasts unless renewed.
            host: the claimant's host (default: this host).
            pid: the claimant's process id (default: this process).

        Raises:
            UnknownWorkflowError: no workflow has this id.
            ConcurrencyError: another owner holds a live lease, naming it.
        """
        ...

    def renew_lease(self, workflow_id: str, owner: str, ttl_s: float) -> Lease:
        """Extend ``owner``'s lease to ``ttl_s`` seconds from now.

        A lease that expired but that nobody took over is still ``owner``'s and is renewed.

        Raises:
            ConcurrencyError: ``owner`` does not hold the lease (any more).
        """
        ...

    def release_lease(self, workflow_id: str, owner: str) -> bool:
        """Give up ``owner``'s lease; whether there was one to give up."""
        ...

    def lease(self, workflow_id: str) -> Lease | None:
        """The workflow's lease, live or expired, or None."""
        ...

    def leases(self) -> list[Lease]:
        """Every workflow's lease, live or expired (one per workflow being run, or left)."""
        ...

    def note_activity(self, workflow_id: str, owner: str, activity: str | None) -> bool:
        """Say on ``owner``'s lease what it is doing now, for whoever watches the workflow.

        Not part of the workflow's record: it lives on the lease and goes with it. Long
        texts are cut to ``ACTIVITY_CHARS`` characters; None clears it.

        Returns:
            Whether ``owner`` holds the lease (nothing is written when it does not).
        """
        ...

    def add_artifact(self, workflow_id: str, kind: str, path: str) -> Artifact:
        """Record a file the workflow produced; recording a path again updates its time.

        Raises:
            UnknownWorkflowError: no workflow has this id.
        """
        ...

    def artifacts(self, workflow_id: str) -> list[Artifact]:
        """The workflow's artifacts, in the order they were first recorded.

        Raises:
            UnknownWorkflowError: no workflow has this id.
        """
        ...

    def close(self) -> None:
        """Release the store's resources; later calls raise ``StoreError``."""
        ...

    def __enter__(self) -> Self:
        """The store itself."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store."""
        ...
