"""The tabular example end to end: its checks run in its own environment, with pandas.

The orchestrator's interpreter has no pandas: only the project environment built offline
from ``examples/tabular/requirements.txt`` (the wheel cache ``scripts/install`` fills) can
run the example's tests. The workflow test scripts the LLM's answers: a plan, a first
implementation whose median imputation breaks on the text column (pandas raises a real
TypeError in the project's tests), one refinement that fixes it, then convergence.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agents.base import StepAgents, StepContext
from agents.planner import PlannerAgent
from agents.programmer import ProgrammerAgent
from agents.validator import ValidatorAgent
from orchestrator.composition import build_coordinator, open_store
from orchestrator.execution.checks import run_validation_tools
from orchestrator.execution.environments import build_progress
from orchestrator.execution.sandbox import Sandbox, SandboxLimits
from orchestrator.llm.protocol import LLMRequest
from orchestrator.llm.scripted import ScriptedChatModel
from orchestrator.running.runner import Observer, ProgressEvent, ProgressKind, WorkflowRunner
from prompt_templates.loader import TemplateLoader
from state.check_settings import ValidationSetup
from state.clock import SystemClock
from state.config import Coordinator, Gates, WorkflowConfig, load_config
from state.errors import AgentError
from state.reports import CodeValidationReport, ToolStatus
from state.steps import MachineState, Step
from state.workflow import StepStatus, WorkflowState

from support.wheels import EXAMPLE, WHEELS, offline, require_wheels
from support.world import GOOD_PLAN, GOOD_REVIEW, GOOD_STANDARD

SANDBOX = Sandbox(SandboxLimits(wall_timeout_s=120))
REQUIREMENT = "add a preprocessing step that imputes missing values with the median"

PLAN = """# Implementation Plan: median imputation

## Files
- `tabular/impute.py`: `impute_median(frame)` fills each numeric column's missing values
  with that column's median; other columns are left alone.
- `tabular/preprocessing.py`: run `impute_median` first in `DEFAULT_STEPS`.
- `tests/test_impute.py`: tests of `impute_median` and of the default steps.
"""

BUGGY_IMPUTE = '''"""Filling missing values."""

from __future__ import annotations

import pandas as pd


def impute_median(frame: pd.DataFrame) -> pd.DataFrame:
    """Fill each numeric column's missing values with its median."""
    return frame.fillna(frame.median())
'''

FIXED_IMPUTE = '''"""Filling missing values."""

from __future__ import annotations

import pandas as pd


def impute_median(frame: pd.DataFrame) -> pd.DataFrame:
    """Fill each numeric column's missing values with its median; others are left alone."""
    medians = frame.select_dtypes("number").median()
    return frame.fillna(medians)
'''

PREPROCESSING = (EXAMPLE / "tabular" / "preprocessing.py").read_text(encoding="utf-8")
EDITED_PREPROCESSING = PREPROCESSING.replace(
    "import pandas as pd\n",
    "import pandas as pd\n\nfrom tabular.impute import impute_median\n",
).replace(
    "DEFAULT_STEPS: tuple[Step, ...] = (drop_constant_columns, standardize)",
    "DEFAULT_STEPS: tuple[Step, ...] = (impute_median, drop_constant_columns, standardize)",
)

TEST_IMPUTE = '''"""Median imputation fills numeric gaps and leaves text alone."""

from __future__ import annotations

import math

import pandas as pd

from tabular.impute import impute_median
from tabular.preprocessing import preprocess


def test_numeric_gaps_get_the_median() -> None:
    """The median, not the mean: an outlier does not pull the filled value."""
    frame = pd.DataFrame({"age": [20.0, None, 30.0, 1000.0], "city": ["a", "b", None, "d"]})
    out = impute_median(frame)
    assert out.loc[1, "age"] == 30.0
    assert frame["age"].isna().sum() == 1
    assert out["city"].isna().sum() == 1


def test_default_steps_impute_before_scaling() -> None:
    """The default pipeline leaves no missing number behind."""
    frame = pd.DataFrame({"x": [1.0, None, 3.0], "y": [2.0, 4.0, None], "c": ["p", "q", "r"]})
    out = preprocess(frame)
    assert not out[["x", "y"]].isna().any().any()
    assert not math.isnan(out.loc[1, "x"])
