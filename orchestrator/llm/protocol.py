"""The chat-model seam every LLM user goes through (agents and the LLM orchestrator).

A ``ChatModel`` takes an ``LLMRequest`` and returns an ``LLMResponse`` or raises
``LLMUnavailableError`` (the server could not answer in time: timeouts, connection errors,
429, 5xx) or ``LLMOutputError`` (it answered, but not with usable JSON/text). Retries of
transport faults happen inside the adapter, within the request's deadline; retries of bad
output are the caller's business (it knows how to re-ask). Both errors carry ``requests``,
the HTTP requests the failed call made, so failed calls are counted like answered ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One chat completion to make.

    Attributes:
        messages: the conversation.
        json_schema: when set, the answer must be a JSON object valid against this schema;
            the adapter asks for structured output (``json_schema``, else ``json_object`` with
            the schema, else plain text) and parses the JSON.
        schema_name: a name for the schema (OpenAI requires one).
        temperature: sampling temperature.
        max_tokens: completion token limit.
        timeout_s: limit of one HTTP call; None uses the adapter's default.
        deadline_s: limit of all attempts together; None uses the adapter's default.
        purpose: what the call is for, for logs ("decision", "step2_plan_validator", ...).
        max_requests: the most HTTP requests this call may make, rejected output modes
            included; None leaves it to the adapter's own attempt limit.
    """

    messages: tuple[Message, ...]
    json_schema: dict[str, Any] | None = None
    schema_name: str = "answer"
    temperature: float = 0.0
    max_tokens: int = 512
    timeout_s: float | None = None
    deadline_s: float | None = None
    purpose: str = ""
    max_requests: int | None = None


@dataclass(frozen=True, slots=True)
class LLMResponse:
    """What the model answered, and what it cost.

    Attributes:
        text: the raw completion text.
        data: the parsed JSON object when a schema was requested (not yet validated against
            the schema: the caller validates), else None.
        model: the model that answered.
        prompt_tokens / completion_tokens: usage as reported by the server (0 if not).
        latency_ms: wall time of all attempts.
        attempts: HTTP requests made (1 when the first succeeded), rejected output modes
            and failed retries included.
        response_format: "json_schema", "json_object" or "text": what the server accepted.
        finish_reason: the server's finish reason ("length" means truncated).
    """

    text: str
    data: dict[str, Any] | None
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_ms: float = 0.0
    attempts: int = 1
    response_format: str = "text"
    finish_reason: str | None = None
    notes: tuple[str, ...] = field(default=())


class ChatModel(Protocol):
    """Anything that can answer an ``LLMRequest``."""

    @property
    def model_name(self) -> str:
        """The model's name, for logs and decision records."""
        ...

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Answer ``request``.

        Raises:
            LLMUnavailableError: no answer within the request's deadline.
            LLMOutputError: the answer is not usable (not JSON when JSON was asked, empty).
        """
        ...
