"""The ``ChatModel`` for any OpenAI-compatible server: OpenAI, Azure, vLLM, Ollama, llama.cpp.

The adapter takes an ``openai.AsyncOpenAI`` client, not a key, so anything reachable through
``base_url`` works; ``openai_chat_model`` builds such a client for the common case.

Structured output is negotiated once per adapter: ``json_schema`` first (OpenAI, vLLM,
Ollama); when the server rejects that mode (llama.cpp's servers do), ``json_object`` with the
schema attached (llama-cpp-python turns it into a grammar); as a last resort plain text with
the schema in a system message and the JSON object dug out of the answer. The first mode the
server accepts is remembered, so later calls go straight to it.

Transport faults (429, 408/409, 5xx, timeouts, connection errors, garbled response bodies)
are retried with exponential backoff and jitter, honouring ``Retry-After`` up to a cap, within
the request's deadline; then ``LLMUnavailableError`` says what each attempt met. Other 4xx
(bad key, unknown model) fail at once with a message saying what to fix. Output that is
truncated or not a JSON object when one was asked for raises ``LLMOutputError``; the parsed
object is returned unvalidated (the caller validates it against its schema).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import openai
import structlog
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam

from orchestrator.llm.protocol import LLMRequest, LLMResponse, Message
from state.clock import Clock, SystemClock
from state.errors import ConfigError, LLMOutputError, LLMUnavailableError

FormatMode = Literal["json_schema", "json_object", "text"]
Sleep = Callable[[float], Awaitable[None]]

_NEXT_MODE: dict[FormatMode, FormatMode] = {"json_schema": "json_object", "json_object": "text"}
_RETRYABLE_4XX = {408: "request timeout", 409: "conflict", 429: "rate limited"}
_FORMAT_WORDS = ("response_format", "json_schema", "json_object")
_CLIP = 500
_NO_KEY = "no-key"

_SCHEMA_INSTRUCTION = (
    "Answer with one JSON object and nothing else: no prose, no code fence. "
    "It must be valid against this JSON Schema:\n{schema}"
)

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Failure:
    """One failed attempt: what it met, and whether another attempt may help."""

    what: str
    retryable: bool = True
    retry_after_s: float | None = None


@dataclass(slots=True)
class _Tally:
    """The running account of one request: attempts, what they met, notes for the answer."""

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
            max_attempts: HTTP attempts per request, not counting rejected output modes.
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
        self._max_attempts = max_attempts
        self._max_retry_after_s = max_retry_after_s
        self._backoff = (backoff_base_s, backoff_max_s)
        self._mode: FormatMode = response_format
        self._sleep = sleep
        self._clock = (clock or SystemClock()).monotonic
        # Jitter only spreads retries apart; it needs no cryptographic randomness.
        self._rng = rng or random.Random()  # noqa: S311
        self._where = _safe_url(str(self._client.base_url))

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
            The answer, with ``data`` parsed (not validated) when a schema was requested.

        Raises:
            LLMUnavailableError: no answer within the deadline or attempts, or a request the
                server refuses (bad key, unknown model).
            LLMOutputError: truncated output, or no JSON object where one was requested.
        """
        timeout_s = request.timeout_s or self._timeout_s
        deadline_s = request.deadline_s or self._deadline_s
        tally = _Tally(start=self._clock())
        while True:
            mode: FormatMode = self._mode if request.json_schema is not None else "text"
            elapsed = self._clock() - tally.start
            remaining = deadline_s - elapsed
            if remaining <= 0:  # only after output-mode negotiation used the time up
                tally.failures.append(f"the {deadline_s:.1f} s deadline passed")
                raise self._unavailable(request, tally, "")
            tally.attempts += 1
            try:
                completion = await self._client.chat.completions.create(
                    model=self._model,
                    messages=_messages(request, mode),
                    temperature=request.temperature,
                    max_tokens=request.max_tokens,
                    timeout=max(0.001, min(timeout_s, remaining)),
                    extra_body=_format_body(request, mode),
                )
                if not isinstance(completion, ChatCompletion) or not completion.choices:
                    raise _GarbledBodyError(completion)
            except openai.APIStatusError as exc:
                if request.json_schema is not None and _rejects_format(exc, mode):
                    self._downgrade(mode, exc, tally)
                    continue
                failure = self._status_failure(exc)
                cause: BaseException = exc
            except openai.APITimeoutError as exc:
                failure, cause = _Failure(f"timeout after {min(timeout_s, remaining):.1f} s"), exc
            except openai.APIConnectionError as exc:
                failure, cause = _Failure(f"connection error ({_root_cause(exc)})"), exc
            except (_GarbledBodyError, ValueError, AttributeError) as exc:
                # The openai client hands back text for a non-JSON body, raises ValueError
                # for broken JSON and builds unvalidated models, hence AttributeError.
                failure, cause = _Failure("invalid response body (not a chat completion)"), exc
            else:
                return self._answer(request, completion, mode, tally)

            tally.counted += 1
            tally.failures.append(failure.what)
            if not failure.retryable or tally.counted >= self._max_attempts:
                raise self._unavailable(request, tally, "") from cause
            delay = self._delay(tally.counted, failure.retry_after_s)
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

    def _answer(
        self,
        request: LLMRequest,
        completion: ChatCompletion,
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
                f"raw text: {_redact(_clip(text), self._client.api_key)!r}. "
                "Re-ask with a shorter or stricter prompt, or raise max_tokens."
            )
        usage = completion.usage
        latency_ms = (self._clock() - tally.start) * 1000.0
        log.debug(
            "llm.call.succeeded",
            purpose=request.purpose,
            model=self._model,
            attempts=tally.attempts,
            latency_ms=round(latency_ms, 1),
            response_format=mode,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
        )
        return LLMResponse(
            text=text,
            data=data,
            model=completion.model or self._model,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            latency_ms=latency_ms,
            attempts=tally.attempts,
            response_format=mode,
            finish_reason=finish,
            notes=tuple(tally.notes),
        )

    def _downgrade(self, mode: FormatMode, exc: openai.APIStatusError, tally: _Tally) -> None:
        """Remember that the server rejected ``mode`` and move to the next one."""
        nxt = _NEXT_MODE[mode]
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

    def _status_failure(self, exc: openai.APIStatusError) -> _Failure:
        """Classify an HTTP error status."""
        code = exc.status_code
        detail = _clip(_redact(_error_text(exc), self._client.api_key), 200)
        if code in _RETRYABLE_4XX or code >= 500:
            what = f"{code} {_RETRYABLE_4XX.get(code, 'server error')}"
            return _Failure(what, retry_after_s=parse_retry_after(exc.response.headers))
        if code == 401:
            what = f"401 unauthorized: the server at {self._where} rejected the API key; check it"
        elif code == 403:
            what = f"403 forbidden: the API key may not use model {self._model!r}"
        elif code == 404:
            what = (
                f"404 not found: the server at {self._where} does not know model "
                f"{self._model!r}, or the base URL is wrong (it usually ends in /v1); "
                "see the server's /v1/models"
            )
        else:
            what = f"{code} the server refused the request"
        return _Failure(f"{what} ({detail})" if detail else what, retryable=False)

    def _delay(self, failed: int, retry_after_s: float | None) -> float:
        """The wait before the next attempt, after ``failed`` failed attempts."""
        if retry_after_s is not None:
            return min(retry_after_s, self._max_retry_after_s)
        base, cap = self._backoff
        full = min(cap, base * 2.0 ** (failed - 1))
        return full / 2 + self._rng.uniform(0, full / 2)

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
            "Check that the server is up and the configuration right, or raise the deadline."
        )


