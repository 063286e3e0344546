"""The rules of leases every backend applies, with the messages they give.

A backend reads the workflow's current lease inside its transaction and asks these
functions whether the claim, the renewal or the commit may go ahead.
"""

from __future__ import annotations

import os
from datetime import datetime

from state.codec import ts, ttl
from state.errors import ConcurrencyError
from state.store import Lease, lease_is_stale


def new_lease(
    workflow_id: str,
    owner: str,
    ttl_s: float,
    *,
    now: datetime,
    host: str,
    pid: int | None = None,
) -> Lease:
    """The lease ``acquire_lease`` writes: ``owner`` on ``host`` (``pid``: this process).

    Raises:
        StoreError: ``ttl_s`` is not a positive, finite number of seconds.
    """
    return Lease(
        workflow_id=workflow_id,
        owner=owner,
        host=host,
        pid=pid if pid is not None else os.getpid(),
        expires_at=now + ttl(workflow_id, ttl_s),
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
