"""The ``Store`` on a SQL database, written once for SQLite and PostgreSQL.

Both backends keep the same tables and follow the same choreography (what a commit, a
create, a load or a lease change reads and writes, in which order, and what errors they
raise); they differ only in how they open connections and transactions, how they word a
database's name in messages, and a few lines of SQL (``Statements``). This module holds
the choreography; ``state.sqlite_store`` and ``state.postgres_store`` subclass ``SqlStore``
with their connection handling.

How a workflow is stored, so that a commit costs the same at its 1,000th ledger entry as
at its first (the tables are made by the backends' migrations 1, 2 and 4):

- ``workflows``: one row per workflow: its version, listing columns, configuration, the
  JSON of the state's *head* (every field but the three growing lists of
  ``SnapshotEncoder.SPLICED``: step history, human answers, decisions) in ``snapshot``, how
  many records each list has (``history_n``, ``answers_n``, ``decisions_n``), and the seq of
  its last ledger entry (``ledger_seq``).
- ``records``: one row per record of those lists, keyed by (workflow, list name, index),
  holding the record's JSON, or (schema 4) the ``seq`` of a ledger entry of the same commit
  whose payload is that JSON (a decision, a finished step, an answer: stored once). A
  record is written by the commit that adds it; the one record that changes after it was
  written (a step's record, running when the decision starts it, then completed or failed)
  is rewritten in place by the commit that changes it.
- ``ledger``: the append-only entries, numbered from ``ledger_seq``.

A commit is therefore one ``UPDATE`` of the workflow row, which checks the expected version
and, for a commit under a lease, that the owner's lease is live, in its ``WHERE`` clause,
and returns the new ``ledger_seq``; then one batched ``INSERT`` of the ledger entries and
one batched upsert of the new or changed records (the encoder knows which: see
``SnapshotEncoder.delta``; when this handle does not know what is stored, every record is
rewritten). Only when the ``UPDATE`` matches no row does the commit read the row and the
lease, to say why. ``load`` reads the head and the records in one consistent read and
validates them with the models (``codec.decode_state`` and ``codec.decode_records``), so the
state that comes back equals the one committed, and a damaged record is named.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from abc import abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Concatenate, NoReturn, ParamSpec, Protocol, TypeVar

from state import leasing
from state.clock import Clock
from state.codec import (
    Damaged,
    aware,
    check_commit_target,
    decode_config,
    decode_entry,
    decode_records,
    decode_state,
    encode_entry,
    parse_time,
    summary_of,
    summary_values,
    ts,
    ttl,
)
from state.config import WorkflowConfig
from state.errors import ConcurrencyError, StoreCorruptError, StoreError, UnknownWorkflowError
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
    SnapshotDelta,
    SnapshotEncoder,
    StoredWorkflow,
    WorkflowSummary,
    clip_activity,
    commit_each,
    distinct_artifacts,
    distinct_runs,
)
from state.workflow import WorkflowState

P = ParamSpec("P")
R = TypeVar("R")
S = TypeVar("S", bound="SqlStore")


class Tx(Protocol):
    """One open transaction, as the core uses it; SQL is written with ``?`` placeholders."""

    def one(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        """Run ``sql`` and return its first row, or None."""
        ...

    def all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run ``sql`` and return its rows."""
        ...

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run ``sql`` and return how many rows it changed."""
        ...

    def many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run ``sql`` once per row of parameters, batched as the driver can."""
        ...