'''


def files(impute: str) -> dict[str, Any]:
    """The programmer's answer: a new module, an edited one and a new test."""
    return {
        "files": [
            {"path": "tabular/impute.py", "content": impute},
            {"path": "tabular/preprocessing.py", "content": EDITED_PREPROCESSING},
            {"path": "tests/test_impute.py", "content": TEST_IMPUTE},
        ],
        "summary": "median imputation as the first preprocessing step",
    }


class TabularWorld:
    """The LLM's answers by purpose: the first implementation has the bug, the fix follows."""

    def __init__(self) -> None:
        self.requests: list[LLMRequest] = []

    def __call__(self, request: LLMRequest) -> str | dict[str, Any]:
        self.requests.append(request)
        purpose = request.purpose.split(":")[0]
        answers: dict[str, str | dict[str, Any]] = {
            "step1_initial_planner": PLAN,
            "step2_plan_validator": GOOD_PLAN,
            "step4_programmer": files(BUGGY_IMPUTE),
            "step6_code_refinement": files(FIXED_IMPUTE),
            "step5a_alignment_validator": GOOD_REVIEW,
            "step5b_standardization_validator": GOOD_STANDARD,
        }
        return answers[purpose]

    def prompt(self, purpose: str) -> str:
        """The last user message sent for ``purpose``."""
        return next(r.messages[-1].content for r in reversed(self.requests) if r.purpose == purpose)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the example repository to change."""
    require_wheels("pandas", "numpy", "pytest", "coverage")
    copy = tmp_path / "tabular"
    shutil.copytree(EXAMPLE, copy)
    return copy


def setup_for(env_cache: Path) -> ValidationSetup:
    """The example's environment, built offline into the session's cache."""
    return ValidationSetup(environment=offline(env_cache, requirements="requirements.txt"))


def statuses(tools: tuple[Any, ...]) -> dict[str, ToolStatus]:
    """Each check's status by name."""
    return {t.name: t.status for t in tools}


async def test_the_examples_checks_pass_in_its_own_environment(repo: Path, env_cache: Path) -> None:
    """compile, ruff (its own settings), pytest with pandas, full coverage, plan alignment."""
    plan = "- `tabular/loader.py`\n- `tests/test_loader.py`\n"
    run = await run_validation_tools(repo, plan, SANDBOX, setup_for(env_cache))
    assert all(s is ToolStatus.PASSED for s in statuses(run.tools).values()), run.tools
    assert run.line_coverage is not None
    assert run.line_coverage >= 85


async def test_without_its_environment_the_examples_tests_cannot_import_pandas(
    repo: Path,
) -> None:
    """With the orchestrator's interpreter the tests fail on the import: pandas is not ours."""
    run = await run_validation_tools(repo, "", SANDBOX)
    tested = next(t for t in run.tools if t.name == "pytest")
    assert tested.status is ToolStatus.FAILED
    assert "No module named 'pandas'" in tested.detail


def test_the_examples_config_names_its_environment_and_checks() -> None:
    """orchestrator.yaml builds from requirements.txt with the checkout's wheel cache."""
    config = load_config(EXAMPLE / "orchestrator.yaml")
    assert config.environment.requirements == "requirements.txt"
    assert Path(config.environment.find_links or "").resolve() == WHEELS.resolve()
    assert [c.name for c in config.checks] == ["compile", "ruff", "pytest", "plan_alignment"]


def run_workflow(
    world: TabularWorld,
    data: Path,
    repo: Path,
    config: WorkflowConfig,
    observers: Sequence[Observer] = (),
) -> WorkflowState:
    """Run the example's workflow on ``repo`` with the real agents and ``world``'s answers."""
    model = ScriptedChatModel(responder=world)
    templates = TemplateLoader()
    with open_store(data) as store:
        runner = WorkflowRunner(
            store,
            build_coordinator(model),
            StepAgents(
                planner=PlannerAgent(model, templates),
                validator=ValidatorAgent(model, templates, sandbox=SANDBOX),
                programmer=ProgrammerAgent(model, templates),
            ),
            clock=SystemClock(),
            observers=observers,
        )
        wid = runner.create(
            REQUIREMENT, config, workspace_root=repo.parent, workspace=repo
        ).workflow_id
        return asyncio.run(runner.run(wid))


def test_a_workflow_imputes_the_median_after_one_refinement(repo: Path, env_cache: Path) -> None:
    """The first code fails a real pandas test, one refinement fixes it, the workflow ends.

    The checks are the built-ins plus the project's own pytest command, read from junit.
    """
    world = TabularWorld()
    unit = "python -m pytest -q -p no:cacheprovider tests --junitxml={report:junit}"
    config = WorkflowConfig.model_validate(
        {
            "coordinator": Coordinator.PROGRAMMATIC,
            "gates": Gates(plan=False, final=False),
            "environment": setup_for(env_cache).environment,
            "checks": [
                "compile",
                "ruff",
                "pytest",
                "plan_alignment",
                {"name": "unit", "run": unit, "read": "junit", "timeout_s": 120},
            ],
        }
    )
    state = run_workflow(world, repo.parent / "data", repo, config)
    assert state.machine_state is MachineState.COMPLETED
    done = [r for r in state.history if r.status is StepStatus.COMPLETED]
    assert [int(r.step) for r in done] == [1, 2, 4, 5, 6, 7]
    first, final = done[3].result, done[5].result
    assert isinstance(first, CodeValidationReport)
    assert isinstance(final, CodeValidationReport)
    tested = next(t for t in first.tools if t.name == "pytest")
    assert tested.status is ToolStatus.FAILED
    assert "Cannot perform reduction 'median' with string dtype" in tested.detail
    assert statuses(first.tools)["compile"] is ToolStatus.PASSED
    assert statuses(first.tools)["unit"] is ToolStatus.FAILED  # the project's own command too
    # the refinement was told what failed, and its code passes every check
    assert "median" in world.prompt("step6_code_refinement")
    assert all(s is ToolStatus.PASSED for s in statuses(final.tools).values()), final.tools
    assert list(statuses(final.tools)) == ["compile", "ruff", "pytest", "plan_alignment", "unit"]
    assert final.line_coverage is not None
    assert final.line_coverage >= 85
    assert (repo / "tabular" / "impute.py").read_text(encoding="utf-8") == FIXED_IMPUTE
    assert "impute_median, drop_constant_columns" in (
        repo / "tabular" / "preprocessing.py"
    ).read_text(encoding="utf-8")


def test_a_runs_display_is_told_how_the_environment_build_goes(repo: Path, tmp_path: Path) -> None:
    """The build a validation step waits for reaches the runner's observers, line by line.

    Another handle on the store (as the console or ``status`` in another process) sees the
    latest line on the workflow's lease while the build runs, and nothing once it is done.
    """
    config = WorkflowConfig(
        coordinator=Coordinator.PROGRAMMATIC,
        gates=Gates(plan=False, final=False),
        environment=offline(tmp_path / "envs", requirements="requirements.txt"),
    )
    seen: list[ProgressEvent] = []
    noted: list[str] = []
    done = threading.Event()
    data = tmp_path / "data"

    class Recorder:
        def on_event(self, event: ProgressEvent) -> None:
            seen.append(event)

    def watch() -> None:
        with open_store(data) as peek:
            while not done.wait(0.05):
                noted.extend(le.activity for le in peek.leases() if le.activity is not None)

    with open_store(data):
        pass  # made before the watcher opens it
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        run_workflow(TabularWorld(), data, repo, config, [Recorder()])
    finally:
        done.set()
        watcher.join()
    assert any(n.startswith("building the project environment") for n in noted), noted
    with open_store(data) as after:
        assert after.leases() == []  # the note went with the lease
    told = [e for e in seen if e.kind is ProgressKind.STEP_PROGRESS]
    assert told, [e.kind for e in seen]
    assert all(e.step is not None and e.step.step is Step.CODE_VALIDATION for e in told)
    lines = [e.detail or "" for e in told]
    assert lines[0].startswith("building the project environment from requirements.txt")
    assert any(line.startswith("ready in ") for line in lines)  # built once, then cached
    started = [i for i, e in enumerate(seen) if e.kind is ProgressKind.STEP_STARTED]
    first = seen.index(told[0])
    assert seen[max(i for i in started if i < first)].step.step is Step.CODE_VALIDATION  # type: ignore[union-attr]


async def test_an_environment_that_cannot_be_built_fails_the_step_clearly(
    repo: Path, tmp_path: Path
) -> None:
    """A requirement the wheels lack: the validation step's error quotes the installer."""
    (repo / "requirements.txt").write_text("pandas\nno-such-package-here==9\n", encoding="utf-8")
    model = ScriptedChatModel(responder=TabularWorld())
    validator = ValidatorAgent(model, TemplateLoader(), sandbox=SANDBOX)
    agents = StepAgents(planner=validator, validator=validator, programmer=validator)
    ctx = StepContext(
        workflow_id="wf-env",
        step=Step.CODE_VALIDATION,
        workspace=repo,
        requirements=REQUIREMENT,
        plan_markdown=PLAN,
        plan_version=1,
        timeout_s=300,
        validation=ValidationSetup(
            environment=offline(tmp_path / "envs", requirements="requirements.txt")
        ),
    )
    told: list[str] = []
    token = build_progress.set(told.append)  # as a runner sets it around a step
    try:
        with pytest.raises(AgentError) as err:
            await agents.run(ctx)
    finally:
        build_progress.reset(token)
    assert err.value.error_type == "sandbox_error"
    assert told[0].startswith("building the project environment from requirements.txt")
    assert any("no-such-package-here" in line for line in told)  # the installer's own lines
    message = str(err.value)
    assert "could not be built from requirements.txt" in message
    assert "no-such-package-here" in message
    assert "fix requirements.txt" in message
    assert not any((tmp_path / "envs").glob("*-*/bin"))  # nothing half-made is left
