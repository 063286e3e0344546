"""The ``workflows`` and ``ledger`` tables: snapshots with their listing columns, and entries.

Every function runs inside the caller's transaction on the caller's connection; the store
decides which transaction, turns what comes back into values, and words the errors.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

from state.steps import WorkflowStatus
from state.store import LedgerKind


def exists(conn: sqlite3.Connection, workflow_id: str) -> bool:
    """Whether the workflow has a row."""
    return (
        conn.execute("SELECT 1 FROM workflows WHERE id = ?", (workflow_id,)).fetchone() is not None
    )


def insert(conn: sqlite3.Connection, row: Sequence[object]) -> None:
    """Add a workflow row.

    Its columns: id, version, status .. updated_at (the listing columns), created_at, config
    and snapshot.
    """
    conn.execute(
        "INSERT INTO workflows (id, version, status, phase, machine_state, "
        "current_step, waiting_gate, updated_at, created_at, config, snapshot) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        tuple(row),
    )


def select_stored(conn: sqlite3.Connection, workflow_id: str) -> tuple[Any, ...] | None:
    """(version, config, snapshot) of the workflow, or None."""
    row: tuple[Any, ...] | None = conn.execute(
        "SELECT version, config, snapshot FROM workflows WHERE id = ?", (workflow_id,)
    ).fetchone()
    return row


def stored_version(conn: sqlite3.Connection, workflow_id: str) -> int | None:
    """The workflow's version, or None when it has no row."""
    row = conn.execute("SELECT version FROM workflows WHERE id = ?", (workflow_id,)).fetchone()
    return None if row is None else int(row[0])


def replace_snapshot(
    conn: sqlite3.Connection,
    workflow_id: str,
    summary: Sequence[object],
    snapshot: str,
    expected_version: int,
) -> bool:
    """Write the new snapshot and listing columns if the version is still the expected one."""
    cur = conn.execute(
        "UPDATE workflows SET version = version + 1, status = ?, phase = ?, "
        "machine_state = ?, current_step = ?, waiting_gate = ?, updated_at = ?, "
        "snapshot = ? WHERE id = ? AND version = ?",
        (*summary, snapshot, workflow_id, expected_version),
    )
    return cur.rowcount == 1


def append(
    conn: sqlite3.Connection, workflow_id: str, payloads: Sequence[tuple[str, str]], at: str
) -> None:
    """Append (kind, payload) entries recorded ``at``, numbered after the last one."""
    (last,) = conn.execute(
        "SELECT COALESCE(MAX(seq), 0) FROM ledger WHERE workflow_id = ?", (workflow_id,)
    ).fetchone()
    conn.executemany(
        "INSERT INTO ledger (workflow_id, seq, kind, recorded_at, payload) VALUES (?, ?, ?, ?, ?)",
        [
            (workflow_id, last + i, kind, at, payload)
            for i, (kind, payload) in enumerate(payloads, start=1)
        ],
    )


def select_ledger(
    conn: sqlite3.Connection,
    workflow_id: str,
    after_seq: int,
    kinds: Collection[LedgerKind] | None,
) -> list[tuple[Any, ...]]:
    """(seq, kind, recorded_at, payload) rows after ``after_seq``, of ``kinds``, in order."""
    sql = "SELECT seq, kind, recorded_at, payload FROM ledger WHERE workflow_id = ? AND seq > ?"
    params: list[object] = [workflow_id, after_seq]
    if kinds is not None:
        wanted = sorted({LedgerKind(k).value for k in kinds})
        sql += f" AND kind IN ({', '.join('?' * len(wanted))})"
        params += wanted
    sql += " ORDER BY seq"
    return conn.execute(sql, params).fetchall()


def select_summaries(
    conn: sqlite3.Connection, status: WorkflowStatus | None
) -> list[tuple[Any, ...]]:
    """The listing rows (see ``codec.summary_of``), the most recently updated first."""
    sql = (
        "SELECT id, status, phase, machine_state, current_step, waiting_gate, version, "
        "created_at, updated_at FROM workflows"
    )
    params: tuple[str, ...] = ()
    if status is not None:
        sql += " WHERE status = ?"
        params = (WorkflowStatus(status).value,)
    sql += " ORDER BY updated_at DESC, id"
    return conn.execute(sql, params).fetchall()
