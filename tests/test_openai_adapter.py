"""The OpenAI-compatible adapter against a real HTTP server on loopback, through the real client."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import structlog
from openai import AsyncOpenAI

from orchestrator.llm.openai_adapter import (
    OpenAIChatModel,
    connect,
    list_models,
    openai_chat_model,
    parse_json_object,
    parse_retry_after,
    resolve_model,
)
from orchestrator.llm.protocol import LLMRequest, Message
from state.errors import ConfigError, LLMOutputError, LLMUnavailableError

from support.fake_openai import (
    Content,
    Delay,
    FakeOpenAIServer,
    RawBody,
    Status,
    truncated,
)

API_KEY = "sk-test-secret-4f9a1c"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"action": {"type": "string"}, "confidence": {"type": "number"}},
    "required": ["action"],
}
OK = '{"action": "invoke_step2", "confidence": 0.9}'


class SleepRecorder:
    """An injected ``sleep`` that records the delays asked for and returns at once."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def ask(schema: dict[str, Any] | None = SCHEMA, **options: Any) -> LLMRequest:
    """A decision-like request."""
    messages = (Message("system", "You route workflows."), Message("user", "What next?"))
    return LLMRequest(messages=messages, json_schema=schema, purpose="decision", **options)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    """The fake server; the test fails if a request found no scripted reply."""
    with FakeOpenAIServer() as fake:
        yield fake
    assert fake.unexpected == 0, f"{fake.unexpected} request(s) found no scripted reply"


@pytest.fixture
def sleeps() -> SleepRecorder:
    """The adapter's sleep."""
    return SleepRecorder()


def make_model(server: FakeOpenAIServer, sleeps: SleepRecorder, **options: Any) -> OpenAIChatModel:
    """An adapter on the fake server with short limits."""
    settings: dict[str, Any] = {"timeout_s": 2.0, "deadline_s": 10.0, "max_attempts": 3}
    settings.update(options)
    return openai_chat_model(server.base_url, API_KEY, "fake-model", sleep=sleeps, **settings)


@pytest.fixture
async def model(server: FakeOpenAIServer, sleeps: SleepRecorder) -> AsyncIterator[OpenAIChatModel]:
    """The adapter under test, closed afterwards."""
    adapter = make_model(server, sleeps)
    yield adapter
    await adapter.aclose()


async def test_json_schema_answer_is_parsed_with_usage(
    server: FakeOpenAIServer, model: OpenAIChatModel
) -> None:
    """A schema request sends json_schema mode and returns the parsed object with usage."""
    server.push(Content(OK, prompt_tokens=21, completion_tokens=5))

    response = await model.complete(ask(max_tokens=64, temperature=0.2))

    assert response.data == {"action": "invoke_step2", "confidence": 0.9}
    assert response.text == OK
    assert (response.prompt_tokens, response.completion_tokens) == (21, 5)
    assert response.attempts == 1
    assert response.response_format == "json_schema"
    assert response.finish_reason == "stop"
    assert response.model == "fake-model"
    assert response.latency_ms > 0
    (sent,) = server.chat_requests
    assert sent.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": SCHEMA, "strict": False},
    }
    assert sent.body["messages"] == [
        {"role": "system", "content": "You route workflows."},
        {"role": "user", "content": "What next?"},
    ]
    assert (sent.body["model"], sent.body["max_tokens"], sent.body["temperature"]) == (
        "fake-model",
        64,
        0.2,
    )
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"


async def test_plain_request_sends_no_response_format(
    server: FakeOpenAIServer, model: OpenAIChatModel
) -> None:
    """A request without a schema sends no response_format and returns text without data."""
    server.push(Content("Plan looks fine."))

    response = await model.complete(ask(schema=None))

    assert (response.text, response.data, response.response_format) == (
        "Plan looks fine.",
        None,
        "text",
    )
    assert "response_format" not in server.chat_requests[0].body


