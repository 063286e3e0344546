"""The ``leases`` table: reading and writing the row that says who runs a workflow.

Every function runs inside the caller's transaction on the caller's connection; the store
decides which transaction, checks first that the workflow exists, and applies the rules of
``state.leasing`` to what ``read`` returns.
"""

from __future__ import annotations

import sqlite3

from state.codec import Damaged, parse_time, ts
from state.store import Lease


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
