"""Suite-wide guards (no network beyond loopback, no real API keys, no stray LLM) and servers."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from orchestrator.composition import EMBEDDED_CONTEXT_TOKENS
from orchestrator.llm.local_server import LocalModelServer

from support.postgres import PostgresServer, unavailable_reason
from support.tiers import tier_missing

# A developer's OTEL_* settings would switch tracing on (orchestrator.telemetry) in every CLI
# test and in the processes tests start, so the session drops them before any test module
# copies the environment.
for _name in [n for n in os.environ if n.startswith("OTEL_")]:
    del os.environ[_name]

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # a unix socket path
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: resolving it would already reach out


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if not _is_local(address):
        raise AssertionError(f"test tried to reach {address!r}: only loopback is allowed")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    if not _is_local(address):
        raise AssertionError(f"test tried to reach {address!r}: only loopback is allowed")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def _loopback_only() -> Iterator[None]:
    """Any connection to a non-loopback address (a remote LLM, a hub) fails the test."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign,assignment]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign,assignment]
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def _structlog_restored() -> Iterator[None]:
    """Every test starts with the session's structlog setup.

    The CLI's entry points configure structlog for their own stream and level; a test that
    invokes one would otherwise leave a level filter behind that hides later tests' events
    from ``capture_logs``.
    """
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(autouse=True)
def _no_llm_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never inherit a real key, endpoint or store URL from the developer's shell."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_MODEL", "ORCHESTRATOR_STORE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def local_llm() -> Iterator[Any]:
    """One real SmolLM2 server (llama-cpp-python on loopback) shared by the real-model tier.

    Its context window is the embedded default's, so whole-workflow prompts fit as they do
    for a user.
    """
    with LocalModelServer(n_ctx=EMBEDDED_CONTEXT_TOKENS) as server:
        yield server


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the session, on a Unix socket in a temp dir; skips without one."""
    reason = unavailable_reason()
    if reason is not None:
        tier_missing(f"PostgreSQL tier skipped: {reason}")
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()


@pytest.fixture(scope="session")
def env_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's cache of project environments: a second build of one is a cache hit."""
    return tmp_path_factory.getbasetemp() / "project-envs"
