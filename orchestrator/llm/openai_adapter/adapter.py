"""The ``ChatModel`` for any OpenAI-compatible server: OpenAI, Azure, vLLM, Ollama, llama.cpp.

The adapter takes an ``openai.AsyncOpenAI`` client, not a key, so anything reachable through
``base_url`` works (``connect`` in the client module builds one). It negotiates the
structured-output mode once (see ``formats``), remembering the first the server accepts,
retries transport faults as the ``RetryPolicy`` says within the request's deadline, and
counts every HTTP request it sends: the answer and every error say how many were made.
Output that is truncated or not a JSON object when one was asked for raises
``LLMOutputError``; the parsed object is returned unvalidated (the caller validates it).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import openai
import structlog
from openai import AsyncOpenAI
from pydantic import BaseModel, field_validator

from orchestrator.llm.openai_adapter.formats import (
    NEXT_MODE,
    FormatMode,
    format_body,
    messages_for,
    rejects_format,
)
from orchestrator.llm.openai_adapter.json_extract import parse_json_object
from orchestrator.llm.openai_adapter.redaction import clip, redact, root_cause, safe_url
from orchestrator.llm.openai_adapter.retry import Failure, RetryPolicy, status_failure, timed_out
from orchestrator.llm.protocol import LLMRequest, LLMResponse
from state.clock import Clock, SystemClock
from state.errors import ConfigError, LLMOutputError, LLMUnavailableError

Sleep = Callable[[float], Awaitable[None]]

log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Tally:
    """The running account of one call: requests sent, what they met, notes for the answer.

    ``attempts`` counts every HTTP request; ``counted`` only those that failed in transport
    (the policy's attempt limit), not the ones that merely found an output mode rejected.
    """

    start: float
    attempts: int = 0
    counted: int = 0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class OpenAIChatModel:
    """A ``ChatModel`` speaking the chat-completions protocol through an ``AsyncOpenAI``."""

    def __init__(
        self,
        client: AsyncOpenAI,
        *,
        model: str,
        timeout_s: float = 60.0,
        deadline_s: float = 180.0,
        max_attempts: int = 4,
        max_retry_after_s: float = 30.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        response_format: FormatMode = "json_schema",
        sleep: Sleep = asyncio.sleep,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """Wrap ``client``.

        Args:
            client: the OpenAI-compatible client; a copy with ``max_retries=0`` is used,
                since this adapter does its own retrying.
            model: the model to ask (see ``resolve_model`` to take the server's first).
            timeout_s: default limit of one HTTP call.
            deadline_s: default limit of all attempts of one request together.
            max_attempts: HTTP requests per call that may fail in transport; rejected
                output modes are not counted here (``LLMRequest.max_requests`` caps all).
            max_retry_after_s: the longest ``Retry-After`` honoured; longer ones are capped.
            backoff_base_s: the first backoff delay; it doubles per attempt, with jitter.
            backoff_max_s: the longest backoff delay.
            response_format: the structured-output mode to try first.
            sleep: awaited between attempts (tests pass a recorder).
            clock: its ``monotonic`` readings time deadlines and latency (default: the
                system clock).
            rng: jitter source.

        Raises:
            ConfigError: a limit is not positive.
        """
        if min(timeout_s, deadline_s, max_attempts) <= 0 or max_retry_after_s < 0:
            raise ConfigError(
                f"LLM limits for model {model} must be positive: timeout_s={timeout_s}, "
                f"deadline_s={deadline_s}, max_attempts={max_attempts}, "
                f"max_retry_after_s={max_retry_after_s}; fix the llm settings"
            )
        self._client = client.with_options(max_retries=0) if client.max_retries else client
        self._model = model
        self._timeout_s = timeout_s
        self._deadline_s = deadline_s
        self._policy = RetryPolicy(max_attempts, max_retry_after_s, backoff_base_s, backoff_max_s)
        self._mode: FormatMode = response_format
        self._sleep = sleep
        self._clock = (clock or SystemClock()).monotonic
        # Jitter only spreads retries apart; it needs no cryptographic randomness.
        self._rng = rng or random.Random()  # noqa: S311
        self._where = safe_url(str(self._client.base_url))

    @property
    def model_name(self) -> str:
        """The model this adapter asks."""
        return self._model

    @property
    def structured_mode(self) -> FormatMode:
        """The structured-output mode the next schema request will use."""
        return self._mode

    async def aclose(self) -> None:
        """Close the underlying HTTP client (shared with the client passed in)."""
        await self._client.close()

    async def __aenter__(self) -> OpenAIChatModel:
        """Use the adapter as an async context manager that closes its client."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the client."""
        await self.aclose()

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Answer ``request``, retrying transport faults within its deadline.

        Args:
            request: what to ask.

        Returns:
            The answer, with ``data`` parsed (not validated) when a schema was requested,
            and ``attempts`` the HTTP requests it took.

        Raises:
            LLMUnavailableError: no answer within the deadline or attempts, or a request the
                server refuses (bad key, unknown model); ``requests`` says how many were sent.
            LLMOutputError: truncated output, or no JSON object where one was requested.
        """
        timeout_s = request.timeout_s or self._timeout_s
        deadline_s = request.deadline_s or self._deadline_s
        cap = request.max_requests
        tally = _Tally(start=self._clock())
        while True:
            mode: FormatMode = self._mode if request.json_schema is not None else "text"
            elapsed = self._clock() - tally.start
            remaining = deadline_s - elapsed
            if remaining <= 0:  # only after output-mode negotiation used the time up
                tally.failures.append(f"the {deadline_s:.1f} s deadline passed")
                raise self._unavailable(request, tally, "")
            if cap is not None and tally.attempts >= cap:  # only after negotiation, likewise
                tally.failures.append(f"the call's cap of {cap} requests was reached")
                raise self._unavailable(request, tally, "")
            tally.attempts += 1
            try:
                completion = await self._post(request, mode, max(0.001, min(timeout_s, remaining)))
            except openai.APIStatusError as exc:
                if request.json_schema is not None and rejects_format(exc, mode):
                    self._downgrade(mode, exc, tally)
                    continue
                failure = status_failure(
                    exc, where=self._where, model=self._model, api_key=self._client.api_key
                )
                cause: BaseException = exc
            except openai.APITimeoutError as exc:
                if timed_out(exc):
                    failure = Failure(f"timeout after {min(timeout_s, remaining):.1f} s")
                else:
                    failure = Failure(f"connection error ({root_cause(exc)})")
                cause = exc
            except openai.APIConnectionError as exc:
                failure, cause = Failure(f"connection error ({root_cause(exc)})"), exc
            except (_GarbledBodyError, ValueError) as exc:  # pydantic's ValidationError too
                failure, cause = Failure("invalid response body (not a chat completion)"), exc
            else:
                return self._answer(request, completion, mode, tally)

            tally.counted += 1
            tally.failures.append(failure.what)
            capped = cap is not None and tally.attempts >= cap
            if not failure.retryable or tally.counted >= self._policy.max_attempts or capped:
                raise self._unavailable(request, tally, "") from cause
            delay = self._policy.delay(tally.counted, failure.retry_after_s, self._rng)
            if self._clock() - tally.start + delay >= deadline_s:
                why = f"the next try in {delay:.1f} s would pass the {deadline_s:.1f} s deadline"
                raise self._unavailable(request, tally, why) from cause
            log.warning(
                "llm.call.retry",
                purpose=request.purpose,
                model=self._model,
                attempt=tally.attempts,
                failure=failure.what,
                delay_s=round(delay, 3),
            )
            tally.notes.append(f"attempt {tally.attempts}: {failure.what}")
            await self._sleep(delay)

    async def _post(self, request: LLMRequest, mode: FormatMode, timeout_s: float) -> _Completion:
        """One HTTP request for ``request`` in output ``mode``, its answer read.

        ``post`` rather than ``chat.completions.create``: the body is plain JSON already,
        and ``create`` walks its ~40 typed parameters on every call (about a third of a
        call's CPU); errors and timeouts are the same. The answer comes back as bytes and
        is read by ``_Completion``: the client's own ``ChatCompletion`` is built field by
        field in Python, 0.3 to 0.5 ms a call (``python -m bench.llm_client``).

        Raises:
            openai.APIError: the client's errors, as they come.
            ValueError: the body is not a chat completion (pydantic's ValidationError).
            _GarbledBodyError: it is one without choices.
        """
        body = await self._client.post(
            "/chat/completions",
            cast_to=bytes,
            body={
                "model": self._model,
                "messages": messages_for(request, mode),
                "temperature": request.temperature,
                "max_tokens": request.max_tokens,
                **(format_body(request, mode) or {}),
            },
            options={"timeout": timeout_s},
        )
        completion = _Completion.model_validate_json(body)
        if not completion.choices:
            raise _GarbledBodyError(body)
        return completion

    def _answer(
        self,
        request: LLMRequest,
        completion: _Completion,
        mode: FormatMode,
        tally: _Tally,
    ) -> LLMResponse:
        """Turn a completion into a response, or raise on unusable output."""
        choice = completion.choices[0]
        text = choice.message.content or ""
        finish = choice.finish_reason
        data: dict[str, Any] | None = None
        problem = ""
        if finish == "length":
            problem = f"output truncated at max_tokens={request.max_tokens}"
        elif request.json_schema is not None:
            data = parse_json_object(text)
            if data is None:
                problem = f"no JSON object in the answer ({mode} mode)"
        elif not text.strip():
            problem = "empty answer"
        if problem:
            log.warning(
                "llm.output.invalid",
                purpose=request.purpose,
                model=self._model,
                problem=problem,
                finish_reason=finish,
            )
            raise LLMOutputError(
                f"LLM call {request.purpose or '(no purpose)'} to model {self._model}: {problem}; "
                f"raw text: {redact(clip(text), self._client.api_key)!r}. "
                "Re-ask with a shorter or stricter prompt, or raise max_tokens.",
                requests=tally.attempts,
            )
        usage = completion.usage or _Usage()
        latency_ms = (self._clock() - tally.start) * 1000.0
        log.debug(
            "llm.call.succeeded",
            purpose=request.purpose,
            model=self._model,
            attempts=tally.attempts,
            latency_ms=round(latency_ms, 1),
            response_format=mode,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
        return LLMResponse(
            text=text,
            data=data,
            model=completion.model or self._model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            latency_ms=latency_ms,
            attempts=tally.attempts,
            response_format=mode,
            finish_reason=finish,
            notes=tuple(tally.notes),
        )

    def _downgrade(self, mode: FormatMode, exc: openai.APIStatusError, tally: _Tally) -> None:
        """Remember that the server rejected ``mode`` and move to the next one."""
        nxt = NEXT_MODE[mode]
        # Concurrent calls may both see the rejection; only move forward from where we were.
        if self._mode == mode:
            self._mode = nxt
        log.info(
            "llm.format.fallback",
            model=self._model,
            rejected=mode,
            now=nxt,
            status=exc.status_code,
        )
        tally.notes.append(
            f"server rejected response_format {mode} ({exc.status_code}); using {nxt}"
        )

    def _unavailable(self, request: LLMRequest, tally: _Tally, why: str) -> LLMUnavailableError:
        """Build (and log) the error that ends a request."""
        elapsed = self._clock() - tally.start
        log.error(
            "llm.call.failed",
            purpose=request.purpose,
            model=self._model,
            attempts=tally.attempts,
            elapsed_s=round(elapsed, 2),
            failures=tally.failures,
        )
        plural = "attempt" if tally.attempts == 1 else "attempts"
        return LLMUnavailableError(
            f"LLM call {request.purpose or '(no purpose)'} to model {self._model} at "
            f"{self._where} got no answer: {tally.attempts} {plural} in {elapsed:.1f} s: "
            f"{', '.join(tally.failures)}{f'; {why}' if why else ''}. "
            "Check that the server is up and the configuration right, or raise the deadline.",
            requests=tally.attempts,
        )


class _Usage(BaseModel):
    """The token counts of an answer; a server may leave them out or send null."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @field_validator("prompt_tokens", "completion_tokens", mode="before")
    @classmethod
    def _null_is_zero(cls, value: object) -> object:
        return 0 if value is None else value


class _Message(BaseModel):
    content: str | None = None


class _Choice(BaseModel):
    message: _Message
    finish_reason: str | None = None


class _Completion(BaseModel):
    """The part of a chat-completion body the adapter reads; other fields are ignored."""

    model: str | None = None
    choices: list[_Choice]
    usage: _Usage | None = None


class _GarbledBodyError(Exception):
    """The server answered 200 with something that is not a chat completion."""
