"""Webhooks posted when a workflow starts waiting at a gate.

Two payloads: a generic JSON object, and Slack's incoming-webhook shape (``{"text": ...}``,
which Mattermost and Rocket.Chat accept too). Delivery runs in background tasks: a slow or
failing receiver is retried with backoff and logged, and never delays a workflow or a page.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx
import structlog

from state.errors import ConfigError

log = structlog.get_logger(__name__)


class HookKind(StrEnum):
    """The payload a webhook receives."""

    JSON = "json"
    SLACK = "slack"


@dataclass(frozen=True, slots=True)
class Webhook:
    """Where to post, and in which shape."""

    url: str
    kind: HookKind = HookKind.JSON


def parse_webhook(text: str) -> Webhook:
    """``URL`` (generic JSON) or ``slack:URL`` / ``json:URL``.

    Raises:
        ConfigError: the URL is not http(s).
    """
    kind = HookKind.JSON
    head, sep, rest = text.partition(":")
    if sep and head in {k.value for k in HookKind} and not rest.startswith("//"):
        kind, text = HookKind(head), rest
    if not text.startswith(("http://", "https://")):
        raise ConfigError(
            f"webhook {text!r}: expected an http(s) URL, optionally prefixed slack: or json:"
        )
    return Webhook(text, kind)


@dataclass(frozen=True, slots=True)
class GateWait:
    """A workflow that started waiting at a gate."""

    workflow_id: str
    gate: str
    asked: str
    waiting_since: str | None
    url: str


def payload(hook: Webhook, wait: GateWait) -> dict[str, Any]:
    """The body posted to ``hook`` for ``wait``."""
    if hook.kind is HookKind.SLACK:
        asked = f": {wait.asked}" if wait.asked else ""
        return {
            "text": f"Workflow {wait.workflow_id} waits at the {wait.gate} gate{asked} "
            f"<{wait.url}|Answer it>"
        }
    return {
        "event": "gate.waiting",
        "workflow_id": wait.workflow_id,
        "gate": wait.gate,
        "asked": wait.asked,
        "waiting_since": wait.waiting_since,
        "answer_url": wait.url,
    }


class Notifier:
    """Posts gate waits to webhooks in the background, retrying failures.

    Args:
        hooks: where to post.
        attempts: tries per delivery (the first included).
        backoff_s: wait before the second try; doubled before each further one.
        timeout_s: time allowed for one post.
    """

    def __init__(
        self,
        hooks: tuple[Webhook, ...],
        *,
        attempts: int = 4,
        backoff_s: float = 1.0,
        timeout_s: float = 10.0,
    ) -> None:
        self.hooks = hooks
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._client = httpx.AsyncClient(timeout=timeout_s)
        self._tasks: set[asyncio.Task[bool]] = set()

    def notify(self, wait: GateWait) -> list[asyncio.Task[bool]]:
        """Start delivering ``wait`` to every hook; returns at once (the deliveries' tasks)."""
        tasks = []
        for hook in self.hooks:
            task = asyncio.create_task(self._deliver(hook, wait))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            tasks.append(task)
        return tasks

    async def _deliver(self, hook: Webhook, wait: GateWait) -> bool:
        delay = self._backoff_s
        for attempt in range(1, self._attempts + 1):
            try:
                response = await self._client.post(hook.url, json=payload(hook, wait))
                if response.status_code < 300:
                    log.info(
                        "webhook.delivered",
                        workflow_id=wait.workflow_id,
                        url=hook.url,
                        attempt=attempt,
                    )
                    return True
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            log.warning(
                "webhook.failed",
                workflow_id=wait.workflow_id,
                url=hook.url,
                attempt=attempt,
                of=self._attempts,
                problem=problem,
            )
            if attempt < self._attempts:
                await asyncio.sleep(delay)
                delay *= 2
        log.error("webhook.gave_up", workflow_id=wait.workflow_id, url=hook.url)
        return False

    async def aclose(self) -> None:
        """Cancel deliveries still retrying and close the HTTP client."""
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
