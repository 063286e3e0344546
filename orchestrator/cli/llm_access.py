"""Opening the LLM for a command, with failures to connect said plainly.

Connecting asks the server for its model list when no model is named. A dead server, or
something at the URL that is not an OpenAI-compatible API (a web page, a 404), fails there
with one ``LLMUnavailableError`` that says which it was (the adapter tells them apart).
``decide`` then goes on without the LLM (``UnreachableModel``), falling back exactly as it
does when a call fails later.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

from orchestrator.composition import LLMTarget, open_chat_model
from orchestrator.llm.protocol import ChatModel, LLMRequest, LLMResponse
from state.config import LLMSettings
from state.errors import LLMUnavailableError


async def enter_llm(stack: AsyncExitStack, target: LLMTarget, settings: LLMSettings) -> ChatModel:
    """Open the chat model for ``target`` inside ``stack`` (closed when the stack closes).

    Raises:
        LLMUnavailableError: the server is down, or is not an OpenAI-compatible API (the
            message says which); ConfigError: the embedded model is not installed.
    """
    return await stack.enter_async_context(open_chat_model(target, settings))


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
