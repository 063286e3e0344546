"""The ``artifacts`` table: the files a workflow produced, in the order first recorded."""

from __future__ import annotations

import sqlite3
from datetime import datetime

from state.codec import parse_time, ts
from state.store import Artifact


def put(conn: sqlite3.Connection, workflow_id: str, kind: str, path: str, now: datetime) -> None:
    """Record ``path``; recording it again only moves its time (its place stays)."""
    conn.execute(
        "INSERT INTO artifacts (workflow_id, kind, path, recorded_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (workflow_id, kind, path) "
        "DO UPDATE SET recorded_at = excluded.recorded_at",
        (workflow_id, kind, path, ts(now)),
    )


def read(conn: sqlite3.Connection, workflow_id: str) -> list[Artifact]:
    """The workflow's artifacts in first-recorded order (rowid keeps it across updates).

    Raises:
        Damaged: a stored time is not a time.
    """
    rows = conn.execute(
        "SELECT kind, path, recorded_at FROM artifacts WHERE workflow_id = ? ORDER BY rowid",
        (workflow_id,),
    ).fetchall()
    return [
        Artifact(workflow_id, kind, path, parse_time(workflow_id, f"artifact {path}", at))
        for kind, path, at in rows
    ]
