"""``PostgresStore``: the ``Store`` on a pool of PostgreSQL connections, safe between threads.

What it stores and how a commit runs is ``state.sql_core``'s; this module opens the pool,
runs transactions on pooled connections, and words psycopg's errors.
"""

from __future__ import annotations

import dataclasses
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg_pool import ConnectionPool

from state.clock import Clock, SystemClock
from state.errors import ConcurrencyError, StoreError, UnknownWorkflowError
from state.postgres_store.connection import Tx, check_url, describe, open_pool, translate
from state.postgres_store.queue import PostgresQueue
from state.postgres_store.schema import MIGRATIONS, Migration, migrate
from state.sql_core import PreparedCommit, SqlStore, Statements, record_rows
from state.sql_core import Tx as SqlTx
from state.store import SnapshotEncoder

if TYPE_CHECKING:
    from state.store import Store

POSTGRES_SQL = dataclasses.replace(
    Statements(),
    # Locking the row serializes lease changes with each other and with commits, which
    # update the same row.
    exists_locked="SELECT 1 FROM workflows WHERE id = ? FOR UPDATE",
    # COLLATE "C": byte order, as SQLite sorts ids, whatever the database's locale.
    summaries_order=' ORDER BY updated_at DESC, id COLLATE "C"',
    among_ids="id IN (SELECT jsonb_array_elements_text(?::jsonb))",
    # ord keeps the first-recorded order across updates, as SQLite's rowid does.
    read_artifacts=(
        "SELECT kind, path, recorded_at FROM artifacts WHERE workflow_id = ? ORDER BY ord"
    ),
)
"""The statements as PostgreSQL words them, where it differs from SQLite."""

_COMMIT = """WITH w AS (
    UPDATE workflows SET version = version + 1, status = %s, phase = %s, machine_state = %s,
        current_step = %s, waiting_gate = %s, updated_at = %s, snapshot = %s, history_n = %s,
        answers_n = %s, decisions_n = %s, ledger_seq = ledger_seq + %s
    WHERE id = %s AND version = %s{lease}
    RETURNING ledger_seq
), entries AS (
    INSERT INTO ledger (workflow_id, seq, kind, recorded_at, payload)
    SELECT %s, w.ledger_seq - %s + e.n, e.kind, %s, e.payload
    FROM w, unnest(%b::text[], %b::text[]) WITH ORDINALITY AS e (kind, payload, n)
), recs AS (
    INSERT INTO records (workflow_id, list_name, idx, seq, payload)
    SELECT %s, r.list_name, r.idx, w.ledger_seq - %s + NULLIF(r.n, 0), NULLIF(r.payload, '')
    FROM w, unnest(%b::text[], %b::int[], %b::int[], %b::text[]) AS r (list_name, idx, n, payload)
    ON CONFLICT (workflow_id, list_name, idx) DO UPDATE SET seq = excluded.seq,
        payload = excluded.payload
), arts AS (
    INSERT INTO artifacts (workflow_id, kind, path, recorded_at)
    SELECT %s, a.kind, a.path, %s FROM w, unnest(%b::text[], %b::text[]) AS a (kind, path)
    ON CONFLICT (workflow_id, kind, path) DO UPDATE SET recorded_at = excluded.recorded_at
)
SELECT ledger_seq FROM w"""
COMMIT_SQL = _COMMIT.format(lease="")
"""A commit in one statement: the row's UPDATE, whose result gates the inserts.

A record that mirrors one of the entries carries the entry's ordinal ``n`` and no text
(``''``), and so points at the entry's seq (``sql_core.record_rows``); the others carry
their text and ``n`` 0. (Sentinels rather than NULLs: an array of only NULLs has no type to
send in binary.)

The arrays go in binary (``%b``): in text, every quote of their JSON would be escaped.
"""
COMMIT_LEASED_SQL = _COMMIT.format(
    lease=" AND EXISTS (SELECT 1 FROM leases WHERE leases.workflow_id = %s AND owner = %s "
    "AND expires_at > %s)"
)
"""The same under a lease, the lease check folded into the UPDATE's WHERE clause."""