class _GarbledBodyError(Exception):
    """The server answered 200 with something that is not a chat completion."""


async def list_models(client: AsyncOpenAI) -> list[str]:
    """The ids of the models the server lists at ``/v1/models``.

    Args:
        client: the OpenAI-compatible client.

    Returns:
        The model ids, in the server's order.

    Raises:
        LLMUnavailableError: the server could not be asked or refused.
    """
    try:
        return [model.id async for model in client.models.list()]
    except openai.APIError as exc:
        where = _safe_url(str(client.base_url))
        raise LLMUnavailableError(
            f"could not list the models of the server at {where}: "
            f"{_redact(_clip(str(exc), 200), client.api_key)}. Check that the server is up."
        ) from exc


async def resolve_model(client: AsyncOpenAI, configured: str | None) -> str:
    """The model to use: the configured one, else the first the server lists.

    Args:
        client: the OpenAI-compatible client.
        configured: the model named in the configuration, if any.

    Returns:
        The model name.

    Raises:
        LLMUnavailableError: no model is configured and the server lists none (or is down).
    """
    if configured:
        return configured
    models = await list_models(client)
    if not models:
        raise LLMUnavailableError(
            f"no model configured and the server at {_safe_url(str(client.base_url))} lists "
            "none; name one in the configuration"
        )
    return models[0]


