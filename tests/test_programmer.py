"""The programmer (steps 4 and 6): reading files from answers and writing them safely."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agents.base import StepAgents, StepContext
from agents.programmer import ProgrammerAgent
from orchestrator.llm.metering import UsageMeter
from orchestrator.llm.scripted import ScriptedChatModel
from orchestrator.running.updates import new_workflow
from prompt_templates.loader import TemplateLoader
from state.config import LLMSettings
from state.decision import RecoveryStrategy
from state.errors import AgentError, LLMOutputError
from state.reports import (
    CodeChange,
    CodeReview,
    CodeValidationReport,
    StandardizationReview,
    ToolResult,
    ToolStatus,
    Verdict,
)
from state.steps import Step
from state.usage import ModelPrice, Purpose

PLAN = "# Implementation Plan: tabular preprocessing\n\n## 6. Files to create\n- prep.py"
PREP = "def fit(frame):\n    return frame\n"
TEST_PREP = "from prep import fit\n\n\ndef test_fit():\n    assert fit(1) == 1\n"


@pytest.fixture(scope="module")
def templates() -> TemplateLoader:
    return TemplateLoader()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


def make_ctx(workspace: Path, step: Step = Step.IMPLEMENTATION, **overrides: Any) -> StepContext:
    values: dict[str, Any] = {
        "workflow_id": "wf-p",
        "step": step,
        "workspace": workspace,
        "requirements": "create a data preprocessing step for tabular data",
        "plan_markdown": PLAN,
        "plan_version": 3,
        "timeout_s": 5.0,
    }
    values.update(overrides)
    return StepContext(**values)


def agents_with(programmer: ProgrammerAgent) -> StepAgents:
    return StepAgents(planner=programmer, validator=programmer, programmer=programmer)


def files_answer(*files: tuple[str, str], summary: str = "Implemented prep.") -> dict[str, Any]:
    return {"files": [{"path": p, "content": c} for p, c in files], "summary": summary}


async def test_step4_writes_the_files_it_is_given(
    workspace: Path, templates: TemplateLoader
) -> None:
    """Structured output is written into the workspace and listed in the CodeChange."""
    model = ScriptedChatModel([files_answer(("prep.py", PREP), ("tests/test_prep.py", TEST_PREP))])
    change = await ProgrammerAgent(model, templates).run(make_ctx(workspace))
    assert change == CodeChange(
        files=("prep.py", "tests/test_prep.py"),
        summary="Implemented prep.",
        context_files=(),
        context_tokens=0,
        context_budget_tokens=15_000,
    )
    assert (workspace / "prep.py").read_text(encoding="utf-8") == PREP
    assert (workspace / "tests" / "test_prep.py").read_text(encoding="utf-8") == TEST_PREP
    request = model.calls[0]
    assert request.purpose == "step4_programmer"
    assert request.json_schema is not None
    assert PLAN in request.messages[-1].content


MARKDOWN_ANSWER = """Here is the implementation.

# File: prep.py
```python
def fit(frame):
    return frame
```

### File: `tests/test_prep.py`

````python
'''A docstring showing a fence:
```
example
```
'''
````

## Summary
Implemented fit and its test.
"""


async def test_markdown_file_blocks_are_the_fallback(
    workspace: Path, templates: TemplateLoader
) -> None:
    """Without JSON, '# File: path' lines with fenced blocks (even nested fences) are read."""
    model = ScriptedChatModel([LLMOutputError("no JSON object in the answer"), MARKDOWN_ANSWER])
    change = await ProgrammerAgent(model, templates).run(make_ctx(workspace))
    assert change.files == ("prep.py", "tests/test_prep.py")
    assert change.summary == "Implemented fit and its test."
    assert (workspace / "prep.py").read_text(encoding="utf-8") == PREP
    assert (workspace / "tests" / "test_prep.py").read_text(encoding="utf-8") == (
        "'''A docstring showing a fence:\n```\nexample\n```\n'''\n"
    )
    assert model.calls[1].json_schema is None


async def test_unclosed_block_of_a_truncated_answer_is_not_written(
    workspace: Path, templates: TemplateLoader
) -> None:
    """A file whose fence never closes is dropped rather than written half."""
    answer = "# File: prep.py\n```python\n" + PREP + "```\n\n# File: half.py\n```python\ndef f(:\n"
    change = await ProgrammerAgent(ScriptedChatModel([answer]), templates).run(make_ctx(workspace))
    assert change.files == ("prep.py",)
    assert not (workspace / "half.py").exists()


async def test_paths_outside_the_workspace_are_refused(
    tmp_path: Path, workspace: Path, templates: TemplateLoader
) -> None:
    """'..', absolute and symlink-escaping paths are refused; safe files are still written."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (workspace / "link").symlink_to(outside, target_is_directory=True)
    answer = files_answer(
        ("prep.py", PREP),
        ("../x.py", "evil"),
        ("/etc/x", "evil"),
        ("link/escape.py", "evil"),
        ("plans/plan_v9.md", "evil"),
    )
    agents = agents_with(ProgrammerAgent(ScriptedChatModel([answer]), templates))
    with pytest.raises(AgentError) as info:
        await agents.run(make_ctx(workspace))
    error = info.value
    assert (error.error_type, error.retryable) == ("workspace_violation", True)
    for refused in (
        "'../x.py' (contains '..')",
        "'/etc/x' (absolute path)",
        "'link/escape.py' (resolves outside the workspace",
        "'plans/plan_v9.md' ('plans/' is reserved",
    ):
        assert refused in str(error)
    assert "1 other file(s) were written" in str(error)
    assert (workspace / "prep.py").read_text(encoding="utf-8") == PREP
    assert not (tmp_path / "x.py").exists()
    assert not (outside / "escape.py").exists()
    assert not (workspace / "plans").exists()


