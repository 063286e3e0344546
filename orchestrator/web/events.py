"""The live feed: one watcher polls the store and tells every open page what changed.

Polling the store (rather than listening to a runner) sees every writer alike: runs this
console started, ``orchestrator run`` in a terminal, workers on other machines. The same
watcher posts the webhooks when a workflow starts waiting at a gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict

import structlog

from orchestrator.web.notify import GateWait, Notifier
from orchestrator.web.service import ConsoleService, Version

log = structlog.get_logger(__name__)


class Watcher:
    """Polls ``service.versions()`` and fans changes out to subscribers.

    Args:
        service: the console's facade.
        notifier: posts gate waits (None: no webhooks).
        answer_url: the answer page's URL of a workflow, for the webhooks.
        interval_s: time between polls.
    """

    def __init__(
        self,
        service: ConsoleService,
        *,
        notifier: Notifier | None = None,
        answer_url: Callable[[str], str] = lambda wid: f"/workflows/{wid}",
        interval_s: float = 1.0,
    ) -> None:
        self._service = service
        self._notifier = notifier
        self._answer_url = answer_url
        self._interval_s = interval_s
        self._known: dict[str, Version] | None = None
        # Each open stream's queue; None in a queue ends that stream.
        self._subscribers: set[asyncio.Queue[dict[str, object] | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._ended = False

    def start(self) -> None:
        """Poll in the background until ``stop``; streams may open again."""
        self._ended = False
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    def end_streams(self) -> None:
        """End every open event stream, and every one opened from now until ``start``.

        A stream never ends by itself, so a server shutting down waits for them in vain:
        it calls this first, and each stream finishes its response cleanly. A browser's
        ``EventSource`` then reconnects on its own once the console is back.
        """
        self._ended = True
        for queue in list(self._subscribers):
            queue.put_nowait(None)

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception as exc:  # a store hiccup must not end the feed
                log.warning("web.watch.failed", error=str(exc))
            await asyncio.sleep(self._interval_s)

    async def poll(self) -> list[dict[str, object]]:
        """Compare the store with the last poll; publish and return what changed.

        The first poll only learns what exists: workflows already waiting when the console
        starts are not announced again.
        """
        now = await self._service.versions(self._known)
        first = self._known is None
        before = self._known or {}
        self._known = now
        if first:
            return []
        changes = [  # an unchanged workflow's Version is the very object of the last poll
            {"workflow_id": wid, **asdict(v)}
            for wid, v in now.items()
            if (old := before.get(wid)) is not v and old != v
        ]
        for change in changes:
            for queue in list(self._subscribers):
                queue.put_nowait(change)
        if self._notifier is not None:
            for wid, v in now.items():
                old = before.get(wid)
                if v.waiting_gate is not None and (
                    old is None or old.waiting_gate != v.waiting_gate
                ):
                    await self._announce(wid, v)
        return changes

    async def _announce(self, workflow_id: str, v: Version) -> None:
        assert self._notifier is not None
        try:
            info = (await self._service.workflow(workflow_id))["workflow"]
        except Exception as exc:
            log.warning("web.notify.skipped", workflow_id=workflow_id, error=str(exc))
            return
        self._notifier.notify(
            GateWait(
                workflow_id=workflow_id,
                gate=str(v.waiting_gate),
                asked=str(info.get("asked") or ""),
                waiting_since=info.get("waiting_since"),
                url=self._answer_url(workflow_id),
            )
        )

    async def subscribe(self, heartbeat_s: float = 15.0) -> AsyncIterator[str]:
        """Server-sent events: ``hello`` at once, then one ``workflow`` event per change."""
        if self._ended:
            return
        queue: asyncio.Queue[dict[str, object] | None] = asyncio.Queue()
        self._subscribers.add(queue)
        try:
            yield "event: hello\ndata: {}\n\n"
            while True:
                try:
                    change = await asyncio.wait_for(queue.get(), heartbeat_s)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if change is None:
                    return
                yield f"event: workflow\ndata: {json.dumps(change)}\n\n"
        finally:
            self._subscribers.discard(queue)
