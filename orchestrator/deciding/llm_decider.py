"""The LLM decider: asks a model to choose among the legal actions, and checks it.

The legal actions are shown in a presentation order that does not reveal which one the
rules chose (``prompting.presented``). Each call gets a JSON schema built from them, so a
server with structured output cannot even name an illegal action. The answer is still validated with
jsonschema and pydantic and re-checked against the machine: servers without structured
output, and schema-ignoring models, are common. Bad answers are re-asked with the reason,
within ``max_attempts`` and the per-decision deadline; when the budget is spent the caller
falls back (see ``reconcile``). Nothing here raises for an LLM problem: every outcome is
an ``LLMOutcome`` carrying what happened.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jsonschema
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from orchestrator.deciding.actions import build_decision
from orchestrator.deciding.analysis import Analysis
from orchestrator.deciding.machine import WorkflowMachine
from orchestrator.deciding.prompting import Presentation, presented, prompt_variables
from orchestrator.llm.protocol import ChatModel, LLMRequest, LLMResponse, Message
from orchestrator.llm.tracing import traced_complete
from prompt_templates.loader import TemplateLoader
from state.config import WorkflowConfig
from state.decision import Decision, LLMCallInfo, LLMCallOutcome
from state.errors import LLMError, LLMOutputError, LLMUnavailableError, OrchestratorError

log = structlog.get_logger(__name__)

TEMPLATE = "orchestrator_decision"
MAX_RATIONALE = 2000


class LLMDecisionAnswer(BaseModel):
    """What the LLM must answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: str
    rationale: str
    confidence: float = Field(ge=0, le=1)