async def test_429_honours_retry_after_seconds(
    server: FakeOpenAIServer, model: OpenAIChatModel, sleeps: SleepRecorder
) -> None:
    """A 429 with Retry-After: 1 waits exactly one second, then the retry succeeds."""
    server.push(Status(429, headers={"Retry-After": "1"}), Content(OK))

    response = await model.complete(ask())

    assert sleeps.calls == [1.0]
    assert response.attempts == 2
    assert len(server.chat_requests) == 2
    assert response.notes == ("attempt 1: 429 rate limited (fault)",)


async def test_429_honours_retry_after_http_date(
    server: FakeOpenAIServer, model: OpenAIChatModel, sleeps: SleepRecorder
) -> None:
    """A Retry-After given as an HTTP date is turned into the seconds until that date."""
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=3), usegmt=True)
    server.push(Status(429, headers={"Retry-After": when}), Content(OK))

    await model.complete(ask())

    (delay,) = sleeps.calls
    assert 1.0 < delay <= 3.0


async def test_retry_after_is_capped(server: FakeOpenAIServer, sleeps: SleepRecorder) -> None:
    """A Retry-After longer than max_retry_after_s waits only the cap."""
    server.push(Status(429, headers={"Retry-After": "3600"}), Content(OK))
    async with make_model(server, sleeps, max_retry_after_s=2.0) as model:
        await model.complete(ask())

    assert sleeps.calls == [2.0]


async def test_retry_after_past_the_deadline_gives_up_at_once(
    server: FakeOpenAIServer, sleeps: SleepRecorder
) -> None:
    """A wait that would end after the deadline is not slept: the call fails straight away."""
    server.push(Status(429, headers={"Retry-After": "30"}))
    async with make_model(server, sleeps, max_retry_after_s=60.0, deadline_s=5.0) as model:
        with pytest.raises(LLMUnavailableError, match=r"would pass the 5\.0 s deadline"):
            await model.complete(ask())

    assert sleeps.calls == []
    assert len(server.chat_requests) == 1


async def test_500_is_retried_with_jittered_backoff(
    server: FakeOpenAIServer, model: OpenAIChatModel, sleeps: SleepRecorder
) -> None:
    """A 500 is retried after a backoff of half to all of the 0.5 s base, then succeeds."""
    server.push(Status(500), Content(OK))

    response = await model.complete(ask())

    assert response.data is not None
    assert response.attempts == 2
    (delay,) = sleeps.calls
    assert 0.25 <= delay <= 0.5


async def test_exhausted_attempts_say_what_each_met(
    server: FakeOpenAIServer, model: OpenAIChatModel, sleeps: SleepRecorder
) -> None:
    """After max_attempts failures the error lists every attempt's failure and the time taken."""
    server.push(Status(500), Status(503, headers={"Retry-After": "0"}), Status(429))

    with pytest.raises(LLMUnavailableError) as caught:
        await model.complete(ask())

    message = str(caught.value)
    assert "3 attempts in " in message
    assert "500 server error (fault), 503 server error (fault), 429 rate limited" in message
    assert "decision" in message
    assert len(server.chat_requests) == 3
    assert len(sleeps.calls) == 2
    assert sleeps.calls[1] == 0.0


async def test_slow_replies_time_out_until_the_deadline(
    server: FakeOpenAIServer, sleeps: SleepRecorder
) -> None:
    """Replies slower than the per-call timeout are retried, then the deadline ends the call."""
    server.responder = lambda body: Delay(5.0)
    started = time.monotonic()
    async with make_model(server, sleeps, timeout_s=0.2, deadline_s=1.0, max_attempts=10) as model:
        with pytest.raises(LLMUnavailableError, match=r"timeout after 0\.2 s") as caught:
            await model.complete(ask())

    # Well before the 5 s reply: the deadline ended the call (a loaded machine adds slack).
    assert time.monotonic() - started < 4.0
    assert len(server.chat_requests) >= 2
    assert f"{len(server.chat_requests)} attempts" in str(caught.value)
    assert "1.0 s deadline" in str(caught.value)


