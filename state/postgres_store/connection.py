"""The connection pool, how a database is named in messages, and psycopg errors in our words."""

from __future__ import annotations

import logging
import select
from collections.abc import Sequence
from typing import Any

import psycopg
import psycopg.errors
from psycopg import conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from state.errors import ConcurrencyError, StoreCorruptError, StoreError
from state.postgres_store import STORE_ENV

# The pool logs each failed connection attempt; with no handler configured Python would
# print those to stderr, and the library never prints: the error we raise says it once.
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())


def describe(url: str) -> str:
    """The database ``url`` names, without its password: ``postgresql db on host:port``."""
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the PostgreSQL database (unparsable URL)"
    host = str(params.get("host") or "the local socket")
    port = params.get("port")
    where = f"{host}:{port}" if port else host
    return f"PostgreSQL database {params.get('dbname') or '(default)'!s} on {where}"


def check_url(url: str) -> None:
    """Refuse a URL libpq cannot parse before any connection is tried.

    Raises:
        StoreError: naming the problem (the password is not repeated).
    """
    try:
        conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise StoreError(
            f"the store URL is not a valid PostgreSQL URL ({exc}); write it as "
            "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
        ) from exc


def open_pool(url: str, *, max_size: int, connect_timeout_s: float) -> ConnectionPool:
    """A pool of connections to ``url``, opened and checked once.

    Each connection is checked before it is handed out (``check_quietly``), so a connection
    the server dropped (a restart, a terminated session) is replaced instead of failing the
    next call.

    Raises:
        StoreError: no connection could be made within ``connect_timeout_s``, naming
            the server's or libpq's reason.
    """
    # One direct attempt first: it fails at once with libpq's reason (no server, a wrong
    # password, no such database), where the pool would retry quietly until its timeout.
    try:
        psycopg.connect(url, connect_timeout=max(2, round(connect_timeout_s))).close()
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split())
        raise StoreError(
            f"cannot connect to the {describe(url)}: {reason}; check that the server runs "
            f"and the URL (--store or {STORE_ENV}) is right"
        ) from exc
    pool = ConnectionPool(
        url,
        min_size=1,
        max_size=max_size,
        open=False,
        check=check_quietly,
        timeout=connect_timeout_s,
        # Autocommit: a commit is one statement, its own transaction (no BEGIN and COMMIT
        # round trips); calls of several statements open a transaction explicitly.
        kwargs={"autocommit": True},
        name="orchestrator-store",
    )
    try:
        pool.open(wait=True, timeout=connect_timeout_s)
    except PoolTimeout as exc:
        pool.close()
        raise StoreError(
            f"cannot connect to the {describe(url)} within {connect_timeout_s:g}s; check "
            f"that the server runs and the URL (--store or {STORE_ENV}) is right"
        ) from exc
    return pool


def check_quietly(conn: psycopg.Connection[Any]) -> None:
    """Check a pooled connection, without a round trip unless the server said something.

    An idle connection has nothing to read, unless the server ended it (a session killed,
    a restart: its last message, then end of file). Only then is it checked the usual way,
    which fails and makes the pool replace it. This costs nothing per call, where an empty
    query before each call cost a round trip; a connection cut silently (no message, no end
    of file) fails its next call with an error saying to retry.

    Raises:
        psycopg.Error: the connection is broken (the pool discards it).
    """
    if conn.closed:
        raise psycopg.OperationalError("the connection is closed")
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    if readable:
        ConnectionPool.check_connection(conn)


def translate(
    exc: psycopg.Error, doing: str, where: str, workflow_id: str | None = None
) -> StoreError:
    """Our error for a psycopg error, saying what happened and what to do about it."""
    subject = f"workflow {workflow_id}: " if workflow_id else ""
    if isinstance(
        exc,
        psycopg.errors.UniqueViolation
        | psycopg.errors.SerializationFailure
        | psycopg.errors.DeadlockDetected,
    ):
        # The same outcome as the SQLite store's lost race: someone else wrote first.
        return ConcurrencyError(
            f"{subject}could not {doing}: another writer changed it at the same time "
            f"in the {where}; nothing was written. Load it again and retry"
        )
    if isinstance(exc, psycopg.errors.DataCorrupted | psycopg.errors.IndexCorrupted):
        return StoreCorruptError(
            f"{subject}could not {doing}: the {where} reports damaged data ({exc}); it "
            "was left as it is. Restore it from a backup"
        )
    if isinstance(exc, psycopg.errors.DiskFull):
        return StoreError(
            f"{subject}could not {doing}: the disk of the {where} is full; free some "
            "space on the server and retry"
        )
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return StoreError(
            f"{subject}could not {doing}: the user of the store URL may not do it in the "
            f"{where} ({exc}); grant it the privileges or use another user"
        )
    if isinstance(exc, PoolTimeout | psycopg.OperationalError | psycopg.InterfaceError):
        return StoreError(
            f"{subject}could not {doing}: lost the connection to the {where} ({exc}); "
            "nothing was written unless a later load shows it. Check that the server "
            "runs and is reachable, then retry (the workflow resumes from its last commit)"
        )
    return StoreError(f"{subject}could not {doing} in the {where}: {exc}")


Cursor = psycopg.Cursor[tuple[Any, ...]]

_PLACEHOLDERS: dict[str, str] = {}


def _pg(sql: str) -> str:
    """``sql`` with psycopg's ``%s`` placeholders for the core's ``?`` (none is quoted)."""
    text = _PLACEHOLDERS.get(sql)
    if text is None:
        text = _PLACEHOLDERS[sql] = sql.replace("?", "%s")
    return text


class Tx:
    """A transaction on a pooled connection's cursor, as ``state.sql_core`` uses it."""

    __slots__ = ("_cur",)

    def __init__(self, cur: Cursor) -> None:
        self._cur = cur

    def one(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        """Run ``sql`` and return its first row, or None."""
        return self._cur.execute(_pg(sql), params).fetchone()

    def all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run ``sql`` and return its rows."""
        return self._cur.execute(_pg(sql), params).fetchall()

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run ``sql`` and return how many rows it changed."""
        return self._cur.execute(_pg(sql), params).rowcount

    def pipelined(
        self, statements: Sequence[tuple[str, Sequence[object]]]
    ) -> list[tuple[Any, ...] | None]:
        """Run the statements back to back in one pipeline; the first row of each.

        They are sent without waiting for each other's results, so the server runs them
        while the next are still on their way: one round trip for all, not one each.
        """
        conn = self._cur.connection
        with conn.pipeline():
            cursors = [conn.cursor().execute(_pg(sql), params) for sql, params in statements]
        return [cur.fetchone() for cur in cursors]

    def many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run ``sql`` once per row of parameters, pipelined by psycopg."""
        self._cur.executemany(_pg(sql), rows)
