"""A scripted chat model for tests and demos: queued replies, exceptions or a responder.

It records every request and fails loudly on a call nobody scripted, so a test cannot pass
by accident through an unexpected LLM call::

    model = ScriptedChatModel([{"action": "invoke_step2", "confidence": 0.9}])
    model = ScriptedChatModel(responder=lambda req: {"action": "escalate"})
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from orchestrator.llm.protocol import LLMRequest, LLMResponse

Reply = str | dict[str, Any] | BaseException | LLMResponse
Responder = Callable[[LLMRequest], Reply]


class UnexpectedLLMCall(AssertionError):
    """The scripted model was called more times than it was given replies for."""


class ScriptedChatModel:
    """A ``ChatModel`` that answers from a script."""

    def __init__(
        self,
        replies: Iterable[Reply] = (),
        *,
        responder: Responder | None = None,
        model_name: str = "scripted",
        prompt_tokens: int = 100,
        completion_tokens: int = 20,
    ) -> None:
        self._queue: deque[Reply] = deque(replies)
        self._responder = responder
        self._name = model_name
        self._usage = (prompt_tokens, completion_tokens)
        self.calls: list[LLMRequest] = []

    @property
    def model_name(self) -> str:
        """The scripted model's name."""
        return self._name

    @property
    def remaining(self) -> int:
        """Queued replies not yet used."""
        return len(self._queue)

    def push(self, *replies: Reply) -> None:
        """Queue more replies."""
        self._queue.extend(replies)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Answer with the next queued reply (or the responder's)."""
        self.calls.append(request)
        if self._queue:
            reply = self._queue.popleft()
        elif self._responder is not None:
            reply = self._responder(request)
        else:
            raise UnexpectedLLMCall(
                f"unexpected LLM call #{len(self.calls)} ({request.purpose or 'no purpose'}): "
                "the script has no reply left"
            )
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, LLMResponse):
            return reply
        text = reply if isinstance(reply, str) else json.dumps(reply)
        data: dict[str, Any] | None = None
        if request.json_schema is not None:
            if isinstance(reply, dict):
                data = reply
            else:
                try:
                    parsed = json.loads(reply)
                except ValueError:
                    parsed = None
                data = parsed if isinstance(parsed, dict) else None
        return LLMResponse(
            text=text,
            data=data,
            model=self._name,
            prompt_tokens=self._usage[0],
            completion_tokens=self._usage[1],
            latency_ms=0.0,
            attempts=1,
            response_format="json_schema" if request.json_schema is not None else "text",
            finish_reason="stop",
        )