@dataclass(frozen=True, slots=True)
class Statements:
    """The SQL of every table; a backend overrides what its dialect words otherwise."""

    exists: str = "SELECT 1 FROM workflows WHERE id = ?"
    exists_locked: str = "SELECT 1 FROM workflows WHERE id = ?"
    """Also locks the row until the transaction ends, where the database needs that."""
    insert_workflow: str = (
        "INSERT INTO workflows (id, version, status, phase, machine_state, current_step, "
        "waiting_gate, updated_at, snapshot, history_n, answers_n, decisions_n, created_at, "
        "config, ledger_seq) VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0) "
        "ON CONFLICT (id) DO NOTHING"
    )
    select_head: str = (
        "SELECT version, config, snapshot, history_n, answers_n, decisions_n "
        "FROM workflows WHERE id = ?"
    )
    select_records: str = (
        "SELECT r.list_name, r.idx, CASE WHEN r.seq IS NULL THEN r.payload ELSE l.payload END, "
        "r.seq FROM records r LEFT JOIN ledger l ON l.workflow_id = r.workflow_id "
        "AND l.seq = r.seq WHERE r.workflow_id = ? ORDER BY r.list_name, r.idx"
    )
    """A record's text: its own payload, or the ledger entry's it points to (schema 4)."""
    stored_version: str = "SELECT version FROM workflows WHERE id = ?"
    commit: str = (
        "UPDATE workflows SET version = version + 1, status = ?, phase = ?, "
        "machine_state = ?, current_step = ?, waiting_gate = ?, updated_at = ?, snapshot = ?, "
        "history_n = ?, answers_n = ?, decisions_n = ?, ledger_seq = ledger_seq + ? "
        "WHERE id = ? AND version = ? RETURNING ledger_seq"
    )
    """The commit's one UPDATE: the version check in its WHERE clause."""
    commit_leased: str = (
        "UPDATE workflows SET version = version + 1, status = ?, phase = ?, "
        "machine_state = ?, current_step = ?, waiting_gate = ?, updated_at = ?, snapshot = ?, "
        "history_n = ?, answers_n = ?, decisions_n = ?, ledger_seq = ledger_seq + ? "
        "WHERE id = ? AND version = ? AND EXISTS (SELECT 1 FROM leases WHERE "
        "leases.workflow_id = ? AND owner = ? AND expires_at > ?) RETURNING ledger_seq"
    )
    """The same under a lease: the lease check folded into the WHERE clause too."""
    insert_entry: str = (
        "INSERT INTO ledger (workflow_id, seq, kind, recorded_at, payload) VALUES (?, ?, ?, ?, ?)"
    )
    put_record: str = (
        "INSERT INTO records (workflow_id, list_name, idx, seq, payload) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (workflow_id, list_name, idx) DO UPDATE SET seq = excluded.seq, "
        "payload = excluded.payload"
    )
    """A record row holds its text, or (seq, NULL): the seq of a ledger entry with that text."""
    cut_records: str = "DELETE FROM records WHERE workflow_id = ? AND list_name = ? AND idx >= ?"
    clear_records: str = "DELETE FROM records WHERE workflow_id = ?"
    select_ledger: str = (
        "SELECT seq, kind, recorded_at, payload FROM ledger WHERE workflow_id = ? AND seq > ?"
    )
    scan_ledger: str = (
        "SELECT workflow_id, seq, kind, recorded_at, payload FROM ledger WHERE (workflow_id, seq) "
        "> (?, ?)"
    )
    """One batch of ``scan_ledger``: the entries after a (workflow, seq), on the key's index."""
    select_summaries: str = (
        "SELECT id, status, phase, machine_state, current_step, waiting_gate, version, "
        "created_at, updated_at FROM workflows"
    )
    summaries_order: str = " ORDER BY updated_at DESC, id"
    among_ids: str = "id IN (SELECT value FROM json_each(?))"
    """A listing's filter on ids, given as one JSON array: one statement for any number."""
    select_versions: str = "SELECT id, version FROM workflows"
    read_lease: str = (
        "SELECT owner, host, pid, expires_at, activity, activity_at FROM leases "
        "WHERE workflow_id = ?"
    )
    put_lease: str = (
        "INSERT INTO leases (workflow_id, owner, host, pid, expires_at) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (workflow_id) DO UPDATE SET owner = excluded.owner, host = excluded.host, "
        "pid = excluded.pid, expires_at = excluded.expires_at, "
        # The holder's note stays with a renewal; a new holder starts without one.
        "activity = CASE WHEN leases.owner = excluded.owner THEN leases.activity END, "
        "activity_at = CASE WHEN leases.owner = excluded.owner THEN leases.activity_at END"
    )
    read_leases: str = (
        "SELECT workflow_id, owner, host, pid, expires_at, activity, activity_at FROM leases"
    )
    note_activity: str = (
        "UPDATE leases SET activity = ?, activity_at = ? WHERE workflow_id = ? AND owner = ?"
    )
    delete_lease: str = "DELETE FROM leases WHERE workflow_id = ? AND owner = ?"
    put_artifact: str = (
        "INSERT INTO artifacts (workflow_id, kind, path, recorded_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (workflow_id, kind, path) DO UPDATE SET recorded_at = excluded.recorded_at"
    )
    read_artifacts: str = (
        "SELECT kind, path, recorded_at FROM artifacts WHERE workflow_id = ? ORDER BY rowid"
    )


@dataclass(slots=True)
class _Rows:
    """Ledger entries, records and artifacts gathered from commits, one batch each to write."""

    entries: list[tuple[object, ...]] = dataclasses.field(default_factory=list)
    records: list[tuple[object, ...]] = dataclasses.field(default_factory=list)
    artifacts: list[tuple[object, ...]] = dataclasses.field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PreparedCommit:
    """One commit, encoded and ready to write: what ``SqlStore._write_commit_in`` takes."""

    workflow_id: str
    expected_version: int
    owner: str | None
    head: tuple[object, ...]
    """The workflow row's new values, in the order of the commit's ``UPDATE``."""
    payloads: list[tuple[str, str]]
    """(kind, payload) of each ledger entry."""
    at: str
    delta: SnapshotDelta
    now: datetime
    wake: bool
    artifacts: tuple[tuple[str, str], ...] = ()
    """(kind, path) of each artifact it records, without repeats."""


