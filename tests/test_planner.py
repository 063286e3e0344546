"""The planner (steps 1 and 3) and the StepAgents dispatcher's error contract."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agents.base import StepAgents, StepContext
from agents.planner import PlannerAgent
from orchestrator.llm.metering import UsageMeter
from orchestrator.llm.protocol import LLMRequest, LLMResponse
from orchestrator.llm.scripted import ScriptedChatModel
from orchestrator.running.updates import new_workflow
from prompt_templates.loader import TemplateLoader
from state.config import LLMSettings
from state.decision import RecoveryStrategy
from state.errors import AgentError, LLMOutputError, LLMUnavailableError
from state.reports import CodeChange, PlanDraft, PlanValidationReport, Verdict
from state.steps import Step
from state.usage import Purpose
from state.workflow import IterationCounters

PLAN = "# Implementation Plan: tabular preprocessing\n\n## 1. Requirement and assumptions\n..."


@pytest.fixture(scope="module")
def templates() -> TemplateLoader:
    return TemplateLoader()


def make_ctx(workspace: Path, step: Step = Step.INITIAL_PLANNING, **overrides: Any) -> StepContext:
    values: dict[str, Any] = {
        "workflow_id": "wf-1",
        "step": step,
        "workspace": workspace,
        "requirements": "create a data preprocessing step for tabular data",
        "timeout_s": 5.0,
    }
    values.update(overrides)
    return StepContext(**values)


def agents_with(planner: Any) -> StepAgents:
    unused = ScriptedChatModel()
    return StepAgents(
        planner=planner,
        validator=PlannerAgent(unused, TemplateLoader()),
        programmer=PlannerAgent(unused, TemplateLoader()),
    )


def user_prompt(request: LLMRequest) -> str:
    return request.messages[-1].content


async def test_step1_writes_plan_v1(tmp_path: Path, templates: TemplateLoader) -> None:
    """Step 1 returns plan v1 and writes it to plans/plan_v1.md, path relative to the workspace."""
    model = ScriptedChatModel([PLAN])
    draft = await PlannerAgent(model, templates).run(make_ctx(tmp_path))
    assert draft == PlanDraft(version=1, markdown=PLAN, path="plans/plan_v1.md")
    assert (tmp_path / "plans" / "plan_v1.md").read_text(encoding="utf-8") == PLAN + "\n"
    assert model.calls[0].purpose == "step1_initial_planner"
    assert "create a data preprocessing step for tabular data" in user_prompt(model.calls[0])


async def test_step1_shows_existing_workspace_files(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """The initial plan is asked with the workspace's existing code in the prompt."""
    (tmp_path / "features.py").write_text("def existing_helper(): ...\n", encoding="utf-8")
    model = ScriptedChatModel([PLAN])
    await PlannerAgent(model, templates).run(make_ctx(tmp_path))
    prompt = user_prompt(model.calls[0])
    assert "### File: features.py" in prompt
    assert "existing_helper" in prompt


async def test_step3_revises_to_the_next_version(tmp_path: Path, templates: TemplateLoader) -> None:
    """Step 3 turns vN into vN+1, with the latest report and the change requests in its prompt."""
    report = PlanValidationReport(
        plan_version=2,
        alignment_score=7.5,
        standardization_score=9,
        compatibility_score=8,
        critical_issues=1,
        minor_issues=2,
        verdict=Verdict.FAIL,
        markdown="## Critical findings\n1. scaler fitted on all rows",
    )
    ctx = make_ctx(
        tmp_path,
        Step.PLAN_REVISION,
        plan_markdown=PLAN,
        plan_version=2,
        plan_report=report,
        change_requests=("use polars, not pandas",),
    )
    model = ScriptedChatModel(["# Implementation Plan v3\n\nrevised"])
    draft = await PlannerAgent(model, templates).run(ctx)
    assert (draft.version, draft.path) == (3, "plans/plan_v3.md")
    assert (tmp_path / "plans" / "plan_v3.md").is_file()
    prompt = user_prompt(model.calls[0])
    assert "- use polars, not pandas" in prompt
    assert "scaler fitted on all rows" in prompt
    assert "Alignment Rules Score: 7.5" in prompt
    assert "(version 2)" in prompt
    assert PLAN in prompt