class PostgresStore(SqlStore, PostgresQueue):
    """The ``Store`` in a PostgreSQL database, shared by processes on any number of hosts.

    Each call is one transaction on a pooled connection (READ COMMITTED; a load's reads
    share one REPEATABLE READ snapshot). A commit's conditional UPDATE of the workflow row
    is what serializes writers of one workflow: a concurrent commit waits for the other
    transaction and then finds the version moved on, so exactly one of them wins. A handle
    that met damaged data writes nothing more, as the SQLite store does; reads go on.

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

    sql = POSTGRES_SQL

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
        self._place = f"the {self.where}"
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

    def _current_pool(self) -> ConnectionPool:
        pool = self._pool
        if pool is None:
            raise StoreError(f"the store on the {self.where} is closed; open a new one")
        return pool

    @contextmanager
    def _connection(self, *, checked: bool) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; ``checked``: one the server has just answered.

        The pool checks connections without a round trip (``check_quietly``), which misses
        a session whose end is still on its way; a read pays the round trip of a full check
        and, on a dead connection, takes another, as a read can always start again.
        """
        pool = self._current_pool()
        for _ in range(3):
            with pool.connection() as conn:
                if checked:
                    try:
                        ConnectionPool.check_connection(conn)
                    except psycopg.Error:
                        continue  # handed back broken: the pool discards it
                yield conn
                return
        raise psycopg.OperationalError("three pooled connections in a row were dead")

    @contextmanager
    def _transaction(
        self,
        doing: str,
        workflow_id: str | None = None,
        *,
        write: bool = True,
        consistent: bool = False,
        single: bool = False,
    ) -> Iterator[Tx]:
        """One transaction on a pooled connection (see ``SqlStore._transaction``)."""
        if write:
            self._refuse_writes(doing, workflow_id)
        try:
            with self._connection(checked=not write) as conn, conn.cursor() as cur:
                if single or not (write or consistent):
                    # The connection autocommits: one statement is its own transaction, and
                    # at READ COMMITTED each statement of a read sees its own snapshot
                    # anyway, so neither needs BEGIN and COMMIT round trips.
                    yield Tx(cur)
                    return
                with conn.transaction():
                    if consistent:
                        cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                    yield Tx(cur)
        except psycopg.Error as exc:
            raise translate(exc, doing, self.where, workflow_id) from exc

    def _write_commit(self, p: PreparedCommit) -> None:
        """The commit as one statement, its own transaction: one round trip to the server.

        A delta that drops records (rare: a state whose lists shrank, or one this handle
        does not know the stored form of) and a commit that wakes its queue entry (an
        answer: rare too) take the core's transaction of several statements.
        """
        statement = self._one_statement(p)
        if statement is None:
            super()._write_commit(p)
            return
        self._refuse_writes("commit", p.workflow_id)
        try:
            with self._connection(checked=False) as conn:
                row = conn.execute(*statement).fetchone()
        except psycopg.Error as exc:
            raise translate(exc, "commit", self.where, p.workflow_id) from exc
        if row is None:
            with self._transaction("commit", p.workflow_id) as tx:
                self._refuse_commit(tx, p.workflow_id, p.expected_version, p.owner, p.now)

    def _write_commit_in(self, tx: SqlTx, p: PreparedCommit) -> None:
        """The commit inside a transaction of several (``commit_many``): one statement."""
        statement = self._one_statement(p)
        if statement is None:
            super()._write_commit_in(tx, p)
        elif tx.one(*statement) is None:
            self._refuse_commit(tx, p.workflow_id, p.expected_version, p.owner, p.now)

    def _write_commits_in(
        self, tx: SqlTx, prepared: Sequence[PreparedCommit]
    ) -> list[ConcurrencyError | UnknownWorkflowError | None]:
        """The commits' one statements in one pipeline; the rare others as the core does."""
        assert isinstance(tx, Tx)  # this store's transactions are on its own connections
        statements = [self._one_statement(p) for p in prepared]
        one = [(p, st) for p, st in zip(prepared, statements, strict=True) if st is not None]
        rows = tx.pipelined([st for _, st in one]) if one else []
        found = {p.workflow_id: row for (p, _), row in zip(one, rows, strict=True)}
        refusals: list[ConcurrencyError | UnknownWorkflowError | None] = []
        for p, st in zip(prepared, statements, strict=True):
            try:
                if st is None:
                    super()._write_commit_in(tx, p)
                elif found[p.workflow_id] is None:
                    self._refuse_commit(tx, p.workflow_id, p.expected_version, p.owner, p.now)
            except (ConcurrencyError, UnknownWorkflowError) as exc:
                refusals.append(exc)
            else:
                refusals.append(None)
        return refusals

    @staticmethod
    def _one_statement(p: PreparedCommit) -> tuple[str, tuple[object, ...]] | None:
        """The commit's one statement and its parameters; None when it needs the core's."""
        delta = p.delta
        if delta.rewrite or delta.cuts or p.wake:
            return None
        lease: tuple[object, ...] = ()
        sql = COMMIT_SQL
        if p.owner is not None:
            sql, lease = COMMIT_LEASED_SQL, (p.workflow_id, p.owner, p.at)
        # Entry ordinals (1, 2, ...) where the core has seqs: the seqs are known only after
        # the UPDATE, inside the statement.
        payloads = p.payloads
        rows = record_rows(delta, {payload: n for n, (_, payload) in enumerate(payloads, 1)})
        return sql, (
            *p.head,
            p.workflow_id,
            p.expected_version,
            *lease,
            p.workflow_id,
            len(payloads),
            p.at,
            [kind for kind, _ in payloads],
            [payload for _, payload in payloads],
            p.workflow_id,
            len(payloads),
            [name for name, _, _, _ in rows],
            [idx for _, idx, _, _ in rows],
            [n or 0 for _, _, n, _ in rows],
            [text or "" for _, _, _, text in rows],
            p.workflow_id,
            p.at,
            [kind for kind, _ in p.artifacts],
            [path for _, path in p.artifacts],
        )

    def damage_where(self) -> str:
        """The store's name in a damage message: "The PostgreSQL database ... on ..."."""
        return f"The {self.where}"

    def _unknown(self, workflow_id: str) -> UnknownWorkflowError:
        return UnknownWorkflowError(
            f"no workflow with id '{workflow_id}' in the {self.where}; run `orchestrator "
            "list` to see the workflows this store holds (--store selects another store)"
        )

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