def openai_chat_model(
    base_url: str,
    api_key: str | None,
    model: str,
    *,
    timeout_s: float = 60.0,
    deadline_s: float = 180.0,
    max_attempts: int = 4,
    max_retry_after_s: float = 30.0,
    sleep: Sleep = asyncio.sleep,
) -> OpenAIChatModel:
    """Build a client for ``base_url`` and the adapter around it.

    Args:
        base_url: the server's API root, e.g. ``http://127.0.0.1:8080/v1``.
        api_key: the key; None sends a dummy one (local servers ignore it).
        model: the model to ask.
        timeout_s: default limit of one HTTP call.
        deadline_s: default limit of all attempts together.
        max_attempts: HTTP attempts per request.
        max_retry_after_s: the longest ``Retry-After`` honoured.
        sleep: awaited between attempts.

    Returns:
        The adapter; ``await model.aclose()`` releases its connections.
    """
    client = AsyncOpenAI(
        base_url=base_url, api_key=api_key or _NO_KEY, max_retries=0, timeout=timeout_s
    )
    return OpenAIChatModel(
        client,
        model=model,
        timeout_s=timeout_s,
        deadline_s=deadline_s,
        max_attempts=max_attempts,
        max_retry_after_s=max_retry_after_s,
        sleep=sleep,
    )


async def connect(
    base_url: str | None,
    api_key: str | None,
    model: str | None,
    *,
    timeout_s: float = 60.0,
    **options: Any,
) -> OpenAIChatModel:
    """Build the adapter for ``base_url``, asking the server for its model when none is named.

    Args:
        base_url: the server's API root; None is the ``openai`` client's default endpoint.
        api_key: as for ``openai_chat_model``.
        model: the model to ask; None takes the first the server lists.
        timeout_s: default limit of one HTTP call.
        **options: passed to ``OpenAIChatModel`` (deadline_s, max_attempts, ...).

    Raises:
        LLMUnavailableError: no model was named and the server cannot list one.
    """
    client = AsyncOpenAI(
        base_url=base_url, api_key=api_key or _NO_KEY, max_retries=0, timeout=timeout_s
    )
    try:
        name = await resolve_model(client, model)
    except BaseException:
        await client.close()
        raise
    return OpenAIChatModel(client, model=name, timeout_s=timeout_s, **options)


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The JSON object in ``text``: all of it, else a fenced block, else the first ``{...}``.

    Args:
        text: a model's answer.

    Returns:
        The first JSON object found (not validated against any schema), or None.
    """
    candidates = [text.strip()]
    candidates += [m.group(1) for m in re.finditer(r"```[a-zA-Z]*\s*\n(.*?)```", text, re.S)]
    for candidate in candidates:
        found = _loads_object(candidate)
        if found is not None:
            return found
    for start in (i for i, char in enumerate(text) if char == "{"):
        end = _balanced_end(text, start)
        if end is not None:
            found = _loads_object(text[start:end])
            if found is not None:
                return found
    return None


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds to wait according to ``Retry-After-Ms`` or ``Retry-After`` (seconds or date).

    Args:
        headers: the response headers (case-insensitive mapping, as httpx gives).
        now: the current time, for HTTP dates.

    Returns:
        The wait in seconds (never negative), or None when no usable header is present.
    """
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value)
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        value = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, value) if math.isfinite(value) else None


