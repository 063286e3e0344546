"""The SQL of every table: workflows, ledger, leases and artifacts.

Every function runs inside the caller's transaction on the caller's cursor; the store
decides which transaction, turns what comes back into values, and words the errors.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

import psycopg

from state.codec import parse_time, ts
from state.steps import WorkflowStatus
from state.store import Artifact, Lease, LedgerKind

Cursor = psycopg.Cursor[tuple[Any, ...]]


def exists(cur: Cursor, workflow_id: str, *, lock: bool = False) -> bool:
    """Whether the workflow has a row; with ``lock``, held until the transaction ends.

    Locking the row serializes lease changes with each other and with commits, which
    update the same row.
    """
    if lock:
        cur.execute("SELECT 1 FROM workflows WHERE id = %s FOR UPDATE", (workflow_id,))
    else:
        cur.execute("SELECT 1 FROM workflows WHERE id = %s", (workflow_id,))
    return cur.fetchone() is not None


def insert(cur: Cursor, row: Sequence[object]) -> bool:
    """Add a workflow (id, version, listing columns, created_at, config, snapshot).

    Returns False when one with this id exists.
    """
    cur.execute(
        "INSERT INTO workflows (id, version, status, phase, machine_state, "
        "current_step, waiting_gate, updated_at, created_at, config, snapshot) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
        tuple(row),
    )
    return cur.rowcount == 1


def select_stored(cur: Cursor, workflow_id: str) -> tuple[Any, ...] | None:
    """(version, config, snapshot) of the workflow, or None."""
    cur.execute("SELECT version, config, snapshot FROM workflows WHERE id = %s", (workflow_id,))
    return cur.fetchone()


def stored_version(cur: Cursor, workflow_id: str) -> int | None:
    """The workflow's version, or None when it has no row."""
    cur.execute("SELECT version FROM workflows WHERE id = %s", (workflow_id,))
    row = cur.fetchone()
    return None if row is None else int(row[0])


def replace_snapshot(
    cur: Cursor,
    workflow_id: str,
    summary: Sequence[object],
    snapshot: str,
    expected_version: int,
) -> bool:
    """Write the new snapshot if the version is still the expected one.

    A concurrent commit to the same workflow waits here for the other transaction and then
    finds the version moved on, so exactly one of them wins.
    """
    cur.execute(
        "UPDATE workflows SET version = version + 1, status = %s, phase = %s, "
        "machine_state = %s, current_step = %s, waiting_gate = %s, updated_at = %s, "
        "snapshot = %s WHERE id = %s AND version = %s",
        (*summary, snapshot, workflow_id, expected_version),
    )
    return cur.rowcount == 1


def append(cur: Cursor, workflow_id: str, payloads: Sequence[tuple[str, str]], at: str) -> None:
    """Append (kind, payload) entries recorded ``at``, numbered after the last one.

    Runs after ``replace_snapshot`` in the same transaction, whose row lock keeps any
    other writer from numbering entries of this workflow meanwhile.
    """
    cur.execute("SELECT COALESCE(MAX(seq), 0) FROM ledger WHERE workflow_id = %s", (workflow_id,))
    row = cur.fetchone()
    last = int(row[0]) if row is not None else 0
    cur.executemany(
        "INSERT INTO ledger (workflow_id, seq, kind, recorded_at, payload) "
        "VALUES (%s, %s, %s, %s, %s)",
        [
            (workflow_id, last + i, kind, at, payload)
            for i, (kind, payload) in enumerate(payloads, start=1)
        ],
    )


def select_ledger(
    cur: Cursor, workflow_id: str, after_seq: int, kinds: Collection[LedgerKind] | None
) -> list[tuple[Any, ...]]:
    """(seq, kind, recorded_at, payload) rows after ``after_seq``, of ``kinds``, in order."""
    sql = "SELECT seq, kind, recorded_at, payload FROM ledger WHERE workflow_id = %s AND seq > %s"
    params: list[object] = [workflow_id, after_seq]
    if kinds is not None:
        sql += " AND kind = ANY(%s)"
        params.append(sorted({LedgerKind(k).value for k in kinds}))
    cur.execute(sql + " ORDER BY seq", params)
    return [(int(r[0]), *r[1:]) for r in cur.fetchall()]


def select_summaries(cur: Cursor, status: WorkflowStatus | None) -> list[tuple[Any, ...]]:
    """The listing rows (see ``state.codec.summary_of``), the most recently updated first."""
    sql = (
        "SELECT id, status, phase, machine_state, current_step, waiting_gate, version, "
        "created_at, updated_at FROM workflows"
    )
    params: tuple[str, ...] = ()
    if status is not None:
        sql += " WHERE status = %s"
        params = (WorkflowStatus(status).value,)
    # COLLATE "C": byte order, as SQLite sorts ids, whatever the database's locale.
    cur.execute(sql + ' ORDER BY updated_at DESC, id COLLATE "C"', params)
    return cur.fetchall()


def read_lease(cur: Cursor, workflow_id: str) -> Lease | None:
    """The workflow's lease, live or expired, or None.

    Raises:
        Damaged: the row does not hold a valid lease.
    """
    cur.execute(
        "SELECT owner, host, pid, expires_at FROM leases WHERE workflow_id = %s", (workflow_id,)
    )
    row = cur.fetchone()
    if row is None:
        return None
    owner, host, pid, expires = row
    return Lease(
        workflow_id, str(owner), str(host), int(pid), parse_time(workflow_id, "its lease", expires)
    )


def put_lease(cur: Cursor, lease: Lease) -> None:
    """Write ``lease``, replacing the workflow's previous one."""
    cur.execute(
        "INSERT INTO leases (workflow_id, owner, host, pid, expires_at) "
        "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (workflow_id) DO UPDATE SET "
        "owner = excluded.owner, host = excluded.host, pid = excluded.pid, "
        "expires_at = excluded.expires_at",
        (lease.workflow_id, lease.owner, lease.host, lease.pid, ts(lease.expires_at)),
    )


def delete_lease(cur: Cursor, workflow_id: str, owner: str) -> bool:
    """Remove ``owner``'s lease; whether there was one."""
    cur.execute("DELETE FROM leases WHERE workflow_id = %s AND owner = %s", (workflow_id, owner))
    return cur.rowcount > 0


def put_artifact(cur: Cursor, workflow_id: str, kind: str, path: str, now: datetime) -> None:
    """Record ``path``; recording it again only moves its time (its place stays)."""
    cur.execute(
        "INSERT INTO artifacts (workflow_id, kind, path, recorded_at) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (workflow_id, kind, path) DO UPDATE SET recorded_at = excluded.recorded_at",
        (workflow_id, kind, path, ts(now)),
    )


def read_artifacts(cur: Cursor, workflow_id: str) -> list[Artifact]:
    """The workflow's artifacts in first-recorded order.

    Raises:
        Damaged: a stored time is not a time.
    """
    cur.execute(
        "SELECT kind, path, recorded_at FROM artifacts WHERE workflow_id = %s ORDER BY ord",
        (workflow_id,),
    )
    return [
        Artifact(workflow_id, kind, path, parse_time(workflow_id, f"artifact {path}", at))
        for kind, path, at in cur.fetchall()
    ]
