"""``PostgresStore``: the ``Store`` on a pool of PostgreSQL connections, safe between threads."""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

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
    summary_of,
    summary_values,
    ts,
    ttl,
)
from state.config import WorkflowConfig
from state.errors import ConcurrencyError, StoreCorruptError, StoreError, UnknownWorkflowError
from state.postgres_store import rows
from state.postgres_store.connection import check_url, describe, open_pool, translate
from state.postgres_store.queue import PostgresQueue
from state.postgres_store.schema import MIGRATIONS, Migration, migrate
from state.steps import WorkflowStatus
from state.store import (
    Artifact,
    ClosesOnExit,
    Lease,
    LedgerEntry,
    LedgerEntryIn,
    LedgerKind,
    SnapshotEncoder,
    StoredWorkflow,
    WorkflowSummary,
)
from state.workflow import WorkflowState

if TYPE_CHECKING:
    from state.store import Store

P = ParamSpec("P")
R = TypeVar("R")


def _noting_damage(
    method: Callable[Concatenate[PostgresStore, P], R],
) -> Callable[Concatenate[PostgresStore, P], R]:
    """Turn ``Damaged`` into ``StoreCorruptError`` and remember it, refusing later writes."""

    @functools.wraps(method)
    def guarded(self: PostgresStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except Damaged as exc:
            error = exc.to_error(f"The {self.where}")
            self._damage = self._damage or str(error)
            raise error from exc
        except StoreCorruptError as exc:
            self._damage = self._damage or str(exc)
            raise

    return guarded


class PostgresStore(ClosesOnExit, PostgresQueue):
    """The ``Store`` in a PostgreSQL database, shared by processes on any number of hosts.

    Each call is one transaction on a pooled connection (READ COMMITTED). A handle that met
    damaged data writes nothing more, as the SQLite store does; reads go on.

    Args:
        url: a libpq URL, ``postgresql://USER:PASSWORD@HOST:PORT/DATABASE`` (``postgres://``
            too; ``?host=/run/dir`` for a Unix socket).
        clock: the time of ledger entries and lease expiry (default: the system clock).
        pool_size: at most this many connections, for threads calling at once.
        connect_timeout_s: how long opening waits for a first connection.
        migrations: the schema's migrations; tests pass their own.

    Raises:
        StoreError: the URL is malformed, or no connection can be made.
        StoreVersionError: the database was written by a newer schema.
        StoreCorruptError: the database holds tables like ours but no store schema.
    """

    blocking: bool = True
    """Calls wait on the network and on other sessions' row locks: async callers offload them."""

    def __init__(
        self,
        url: str,
        *,
        clock: Clock | None = None,
        pool_size: int = 4,
        connect_timeout_s: float = 10.0,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        check_url(url)
        self.where = describe(url)
        self.host = socket.gethostname()
        self._clock = clock or SystemClock()
        self._encoder = SnapshotEncoder()
        self._damage: str | None = None
        self._lock = threading.Lock()
        pool = open_pool(url, max_size=pool_size, connect_timeout_s=connect_timeout_s)
        try:
            with pool.connection() as conn:
                migrate(conn, self.where, migrations)
        except psycopg.Error as exc:
            pool.close()
            raise translate(exc, "open the store", self.where) from exc
        except BaseException:
            pool.close()
            raise
        self._pool: ConnectionPool | None = pool

    def __repr__(self) -> str:
        return f"PostgresStore({self.where!r})"

    # -- plumbing --------------------------------------------------------------------------

    def _now(self) -> datetime:
        return aware(self._clock.now())

    def _current_pool(self) -> ConnectionPool:
        pool = self._pool
        if pool is None:
            raise StoreError(f"the store on the {self.where} is closed; open a new one")
        return pool

    @contextmanager
    def _transaction(
        self, doing: str, workflow_id: str | None = None, *, write: bool = True
    ) -> Iterator[rows.Cursor]:
        """One transaction: committed when the block ends, rolled back when it raises."""
        if write:
            self._refuse_writes(doing, workflow_id)
        pool = self._current_pool()
        try:
            with pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except psycopg.Error as exc:
            raise translate(exc, doing, self.where, workflow_id) from exc

    def _refuse_writes(self, doing: str, workflow_id: str | None) -> None:
        if self._damage is not None:
            subject = f"workflow {workflow_id}: " if workflow_id else ""
            raise StoreCorruptError(
                f"{subject}will not {doing}: this store was found damaged ({self._damage}), "
                "so nothing more is written to it. Reading still works (list, status, "
                "inspect, export); restore the database from a backup to write again"
            )

    def _unknown(self, workflow_id: str) -> UnknownWorkflowError:
        return UnknownWorkflowError(
            f"no workflow with id '{workflow_id}' in the {self.where}; run `orchestrator "
            "list` to see the workflows this store holds (--store selects another store)"
        )

    def _require(self, cur: rows.Cursor, workflow_id: str, *, lock: bool = False) -> None:
        if not rows.exists(cur, workflow_id, lock=lock):
            raise self._unknown(workflow_id)

    # -- workflows -------------------------------------------------------------------------

    @_noting_damage
    def create(self, state: WorkflowState, config: WorkflowConfig) -> int:
        """Store a new workflow and return its first version (1) (see ``Store``)."""
        wid = state.workflow_id
        now = self._now()
        row = (
            wid,
            1,
            *summary_values(state, now),
            ts(state.created_at or now),
            config.model_dump_json(),
            self._encoder.encode(state),
        )
        with self._transaction("create the workflow", wid) as cur:
            if not rows.insert(cur, row):
                raise StoreError(
                    f"workflow {wid} already exists in the {self.where}; choose another id, "
                    "or resume it"
                )
        return 1

    @_noting_damage
    def load(self, workflow_id: str) -> StoredWorkflow:
        """The latest snapshot, configuration and version of a workflow (see ``Store``)."""
        with self._transaction("load the workflow", workflow_id, write=False) as cur:
            row = rows.select_stored(cur, workflow_id)
        if row is None:
            raise self._unknown(workflow_id)
        version, config_text, snapshot = row
        return StoredWorkflow(
            state=decode_state(workflow_id, snapshot),
            config=decode_config(workflow_id, config_text),
            version=int(version),
        )

    @_noting_damage
    def commit(
        self,
        workflow_id: str,
        state: WorkflowState,
        *,
        expected_version: int,
        entries: Sequence[LedgerEntryIn] = (),
        owner: str | None,
    ) -> int:
        """Replace the snapshot and append ledger entries in one transaction (see ``Store``)."""
        check_commit_target(workflow_id, state)
        snapshot = self._encoder.encode(state)
        payloads = [encode_entry(self._encoder, workflow_id, entry) for entry in entries]
        now = self._now()
        with self._transaction("commit", workflow_id) as cur:
            if not rows.replace_snapshot(
                cur, workflow_id, summary_values(state, now), snapshot, expected_version
            ):
                stored = rows.stored_version(cur, workflow_id)
                if stored is None:
                    raise self._unknown(workflow_id)
                raise ConcurrencyError(
                    f"workflow {workflow_id} changed since it was loaded (version "
                    f"{expected_version} expected, {stored} stored): another process "
                    "committed to it; nothing was written. Load it again and redo the step"
                )
            if owner is not None:
                leasing.check_holder(rows.read_lease(cur, workflow_id), workflow_id, owner, now)
            if payloads:
                rows.append(cur, workflow_id, payloads, ts(now))
        return expected_version + 1

    @_noting_damage
    def list_workflows(self, status: WorkflowStatus | None = None) -> list[WorkflowSummary]:
        """Every workflow (or those with ``status``), the most recently updated first."""
        with self._transaction("list the workflows", write=False) as cur:
            found = rows.select_summaries(cur, status)
        return [summary_of(row) for row in found]

    # -- ledger ----------------------------------------------------------------------------

    @_noting_damage
    def ledger(
        self,
        workflow_id: str,
        *,
        after_seq: int = 0,
        kinds: Collection[LedgerKind] | None = None,
    ) -> list[LedgerEntry]:
        """The workflow's ledger entries with ``seq > after_seq``, in order (see ``Store``)."""
        with self._transaction("read the ledger", workflow_id, write=False) as cur:
            found = rows.select_ledger(cur, workflow_id, after_seq, kinds)
            if not found:
                self._require(cur, workflow_id)
        return [decode_entry(workflow_id, *row) for row in found]

    # -- leases ----------------------------------------------------------------------------

    @_noting_damage
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
        lease = Lease(
            workflow_id=workflow_id,
            owner=owner,
            host=host if host is not None else self.host,
            pid=pid if pid is not None else os.getpid(),
            expires_at=now + ttl(workflow_id, ttl_s),
        )
        with self._transaction("acquire the lease", workflow_id) as cur:
            self._require(cur, workflow_id, lock=True)
            current = rows.read_lease(cur, workflow_id)
            leasing.refuse_unless_free(current, owner, now=now, host=self.host)
            rows.put_lease(cur, lease)
        return lease

    @_noting_damage
    def renew_lease(self, workflow_id: str, owner: str, ttl_s: float) -> Lease:
        """Extend ``owner``'s lease to ``ttl_s`` seconds from now (see ``Store``)."""
        expires = self._now() + ttl(workflow_id, ttl_s)
        with self._transaction("renew the lease", workflow_id) as cur:
            self._require(cur, workflow_id, lock=True)
            held = leasing.refuse_unless_holder(
                rows.read_lease(cur, workflow_id), workflow_id, owner
            )
            renewed = Lease(workflow_id, owner, held.host, held.pid, expires)
            rows.put_lease(cur, renewed)
        return renewed

    @_noting_damage
    def release_lease(self, workflow_id: str, owner: str) -> bool:
        """Give up ``owner``'s lease; whether there was one to give up."""
        with self._transaction("release the lease", workflow_id) as cur:
            return rows.delete_lease(cur, workflow_id, owner)

    @_noting_damage
    def lease(self, workflow_id: str) -> Lease | None:
        """The workflow's lease, live or expired, or None (see ``Store``)."""
        with self._transaction("read the lease", workflow_id, write=False) as cur:
            current = rows.read_lease(cur, workflow_id)
            if current is None:
                self._require(cur, workflow_id)
            return current

    # -- artifacts -------------------------------------------------------------------------

    @_noting_damage
    def add_artifact(self, workflow_id: str, kind: str, path: str) -> Artifact:
        """Record a file the workflow produced (see ``Store``)."""
        now = self._now()
        with self._transaction("record the artifact", workflow_id) as cur:
            self._require(cur, workflow_id)
            rows.put_artifact(cur, workflow_id, kind, path, now)
        return Artifact(workflow_id, kind, path, now)

    @_noting_damage
    def artifacts(self, workflow_id: str) -> list[Artifact]:
        """The workflow's artifacts, in the order they were first recorded (see ``Store``)."""
        with self._transaction("list the artifacts", workflow_id, write=False) as cur:
            found = rows.read_artifacts(cur, workflow_id)
            if not found:
                self._require(cur, workflow_id)
        return found

    # -- lifetime --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the pool; later calls raise ``StoreError``. Closing twice is fine."""
        with self._lock:
            pool, self._pool = self._pool, None
        self.close_listener()
        if pool is not None:
            pool.close()


if TYPE_CHECKING:

    def _conforms(store: PostgresStore) -> Store:
        """Mypy checks here that PostgresStore implements the Store protocol."""
        return store
