"""A chat model that answers from a recording instead of calling a server.

Replaying a workflow's decisions with nothing changed must reproduce them without asking a
model again: the recording already holds what the LLM answered at each decision. The
replayer ``cue``s the recorded answer of the decision it is about to re-decide, and every
request of that decision gets it (a recorded invalid answer is invalid on every re-ask,
as it was then). Nothing here opens a connection, so a replay in cassette mode makes no
LLM call at all; ``requests`` counts what the decider asked, for the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from orchestrator.llm.protocol import LLMRequest, LLMResponse
from state.errors import LLMUnavailableError


@dataclass(frozen=True, slots=True)
class RecordedAnswer:
    """What the model answered at one recorded decision.

    Attributes:
        data: the JSON object it answered; None for an answer that was not usable JSON.
        unavailable: the recorded call failed to reach the model (this is its reason).
        prompt_tokens / completion_tokens: the recorded usage of one request.
    """

    data: dict[str, Any] | None = None
    unavailable: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


NOTHING_RECORDED = "the recording holds no LLM answer for this decision"


class Cassette:
    """A ``ChatModel`` answering each request with the answer cued for the decision.

    Args:
        model_name: the name recorded decisions gave the model, so replayed records match.
    """

    def __init__(self, model_name: str = "cassette") -> None:
        self._name = model_name
        self._answer: RecordedAnswer | None = None
        self.requests = 0

    @property
    def model_name(self) -> str:
        """The recorded model's name."""
        return self._name

    def cue(self, answer: RecordedAnswer | None, model_name: str | None = None) -> None:
        """Answer the next requests with ``answer`` (None: nothing was recorded)."""
        self._answer = answer
        if model_name:
            self._name = model_name

    async def complete(self, request: LLMRequest) -> LLMResponse:
        """The cued answer, as the model gave it.

        Raises:
            LLMUnavailableError: the recorded call failed, or nothing was recorded for the
                decision (a replay that reaches a state the recording never asked about);
                ``requests`` is 0 on it, since nothing was sent.
        """
        self.requests += 1
        answer = self._answer
        if answer is None:
            raise LLMUnavailableError(NOTHING_RECORDED)
        if answer.unavailable is not None:
            raise LLMUnavailableError(f"(recorded) {answer.unavailable}")
        text = json.dumps(answer.data) if answer.data is not None else "(recorded: not JSON)"
        return LLMResponse(
            text=text,
            data=dict(answer.data) if answer.data is not None else None,
            model=self._name,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            latency_ms=0.0,
            attempts=1,
            response_format="cassette",
            finish_reason="stop",
        )
