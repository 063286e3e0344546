"""``MemoryStore``: the ``Store`` held in this process's memory, for tests and dry runs.

It keeps what the SQLite store keeps, the same way: snapshots, configurations and ledger
payloads as the JSON text of ``state.codec``, read back through the same validation, so a
loaded state is a fresh object and anything the SQLite store refuses to write is refused
here with the same message. Nothing survives the process.

Handles on one store share a ``MemoryData``: ``MemoryStore()`` makes a new, empty one, and
``MemoryStore.named(name)`` the one of this process called ``name`` (made on first use), so
several handles can play several processes against one store. All data of a store sits
behind one lock; calls never wait on anything else, so async callers need not offload them.
"""

from __future__ import annotations

import dataclasses
import functools
import socket
import threading
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from state import leasing
from state.clock import Clock, SystemClock
from state.codec import (
    Damaged,
    aware,
    check_commit_target,
    decode_config,
    decode_entry,
    decode_state,
    encode_entry,
    ts,
    ttl,
)
from state.config import WorkflowConfig
from state.errors import ConcurrencyError, StoreError, UnknownWorkflowError
from state.memory_queue import MemoryQueue
from state.steps import WorkflowStatus
from state.store import (
    Artifact,
    ArtifactIn,
    ClosesOnExit,
    Commit,
    CommitOutcome,
    Lease,
    LedgerEntry,
    LedgerEntryIn,
    LedgerKind,
    RawLedgerEntry,
    SnapshotEncoder,
    StoredWorkflow,
    WorkflowSummary,
    clip_activity,
    commit_each,
)
from state.workflow import WorkflowState

if TYPE_CHECKING:
    from state.store import Store


@dataclass(slots=True)
class _Row:
    """One workflow: its listing fields, its JSON, its ledger, artifacts and lease."""

    summary: WorkflowSummary
    config: str
    snapshot: str
    ledger: list[tuple[int, str, datetime, str]] = field(default_factory=list)
    artifacts: dict[tuple[str, str], datetime] = field(default_factory=dict)
    lease: Lease | None = None