async def test_one_slow_reply_is_retried(server: FakeOpenAIServer, sleeps: SleepRecorder) -> None:
    """A single reply slower than the timeout is abandoned and the retry answers."""
    server.push(Delay(3.0, Content('{"late": true}')), Content(OK))
    async with make_model(server, sleeps, timeout_s=0.2) as model:
        response = await model.complete(ask())

    assert response.data == {"action": "invoke_step2", "confidence": 0.9}
    assert response.attempts == 2


async def test_truncated_json_is_an_output_error(
    server: FakeOpenAIServer, model: OpenAIChatModel
) -> None:
    """finish_reason "length" raises LLMOutputError with the raw text, and is not retried."""
    server.push(truncated('{"action": "invoke_st'))

    with pytest.raises(LLMOutputError, match="truncated at max_tokens=512") as caught:
        await model.complete(ask())

    assert '{"action": "invoke_st' in str(caught.value)
    assert len(server.chat_requests) == 1


async def test_prose_instead_of_json_is_an_output_error(
    server: FakeOpenAIServer, model: OpenAIChatModel
) -> None:
    """An answer with no JSON object when a schema was requested raises LLMOutputError."""
    server.push(Content("I would invoke step 2."))

    with pytest.raises(LLMOutputError, match="no JSON object") as caught:
        await model.complete(ask())

    assert "I would invoke step 2." in str(caught.value)


async def test_json_array_is_not_an_object(
    server: FakeOpenAIServer, model: OpenAIChatModel
) -> None:
    """Valid JSON that is not an object (here an array) is an output error too."""
    server.push(Content('["invoke_step2"]'))

    with pytest.raises(LLMOutputError):
        await model.complete(ask())


async def test_empty_text_answer_is_an_output_error(
    server: FakeOpenAIServer, model: OpenAIChatModel
) -> None:
    """An empty answer to a plain-text request raises LLMOutputError."""
    server.push(Content(""))

    with pytest.raises(LLMOutputError, match="empty answer"):
        await model.complete(ask(schema=None))


@pytest.mark.parametrize(
    "garbage",
    [
        RawBody(b"{not json at all", content_type="application/json"),
        RawBody(b"<html>502 Bad Gateway</html>", content_type="text/html"),
        RawBody(b'{"object": "error"}'),
        RawBody(b'{"choices": []}'),
        RawBody(b'{"choices": [{"finish_reason": "stop"}]}'),
        RawBody(b'[{"choices": []}]'),
    ],
    ids=["broken-json", "html", "not-a-completion", "no-choices", "no-message", "an-array"],
)
async def test_invalid_http_body_is_retried(
    server: FakeOpenAIServer, model: OpenAIChatModel, garbage: RawBody
) -> None:
    """A 200 whose body is not a chat completion counts as a transport fault and is retried."""
    server.push(garbage, Content(OK))

    response = await model.complete(ask())

    assert response.attempts == 2
    assert response.notes == ("attempt 1: invalid response body (not a chat completion)",)


async def test_a_sparse_completion_is_read_with_what_it_has(
    server: FakeOpenAIServer, model: OpenAIChatModel
) -> None:
    """Null usage, no model and fields the adapter does not know are fine; counts become 0."""
    body = {
        "id": "x",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "x": 1}],
        "usage": {"prompt_tokens": None, "completion_tokens": 3, "extra": {"a": 1}},
        "system_fingerprint": None,
    }
    server.push(RawBody(json.dumps(body).encode()))

    response = await model.complete(ask(schema=None))

    assert (response.text, response.finish_reason, response.attempts) == ("hi", None, 1)
    assert (response.prompt_tokens, response.completion_tokens) == (0, 3)
    assert response.model == "fake-model"  # the model asked for, as the body names none
    server.push(RawBody(b'{"choices": [{"message": {"content": "ok"}}], "usage": null}'))
    assert (await model.complete(ask(schema=None))).prompt_tokens == 0