def _messages(request: LLMRequest, mode: FormatMode) -> list[ChatCompletionMessageParam]:
    """The request's messages, with the schema spelled out when the server will not enforce it."""
    messages = list(request.messages)
    if request.json_schema is not None and mode != "json_schema":
        # json_object servers may ignore the attached schema (vLLM, Ollama), and OpenAI
        # insists the word JSON appear in the prompt, so the schema is stated in words too.
        schema = json.dumps(request.json_schema, separators=(",", ":"))
        hint = Message("system", _SCHEMA_INSTRUCTION.format(schema=schema))
        leading = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
        messages.insert(leading, hint)
    return [_message_param(m) for m in messages]


def _message_param(message: Message) -> ChatCompletionMessageParam:
    """One message in the client's typed shape."""
    if message.role == "system":
        return {"role": "system", "content": message.content}
    if message.role == "assistant":
        return {"role": "assistant", "content": message.content}
    return {"role": "user", "content": message.content}


def _format_body(request: LLMRequest, mode: FormatMode) -> dict[str, Any] | None:
    """The ``response_format`` to send, as extra body (``json_object`` carries a schema key
    the client's types do not know)."""
    schema = request.json_schema
    if schema is None or mode == "text":
        return None
    if mode == "json_schema":
        spec = {"name": request.schema_name, "schema": schema, "strict": False}
        return {"response_format": {"type": "json_schema", "json_schema": spec}}
    return {"response_format": {"type": "json_object", "schema": schema}}


def _rejects_format(exc: openai.APIStatusError, mode: FormatMode) -> bool:
    """Whether ``exc`` is the server refusing the structured-output ``mode``.

    llama.cpp's server answers 400; llama-cpp-python's answers 500 with its validation error
    (``Input should be 'text' or 'json_object'``), so a 500 naming response_format counts too.
    """
    if mode == "text" or exc.status_code not in (400, 422, 500):
        return False
    text = _error_text(exc).lower()
    return any(word in text for word in _FORMAT_WORDS)


def _error_text(exc: openai.APIStatusError) -> str:
    """The server's error message, as text."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        return str(message if message is not None else body)
    if body is not None:
        return str(body)
    try:
        return exc.response.text
    except Exception:  # a streamed body that cannot be read any more: the status must do
        return ""


def _loads_object(text: str) -> dict[str, Any] | None:
    """``text`` parsed as JSON when it is an object, else None."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _balanced_end(text: str, start: int) -> int | None:
    """The index after the brace closing the one at ``start``, skipping braces in strings."""
    depth = 0
    in_string = escaped = False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index + 1
    return None


def _root_cause(exc: BaseException) -> str:
    """The innermost cause's text, which names the real problem (refused, DNS...)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return _clip(str(exc) or type(exc).__name__, 120)


def _safe_url(url: str) -> str:
    """``url`` without user info, query or fragment, fit for logs and messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _redact(text: str, api_key: str | None) -> str:
    """``text`` with the API key blanked out, should a server echo it."""
    if api_key and len(api_key) >= 8:
        return text.replace(api_key, "***")
    return text


def _clip(text: str, limit: int = _CLIP) -> str:
    """``text`` cut to ``limit`` characters."""
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} more]"