async def test_an_answer_without_files_is_invalid_output(
    workspace: Path, templates: TemplateLoader
) -> None:
    """Prose with no file blocks fails the step as invalid_output and writes nothing."""
    agents = agents_with(
        ProgrammerAgent(
            ScriptedChatModel(["I would write a class called Preprocessor."]), templates
        )
    )
    with pytest.raises(AgentError, match="holds no file") as info:
        await agents.run(make_ctx(workspace))
    assert info.value.error_type == "invalid_output"
    assert not any(workspace.iterdir())  # noqa: ASYNC240 -- a test's own tmp dir, no I/O to wait on


async def test_implementation_without_a_plan_is_missing_input(
    workspace: Path, templates: TemplateLoader
) -> None:
    """Step 4 needs the approved plan; without it the step fails without calling the LLM."""
    model = ScriptedChatModel()
    with pytest.raises(AgentError) as info:
        await agents_with(ProgrammerAgent(model, templates)).run(
            make_ctx(workspace, plan_markdown=None, plan_version=None)
        )
    assert info.value.error_type == "missing_input"
    assert model.calls == []


async def test_step6_gets_code_reports_and_change_requests(
    workspace: Path, templates: TemplateLoader
) -> None:
    """Refinement sees the code, both reviews, the tool results and the human's requests."""
    (workspace / "prep.py").write_text("def fit(frame):\n    print(frame)\n", encoding="utf-8")
    report = CodeValidationReport(
        review=CodeReview(
            overall_score=7.5,
            critical_issues=0,
            minor_issues=3,
            verdict=Verdict.PASS,
            markdown="fit ignores NaN columns",
        ),
        standardization=StandardizationReview(
            status="FAILED", critical_issues=1, minor_issues=0, markdown="print in fit()"
        ),
        tools=(
            ToolResult(
                name="pytest",
                status=ToolStatus.FAILED,
                exit_code=1,
                detail="FAILED tests/test_prep.py::test_fit",
            ),
        ),
        line_coverage=62.5,
    )
    ctx = make_ctx(
        workspace,
        Step.CODE_REFINEMENT,
        code_report=report,
        change_requests=("log with the logging module",),
    )
    model = ScriptedChatModel([files_answer(("prep.py", PREP), summary="Removed print.")])
    change = await ProgrammerAgent(model, templates).run(ctx)
    assert (change.files, change.summary) == (("prep.py",), "Removed print.")
    assert (workspace / "prep.py").read_text(encoding="utf-8") == PREP
    prompt = model.calls[0].messages[-1].content
    assert model.calls[0].purpose == "step6_code_refinement"
    for expected in (
        "print(frame)",
        "fit ignores NaN columns",
        "print in fit()",
        "- Status: FAILED",
        "- pytest: failed, exit code 1",
        "FAILED tests/test_prep.py::test_fit",
        "Line coverage: 62.5%",
        "- log with the logging module",
        "- Overall Score: 7.5",
    ):
        assert expected in prompt


async def test_corrected_input_names_the_refused_paths(
    workspace: Path, templates: TemplateLoader
) -> None:
    """After a workspace violation, the retry's prompt carries the previous error."""
    ctx = make_ctx(
        workspace,
        attempt=2,
        recovery_strategy=RecoveryStrategy.CORRECTED_INPUT,
        last_error="refused to write outside the workspace: '../x.py'",
    )
    model = ScriptedChatModel([files_answer(("prep.py", PREP))])
    await ProgrammerAgent(model, templates).run(ctx)
    prompt = model.calls[0].messages[-1].content
    assert "refused to write outside the workspace: '../x.py'" in prompt


async def test_duplicate_paths_keep_the_last_content(
    workspace: Path, templates: TemplateLoader
) -> None:
    """A file given twice is written once, with its last content."""
    answer = files_answer(("prep.py", "old\n"), ("./prep.py", PREP), ("prep.py", PREP))
    change = await ProgrammerAgent(ScriptedChatModel([answer]), templates).run(make_ctx(workspace))
    assert change.files == ("prep.py",)
    assert (workspace / "prep.py").read_text(encoding="utf-8") == PREP


async def test_the_text_fallback_call_is_counted_too(
    workspace: Path, templates: TemplateLoader
) -> None:
    """A structured answer refused, then re-asked as text: both calls charged to the programmer."""
    state = new_workflow("wf-p", "reqs", str(workspace), datetime(2026, 1, 1, tzinfo=UTC))
    prices = {"scripted": ModelPrice(prompt_per_1k=0.5, completion_per_1k=1.5)}
    meter = UsageMeter(state, LLMSettings(prices=prices))
    blocks = f"### File: prep.py\n```python\n{PREP}```\n"
    model = ScriptedChatModel([LLMOutputError("not JSON"), blocks])
    change = await agents_with(ProgrammerAgent(model, templates)).run(
        make_ctx(workspace, meter=meter)
    )

    assert isinstance(change, CodeChange)
    assert change.files == ("prep.py",)
    assert [c.purpose for c in model.calls] == ["step4_programmer", "step4_programmer:text"]
    counters = meter.charged(state.counters)
    programmer = counters.llm_usage.of(Purpose.PROGRAMMER)
    assert programmer.calls == 2 and counters.llm_calls == 2
    assert programmer.cost_usd == pytest.approx((100 * 0.5 + 20 * 1.5) / 1000)