async def test_invalid_http_body_every_time_is_unavailable(
    server: FakeOpenAIServer, model: OpenAIChatModel
) -> None:
    """A server that never sends a valid body ends in LLMUnavailableError, not an output error."""
    server.responder = lambda body: RawBody(b"\x00\xff garbage")

    with pytest.raises(LLMUnavailableError, match="invalid response body"):
        await model.complete(ask())


@pytest.mark.parametrize("status", [400, 422, 500], ids=["llama.cpp", "422", "llama-cpp-python"])
async def test_rejected_json_schema_falls_back_to_json_object_and_remembers(
    server: FakeOpenAIServer, model: OpenAIChatModel, sleeps: SleepRecorder, status: int
) -> None:
    """A server refusing json_schema gets json_object with the schema, now and on later calls."""
    server.reject_formats = {"json_schema"}
    server.reject_status = status
    server.push(Content(OK), Content('{"action": "escalate"}'))

    first = await model.complete(ask())
    second = await model.complete(ask())

    formats = [r.response_format for r in server.chat_requests]
    assert [f["type"] if f else None for f in formats] == [
        "json_schema",
        "json_object",
        "json_object",
    ]
    assert formats[1] == {"type": "json_object", "schema": SCHEMA}
    assert (first.response_format, first.attempts) == ("json_object", 2)
    assert (second.response_format, second.attempts) == ("json_object", 1)
    assert second.data == {"action": "escalate"}
    assert model.structured_mode == "json_object"
    assert sleeps.calls == []
    hint = server.chat_requests[1].body["messages"][1]
    assert hint["role"] == "system"
    assert '"required":["action"]' in hint["content"]


async def test_text_fallback_extracts_a_fenced_json_block(
    server: FakeOpenAIServer, model: OpenAIChatModel
) -> None:
    """With both JSON modes refused, plain text with the schema in words is sent and parsed."""
    server.reject_formats = {"json_schema", "json_object"}
    server.push(Content(f"Sure! Here it is:\n```json\n{OK}\n```\nAnything else?"))

    response = await model.complete(ask())

    assert response.data == {"action": "invoke_step2", "confidence": 0.9}
    assert response.response_format == "text"
    last = server.chat_requests[-1]
    assert last.response_format is None
    assert [m["role"] for m in last.body["messages"]] == ["system", "system", "user"]
    assert "JSON Schema" in last.body["messages"][1]["content"]


async def test_401_fails_fast_with_a_clear_message(
    server: FakeOpenAIServer, model: OpenAIChatModel, sleeps: SleepRecorder
) -> None:
    """A 401 is not retried and says the key was rejected, without repeating the key."""
    server.push(Status(401, {"error": {"message": f"Incorrect API key provided: {API_KEY}"}}))

    with pytest.raises(LLMUnavailableError, match="rejected the API key") as caught:
        await model.complete(ask())

    assert "1 attempt in" in str(caught.value)
    assert API_KEY not in str(caught.value)
    assert len(server.chat_requests) == 1
    assert sleeps.calls == []


async def test_404_names_the_unknown_model(
    server: FakeOpenAIServer, model: OpenAIChatModel, sleeps: SleepRecorder
) -> None:
    """A 404 is not retried and names the model the server does not know."""
    server.push(Status(404, {"error": {"message": "model 'fake-model' not found"}}))

    with pytest.raises(LLMUnavailableError, match="does not know model 'fake-model'"):
        await model.complete(ask())

    assert sleeps.calls == []


@pytest.mark.parametrize("status", [501, 505])
async def test_501_and_505_are_not_retried(
    server: FakeOpenAIServer, model: OpenAIChatModel, sleeps: SleepRecorder, status: int
) -> None:
    """A 501 or 505 says the server can never serve the call: one request, no retry."""
    server.push(Status(status, {"error": {"message": "chat completions are not served here"}}))

    with pytest.raises(LLMUnavailableError, match=f"{status} .*not served here") as caught:
        await model.complete(ask())

    assert len(server.chat_requests) == 1
    assert caught.value.requests == 1
    assert sleeps.calls == []


