"""The ``environment:`` and ``checks:`` sections: which Python judges the code, and with what.

In YAML::

    environment: {requirements: requirements.txt, find_links: ../wheels, offline: true}
    checks:
      - compile
      - ruff
      - {name: pytest, timeout_s: 300}
      - {name: unit, run: python -m pytest tests/unit -x --junitxml=junit.xml,
         read: junit, junit: junit.xml}

Without ``environment:`` the checks run with the orchestrator's own interpreter; with
``python:`` they run with that interpreter (or virtualenv); with ``requirements:`` or
``pyproject:`` a virtualenv is built from that file of the workspace and cached by its hash.
Without ``checks:`` the built-ins run as before: compile, ruff, pytest, plan_alignment.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field, model_validator

from state.validation import STRICT_FROZEN, Bool, Float

BUILTIN_CHECKS = ("compile", "ruff", "pytest", "plan_alignment", "mypy")
"""The checks the orchestrator knows by name; any other name needs ``run:``."""

DEFAULT_CHECKS = ("compile", "ruff", "pytest", "plan_alignment")
"""What runs when the configuration has no ``checks:``."""


class EnvironmentSettings(BaseModel):
    """Which Python runs the checks: the orchestrator's, a given one, or one built here."""

    model_config = STRICT_FROZEN

    python: str | None = Field(
        None, description="an interpreter or a virtualenv directory that runs the checks"
    )
    requirements: str | None = Field(
        None, description="a requirements file of the workspace to build a virtualenv from"
    )
    pyproject: str | None = Field(
        None, description="a pyproject.toml of the workspace whose dependencies are installed"
    )
    extras: tuple[str, ...] = Field(
        (), description="optional-dependency groups of the pyproject to install too"
    )
    find_links: str | None = Field(
        None, description="a directory of wheels to install from (pip's --find-links)"
    )
    offline: Bool = Field(False, description="install from find_links only (--no-index)")
    cache_dir: str | None = Field(
        None,
        description="where built environments are kept (default: $ORCHESTRATOR_ENV_CACHE, "
        "else the user cache directory)",
    )
    build_timeout_s: Float = Field(
        900.0, gt=0, le=86_400, description="longest an environment build may take"
    )

    @model_validator(mode="after")
    def _one_source(self) -> EnvironmentSettings:
        given = [n for n in ("python", "requirements", "pyproject") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(
                f"environment takes one of python, requirements or pyproject, got {given}"
            )
        if self.offline and not self.find_links:
            raise ValueError("environment offline: true needs find_links: DIR of wheels")
        if self.extras and not self.pyproject:
            raise ValueError("environment extras apply to pyproject: FILE only")
        return self

    @property
    def builds(self) -> bool:
        """Whether a virtualenv is built from a file of the workspace."""
        return bool(self.requirements or self.pyproject)


class CheckVerdict(StrEnum):
    """How a command check's pass or fail is read."""

    EXIT_CODE = "exit_code"
    JUNIT = "junit"


class CheckSettings(BaseModel):
    """One level-2 check: a built-in by name, or a command the project already uses."""

    model_config = STRICT_FROZEN

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    run: str | tuple[str, ...] | None = Field(
        None,
        description="the command (a string split like a shell would, or a list); runs in a "
        "copy of the workspace with the project environment first on PATH",
    )
    timeout_s: Float | None = Field(
        None, gt=0, le=86_400, description="wall-clock limit (default: sandbox.wall_seconds)"
    )
    read: CheckVerdict = Field(
        CheckVerdict.EXIT_CODE,
        description="exit_code (0 passes) or junit (the junit XML's failures and errors)",
    )
    junit: str | None = Field(
        None,
        description="where the command writes its junit XML, relative to the workspace; "
        "or put {report:junit} in the command",
    )
    args: tuple[str, ...] = Field((), description="extra arguments of a built-in tool")

    @model_validator(mode="after")
    def _known_or_command(self) -> CheckSettings:
        if self.run is None:
            if self.name not in BUILTIN_CHECKS:
                raise ValueError(
                    f"unknown check {self.name!r}: the built-ins are "
                    f"{', '.join(BUILTIN_CHECKS)}; give run: COMMAND for a command check"
                )
            if self.read is not CheckVerdict.EXIT_CODE or self.junit:
                raise ValueError(f"check {self.name!r}: read and junit apply to run: checks")
            if self.args and self.name == "plan_alignment":
                raise ValueError("check 'plan_alignment' takes no args")
            return self
        if self.name in BUILTIN_CHECKS:
            raise ValueError(
                f"check {self.name!r} is a built-in; give the command check another name"
            )
        if not (self.run.strip() if isinstance(self.run, str) else self.run):
            raise ValueError(f"check {self.name!r}: run is empty")
        if self.args:
            raise ValueError(f"check {self.name!r}: args apply to built-ins; put them in run")
        if (
            self.read is CheckVerdict.JUNIT
            and not self.junit
            and "{report:junit}"
            not in (self.run if isinstance(self.run, str) else " ".join(self.run))
        ):
            raise ValueError(
                f"check {self.name!r}: read: junit needs junit: FILE or {{report:junit}} "
                "in the command"
            )
        return self


def default_checks() -> tuple[CheckSettings, ...]:
    """The checks of a configuration without ``checks:``."""
    return tuple(CheckSettings(name=name) for name in DEFAULT_CHECKS)


def check_names_unique(checks: tuple[CheckSettings, ...]) -> str | None:
    """The first name given to two checks, None when every name is used once."""
    seen: set[str] = set()
    for check in checks:
        if check.name in seen:
            return check.name
        seen.add(check.name)
    return None


class ValidationSetup(BaseModel):
    """What level 2 of code validation is given: the environment and the checks to run."""

    model_config = STRICT_FROZEN

    environment: EnvironmentSettings = EnvironmentSettings()
    checks: tuple[CheckSettings, ...] = Field(default_factory=default_checks)