class MemoryData:
    """The data of one in-memory store, shared by its handles."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: dict[str, _Row] = {}


_NAMED: dict[str, MemoryData] = {}
_NAMED_LOCK = threading.Lock()


def _summary(
    state: WorkflowState, version: int, created: datetime, now: datetime
) -> WorkflowSummary:
    return WorkflowSummary(
        workflow_id=state.workflow_id,
        status=state.status,
        phase=state.phase,
        machine_state=state.machine_state,
        current_step=state.current_step,
        waiting_gate=state.waiting_gate,
        version=version,
        created_at=created,
        updated_at=aware(state.updated_at or now),
    )


class MemoryStore(ClosesOnExit, MemoryQueue):
    """The in-memory ``Store``; safe to share between threads.

    Args:
        data: the store to open a handle on (default: a new, empty one).
        clock: the time of ledger entries and lease expiry (default: the system clock).
        name: how the store is named in messages.
    """

    blocking: bool = False
    """Calls only take a lock held for microseconds: async callers may run them inline."""

    def __init__(
        self,
        data: MemoryData | None = None,
        *,
        clock: Clock | None = None,
        name: str = "the in-memory store",
    ) -> None:
        self.data = data if data is not None else MemoryData()
        self.name = name
        self.host = socket.gethostname()
        self._clock = clock or SystemClock()
        self._encoder = SnapshotEncoder()
        self._closed = False

    @classmethod
    def named(cls, name: str, *, clock: Clock | None = None) -> MemoryStore:
        """A handle on the store of this process called ``name``, made empty on first use."""
        with _NAMED_LOCK:
            data = _NAMED.setdefault(name, MemoryData())
        return cls(data, clock=clock, name=f"the in-memory store {name!r}")

    def __repr__(self) -> str:
        return f"MemoryStore({self.name!r})"

    # -- plumbing --------------------------------------------------------------------------

    def _now(self) -> datetime:
        return aware(self._clock.now())

    def _open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.name} is closed (this handle); open a new one")

    def _row(self, workflow_id: str) -> _Row:
        row = self.data.rows.get(workflow_id)
        if row is None:
            raise UnknownWorkflowError(
                f"no workflow with id '{workflow_id}' in {self.name}; run `orchestrator "
                "list` to see the workflows this store holds"
            )
        return row

    # -- workflows -------------------------------------------------------------------------

    def create(self, state: WorkflowState, config: WorkflowConfig, *, wake: bool = False) -> int:
        """Store a new workflow and return its first version (1) (see ``Store``)."""
        wid = state.workflow_id
        now = self._now()
        created = aware(state.created_at or now)
        row = _Row(
            summary=_summary(state, 1, created, now),
            config=config.model_dump_json(),
            snapshot=self._encoder.encode(state),
        )
        with self.data.lock:
            self._open()
            if wid in self.data.rows:
                raise StoreError(
                    f"workflow {wid} already exists in {self.name}; choose another id, or resume it"
                )
            self.data.rows[wid] = row
            if wake:
                self._ready_locked(wid, now)
        return 1

    def load(self, workflow_id: str) -> StoredWorkflow:
        """The latest snapshot, configuration and version of a workflow (see ``Store``)."""
        with self.data.lock:
            self._open()
            row = self._row(workflow_id)
            version, config, snapshot = row.summary.version, row.config, row.snapshot
        try:
            return StoredWorkflow(
                state=decode_state(workflow_id, snapshot),
                config=decode_config(workflow_id, config),
                version=version,
            )
        except Damaged as exc:  # only if this program wrote what it cannot read: a bug
            raise exc.to_error(self.name[0].upper() + self.name[1:]) from exc

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
        """Replace the snapshot and append ledger entries, all or nothing (see ``Store``)."""
        check_commit_target(workflow_id, state)
        snapshot = self._encoder.encode(state)
        text_of = functools.partial(self._encoder.record_json, workflow_id)
        payloads = [encode_entry(text_of, workflow_id, entry) for entry in entries]
        now = self._now()
        with self.data.lock:
            self._open()
            row = self._row(workflow_id)
            stored = row.summary.version
            if stored != expected_version:
                raise ConcurrencyError(
                    f"workflow {workflow_id} changed since it was loaded (version "
                    f"{expected_version} expected, {stored} stored): another process "
                    "committed to it; nothing was written. Load it again and redo the step"
                )
            if owner is not None:
                leasing.check_holder(row.lease, workflow_id, owner, now)
            row.summary = _summary(state, stored + 1, row.summary.created_at, now)
            row.snapshot = snapshot
            last = row.ledger[-1][0] if row.ledger else 0
            row.ledger.extend(
                (last + i, kind, now, payload) for i, (kind, payload) in enumerate(payloads, 1)
            )
            for artifact in artifacts:  # a known key keeps its place, as add_artifact's
                row.artifacts[(artifact.kind, artifact.path)] = now
            if wake:
                self._ready_locked(workflow_id, now)
        return expected_version + 1

    def commit_many(self, commits: Sequence[Commit]) -> list[CommitOutcome]:
        """The commits one by one (see ``Store``): nothing here is written to a disk."""
        return commit_each(self, commits)

    def list_workflows(
        self, status: WorkflowStatus | None = None, *, ids: Collection[str] | None = None
    ) -> list[WorkflowSummary]:
        """Every workflow (or those with ``status``, or among ``ids``), newest first."""
        wanted = WorkflowStatus(status) if status is not None else None
        with self.data.lock:
            self._open()
            rows = self.data.rows
            among = rows.values() if ids is None else [rows[i] for i in set(ids) if i in rows]
            found = [r.summary for r in among if wanted in (None, r.summary.status)]
        found.sort(key=lambda s: s.workflow_id)
        found.sort(key=lambda s: s.updated_at, reverse=True)  # stable: ties stay by id
        return found

    def versions(self) -> dict[str, int]:
        """Each workflow's current version, by id (see ``Store``)."""
        with self.data.lock:
            self._open()
            return {wid: r.summary.version for wid, r in self.data.rows.items()}

    # -- ledger ----------------------------------------------------------------------------

    def ledger(
        self,
        workflow_id: str,
        *,
        after_seq: int = 0,
        kinds: Collection[LedgerKind] | None = None,
    ) -> list[LedgerEntry]:
        """The workflow's ledger entries with ``seq > after_seq``, in order (see ``Store``)."""
        wanted = {LedgerKind(k).value for k in kinds} if kinds is not None else None
        with self.data.lock:
            self._open()
            rows = [
                r
                for r in self._row(workflow_id).ledger
                if r[0] > after_seq and (wanted is None or r[1] in wanted)
            ]
        try:
            return [
                decode_entry(workflow_id, seq, kind, at.isoformat(), payload)
                for seq, kind, at, payload in rows
            ]
        except Damaged as exc:
            raise exc.to_error(self.name[0].upper() + self.name[1:]) from exc

    def scan_ledger(
        self, kinds: Collection[LedgerKind] | None = None, *, since: datetime | None = None
    ) -> Iterator[RawLedgerEntry]:
        """Every workflow's ledger entries of ``kinds``, unvalidated (see ``Store``)."""
        wanted = {LedgerKind(k).value for k in kinds} if kinds is not None else None
        cut = aware(since) if since is not None else None
        with self.data.lock:
            self._open()
            # The ledgers only grow: a copy of each list is the ledger as it is now.
            ledgers = sorted((wid, list(row.ledger)) for wid, row in self.data.rows.items())
        for wid, entries in ledgers:
            for seq, kind, at, payload in entries:
                if (wanted is None or kind in wanted) and (cut is None or at >= cut):
                    yield RawLedgerEntry(wid, seq, kind, ts(at), payload)

    # -- leases ----------------------------------------------------------------------------

    def acquire_lease(
        self,
        workflow_id: str,
        owner: str,
        ttl_s: float,
        *,
        host: str | None = None,
        pid: int | None = None,
    ) -> Lease:
        """Claim the workflow for ``owner`` for ``ttl_s`` seconds (see ``Store``)."""
        now = self._now()
        lease = leasing.new_lease(
            workflow_id, owner, ttl_s, now=now, host=self.host if host is None else host, pid=pid
        )
        with self.data.lock:
            self._open()
            row = self._row(workflow_id)
            leasing.refuse_unless_free(row.lease, owner, now=now, host=self.host)
            if row.lease is not None and row.lease.owner == owner:  # its note stays with it
                lease = dataclasses.replace(
                    lease, activity=row.lease.activity, activity_at=row.lease.activity_at
                )
            row.lease = lease
        return lease

    def renew_lease(self, workflow_id: str, owner: str, ttl_s: float) -> Lease:
        """Extend ``owner``'s lease to ``ttl_s`` seconds from now (see ``Store``)."""
        expires = self._now() + ttl(workflow_id, ttl_s)
        with self.data.lock:
            self._open()
            row = self._row(workflow_id)
            held = leasing.refuse_unless_holder(row.lease, workflow_id, owner)
            row.lease = dataclasses.replace(held, expires_at=expires)
            return row.lease

    def release_lease(self, workflow_id: str, owner: str) -> bool:
        """Give up ``owner``'s lease; whether there was one to give up."""
        with self.data.lock:
            self._open()
            return self._release_locked(workflow_id, owner)

    def leases(self) -> list[Lease]:
        """Every workflow's lease, live or expired (see ``Store``)."""
        with self.data.lock:
            self._open()
            return [r.lease for r in self.data.rows.values() if r.lease is not None]

    def note_activity(self, workflow_id: str, owner: str, activity: str | None) -> bool:
        """Say on ``owner``'s lease what it is doing now (see ``Store``)."""
        at = None if activity is None else self._now()
        with self.data.lock:
            self._open()
            row = self._held_locked(workflow_id, owner)
            if row is None or row.lease is None:
                return False
            row.lease = dataclasses.replace(
                row.lease, activity=clip_activity(activity), activity_at=at
            )
            return True

    def lease(self, workflow_id: str) -> Lease | None:
        """The workflow's lease, live or expired, or None (see ``Store``)."""
        with self.data.lock:
            self._open()
            return self._row(workflow_id).lease

    # -- artifacts -------------------------------------------------------------------------

    def add_artifact(self, workflow_id: str, kind: str, path: str) -> Artifact:
        """Record a file the workflow produced (see ``Store``)."""
        now = self._now()
        with self.data.lock:
            self._open()
            # Updating a dict key keeps its place: the first-recorded order stays.
            self._row(workflow_id).artifacts[(kind, path)] = now
        return Artifact(workflow_id, kind, path, now)

    def artifacts(self, workflow_id: str) -> list[Artifact]:
        """The workflow's artifacts, in the order they were first recorded (see ``Store``)."""
        with self.data.lock:
            self._open()
            items = list(self._row(workflow_id).artifacts.items())
        return [Artifact(workflow_id, kind, path, at) for (kind, path), at in items]

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Close this handle (the data stays for other handles); closing twice is fine."""
        self._closed = True


if TYPE_CHECKING:

    def _conforms(store: MemoryStore) -> Store:
        """Mypy checks here that MemoryStore implements the Store protocol."""
        return store