async def test_a_5xx_keeps_the_servers_error_text(
    server: FakeOpenAIServer, model: OpenAIChatModel
) -> None:
    """Each 5xx's own message (here a CUDA out-of-memory) is kept in the recorded error."""
    oom = {"error": {"message": "CUDA out of memory while loading the model"}}
    server.push(Status(500, oom), Status(503, oom), Status(502, "bad gateway upstream"))

    with pytest.raises(LLMUnavailableError) as caught:
        await model.complete(ask())

    message = str(caught.value)
    assert "500 server error (CUDA out of memory while loading the model)" in message
    assert "503 server error (CUDA out of memory" in message
    assert "502 server error (bad gateway upstream)" in message


async def test_a_failed_call_says_how_many_requests_it_made(
    server: FakeOpenAIServer, model: OpenAIChatModel
) -> None:
    """The error of a call that failed after retries carries the real request count."""
    server.push(Status(500), Status(500), Status(500))

    with pytest.raises(LLMUnavailableError) as caught:
        await model.complete(ask())

    assert caught.value.requests == len(server.chat_requests) == 3


async def test_max_requests_caps_every_request_of_a_call(
    server: FakeOpenAIServer, model: OpenAIChatModel
) -> None:
    """A request capped at 2 sends 2 HTTP requests although the adapter would try 3."""
    server.push(Status(500), Status(500), Content(OK))

    with pytest.raises(LLMUnavailableError) as caught:
        await model.complete(ask(max_requests=2))

    assert caught.value.requests == len(server.chat_requests) == 2
    assert server.remaining == 1


async def test_rejected_output_modes_count_against_the_cap(sleeps: SleepRecorder) -> None:
    """A format rejection is a real request: with a cap of 1 it ends the call, counted."""
    with FakeOpenAIServer(reject_formats={"json_schema"}) as fake:
        async with make_model(fake, sleeps) as model:
            with pytest.raises(LLMUnavailableError, match="cap of 1 requests") as caught:
                await model.complete(ask(max_requests=1))
            fake.push(Content(OK))
            response = await model.complete(ask(max_requests=1))

    assert caught.value.requests == 1
    assert response.attempts == 1
    assert len(fake.chat_requests) == 2


@pytest.mark.parametrize(
    "url",
    ["127.0.0.1:8080/v1", "ftp://127.0.0.1/v1", "http:///v1", "http://", "", "http://h:port/v1"],
)
async def test_a_malformed_base_url_is_a_config_error_at_once(url: str) -> None:
    """No scheme, a non-HTTP scheme, no host or a bad port: ConfigError before any request."""
    with pytest.raises(ConfigError, match="base URL"):
        openai_chat_model(url, None, "m")
    with pytest.raises(ConfigError, match="base URL"):
        await connect(url, None, None)


async def test_connection_refused_is_retried_then_unavailable(sleeps: SleepRecorder) -> None:
    """A server that is not listening is retried max_attempts times, then reported."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with openai_chat_model(
        f"http://127.0.0.1:{port}/v1", None, "m", max_attempts=2, sleep=sleeps
    ) as model:
        with pytest.raises(LLMUnavailableError, match=r"2 attempts in .*connection error"):
            await model.complete(ask())

    assert len(sleeps.calls) == 1


async def test_a_server_that_hangs_up_is_a_connection_error_not_a_timeout(
    sleeps: SleepRecorder,
) -> None:
    """A server that reads the request and closes the socket is reported as what it did.

    The aiohttp transport names every connection fault a connect timeout; the adapter
    looks at the cause, so the message does not send the user after a slow server.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def hang_up() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    try:
        async with openai_chat_model(
            f"http://127.0.0.1:{port}/v1", None, "m", max_attempts=2, sleep=sleeps
        ) as model:
            with pytest.raises(LLMUnavailableError) as caught:
                await model.complete(ask())
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert "2 attempts in" in str(caught.value)
    assert "connection error" in str(caught.value)
    assert "timeout" not in str(caught.value)


