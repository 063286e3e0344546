"""A real OpenAI-compatible HTTP server on loopback, with faults on demand.

It speaks ``POST /v1/chat/completions`` and ``GET /v1/models`` from a background thread, so
the adapter is tested through the real ``openai`` client and a real socket::

    with FakeOpenAIServer() as server:
        server.push(Status(429, headers={"Retry-After": "1"}), Content('{"ok": true}'))
        model = openai_chat_model(server.base_url, "sk-test", "fake-model")
        ...
        assert server.requests[0].body["response_format"]["type"] == "json_schema"

Each chat request takes the next scripted reply from the queue, else asks the ``responder``;
with neither, it answers 500 "no scripted reply left" and counts the request in
``unexpected`` so a fixture can fail the test. ``reject_formats`` makes it refuse some
``response_format`` types the way llama.cpp does, before the queue is consulted.

Each response closes its connection, so a test that stops the server sees the next call
fail; ``keep_alive=True`` keeps connections open across requests (HTTP/1.1), as llama.cpp's
server and OpenAI's do, for benchmarks that should not pay a TCP connect per call.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Content:
    """A chat completion whose message is ``text``."""

    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 11
    completion_tokens: int = 7
    model: str | None = None


def truncated(text: str) -> Content:
    """A completion cut off at the token limit (``finish_reason="length"``)."""
    return Content(text, finish_reason="length")


@dataclass(frozen=True)
class Status:
    """An HTTP error: ``status`` with a JSON (or given) body and headers."""

    status: int
    body: str | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RawBody:
    """Bytes sent as they are, e.g. a body that is not JSON at all."""

    body: bytes
    status: int = 200
    content_type: str = "application/json"


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` (longer than the client's timeout, usually), then send ``then``."""

    seconds: float
    then: Reply = field(default_factory=lambda: Content('{"late": true}'))


Reply = Content | Status | RawBody | Delay
Responder = Callable[[dict[str, Any]], Reply]


@dataclass(frozen=True)
class RecordedRequest:
    """A request the server received."""

    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: dict[str, Any]

    @property
    def response_format(self) -> dict[str, Any] | None:
        """The request's ``response_format``, if any."""
        value = self.body.get("response_format")
        return value if isinstance(value, dict) else None


def llama_cpp_rejection(kind: str) -> Status:
    """The error llama.cpp's server sends for a ``response_format`` type it does not take."""
    message = (
        f"response_format type '{kind}' is not supported: Input should be 'text' or 'json_object'"
    )
    body = {"error": {"message": message, "type": "invalid_request_error", "code": 400}}
    return Status(400, body)


class FakeOpenAIServer:
    """The server; a context manager that starts and stops it."""

    def __init__(
        self,
        replies: Iterable[Reply] = (),
        *,
        responder: Responder | None = None,
        models: Iterable[str] = ("fake-model",),
        reject_formats: Iterable[str] = (),
        reject_status: int = 400,
        keep_alive: bool = False,
    ) -> None:
        self.keep_alive = keep_alive
        self._queue: deque[Reply] = deque(replies)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.responder = responder
        self.models = list(models)
        self.reject_formats = set(reject_formats)
        self.reject_status = reject_status
        self.requests: list[RecordedRequest] = []
        self.unexpected = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """The API root for clients, ``http://127.0.0.1:PORT/v1``."""
        if self._httpd is None:
            raise RuntimeError("the fake server is not running")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The chat-completion requests received so far."""
        with self._lock:
            return [r for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def remaining(self) -> int:
        """Scripted replies not yet sent."""
        with self._lock:
            return len(self._queue)

    def push(self, *replies: Reply) -> None:
        """Queue replies for the next chat requests."""
        with self._lock:
            self._queue.extend(replies)

    def start(self) -> FakeOpenAIServer:
        """Bind a free loopback port and serve from a daemon thread."""
        attrs: dict[str, Any] = {"fake": self}
        if self.keep_alive:
            # Without TCP_NODELAY, a kept-alive connection's body waits out the client's
            # delayed ACK of the headers (40 ms on Linux).
            attrs["protocol_version"] = "HTTP/1.1"
            attrs["disable_nagle_algorithm"] = True
        handler = type("Handler", (_Handler,), attrs)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; delayed replies are abandoned. Safe to call twice."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        """What to answer a chat request with."""
        response_format = body.get("response_format")
        kind = response_format.get("type") if isinstance(response_format, dict) else None
        if kind in self.reject_formats:
            rejection = llama_cpp_rejection(str(kind))
            return Status(self.reject_status, rejection.body)
        with self._lock:
            if self._queue:
                return self._queue.popleft()
            if self.responder is None:
                self.unexpected += 1
                return Status(500, {"error": {"message": "fake_openai: no scripted reply left"}})
        return self.responder(body)

    def _sleep(self, seconds: float) -> bool:
        """Wait, unless the server stops first; True when it did not."""
        return not self._stopping.wait(seconds)


class _Handler(BaseHTTPRequestHandler):
    """Answers one request from the fake's script."""

    fake: FakeOpenAIServer
    server_version = "fake-openai/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests read ``requests`` instead."""

    def do_GET(self) -> None:
        """Serve ``/v1/models``."""
        self.fake._record(RecordedRequest("GET", self.path, _headers(self), {}))
        if self.path.rstrip("/").endswith("/models"):
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"}
                for m in self.fake.models
            ]
            self._send_json(200, {"object": "list", "data": data})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        """Serve ``/v1/chat/completions`` from the script."""
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {"_unparsed": raw.decode("utf-8", "replace")}
        self.fake._record(RecordedRequest("POST", self.path, _headers(self), body))
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": f"no route {self.path}"}})
            return
        reply = self.fake._next_reply(body)
        while isinstance(reply, Delay):
            if not self.fake._sleep(reply.seconds):
                return
            reply = reply.then
        # A client that timed out has hung up: exactly what a delay is for.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._send_reply(reply, body)

    def _send_reply(self, reply: Content | Status | RawBody, request: dict[str, Any]) -> None:
        if isinstance(reply, Content):
            self._send_json(200, _completion(reply, request))
        elif isinstance(reply, Status):
            body = reply.body if reply.body is not None else {"error": {"message": "fault"}}
            if isinstance(body, dict):
                self._send_json(reply.status, body, reply.headers)
            else:
                self._send(reply.status, body.encode(), "text/plain", reply.headers)
        else:
            self._send(reply.status, reply.body, reply.content_type, {})

    def _send_json(
        self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers or {})

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if not self.fake.keep_alive:
            self.send_header("Connection", "close")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _headers(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    """The request's headers, names in lower case."""
    return {name.lower(): value for name, value in handler.headers.items()}


def _completion(reply: Content, request: dict[str, Any]) -> dict[str, Any]:
    """A chat-completion object as OpenAI sends it."""
    return {
        "id": f"chatcmpl-fake-{time.monotonic_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": reply.model or request.get("model") or "fake-model",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        },
    }