def noting_damage(
    method: Callable[Concatenate[S, P], R],
) -> Callable[Concatenate[S, P], R]:
    """Turn ``Damaged`` into ``StoreCorruptError`` and remember it, refusing later writes."""

    @functools.wraps(method)
    def guarded(self: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except Damaged as exc:
            error = exc.to_error(self.damage_where())
            self._damage = self._damage or str(error)
            raise error from exc
        except StoreCorruptError as exc:
            self._damage = self._damage or str(exc)
            raise

    return guarded


class SqlStore(ClosesOnExit):
    """The ``Store`` over ``Tx`` transactions; a backend supplies connections and wording.

    A handle that met damaged data (a row that fails validation, a page the database
    reports as corrupt) writes nothing more: every later write raises ``StoreCorruptError``
    naming the first damage, while reads go on, so a user can still list, inspect and export.

    Subclasses set ``host``, ``_place`` (the database in messages: a path, "the PostgreSQL
    database ..."), ``_clock``, ``_encoder`` and ``_damage`` (to None), and implement
    ``_transaction``, ``damage_where`` and ``_unknown``; they mix in ``SqlQueue`` too,
    whose ``_enqueue_in`` a commit with ``wake`` calls inside its transaction.
    """

    blocking: bool = True
    """Calls wait on a disk, a network or another writer's lock: async callers offload them."""

    sql: Statements = Statements()
    host: str
    _place: str
    _clock: Clock
    _encoder: SnapshotEncoder
    _damage: str | None

    if TYPE_CHECKING:  # from the work queue every SQL backend mixes in (state.sql_queue)

        def _enqueue_in(self, tx: Tx, workflow_id: str, at: str) -> None: ...

        def _woke(self) -> None: ...

    # -- what a backend supplies -----------------------------------------------------------

    @abstractmethod
    def _transaction(
        self,
        doing: str,
        workflow_id: str | None = None,
        *,
        write: bool = True,
        consistent: bool = False,
        single: bool = False,
    ) -> AbstractContextManager[Tx]:
        """One transaction, committed when the block ends and rolled back when it raises.

        Args:
            doing: what the call does, for error messages ("commit").
            workflow_id: the workflow it is about, for error messages.
            write: it writes (refused once damage was found, or on a read-only store).
            consistent: its reads must all see the same committed state.
            single: the block runs one statement, a transaction by itself (no BEGIN and
                COMMIT needed).

        Raises:
            StoreError: the database failed, translated into our words.
        """

    @abstractmethod
    def damage_where(self) -> str:
        """The store's name in a damage message, e.g. "The database /x/orchestrator.db"."""

    @abstractmethod
    def _unknown(self, workflow_id: str) -> UnknownWorkflowError:
        """The error for an id this store does not hold, saying how to list the others."""

    # -- plumbing --------------------------------------------------------------------------

    def _now(self) -> datetime:
        return aware(self._clock.now())

    def _refuse_writes(self, doing: str, workflow_id: str | None) -> None:
        if self._damage is not None:
            subject = f"workflow {workflow_id}: " if workflow_id else ""
            raise StoreCorruptError(
                f"{subject}will not {doing}: this store was found damaged ({self._damage}), "
                "so nothing more is written to it. Reading still works (list, status, "
                "inspect, export); restore the database from a backup to write again"
            )

    def _require(self, tx: Tx, workflow_id: str, *, lock: bool = False) -> None:
        if tx.one(self.sql.exists_locked if lock else self.sql.exists, (workflow_id,)) is None:
            raise self._unknown(workflow_id)

    def _read_lease(self, tx: Tx, workflow_id: str) -> Lease | None:
        row = tx.one(self.sql.read_lease, (workflow_id,))
        return None if row is None else self._lease_of(workflow_id, row)

    @staticmethod
    def _lease_of(workflow_id: str, row: Sequence[Any]) -> Lease:
        owner, host, pid, expires, activity, activity_at = row
        if not isinstance(pid, int):
            raise Damaged(workflow_id, "its lease", f"pid {pid!r} is not an integer")
        return Lease(
            workflow_id,
            str(owner),
            str(host),
            pid,
            parse_time(workflow_id, "its lease", expires),
            None if activity is None else str(activity),
            None if activity_at is None else parse_time(workflow_id, "its lease", activity_at),
        )

    def _put_records(self, tx: Tx, delta: SnapshotDelta) -> None:
        """Write a new workflow's records (``create``: there are none to delete)."""
        if delta.rows:
            wid = delta.workflow_id
            tx.many(self.sql.put_record, [(wid, *row) for row in record_rows(delta, {})])

    def _cut_records(self, tx: Tx, delta: SnapshotDelta) -> None:
        """Delete the stored records ``delta`` drops: all of them when it rewrites them."""
        wid = delta.workflow_id
        if delta.rewrite:
            tx.run(self.sql.clear_records, (wid,))
        for name, start in delta.cuts:
            tx.run(self.sql.cut_records, (wid, name, start))

    # -- workflows -------------------------------------------------------------------------

    @noting_damage
    def create(self, state: WorkflowState, config: WorkflowConfig, *, wake: bool = False) -> int:
        """Store a new workflow and return its first version (1) (see ``Store``)."""
        wid = state.workflow_id
        now = self._now()
        delta = self._encoder.delta(state, None)
        row = (
            wid,
            *summary_values(state, now),
            delta.head,
            *delta.counts,
            ts(state.created_at or now),
            config.model_dump_json(),
        )
        single = not (delta.rows or wake)
        with self._transaction("create the workflow", wid, single=single) as tx:
            if not tx.run(self.sql.insert_workflow, row):
                raise StoreError(
                    f"workflow {wid} already exists in {self._place}; choose another id, or "
                    "resume it"
                )
            self._put_records(tx, delta)
            if wake:
                self._enqueue_in(tx, wid, ts(now))
        self._encoder.wrote(delta, 1)
        if wake:
            self._woke()
        return 1

    @noting_damage
    def load(self, workflow_id: str) -> StoredWorkflow:
        """The latest snapshot, configuration and version of a workflow (see ``Store``)."""
        with self._transaction(
            "load the workflow", workflow_id, write=False, consistent=True
        ) as tx:
            head = tx.one(self.sql.select_head, (workflow_id,))
            records = tx.all(self.sql.select_records, (workflow_id,)) if head else []
        if head is None:
            raise self._unknown(workflow_id)
        version, config_text, snapshot, *counts = head
        state, texts = decode_records(
            workflow_id, decode_state(workflow_id, snapshot), counts, records
        )
        stored = StoredWorkflow(state, decode_config(workflow_id, config_text), int(version))
        self._encoder.loaded(state, texts, stored.version)
        return stored

    @noting_damage
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
        """Replace the snapshot and append ledger entries in one transaction (see ``Store``)."""
        p = self._prepare(
            Commit(workflow_id, state, expected_version, entries, owner, wake, artifacts)
        )
        try:
            self._write_commit(p)
        except BaseException:
            self._encoder.forget(workflow_id)
            raise
        self._encoder.wrote(p.delta, expected_version + 1)
        if wake:
            self._woke()
        return expected_version + 1

    def commit_many(self, commits: Sequence[Commit]) -> list[CommitOutcome]:
        """Several commits, each all or nothing, in one transaction (see ``Store``).

        A refused commit (its version moved on, its lease is gone, no such workflow) is
        refused before it writes anything, so the others go on in the same transaction. If
        the transaction fails before its end (a database error, damage found), it is rolled
        back and the commits run one by one, each in its own transaction, so each gets its
        own outcome; if it fails at its end, none was written and each gets that error.
        """
        outcomes: list[CommitOutcome] = []
        for run in distinct_runs(commits):
            outcomes.extend(self._commit_together(run) if len(run) > 1 else commit_each(self, run))
        return outcomes

    def _commit_together(self, commits: Sequence[Commit]) -> list[CommitOutcome]:
        outcomes: list[CommitOutcome | PreparedCommit] = []
        for c in commits:
            try:
                outcomes.append(self._prepare(c))
            except Exception as exc:  # e.g. a state that belongs to another workflow
                outcomes.append(exc)
        prepared = [p for p in outcomes if isinstance(p, PreparedCommit)]
        ending = False
        try:
            with self._transaction(f"commit {len(prepared)} workflows together") as tx:
                refusals = self._write_commits_in(tx, prepared)
                at = [i for i, o in enumerate(outcomes) if isinstance(o, PreparedCommit)]
                for i, refusal in zip(at, refusals, strict=True):
                    if refusal is not None:
                        outcomes[i] = refusal  # refused before it wrote anything
                ending = True  # the block's end commits the transaction
        except Exception as exc:
            for p in prepared:
                self._encoder.forget(p.workflow_id)
            if not ending:
                return commit_each(self, commits)
            return [o if isinstance(o, Exception) else exc for o in outcomes]
        done: list[CommitOutcome] = []
        for c, o in zip(commits, outcomes, strict=True):
            if isinstance(o, PreparedCommit):
                self._encoder.wrote(o.delta, o.expected_version + 1)
                done.append(o.expected_version + 1)
            else:
                self._encoder.forget(c.workflow_id)  # as a failed ``commit`` does
                done.append(o)
        if any(c.wake and isinstance(o, int) for c, o in zip(commits, done, strict=True)):
            self._woke()
        return done

    def _prepare(self, c: Commit) -> PreparedCommit:
        """What a commit writes, encoded: the head row's values, the entries, the delta."""
        wid = c.workflow_id
        check_commit_target(wid, c.state)
        delta = self._encoder.delta(c.state, c.expected_version)
        payloads = [encode_entry(delta.text_of, wid, entry) for entry in c.entries]
        now = self._now()
        head = (*summary_values(c.state, now), delta.head, *delta.counts, len(payloads))
        return PreparedCommit(
            wid,
            c.expected_version,
            c.owner,
            head,
            payloads,
            ts(now),
            delta,
            now,
            c.wake,
            tuple((a.kind, a.path) for a in distinct_artifacts(c.artifacts)),
        )

    def _write_commits_in(
        self, tx: Tx, prepared: Sequence[PreparedCommit]
    ) -> list[ConcurrencyError | UnknownWorkflowError | None]:
        """Several workflows' commits in ``tx``; for each, the refusal it met, or None.

        A refused commit wrote nothing; any other error ends the whole transaction. Each
        commit's row is updated in turn, then the ledger entries, records and artifacts of
        them all go in one batch each (one call into the driver each, not several per
        commit). A backend may send them all at once (PostgreSQL: one pipeline).
        """
        refusals: list[ConcurrencyError | UnknownWorkflowError | None] = []
        rows = _Rows()
        for p in prepared:
            try:
                self._update_head_in(tx, p, rows)
            except (ConcurrencyError, UnknownWorkflowError) as exc:
                refusals.append(exc)
            else:
                refusals.append(None)
        self._append_rows_in(tx, rows)
        return refusals

    def _write_commit(self, p: PreparedCommit) -> None:
        """A commit in a transaction of its own (see ``_write_commit_in``).

        A backend may do the same in fewer round trips (PostgreSQL: one statement).
        """
        with self._transaction("commit", p.workflow_id) as tx:
            self._write_commit_in(tx, p)

    def _write_commit_in(self, tx: Tx, p: PreparedCommit) -> None:
        """The commit's statements: the row's UPDATE, the entries, the records, the wake.

        With ``wake`` the workflow's queue entry is made ready in the same transaction.

        Raises:
            UnknownWorkflowError: there is no such workflow; nothing was written.
            ConcurrencyError: the version moved on, or ``owner`` holds no live lease;
                nothing was written.
        """
        rows = _Rows()
        self._update_head_in(tx, p, rows)
        self._append_rows_in(tx, rows)

    def _update_head_in(self, tx: Tx, p: PreparedCommit, rows: _Rows) -> None:
        """The commit's checked UPDATE, its records' deletions and its wake, in ``tx``.

        Its ledger entries, records and artifacts go into ``rows``, for ``_append_rows_in``
        to write: only once the UPDATE matched, so a refused commit adds nothing.

        Raises:
            UnknownWorkflowError: there is no such workflow; nothing was written.
            ConcurrencyError: the version moved on, or ``owner`` holds no live lease;
                nothing was written.
        """
        wid = p.workflow_id
        if p.owner is None:
            row = tx.one(self.sql.commit, (*p.head, wid, p.expected_version))
        else:
            row = tx.one(
                self.sql.commit_leased,
                (*p.head, wid, p.expected_version, wid, p.owner, p.at),
            )
        if row is None:
            self._refuse_commit(tx, wid, p.expected_version, p.owner, p.now)
        seqs: dict[str, int] = {}
        if p.payloads:
            first = int(row[0]) - len(p.payloads) + 1
            for seq, (kind, payload) in enumerate(p.payloads, start=first):
                rows.entries.append((wid, seq, kind, p.at, payload))
                seqs[payload] = seq
        self._cut_records(tx, p.delta)
        if p.delta.rows:
            rows.records += [(wid, *r) for r in record_rows(p.delta, seqs)]
        rows.artifacts += [(wid, kind, path, p.at) for kind, path in p.artifacts]
        if p.wake:
            self._enqueue_in(tx, wid, p.at)

    def _append_rows_in(self, tx: Tx, rows: _Rows) -> None:
        """Write the ledger entries, records and artifacts gathered by ``_update_head_in``."""
        if rows.entries:
            tx.many(self.sql.insert_entry, rows.entries)
        if rows.records:
            tx.many(self.sql.put_record, rows.records)
        if rows.artifacts:
            tx.many(self.sql.put_artifact, rows.artifacts)

    def _refuse_commit(
        self, tx: Tx, workflow_id: str, expected_version: int, owner: str | None, now: datetime
    ) -> NoReturn:
        """Say why the commit's ``UPDATE`` matched no row.

        Raises:
            UnknownWorkflowError: there is no such workflow.
            ConcurrencyError: the version moved on, or ``owner`` holds no live lease.
        """
        stored = tx.one(self.sql.stored_version, (workflow_id,))
        if stored is None:
            raise self._unknown(workflow_id)
        if int(stored[0]) != expected_version:
            raise ConcurrencyError(
                f"workflow {workflow_id} changed since it was loaded (version "
                f"{expected_version} expected, {stored[0]} stored): another process "
                "committed to it; nothing was written. Load it again and redo the step"
            )
        if owner is not None:
            leasing.check_holder(self._read_lease(tx, workflow_id), workflow_id, owner, now)
        raise ConcurrencyError(  # it changed between the UPDATE and these reads
            f"workflow {workflow_id}: it or its lease changed while committing; nothing was "
            "written. Load it again and redo the step"
        )

    @noting_damage
    def list_workflows(
        self, status: WorkflowStatus | None = None, *, ids: Collection[str] | None = None
    ) -> list[WorkflowSummary]:
        """Every workflow (or those with ``status``, or among ``ids``), newest first."""
        where: list[str] = []
        params: list[str] = []
        if status is not None:
            where.append("status = ?")
            params.append(WorkflowStatus(status).value)
        if ids is not None:
            if not ids:
                return []
            where.append(self.sql.among_ids)
            params.append(json.dumps(sorted(ids)))
        sql = self.sql.select_summaries
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._transaction("list the workflows", write=False) as tx:
            rows = tx.all(sql + self.sql.summaries_order, params)
        return [summary_of(row) for row in rows]

    @noting_damage
    def versions(self) -> dict[str, int]:
        """Each workflow's current version, by id (see ``Store``)."""
        with self._transaction("list the workflows' versions", write=False) as tx:
            rows = tx.all(self.sql.select_versions)
        found: dict[str, int] = {}
        for wid, version in rows:
            if not isinstance(version, int):
                raise Damaged(str(wid), "its version column", f"{version!r} is not an integer")
            found[str(wid)] = version
        return found

    # -- ledger ----------------------------------------------------------------------------

    @noting_damage
    def ledger(
        self,
        workflow_id: str,
        *,
        after_seq: int = 0,
        kinds: Collection[LedgerKind] | None = None,
    ) -> list[LedgerEntry]:
        """The workflow's ledger entries with ``seq > after_seq``, in order (see ``Store``)."""
        sql = self.sql.select_ledger
        params: list[object] = [workflow_id, after_seq]
        if kinds is not None:
            wanted = sorted({LedgerKind(k).value for k in kinds})
            sql += f" AND kind IN ({', '.join('?' * len(wanted))})" if wanted else " AND 0 = 1"
            params += wanted
        with self._transaction("read the ledger", workflow_id, write=False) as tx:
            rows = tx.all(sql + " ORDER BY seq", params)
            if not rows:
                self._require(tx, workflow_id)
        return [decode_entry(workflow_id, int(seq), *rest) for seq, *rest in rows]

    scan_batch: int = 5000
    """How many entries one query of ``scan_ledger`` fetches."""

    def scan_ledger(
        self, kinds: Collection[LedgerKind] | None = None, *, since: datetime | None = None
    ) -> Iterator[RawLedgerEntry]:
        """Every workflow's ledger entries of ``kinds``, unvalidated (see ``Store``).

        Keyset pagination over the ledger's primary key: each batch is one short read
        transaction starting after the last (workflow, seq) the previous one returned, so no
        transaction stays open while the caller works through the rows.
        """
        sql = self.sql.scan_ledger
        wanted: list[str] = []
        if kinds is not None:
            wanted = sorted({LedgerKind(k).value for k in kinds})
            if not wanted:
                return
            sql += f" AND kind IN ({', '.join('?' * len(wanted))})"
        cut: list[str] = []
        if since is not None:
            sql += " AND recorded_at >= ?"  # fixed-width UTC text: text order is time order
            cut = [ts(since)]
        sql += " ORDER BY workflow_id, seq LIMIT ?"
        after: tuple[str, int] = ("", 0)
        while True:
            with self._transaction("read the ledgers", write=False) as tx:
                rows = tx.all(sql, [*after, *wanted, *cut, self.scan_batch])
            for row in rows:
                yield RawLedgerEntry(*row)
            if len(rows) < self.scan_batch:
                return
            after = (rows[-1][0], rows[-1][1])

    # -- leases ----------------------------------------------------------------------------

    @noting_damage
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
        with self._transaction("acquire the lease", workflow_id) as tx:
            self._require(tx, workflow_id, lock=True)
            current = self._read_lease(tx, workflow_id)
            leasing.refuse_unless_free(current, owner, now=now, host=self.host)
            self._put_lease(tx, lease)
        return lease

    def _put_lease(self, tx: Tx, lease: Lease) -> None:
        tx.run(
            self.sql.put_lease,
            (lease.workflow_id, lease.owner, lease.host, lease.pid, ts(lease.expires_at)),
        )

    @noting_damage
    def renew_lease(self, workflow_id: str, owner: str, ttl_s: float) -> Lease:
        """Extend ``owner``'s lease to ``ttl_s`` seconds from now (see ``Store``)."""
        expires = self._now() + ttl(workflow_id, ttl_s)
        with self._transaction("renew the lease", workflow_id) as tx:
            self._require(tx, workflow_id, lock=True)
            held = leasing.refuse_unless_holder(
                self._read_lease(tx, workflow_id), workflow_id, owner
            )
            renewed = dataclasses.replace(held, expires_at=expires)
            self._put_lease(tx, renewed)
        return renewed

    @noting_damage
    def release_lease(self, workflow_id: str, owner: str) -> bool:
        """Give up ``owner``'s lease; whether there was one to give up."""
        with self._transaction("release the lease", workflow_id, single=True) as tx:
            return tx.run(self.sql.delete_lease, (workflow_id, owner)) > 0

    @noting_damage
    def leases(self) -> list[Lease]:
        """Every workflow's lease, live or expired (see ``Store``)."""
        with self._transaction("read the leases", write=False) as tx:
            rows = tx.all(self.sql.read_leases)
        return [self._lease_of(str(row[0]), row[1:]) for row in rows]

    @noting_damage
    def note_activity(self, workflow_id: str, owner: str, activity: str | None) -> bool:
        """Say on ``owner``'s lease what it is doing now (see ``Store``)."""
        at = None if activity is None else ts(self._now())
        with self._transaction("note the lease's activity", workflow_id, single=True) as tx:
            return (
                tx.run(self.sql.note_activity, (clip_activity(activity), at, workflow_id, owner))
                > 0
            )

    @noting_damage
    def lease(self, workflow_id: str) -> Lease | None:
        """The workflow's lease, live or expired, or None (see ``Store``)."""
        with self._transaction("read the lease", workflow_id, write=False) as tx:
            current = self._read_lease(tx, workflow_id)
            if current is None:
                self._require(tx, workflow_id)
            return current

    # -- artifacts -------------------------------------------------------------------------

    @noting_damage
    def add_artifact(self, workflow_id: str, kind: str, path: str) -> Artifact:
        """Record a file the workflow produced (see ``Store``)."""
        now = self._now()
        with self._transaction("record the artifact", workflow_id) as tx:
            self._require(tx, workflow_id)
            tx.run(self.sql.put_artifact, (workflow_id, kind, path, ts(now)))
        return Artifact(workflow_id, kind, path, now)

    @noting_damage
    def artifacts(self, workflow_id: str) -> list[Artifact]:
        """The workflow's artifacts, in the order they were first recorded (see ``Store``)."""
        with self._transaction("list the artifacts", workflow_id, write=False) as tx:
            rows = tx.all(self.sql.read_artifacts, (workflow_id,))
            if not rows:
                self._require(tx, workflow_id)
        return [
            Artifact(workflow_id, kind, path, parse_time(workflow_id, f"artifact {path}", at))
            for kind, path, at in rows
        ]


# -- migrations ----------------------------------------------------------------------------

M = TypeVar("M")


def apply_migrations(
    tx: Tx,
    raw: M,
    version: int,
    migrations: Sequence[Callable[[M], None]],
    *,
    where: str,
    passthrough: type[Exception],
) -> None:
    """Run ``migrations[version:]`` on ``raw`` inside the caller's transaction, then note it.

    Args:
        tx: the transaction, for recording the new version in ``schema_meta``.
        raw: what the migrations take (a connection or a cursor).
        version: the schema version the database has.
        migrations: every migration of the backend.
        where: the database, for the message ("/x/orchestrator.db", "the PostgreSQL ...").
        passthrough: the driver's error, left for the caller to translate.

    Raises:
        StoreError: a migration failed (the caller rolls back: nothing was changed).
    """
    target = len(migrations)
    for number in range(version, target):
        try:
            migrations[number](raw)
        except passthrough:
            raise
        except Exception as exc:
            raise StoreError(
                f"{where}: migration {number + 1} of the store schema failed ({exc}); "
                "nothing was changed. Report this as a bug"
            ) from exc
    tx.run(
        "INSERT INTO schema_meta (key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(target),),
    )


# The lists as schema 1 kept them inside the snapshot; fixed here, as a migration must be.
_V1_LISTS = ("history", "human_answers", "decisions")


def schema_2(tx: Tx, *, big_integer: str) -> None:
    """Schema 1 to 2, both backends: the head columns, ``records``, and the data moved.

    Args:
        tx: the migration's transaction.
        big_integer: the dialect's 64-bit integer type, for ``ledger_seq``.
    """
    for column in ("history_n", "answers_n", "decisions_n"):
        tx.run(f"ALTER TABLE workflows ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0")
    tx.run(f"ALTER TABLE workflows ADD COLUMN ledger_seq {big_integer} NOT NULL DEFAULT 0")
    tx.run(
        """CREATE TABLE records (
            workflow_id TEXT NOT NULL REFERENCES workflows (id),
            list_name TEXT NOT NULL,
            idx INTEGER NOT NULL,
            payload TEXT NOT NULL,
            PRIMARY KEY (workflow_id, list_name, idx)
        )"""
    )
    # Every commit changes updated_at, so this index cost a page write per commit; a
    # listing by status scans the workflows instead.
    tx.run("DROP INDEX workflows_by_status")
    split_v1_snapshots(tx)


def schema_3(tx: Tx, *, big_integer: str, real: str) -> None:
    """Schema 2 to 3, both backends: the work queue and the workers' heartbeats (``state.queue``).

    Args:
        tx: the migration's transaction.
        big_integer: the dialect's 64-bit integer type, for the wake-up count.
        real: the dialect's floating-point type, for the heartbeat period.
    """
    tx.run(
        f"""CREATE TABLE work_queue (
            workflow_id TEXT PRIMARY KEY REFERENCES workflows (id),
            status TEXT NOT NULL,
            wakeups {big_integer} NOT NULL,
            queued_at TEXT NOT NULL,
            note TEXT
        )"""
    )
    tx.run("CREATE INDEX work_queue_ready ON work_queue (status, queued_at)")
    tx.run(
        f"""CREATE TABLE workers (
            worker_id TEXT PRIMARY KEY,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            started_at TEXT NOT NULL,
            concurrency INTEGER NOT NULL,
            heartbeat_s {real} NOT NULL,
            heartbeat_at TEXT NOT NULL
        )"""
    )
    tx.run("CREATE INDEX leases_by_owner ON leases (owner)")


def schema_4(tx: Tx, *, rebuild: bool) -> None:
    """Schema 3 to 4, both backends: a record row may point at the ledger entry holding its text.

    A commit's ledger entries mirror the records it adds (a decision, a finished step, an
    answer); the row then keeps that entry's ``seq`` and no text, so the text is written
    once. Rows written before keep their text (``seq`` NULL).

    Args:
        tx: the migration's transaction.
        rebuild: make the table anew (SQLite: ``WITHOUT ROWID``, so that a row is one
            b-tree entry instead of a table row plus an index entry, and ``payload``
            nullable); otherwise alter it in place (PostgreSQL).
    """
    if not rebuild:
        tx.run("ALTER TABLE records ADD COLUMN seq BIGINT")
        tx.run("ALTER TABLE records ALTER COLUMN payload DROP NOT NULL")
        return
    tx.run(
        """CREATE TABLE records_v4 (
            workflow_id TEXT NOT NULL REFERENCES workflows (id),
            list_name TEXT NOT NULL,
            idx INTEGER NOT NULL,
            seq INTEGER,
            payload TEXT,
            PRIMARY KEY (workflow_id, list_name, idx)
        ) WITHOUT ROWID"""
    )
    tx.run(
        "INSERT INTO records_v4 (workflow_id, list_name, idx, payload) "
        "SELECT workflow_id, list_name, idx, payload FROM records"
    )
    tx.run("DROP TABLE records")
    tx.run("ALTER TABLE records_v4 RENAME TO records")


def schema_5(tx: Tx) -> None:
    """Schema 4 to 5, both backends: a lease says what its holder is doing (``note_activity``)."""
    tx.run("ALTER TABLE leases ADD COLUMN activity TEXT")
    tx.run("ALTER TABLE leases ADD COLUMN activity_at TEXT")


def record_rows(
    delta: SnapshotDelta, seqs: Mapping[str, int]
) -> list[tuple[str, int, int | None, str | None]]:
    """The delta's record rows as stored: (list name, index, seq, text).

    A record whose text is the payload of one of the commit's ledger entries (``seqs``:
    payload to seq) points at that entry instead of holding the text again.
    """
    rows: list[tuple[str, int, int | None, str | None]] = []
    for name, idx, text in delta.rows:
        seq = seqs.get(text)
        rows.append((name, idx, None, text) if seq is None else (name, idx, seq, None))
    return rows


def split_v1_snapshots(tx: Tx) -> None:
    """Schema 1 to 2: move each snapshot's lists into ``records``, count them, number the ledger.

    A snapshot that is not a JSON object with lists where the lists go is left as it is, so
    that loading it names the damage instead of the migration failing the whole store.
    """
    tx.run(
        "UPDATE workflows SET ledger_seq = (SELECT COALESCE(MAX(seq), 0) FROM ledger "
        "WHERE ledger.workflow_id = workflows.id)"
    )
    for wid, text in tx.all("SELECT id, snapshot FROM workflows"):
        try:
            data = json.loads(text)
        except (TypeError, ValueError):
            continue
        if not isinstance(data, dict) or not all(
            isinstance(data.get(name, []), list) for name in _V1_LISTS
        ):
            continue
        rows: list[tuple[object, ...]] = []
        counts: list[int] = []
        for name in _V1_LISTS:
            items = data.pop(name, [])
            counts.append(len(items))
            rows += [(wid, name, i, _json(item)) for i, item in enumerate(items)]
        if rows:
            tx.many(
                "INSERT INTO records (workflow_id, list_name, idx, payload) VALUES (?, ?, ?, ?)",
                rows,
            )
        tx.run(
            "UPDATE workflows SET snapshot = ?, history_n = ?, answers_n = ?, decisions_n = ? "
            "WHERE id = ?",
            (_json(data), *counts, wid),
        )


def _json(value: object) -> str:
    # NaN scores stay the NaN constant, as the models write them.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