async def test_whole_answer_in_a_markdown_fence_is_unwrapped(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """A plan the model wrapped in a ```markdown fence is stored without the fence."""
    model = ScriptedChatModel([f"```markdown\n{PLAN}\n```\n"])
    draft = await PlannerAgent(model, templates).run(make_ctx(tmp_path))
    assert draft.markdown == PLAN


async def test_empty_answer_is_invalid_output(tmp_path: Path, templates: TemplateLoader) -> None:
    """An empty plan fails the step as invalid_output, and no plan file is written."""
    agents = agents_with(PlannerAgent(ScriptedChatModel(["  \n "]), templates))
    with pytest.raises(AgentError) as info:
        await agents.run(make_ctx(tmp_path))
    assert (info.value.error_type, info.value.retryable) == ("invalid_output", True)
    assert not (tmp_path / "plans" / "plan_v1.md").exists()


async def test_revision_without_a_plan_is_missing_input(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """Step 3 without a plan cannot be retried into success: missing_input, not retryable."""
    agents = agents_with(PlannerAgent(ScriptedChatModel(), templates))
    with pytest.raises(AgentError) as info:
        await agents.run(make_ctx(tmp_path, Step.PLAN_REVISION))
    assert (info.value.error_type, info.value.retryable) == ("missing_input", False)


@pytest.mark.parametrize(
    ("raised", "error_type"),
    [
        (LLMUnavailableError("429 after 3 attempts"), "llm_unavailable"),
        (TimeoutError("read timed out"), "llm_unavailable"),
        (LLMOutputError("output truncated at max_tokens"), "invalid_output"),
        (RuntimeError("bug"), "internal_error"),
    ],
)
async def test_llm_failures_become_typed_agent_errors(
    tmp_path: Path, templates: TemplateLoader, raised: Exception, error_type: str
) -> None:
    """Each way the LLM call can fail maps to its AgentError type, naming the workflow."""
    agents = agents_with(PlannerAgent(ScriptedChatModel([raised]), templates))
    with pytest.raises(AgentError, match="'wf-1'") as info:
        await agents.run(make_ctx(tmp_path))
    assert info.value.error_type == error_type
    assert info.value.__cause__ is raised


async def test_corrected_input_tells_the_model_what_was_wrong(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """A corrected_input retry appends the previous error to the user message."""
    ctx = make_ctx(
        tmp_path,
        attempt=2,
        recovery_strategy=RecoveryStrategy.CORRECTED_INPUT,
        last_error="the planner's answer was empty",
    )
    model = ScriptedChatModel([PLAN])
    await PlannerAgent(model, templates).run(ctx)
    prompt = user_prompt(model.calls[0])
    assert "Your previous answer was rejected" in prompt
    assert prompt.rstrip().endswith("follow the output format exactly.")
    assert "the planner's answer was empty" in prompt


async def test_other_strategies_leave_the_prompt_alone(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """Backoff and first attempts get the plain prompt, even when an error is known."""
    model = ScriptedChatModel([PLAN])
    ctx = make_ctx(tmp_path, recovery_strategy=RecoveryStrategy.BACKOFF, last_error="boom")
    await PlannerAgent(model, templates).run(ctx)
    assert "boom" not in user_prompt(model.calls[0])


async def test_extended_timeout_doubles_the_llm_deadline(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """An extended_timeout retry gives the LLM call twice the step's timeout."""
    model = ScriptedChatModel([PLAN, PLAN])
    planner = PlannerAgent(model, templates)
    await planner.run(make_ctx(tmp_path, timeout_s=30.0))
    await planner.run(
        make_ctx(tmp_path, timeout_s=30.0, recovery_strategy=RecoveryStrategy.EXTENDED_TIMEOUT)
    )
    assert [c.deadline_s for c in model.calls] == [30.0, 60.0]


@dataclass
class SlowModel:
    """A chat model that answers after ``delay_s`` seconds."""

    delay_s: float
    calls: list[LLMRequest] = field(default_factory=list)

    @property
    def model_name(self) -> str:
        return "slow"

    async def complete(self, request: LLMRequest) -> LLMResponse:
        self.calls.append(request)
        await asyncio.sleep(self.delay_s)
        return LLMResponse(text=PLAN, data=None, model="slow")


async def test_step_timeout_is_its_own_error_type(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """A step that outlives ctx.timeout_s fails as "timeout", not as an LLM error."""
    agents = agents_with(PlannerAgent(SlowModel(delay_s=5.0), templates))
    with pytest.raises(AgentError, match=r"did not finish within 0\.1s") as info:
        await agents.run(make_ctx(tmp_path, timeout_s=0.1))
    assert (info.value.error_type, info.value.retryable) == ("timeout", True)


async def test_extended_timeout_lets_a_slow_step_finish(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """The step that timed out at 0.4s succeeds when retried with the doubled timeout."""
    agents = agents_with(PlannerAgent(SlowModel(delay_s=0.6), templates))
    with pytest.raises(AgentError):
        await agents.run(make_ctx(tmp_path, timeout_s=0.4))
    retry = make_ctx(
        tmp_path, timeout_s=0.4, attempt=2, recovery_strategy=RecoveryStrategy.EXTENDED_TIMEOUT
    )
    result = await agents.run(retry)
    assert isinstance(result, PlanDraft)


async def test_template_problem_is_a_non_retryable_template_error(tmp_path: Path) -> None:
    """A broken user template fails the step as template_error, which retrying cannot fix."""
    overrides = tmp_path / "templates"
    overrides.mkdir()
    (overrides / "step1_initial_planner.md").write_text(
        "---\nname: step1_initial_planner\ndescription: d\nvariables: [requirements]\n---\n"
        "Plan {{requirements}} in {{language}}.\n<!-- user -->\nGo.\n",
        encoding="utf-8",
    )
    model = ScriptedChatModel()
    agents = agents_with(PlannerAgent(model, TemplateLoader(overrides)))
    with pytest.raises(AgentError, match=r"\{\{language\}\}") as info:
        await agents.run(make_ctx(tmp_path / "ws"))
    assert (info.value.error_type, info.value.retryable) == ("template_error", False)
    assert model.calls == []


@dataclass
class RecordingAgent:
    """An agent that returns a fixed result and records the steps it ran."""

    result: Any
    steps: list[Step] = field(default_factory=list)

    async def run(self, ctx: StepContext) -> Any:
        self.steps.append(ctx.step)
        return self.result


async def test_step_agents_dispatch_each_step_to_its_agent(tmp_path: Path) -> None:
    """Steps 1/3 go to the planner, 2/5/7 to the validator and 4/6 to the programmer."""
    draft = PlanDraft(version=1, markdown=PLAN)
    planner = RecordingAgent(draft)
    validator = RecordingAgent(PlanValidationReport())
    programmer = RecordingAgent(CodeChange(files=("a.py",)))
    agents = StepAgents(planner=planner, validator=validator, programmer=programmer)
    for step in (
        Step.INITIAL_PLANNING,
        Step.PLAN_VALIDATION,
        Step.PLAN_REVISION,
        Step.IMPLEMENTATION,
        Step.CODE_REFINEMENT,
    ):
        await agents.run(make_ctx(tmp_path, step))
    assert planner.steps == [Step.INITIAL_PLANNING, Step.PLAN_REVISION]
    assert validator.steps == [Step.PLAN_VALIDATION]
    assert programmer.steps == [Step.IMPLEMENTATION, Step.CODE_REFINEMENT]


async def test_wrong_result_type_for_the_step_is_an_internal_error(tmp_path: Path) -> None:
    """An agent returning another step's result type is a wiring bug, not retried."""
    wrong = RecordingAgent(CodeChange())
    agents = StepAgents(planner=wrong, validator=wrong, programmer=wrong)
    with pytest.raises(AgentError) as info:
        await agents.run(make_ctx(tmp_path, Step.PLAN_VALIDATION))
    assert (info.value.error_type, info.value.retryable) == ("internal_error", False)


def test_step_context_rejects_a_non_positive_timeout(tmp_path: Path) -> None:
    """A zero timeout is refused when the context is built, not when the step runs."""
    with pytest.raises(ValueError, match="timeout_s"):
        make_ctx(tmp_path, timeout_s=0)


def metered(**llm: Any) -> UsageMeter:
    """A meter for a fresh workflow with the given LLM settings."""
    state = new_workflow("wf-1", "reqs", "/tmp/ws", datetime(2026, 1, 1, tzinfo=UTC))
    return UsageMeter(state, LLMSettings(**llm))


async def test_planner_calls_are_counted_on_the_steps_meter(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """Each planner call, the failed one included, is charged to the planner on the meter."""
    meter = metered()
    model = ScriptedChatModel([LLMOutputError("garbled", requests=2), PLAN])
    ctx = make_ctx(tmp_path, meter=meter)
    with pytest.raises(AgentError):
        await agents_with(PlannerAgent(model, templates)).run(ctx)
    await PlannerAgent(model, templates).run(ctx)

    assert meter.usage.calls == 3  # two requests of the failed call, one of the answer
    assert meter.usage.prompt_tokens == 100 and meter.usage.completion_tokens == 20
    counters = meter.charged(IterationCounters())
    assert counters.llm_usage.of(Purpose.PLANNER).calls == 3 and counters.llm_calls == 3


async def test_a_spent_budget_refuses_the_planner_without_a_call(
    tmp_path: Path, templates: TemplateLoader
) -> None:
    """With a call budget of 0 no request is made: budget_exhausted, not retryable."""
    model = ScriptedChatModel([PLAN])
    ctx = make_ctx(tmp_path, meter=metered(max_calls_per_workflow=0))
    with pytest.raises(AgentError) as caught:
        await agents_with(PlannerAgent(model, templates)).run(ctx)

    assert caught.value.error_type == "budget_exhausted"
    assert caught.value.retryable is False
    assert "LLM call budget spent (0/0 calls)" in str(caught.value)
    assert model.calls == []
