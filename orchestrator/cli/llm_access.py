"""Opening the LLM for a command, with failures to connect said plainly.

Connecting asks the server for its model list when no model is named. A dead server, or
something at the URL that is not an OpenAI-compatible API (a web page, a 404), fails there;
``enter_llm`` turns every such failure into one ``LLMUnavailableError`` that says which it
was. ``decide`` then goes on without the LLM (``UnreachableModel``), falling back exactly as
it does when a call fails later.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from urllib.parse import urlsplit, urlunsplit

from orchestrator.composition import LLMTarget, open_chat_model
from orchestrator.llm.protocol import ChatModel, LLMRequest, LLMResponse
from state.config import LLMSettings
from state.errors import LLMError, LLMUnavailableError, OrchestratorError

# Answers to GET /models that mean "no OpenAI-compatible API here" rather than "down".
_NOT_AN_API = (404, 405)


def safe_url(url: str | None) -> str:
    """``url`` without user, password or query (where keys sometimes travel)."""
    if not url:
        return "the default OpenAI endpoint"
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _not_openai(where: str, answered: str) -> str:
    return (
        f"the endpoint {where} is not an OpenAI-compatible server (GET {where.rstrip('/')}"
        f"/models {answered}); point --base-url or OPENAI_BASE_URL at the API root "
        "(e.g. http://HOST:PORT/v1), or name the model with --model"
    )


async def enter_llm(stack: AsyncExitStack, target: LLMTarget, settings: LLMSettings) -> ChatModel:
    """Open the chat model for ``target`` inside ``stack`` (closed when the stack closes).

    Raises:
        LLMUnavailableError: the server is down, or is not an OpenAI-compatible API (the
            message says which); ConfigError: the embedded model is not installed.
    """
    where = safe_url(target.base_url)
    try:
        return await stack.enter_async_context(open_chat_model(target, settings))
    except LLMError as exc:
        status = getattr(exc.__cause__, "status_code", None)
        if status in _NOT_AN_API:
            raise LLMUnavailableError(_not_openai(where, f"answered {status}")) from exc
        raise
    except OrchestratorError:
        raise
    except Exception as exc:
        if target.embedded or target.model is not None:
            raise
        # Listing the models of something that is not an OpenAI API (an HTML page) fails
        # inside the client library with errors it does not translate itself.
        raise LLMUnavailableError(
            _not_openai(where, "did not answer with a list of models")
        ) from exc


class UnreachableModel:
    """A chat model that could not be opened: every call fails with the reason it could not.

    Handed to the decision pipeline, it makes each decision that would consult the LLM fall
    back to the programmatic one with that reason recorded; forced moves never call it.
    """

    def __init__(self, reason: str, name: str | None) -> None:
        self.reason = reason
        self._name = name or "unreachable"

    @property
    def model_name(self) -> str:
        """The model that was wanted (or ``unreachable``)."""
        return self._name

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Fail as the connection did.

        Raises:
            LLMUnavailableError: always.
        """
        raise LLMUnavailableError(self.reason)
