"""The workflow configuration: thresholds, limits, gates, coordinator and LLM settings.

Every number of the workflow's rules is a default here and can be changed per workflow in
YAML::

    coordinator: hybrid
    plan_thresholds: {alignment: 9.0}
    limits: {max_plan_revisions: 3}
    gates: {code_review: true}
    environment: {requirements: requirements.txt}
    checks: [compile, ruff, {name: pytest, timeout_s: 300}, {name: lint, run: make lint}]
    shadow: true
    routing: {plan_validation: programmatic, code_validation: llm}

Configs are strict, because a value that slips through is stored with the workflow and read
back on every resume: numbers must be finite (``.inf`` and ``nan`` are refused), ``true`` is
not a number, a number is not a switch, and a key given twice in one mapping is refused.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from state.check_settings import (
    CheckSettings,
    EnvironmentSettings,
    check_names_unique,
    default_checks,
)
from state.errors import ConfigError
from state.repository import RepositorySettings
from state.sandbox_settings import SandboxSettings
from state.steps import MachineState
from state.usage import ModelPrice
from state.validation import (
    STRICT_FROZEN,
    Bool,
    Float,
    Int,
    describe_validation_error,
    read_utf8,
)

_FROZEN = STRICT_FROZEN

DEFAULT_REQUIREMENTS_MAX_CHARS = 64 * 1024


class Coordinator(StrEnum):
    """Who decides each step of a workflow."""

    HYBRID = "hybrid"
    PROGRAMMATIC = "programmatic"
    LLM = "llm"
    SCRIPT = "script"


class PlanThresholds(BaseModel):
    """Phase 1 converges when every score reaches its threshold and nothing is critical."""

    model_config = _FROZEN

    alignment: Float = Field(9.0, ge=0, le=10, description="minimum alignment score (0-10)")
    standardization: Float = Field(8.0, ge=0, le=10, description="minimum standardization score")
    compatibility: Float = Field(8.0, ge=0, le=10, description="minimum compatibility score")
    max_critical_issues: Int = Field(0, ge=0, description="most critical issues allowed")


class CodeThresholds(BaseModel):
    """Phase 2 converges when the code reports meet all of these."""

    model_config = _FROZEN

    review_score_for_tools: Float = Field(
        7.0,
        ge=0,
        le=10,
        description="level-1 review score needed before the deterministic tools run",
    )
    tool_pass_rate: Float = Field(1.0, ge=0, le=1, description="share of tools that must pass")
    max_critical_issues: Int = Field(0, ge=0)
    max_minor_issues: Int = Field(2, ge=0)
    min_line_coverage: Float = Field(85.0, ge=0, le=100, description="percent, where measured")


class Limits(BaseModel):
    """Budgets after which a human is asked."""

    model_config = _FROZEN

    max_plan_revisions: Int = Field(5, ge=0)
    max_code_refinements: Int = Field(3, ge=0)
    max_decisions: Int = Field(50, ge=1)
    max_step_retries: Int = Field(3, ge=0)
    step_timeout_s: Float = Field(
        600.0, gt=0, description="one agent step's time limit (doubled by extended_timeout)"
    )
    backoff_base_s: Float = Field(
        2.0, ge=0, description="wait before a backoff retry of a step; doubles per failure"
    )
    backoff_max_s: Float = Field(60.0, ge=0, description="longest wait before a step retry")


class Gates(BaseModel):
    """Which human checkpoints are on (the escalation gate is always on)."""

    model_config = _FROZEN

    plan: Bool = True
    code_review: Bool = False
    final: Bool = True


class ClassifierSettings(BaseModel):
    """Thresholds of the decision classifier's signals."""

    model_config = _FROZEN

    borderline_margin: Float = Field(
        0.25, ge=0, description="a gating score this close to its threshold is borderline"
    )
    score_drop: Float = Field(1.0, ge=0, description="a drop larger than this is an anomaly")
    complex_error_count: Int = Field(
        2, ge=0, description="more errors than this on the current step route to the LLM"
    )


class LLMSettings(BaseModel):
    """How the LLM orchestrator reaches its model; env vars and flags override these."""

    model_config = _FROZEN

    model: str | None = Field(None, description="model name; OPENAI_MODEL or the server's first")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; OPENAI_BASE_URL")
    temperature: Float = Field(0.0, ge=0, le=2)
    max_tokens: Int = Field(200, ge=16, description="a decision is a short JSON object")
    call_timeout_s: Float = Field(30.0, gt=0, description="timeout of one HTTP call")
    decision_deadline_s: Float = Field(90.0, gt=0, description="all attempts of one decision")
    max_attempts: Int = Field(
        3,
        ge=1,
        description="HTTP requests per decision (transport retries and re-asks included) "
        "before falling back; also the transport attempts of each agent call",
    )
    confidence_threshold: Float = Field(0.7, ge=0, le=1)
    max_calls_per_workflow: Int | None = Field(
        None,
        ge=0,
        description="LLM request budget over all calls; once spent, decisions are "
        "programmatic and agent steps escalate",
    )
    max_tokens_per_workflow: Int | None = Field(None, ge=0)
    max_retry_after_s: Float = Field(30.0, ge=0, description="longest Retry-After honoured")
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="USD per 1k tokens by model name, for the cost estimate; unlisted: free",
    )


class ShadowSettings(BaseModel):
    """Shadow mode: ask the decider the route did not call, record its answer, never apply it.

    ``shadow: true`` is short for ``shadow: {enabled: true}``.
    """

    model_config = _FROZEN

    enabled: Bool = Field(False, description="run the other decider beside every decision")
    max_calls: Int = Field(
        20,
        ge=0,
        description="shadow LLM requests per workflow, apart from the llm: call budget",
    )


