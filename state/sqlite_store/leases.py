"""The ``leases`` table: who runs a workflow, and whether a commit may go ahead.

Every function runs inside the caller's transaction on the caller's connection; the store
decides which transaction and checks first that the workflow exists.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from state.codec import Damaged, parse_time, ts
from state.errors import ConcurrencyError
from state.store import Lease, lease_is_stale


def read(conn: sqlite3.Connection, workflow_id: str) -> Lease | None:
    """The workflow's lease, live or expired, or None.

    Raises:
        Damaged: the row does not hold a valid lease.
    """
    row = conn.execute(
        "SELECT owner, host, pid, expires_at FROM leases WHERE workflow_id = ?",
        (workflow_id,),
    ).fetchone()
    if row is None:
        return None
    owner, host, pid, expires = row
    if not isinstance(pid, int):
        raise Damaged(workflow_id, "its lease", f"pid {pid!r} is not an integer")
    return Lease(
        workflow_id, str(owner), str(host), pid, parse_time(workflow_id, "its lease", expires)
    )


def refuse_unless_free(current: Lease | None, owner: str, *, now: datetime, host: str) -> None:
    """Let ``owner`` take the lease unless another owner holds it and it is not stale.

    Raises:
        ConcurrencyError: another live worker holds it, naming that worker.
    """
    if current is None or current.owner == owner or lease_is_stale(current, now=now, host=host):
        return
    raise ConcurrencyError(
        f"workflow {current.workflow_id} is being run by {current.describe()}; wait for "
        "it to finish or for its lease to expire, or stop that process and resume the "
        "workflow again"
    )


def refuse_unless_holder(current: Lease | None, workflow_id: str, owner: str) -> Lease:
    """``owner``'s lease, for renewing it.

    Raises:
        ConcurrencyError: ``owner`` does not hold it (any more).
    """
    if current is None or current.owner != owner:
        held = f"it is held by {current.describe()}" if current else "nobody holds it"
        raise ConcurrencyError(
            f"workflow {workflow_id}: {owner} no longer holds its lease ({held}); "
            "stop working on it, then load it again and acquire the lease"
        )
    return current


def check_holder(current: Lease | None, workflow_id: str, owner: str, now: datetime) -> None:
    """Let a commit by ``owner`` go ahead only under its live lease.

    Raises:
        ConcurrencyError: ``owner`` holds no lease, or its lease expired.
    """
    if current is None or current.owner != owner:
        held = f"; it is held by {current.describe()}" if current else ""
        raise ConcurrencyError(
            f"workflow {workflow_id}: {owner} holds no lease on it{held}; nothing was "
            "written. Acquire the lease (or stop: another worker runs it) before committing"
        )
    if not current.is_live(now):
        raise ConcurrencyError(
            f"workflow {workflow_id}: the lease of {owner} expired at "
            f"{ts(current.expires_at)}; nothing was written. Renew it more often than its "
            "time-to-live, then load the workflow again"
        )


def put(conn: sqlite3.Connection, lease: Lease) -> None:
    """Write ``lease``, replacing the workflow's previous one."""
    conn.execute(
        "INSERT INTO leases (workflow_id, owner, host, pid, expires_at) "
        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (workflow_id) DO UPDATE SET "
        "owner = excluded.owner, host = excluded.host, pid = excluded.pid, "
        "expires_at = excluded.expires_at",
        (lease.workflow_id, lease.owner, lease.host, lease.pid, ts(lease.expires_at)),
    )


def delete(conn: sqlite3.Connection, workflow_id: str, owner: str) -> bool:
    """Remove ``owner``'s lease; whether there was one."""
    cur = conn.execute(
        "DELETE FROM leases WHERE workflow_id = ? AND owner = ?", (workflow_id, owner)
    )
    return cur.rowcount > 0
