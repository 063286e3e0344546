"""Reaching a server: checking its base URL, building the client, finding its model.

The one place an ``AsyncOpenAI`` client is built. A base URL that cannot name an HTTP
server fails here at once with a ``ConfigError``, instead of every call being retried as a
network fault.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import openai
from openai import AsyncOpenAI, DefaultAioHttpClient

from orchestrator.llm.openai_adapter.adapter import OpenAIChatModel, Sleep
from orchestrator.llm.openai_adapter.redaction import clip, redact, safe_url
from state.errors import ConfigError, LLMUnavailableError

_NO_KEY = "no-key"


def check_base_url(base_url: str) -> str:
    """``base_url`` when it can name an OpenAI-compatible server, else a ``ConfigError``.

    Args:
        base_url: the server's API root as configured.

    Returns:
        The URL, stripped of surrounding blanks.

    Raises:
        ConfigError: no ``http``/``https`` scheme, no host, or a port that is not a number.
    """
    text = base_url.strip()
    fix = "set llm.base_url (or OPENAI_BASE_URL) to e.g. http://127.0.0.1:8080/v1"
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https"):
        scheme = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise ConfigError(
            f"LLM base URL {safe_url(text)!r} has {scheme}; it must start with http:// or "
            f"https://; {fix}"
        )
    try:
        host, _port = parts.hostname, parts.port
    except ValueError as exc:
        raise ConfigError(f"LLM base URL {text!r} is malformed ({exc}); {fix}") from exc
    if not host:
        raise ConfigError(f"LLM base URL {text!r} names no host; {fix}")
    return text


def make_client(base_url: str | None, api_key: str | None, *, timeout_s: float) -> AsyncOpenAI:
    """The client for ``base_url`` (None: the ``openai`` default endpoint), not retrying.

    Its HTTP transport is aiohttp (the ``openai[aiohttp]`` extra), not the default httpx
    pool: with hundreds of calls in flight in one worker, httpx's pool spends CPU on every
    request in proportion to the connections it holds, and ``bench/workers.py`` measured
    the workers' CPU per workflow a quarter lower with aiohttp at 1,000 in flight.

    Raises:
        ConfigError: ``base_url`` is malformed.
    """
    url = check_base_url(base_url) if base_url is not None else None
    return AsyncOpenAI(
        base_url=url,
        api_key=api_key or _NO_KEY,
        max_retries=0,
        timeout=timeout_s,
        http_client=DefaultAioHttpClient(timeout=timeout_s),
    )


# Answers to GET /models that mean "no OpenAI-compatible API here" rather than "down".
_NOT_AN_API = (404, 405)


def not_an_api(where: str, answered: str) -> str:
    """The message for an endpoint that answers, but not as an OpenAI-compatible API."""
    return (
        f"the endpoint {where} is not an OpenAI-compatible server (GET {where.rstrip('/')}"
        f"/models {answered}); point --base-url or OPENAI_BASE_URL at the API root "
        "(e.g. http://HOST:PORT/v1), or name the model with --model"
    )


async def list_models(client: AsyncOpenAI) -> list[str]:
    """The ids of the models the server lists at ``/v1/models``.

    Args:
        client: the OpenAI-compatible client.

    Returns:
        The model ids, in the server's order.

    Raises:
        LLMUnavailableError: the server could not be asked or refused, or what answered is
            not an OpenAI-compatible API (a 404, or a body that is not a list of models,
            such as a web page): the message says which.
    """
    where = safe_url(str(client.base_url))
    try:
        return [model.id async for model in client.models.list()]
    except openai.APIStatusError as exc:
        if exc.status_code in _NOT_AN_API:
            raise LLMUnavailableError(not_an_api(where, f"answered {exc.status_code}")) from exc
        raise LLMUnavailableError(
            f"could not list the models of the server at {where}: "
            f"{redact(clip(str(exc), 200), client.api_key)}. Check that the server is up."
        ) from exc
    except openai.APIError as exc:
        raise LLMUnavailableError(
            f"could not list the models of the server at {where}: "
            f"{redact(clip(str(exc), 200), client.api_key)}. Check that the server is up."
        ) from exc
    except (AttributeError, TypeError, KeyError, ValueError) as exc:
        # The client library fails this way on a body it cannot read as a model list.
        raise LLMUnavailableError(
            not_an_api(where, "did not answer with a list of models")
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
            f"no model configured and the server at {safe_url(str(client.base_url))} lists "
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

    Raises:
        ConfigError: ``base_url`` is malformed.
    """
    client = make_client(base_url, api_key, timeout_s=timeout_s)
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
        ConfigError: ``base_url`` is malformed.
        LLMUnavailableError: no model was named and the server cannot list one.
    """
    client = make_client(base_url, api_key, timeout_s=timeout_s)
    try:
        name = await resolve_model(client, model)
    except BaseException:
        await client.close()
        raise
    return OpenAIChatModel(client, model=name, timeout_s=timeout_s, **options)