class WorkflowConfig(BaseModel):
    """Everything that can be set per workflow."""

    model_config = _FROZEN

    coordinator: Coordinator = Coordinator.HYBRID
    coordinator_script: str | None = Field(
        None,
        description="Python file defining decide(...), for coordinator: script; a relative "
        "path is read from the config file's directory",
    )
    requirements_max_chars: Int = Field(
        DEFAULT_REQUIREMENTS_MAX_CHARS,
        ge=1,
        description="longest requirement accepted (it goes into every prompt and snapshot)",
    )
    plan_thresholds: PlanThresholds = PlanThresholds()
    code_thresholds: CodeThresholds = CodeThresholds()
    limits: Limits = Limits()
    gates: Gates = Gates()
    classifier: ClassifierSettings = ClassifierSettings()
    llm: LLMSettings = LLMSettings()
    repository: RepositorySettings = Field(
        RepositorySettings(), description="set by run --repo: the git branch and worktree"
    )
    sandbox: SandboxSettings = SandboxSettings()
    environment: EnvironmentSettings = EnvironmentSettings()
    checks: tuple[CheckSettings, ...] = Field(
        default_factory=default_checks,
        description="the level-2 checks, in order: built-in names (compile, ruff, pytest, "
        "plan_alignment, mypy) or {name, run: COMMAND} entries",
    )

    shadow: ShadowSettings = ShadowSettings()
    routing: dict[MachineState, Coordinator] = Field(
        default_factory=dict,
        description="the coordinator per machine state, instead of coordinator: for that state",
    )

    @field_validator("checks", mode="before")
    @classmethod
    def _check_names(cls, value: Any) -> Any:
        """A bare name stands for ``{name: NAME}``."""
        if isinstance(value, list | tuple):
            return [{"name": item} if isinstance(item, str) else item for item in value]
        return value

    @field_validator("shadow", mode="before")
    @classmethod
    def _shadow_switch(cls, value: object) -> object:
        return {"enabled": value} if isinstance(value, bool) else value

    @field_validator("routing", mode="before")
    @classmethod
    def _known_states(cls, value: object) -> object:
        if isinstance(value, dict):
            states = {s.value for s in MachineState}
            modes = {c.value for c in Coordinator}
            for key, mode in value.items():
                if key not in states:
                    raise ValueError(
                        f"routing: {key!r} is not a machine state; use one of "
                        f"{', '.join(sorted(states))}"
                    )
                if mode not in modes:
                    raise ValueError(
                        f"routing: {key}: {mode!r} is not a coordinator; use one of "
                        f"{', '.join(sorted(modes))}"
                    )
        return value

    @model_validator(mode="after")
    def _script_needs_a_file(self) -> WorkflowConfig:
        scripted = self.coordinator is Coordinator.SCRIPT or any(
            mode is Coordinator.SCRIPT for mode in self.routing.values()
        )
        if scripted and not self.coordinator_script:
            raise ValueError("coordinator 'script' needs coordinator_script: PATH.py")
        if not self.checks:
            raise ValueError("checks is empty: list at least one check, or leave it out")
        twice = check_names_unique(self.checks)
        if twice is not None:
            raise ValueError(f"check {twice!r} is listed twice in checks; keep one")
        return self

    def coordinator_for(self, state: MachineState) -> tuple[Coordinator, bool]:
        """The coordinator mode for ``state``, and whether ``routing:`` set it."""
        mode = self.routing.get(state)
        return (self.coordinator, False) if mode is None else (mode, True)


def parse_config(data: Any, source: str = "config") -> WorkflowConfig:
    """Validate a configuration mapping.

    Args:
        data: the mapping, as parsed from YAML or JSON (None means all defaults).
        source: where it came from, for the error message.

    Raises:
        ConfigError: naming the field and the problem.
    """
    if data is None:
        return WorkflowConfig()
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return WorkflowConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(
            f"{source}: {describe_validation_error(exc)}; fix it (orchestrator schema config "
            "lists every setting)"
        ) from exc


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping.

    Plain YAML keeps the last value silently, so a setting typed twice would lose one of
    them without a word.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<" merges are YAML's own way of repeating keys
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:
                continue  # an unhashable key: the base class reports it
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first given at line {first + 1}); keep one",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path) -> WorkflowConfig:
    """Load and validate a YAML configuration file.

    A relative ``coordinator_script``, ``environment.python``, ``environment.find_links`` or
    ``environment.cache_dir`` is resolved against the file's directory and kept as an
    absolute path, so the workflow finds it again when resumed from anywhere.

    Raises:
        ConfigError: the file is missing, is not UTF-8 YAML, repeats a key, or a field is
            invalid.
    """
    p = Path(path)
    text = read_utf8(p, "configuration", ConfigError)
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML ({where}{problem})") from exc
    config = parse_config(data, str(p))
    if config.coordinator_script:
        script = Path(config.coordinator_script).expanduser()
        if not script.is_absolute():
            script = p.resolve().parent / script
        config = config.model_copy(update={"coordinator_script": str(script.resolve())})
    env = config.environment
    paths = {
        name: _beside(p, value)
        for name in ("python", "find_links", "cache_dir")
        if (value := getattr(env, name)) and (name != "python" or "/" in value)
    }
    if paths:
        config = config.model_copy(update={"environment": env.model_copy(update=paths)})
    return config


def _beside(config_file: Path, value: str) -> str:
    """``value`` as an absolute path, a relative one read from the config file's directory."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = config_file.resolve().parent / path
    return str(path.absolute())


def dump_config(config: WorkflowConfig) -> str:
    """``config`` as YAML that ``load_config`` reads back to an equal config."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