async def test_a_retrying_client_is_made_not_to_retry(
    server: FakeOpenAIServer, sleeps: SleepRecorder
) -> None:
    """A client passed with max_retries > 0 is copied with 0, so every HTTP attempt is ours."""
    server.push(Status(500), Content(OK))
    client = AsyncOpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=5)
    async with OpenAIChatModel(client, model="fake-model", sleep=sleeps) as model:
        response = await model.complete(ask())

    assert response.attempts == len(server.chat_requests) == 2
    assert len(sleeps.calls) == 1


async def test_logs_have_stable_events_and_never_the_key(
    server: FakeOpenAIServer, model: OpenAIChatModel
) -> None:
    """Retries and failures log llm.call.retry / llm.call.failed, and no log holds the key."""
    server.push(Status(500), Status(500), Status(500))
    server.push(Status(401, {"error": {"message": f"bad key {API_KEY}"}}))

    with structlog.testing.capture_logs() as logs:
        for _ in range(2):
            with pytest.raises(LLMUnavailableError):
                await model.complete(ask())

    events = [entry["event"] for entry in logs]
    assert events == ["llm.call.retry", "llm.call.retry", "llm.call.failed", "llm.call.failed"]
    assert logs[0]["failure"] == "500 server error (fault)"
    assert API_KEY not in repr(logs)


async def test_list_models_and_resolve_model(server: FakeOpenAIServer) -> None:
    """The server's models are listed; an unset model resolves to the first, a set one stays."""
    server.models = ["first-model", "second-model"]
    async with AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
        assert await list_models(client) == ["first-model", "second-model"]
        assert await resolve_model(client, None) == "first-model"
        assert await resolve_model(client, "chosen") == "chosen"


async def test_resolve_model_with_no_models_listed(server: FakeOpenAIServer) -> None:
    """A server listing no models and no configured model is a clear LLMUnavailableError."""
    server.models = []
    async with AsyncOpenAI(base_url=server.base_url, api_key="x", max_retries=0) as client:
        with pytest.raises(LLMUnavailableError, match="lists none"):
            await resolve_model(client, None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('Here:\n```\n{"a": 1}\n```', {"a": 1}),
        ('Answer: {"a": "x}y", "b": {"c": 1}} and {"d": 2}', {"a": "x}y", "b": {"c": 1}}),
        ('{not json} but then {"a": "\\"}"}', {"a": '"}'}),
        ("[1, 2]", None),
        ("no braces here", None),
        ('{"unclosed": 1', None),
    ],
    ids=["whole", "fence", "balanced", "skip-broken", "array", "prose", "unclosed"],
)
def test_parse_json_object(text: str, expected: dict[str, Any] | None) -> None:
    """The JSON object is found whole, in a fence, or as the first balanced {...} that parses."""
    assert parse_json_object(text) == expected


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, 10.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
    ids=["seconds", "millis", "date", "past-date", "garbage", "absent"],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    """Retry-After is read as milliseconds, seconds or an HTTP date; past dates mean now."""
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)
    assert parse_retry_after(headers, now=now) == expected


@pytest.mark.parametrize("keep_alive", [False, True])
def test_the_fake_server_keeps_connections_alive_only_when_asked(keep_alive: bool) -> None:
    """By default each answer closes its connection; ``keep_alive`` serves two on one."""
    body = json.dumps({"model": "fake-model", "messages": []})
    with FakeOpenAIServer([Content(OK), Content(OK)], keep_alive=keep_alive) as fake:
        port = int(fake.base_url.rsplit(":", 1)[1].split("/")[0])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("POST", "/v1/chat/completions", body)
            first = conn.getresponse()
            first.read()
            assert (first.getheader("Connection") == "close") is not keep_alive
            if keep_alive:
                conn.request("POST", "/v1/chat/completions", body)
                second = conn.getresponse()
                assert second.status == 200
                assert json.loads(second.read())["choices"][0]["message"]["content"] == OK
        finally:
            conn.close()
