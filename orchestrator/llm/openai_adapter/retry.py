"""The retry policy: which failures are worth another request, and how long to wait first.

429, 408, 409 and most 5xx are transient: retried with exponential backoff and jitter,
honouring ``Retry-After`` up to a cap. 501 (not implemented) and 505 (HTTP version not
supported) say the server will never do what was asked, and other 4xx (bad key, unknown
model) need the configuration fixed: those fail at once. Every failure keeps the server's
own error text, which usually names the real problem.
"""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import openai

from orchestrator.llm.backoff import backoff_delay
from orchestrator.llm.openai_adapter.formats import error_text
from orchestrator.llm.openai_adapter.redaction import clip, redact
from state.errors import ConfigError

RETRYABLE_4XX = {408: "request timeout", 409: "conflict", 429: "rate limited"}
PERMANENT_5XX = {501: "not implemented", 505: "HTTP version not supported"}


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed request: what it met, and whether another request may help."""

    what: str
    retryable: bool = True
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many requests one call may make, and the waits between them.

    Attributes:
        max_attempts: HTTP requests per call that may fail for transport reasons.
        max_retry_after_s: the longest ``Retry-After`` honoured; longer ones are capped.
        backoff_base_s: the first backoff delay; it doubles per failure, with jitter.
        backoff_max_s: the longest backoff delay.
    """

    max_attempts: int = 4
    max_retry_after_s: float = 30.0
    backoff_base_s: float = 0.5
    backoff_max_s: float = 8.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.max_retry_after_s < 0 or self.backoff_base_s < 0:
            raise ConfigError(
                f"LLM retry limits must be positive: max_attempts={self.max_attempts}, "
                f"max_retry_after_s={self.max_retry_after_s}, "
                f"backoff_base_s={self.backoff_base_s}; fix the llm settings"
            )

    def delay(self, failed: int, retry_after_s: float | None, rng: random.Random) -> float:
        """The wait before the next request, after ``failed`` failed ones."""
        if retry_after_s is not None:
            return min(retry_after_s, self.max_retry_after_s)
        return backoff_delay(failed, self.backoff_base_s, self.backoff_max_s, rng)


def status_failure(
    exc: openai.APIStatusError, *, where: str, model: str, api_key: str | None
) -> Failure:
    """Classify an HTTP error status, keeping the server's text (key blanked, clipped)."""
    code = exc.status_code
    detail = clip(redact(error_text(exc), api_key), 200)
    if code in RETRYABLE_4XX or (code >= 500 and code not in PERMANENT_5XX):
        what = f"{code} {RETRYABLE_4XX.get(code, 'server error')}"
        return Failure(
            f"{what} ({detail})" if detail else what,
            retry_after_s=parse_retry_after(exc.response.headers),
        )
    if code == 401:
        what = f"401 unauthorized: the server at {where} rejected the API key; check it"
    elif code == 403:
        what = f"403 forbidden: the API key may not use model {model!r}"
    elif code == 404:
        what = (
            f"404 not found: the server at {where} does not know model "
            f"{model!r}, or the base URL is wrong (it usually ends in /v1); "
            "see the server's /v1/models"
        )
    elif code in PERMANENT_5XX:
        what = (
            f"{code} {PERMANENT_5XX[code]}: the server at {where} cannot serve this request "
            "at all; check the base URL points at an OpenAI-compatible API"
        )
    else:
        what = f"{code} the server refused the request"
    return Failure(f"{what} ({detail})" if detail else what, retryable=False)


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


def timed_out(exc: openai.APITimeoutError) -> bool:
    """Whether a timeout the client reports is one, not a connection fault it misnames.

    The aiohttp transport turns every ``aiohttp.ClientConnectionError`` into a connect
    timeout, so a refused connection or a server that hung up would read "timeout after
    60 s"; its real timeouts (``aiohttp.ServerTimeoutError``, ``TimeoutError``) and the
    httpx transport's keep the name.
    """
    cause: BaseException | None = exc.__cause__
    while cause is not None:
        if isinstance(cause, TimeoutError):  # aiohttp.ServerTimeoutError is one too
            return True
        if isinstance(cause, aiohttp.ClientConnectionError):
            return False
        cause = cause.__cause__
    return True