def answer_schema(legal_actions: tuple[str, ...]) -> dict[str, Any]:
    """The JSON schema of an answer, allowing only ``legal_actions``."""
    return {
        "type": "object",
        "properties": {
            "action": {"type": "string", "enum": list(legal_actions)},
            # No maxLength: llama.cpp compiles it into a grammar nested that deep, which
            # crashes its server; long rationales are truncated after parsing instead.
            "rationale": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["action", "rationale", "confidence"],
        "additionalProperties": False,
    }


def clip_rationale(text: str, limit: int = MAX_RATIONALE) -> str:
    """``text`` stripped and, when longer than ``limit``, cut there with a note saying so.

    The note is counted within the limit, so a stored rationale never exceeds it.
    """
    text = text.strip()
    if len(text) <= limit:
        return text
    note = f" … [cut at {limit} chars]"
    return text[: max(0, limit - len(note))].rstrip() + note


@dataclass(frozen=True, slots=True)
class LLMOutcome:
    """What the LLM decider got: a checked decision, or why there is none."""

    decision: Decision | None
    info: LLMCallInfo
    confident: bool = False  # confidence at or above the threshold

    @property
    def usable(self) -> bool:
        """A legal decision was obtained (whatever its confidence)."""
        return self.decision is not None


class LLMDecider:
    """Decides with an LLM, within the legal actions, with bounded retries.

    Args:
        model: the chat model asked.
        machine: the machine every answer is checked against.
        templates: where the ``orchestrator_decision`` prompt comes from.
        order: how the legal actions are presented (``prompting.presented``); the
            default, seeded per decision, hides the rules' choice from a model that
            leans to the first option.
    """

    def __init__(
        self,
        model: ChatModel,
        machine: WorkflowMachine,
        templates: TemplateLoader | None = None,
        order: Presentation = Presentation.SHUFFLED,
    ) -> None:
        self.model = model
        self.machine = machine
        self.templates = templates or TemplateLoader()
        self.order = order

    def presented(self, analysis: Analysis) -> tuple[str, ...]:
        """The legal actions of ``analysis`` in the order the model is shown them."""
        state = analysis.facts.state
        return presented(
            analysis.legal_actions, state.workflow_id, len(state.decisions) + 1, self.order
        )

    def messages(self, analysis: Analysis, config: WorkflowConfig) -> tuple[Message, ...]:
        """The prompt for ``analysis``."""
        signals = "\n".join(
            f"- {s.name} ({s.route.value}): {s.detail}" for s in analysis.classification.signals
        )
        variables = prompt_variables(analysis.facts, config, self.presented(analysis), signals)
        return self.templates.load(TEMPLATE).render(**variables)

    async def decide(self, analysis: Analysis, config: WorkflowConfig) -> LLMOutcome:
        """Ask the model for a decision on ``analysis``; never raises for LLM problems."""
        settings = config.llm
        wid = analysis.facts.state.workflow_id
        tally = _Tally(self.model.model_name, time.monotonic(), [])
        try:
            messages = list(self.messages(analysis, config))
        except OrchestratorError as exc:
            tally.errors.append(f"template: {exc}")
            return tally.outcome(None, LLMCallOutcome.TEMPLATE_ERROR)
        schema = answer_schema(self.presented(analysis))
        while tally.attempts < settings.max_attempts:
            remaining = settings.decision_deadline_s - (time.monotonic() - tally.started)
            if remaining <= 0:
                tally.errors.append("decision deadline reached")
                break
            request = LLMRequest(
                messages=tuple(messages),
                json_schema=schema,
                schema_name="orchestration_decision",
                temperature=settings.temperature,
                max_tokens=settings.max_tokens,
                timeout_s=min(settings.call_timeout_s, remaining),
                deadline_s=remaining,
                purpose="decision",
                # max_attempts bounds the HTTP requests of the whole decision, the adapter's
                # retries of transport faults included; attempts records them all.
                max_requests=settings.max_attempts - tally.attempts,
            )
            try:
                response = await traced_complete(self.model, request)
            except LLMUnavailableError as exc:
                tally.attempts += max(exc.requests, 1)
                tally.errors.append(f"unavailable: {exc}")
                log.warning(
                    "llm.call.failed", workflow_id=wid, attempt=tally.attempts, error=str(exc)
                )
                # The adapter already retried transport faults within the deadline.
                return tally.outcome(None, LLMCallOutcome.UNAVAILABLE)
            except LLMOutputError as exc:
                tally.attempts += max(exc.requests, 1)
                tally.errors.append(f"invalid output: {exc}")
                log.warning(
                    "llm.answer.invalid", workflow_id=wid, attempt=tally.attempts, error=str(exc)
                )
                messages += self._correction(None, f"your answer was not valid JSON ({exc})")
                continue
            except LLMError as exc:
                tally.attempts += max(exc.requests, 1)
                tally.errors.append(f"llm error: {exc}")
                return tally.outcome(None, LLMCallOutcome.UNAVAILABLE)
            tally.attempts += response.attempts
            tally.add(response)
            problem, answer = self._check(response, schema, analysis)
            if answer is not None:
                decision = build_decision(
                    answer.action,
                    analysis.facts,
                    rationale=clip_rationale(answer.rationale) or "(no rationale given)",
                    confidence=answer.confidence,
                )
                threshold = settings.confidence_threshold
                if answer.confidence >= threshold:
                    return tally.outcome(decision, LLMCallOutcome.OK, confident=True)
                tally.errors.append(
                    f"confidence {answer.confidence:g} below the threshold {threshold:g}"
                )
                return tally.outcome(decision, LLMCallOutcome.LOW_CONFIDENCE)
            assert problem is not None
            tally.errors.append(problem)
            log.warning(
                "llm.answer.rejected", workflow_id=wid, attempt=tally.attempts, problem=problem
            )
            messages += self._correction(response.text, problem)
        return tally.outcome(None, LLMCallOutcome.INVALID)

    def _check(
        self, response: LLMResponse, schema: dict[str, Any], analysis: Analysis
    ) -> tuple[str | None, LLMDecisionAnswer | None]:
        data = response.data
        if data is None:
            return "the answer is not a JSON object", None
        action = data.get("action")
        if isinstance(action, str) and action not in analysis.legal_actions:
            known = action in self.machine.triggers
            why = "not legal in this state" if known else "not an action that exists"
            return (
                f"action '{action}' is {why}; legal actions: {', '.join(self.presented(analysis))}"
            ), None
        # As jsonschema.validate reports it, without re-checking our own schema against the
        # metaschema on every answer (that check was most of a cassette replay's time).
        violation = jsonschema.exceptions.best_match(
            jsonschema.validators.validator_for(schema)(schema).iter_errors(data)
        )
        if violation is not None:
            where = "/".join(str(p) for p in violation.absolute_path) or "answer"
            return f"schema violation at {where}: {violation.message}", None
        try:
            answer = LLMDecisionAnswer.model_validate(data)
        except ValidationError as exc:
            return f"invalid answer: {exc.errors(include_url=False)[0]['msg']}", None
        if not self.machine.is_legal(analysis.facts, answer.action):
            return f"action '{answer.action}' refused by the state machine", None
        return None, answer

    @staticmethod
    def _correction(previous: str | None, problem: str) -> list[Message]:
        out: list[Message] = []
        if previous:
            out.append(Message(role="assistant", content=previous[:1000]))
        out.append(
            Message(
                role="user",
                content=f"That answer was refused: {problem}. Reply again with one JSON object "
                "using only one of the legal actions listed above.",
            )
        )
        return out


@dataclass
class _Tally:
    """What one decision's LLM attempts cost and which problems they hit."""

    model: str
    started: float
    errors: list[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    response_format: str | None = None

    def add(self, response: LLMResponse) -> None:
        self.prompt_tokens += response.prompt_tokens
        self.completion_tokens += response.completion_tokens
        self.response_format = response.response_format

    def outcome(
        self, decision: Decision | None, outcome: LLMCallOutcome, confident: bool = False
    ) -> LLMOutcome:
        info = LLMCallInfo(
            model=self.model,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            latency_ms=(time.monotonic() - self.started) * 1000,
            attempts=self.attempts,
            response_format=self.response_format,
            validation_errors=tuple(e[:500] for e in self.errors),
            outcome=outcome,
        )
        return LLMOutcome(decision, info, confident)
