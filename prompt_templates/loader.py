"""Prompt templates: markdown files with a YAML front matter and ``{{variable}}`` placeholders.

A template file looks like this::

    ---
    name: step2_plan_validator
    description: what the template is for
    variables: [requirements, plan]
    ---
    The system message.
    <!-- user -->
    The user message, with {{requirements}} and {{plan}}.

The templates shipped with the project live in the ``prompt_templates`` package; a user can
put files of the same name in an extra directory to override them, or add new ones. A
template is checked when it is loaded (front matter, the ``<!-- user -->`` separator, every
placeholder declared and every declared variable used) and rendered with a single pass of
substitution, so a value that itself contains ``{{...}}`` (code often does) is left as is.

Problems raise ``ConfigError``, naming the template and the variable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import structlog
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from orchestrator.llm.protocol import Message
from state.errors import ConfigError
from state.validation import describe_validation_error

log = structlog.get_logger(__name__)

DEFAULT_PACKAGE = "prompt_templates"
USER_MARKER = "<!-- user -->"

_NAME = re.compile(r"[A-Za-z0-9_]+")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)", re.DOTALL)


class _FrontMatter(BaseModel):
    """The YAML block at the top of a template file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    variables: tuple[str, ...] = ()

    @field_validator("variables")
    @classmethod
    def _identifiers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for var in value:
            if not _IDENTIFIER.fullmatch(var):
                raise ValueError(f"'{var}' is not a valid variable name")
        if len(set(value)) != len(value):
            raise ValueError("a variable is declared twice")
        return value


@dataclass(frozen=True, slots=True)
class PromptTemplate:
    """A parsed prompt template.

    Attributes:
        name: the template's name (its file name without ``.md``).
        description: what it is for.
        variables: the variables it declares; ``render`` needs every one of them.
        system: the system message text, with placeholders (may be empty).
        user: the user message text, with placeholders.
        source: where it was loaded from, for error messages.
    """

    name: str
    description: str
    variables: tuple[str, ...]
    system: str
    user: str
    source: str

    def render(self, **variables: str) -> tuple[Message, ...]:
        """Fill the placeholders and return the chat messages.

        Values for variables the template does not declare are ignored, so a user's own
        template may use only part of what an agent offers.

        Args:
            **variables: a value for every declared variable.

        Returns:
            The system message (unless the template has none) and the user message.

        Raises:
            ConfigError: a declared variable was not given.
        """
        missing = [v for v in self.variables if v not in variables]
        if missing:
            raise ConfigError(
                f"prompt template '{self.name}' needs variable(s) "
                f"{', '.join(repr(v) for v in missing)}, which were not given"
            )

        def fill(match: re.Match[str]) -> str:
            return str(variables[match.group(1)])

        messages: list[Message] = []
        if self.system:
            messages.append(Message("system", _PLACEHOLDER.sub(fill, self.system)))
        messages.append(Message("user", _PLACEHOLDER.sub(fill, self.user)))
        return tuple(messages)


def parse_template(text: str, *, name: str, source: str) -> PromptTemplate:
    """Parse and check the text of a template file.

    Args:
        text: the file's content.
        name: the name the template was asked for (its file name without ``.md``).
        source: where the text came from, for error messages.

    Raises:
        ConfigError: the front matter is missing or invalid, the separator is missing or
            repeated, a placeholder is not declared, or a declared variable is never used.
    """
    where = f"prompt template '{name}' ({source})"
    match = _FRONT_MATTER.match(text)
    if match is None:
        raise ConfigError(f"{where}: must start with a '---' YAML front matter block")
    try:
        raw: Any = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where}: the front matter is not valid YAML ({exc})") from exc
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{where}: the front matter must be a mapping of name, description, variables"
        )
    try:
        meta = _FrontMatter.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {describe_validation_error(exc)}") from exc
    if meta.name != name:
        raise ConfigError(
            f"{where}: the front matter names it '{meta.name}'; rename the file "
            "or the name so that they agree"
        )

    parts = re.split(
        rf"^[ \t]*{re.escape(USER_MARKER)}[ \t]*\r?$", text[match.end() :], flags=re.MULTILINE
    )
    if len(parts) != 2:
        found = "no" if len(parts) == 1 else str(len(parts) - 1)
        raise ConfigError(
            f"{where}: needs exactly one line '{USER_MARKER}' between the system "
            f"and the user message; found {found}"
        )
    system, user = (part.strip() for part in parts)
    if not user:
        raise ConfigError(f"{where}: the user message after '{USER_MARKER}' is empty")

    used = {m.group(1) for m in _PLACEHOLDER.finditer(system + "\n" + user)}
    undeclared = sorted(used - set(meta.variables))
    if undeclared:
        shown = ", ".join("{{" + v + "}}" for v in undeclared)
        raise ConfigError(f"{where}: placeholder(s) {shown} are not declared in its variables")
    unused = [v for v in meta.variables if v not in used]
    if unused:
        raise ConfigError(
            f"{where}: declared variable(s) {', '.join(repr(v) for v in unused)} "
            "are never used in its text"
        )
    return PromptTemplate(meta.name, meta.description, meta.variables, system, user, source)


class TemplateLoader:
    """Loads prompt templates by name, parsing each one once.

    Args:
        extra_dir: a directory of the user's own ``<name>.md`` templates; a file there
            overrides the packaged template of the same name.
        package: the package holding the shipped templates.

    Raises:
        ConfigError: ``extra_dir`` is given but is not a directory.
    """

    def __init__(
        self, extra_dir: str | Path | None = None, *, package: str = DEFAULT_PACKAGE
    ) -> None:
        self._extra = Path(extra_dir) if extra_dir is not None else None
        if self._extra is not None and not self._extra.is_dir():
            raise ConfigError(
                f"prompt template directory '{self._extra}' does not exist or is not a directory"
            )
        self._package = package
        self._cache: dict[str, PromptTemplate] = {}

    def load(self, name: str) -> PromptTemplate:
        """The template called ``name``, from the extra directory or the package.

        Raises:
            ConfigError: no template has that name, or the template is invalid.
        """
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        if not _NAME.fullmatch(name):
            raise ConfigError(
                f"'{name}' is not a valid prompt template name (letters, digits "
                "and underscores only)"
            )
        text, source = self._read(name)
        template = parse_template(text, name=name, source=source)
        self._cache[name] = template
        log.debug("template.loaded", template=name, source=source)
        return template

    def names(self) -> tuple[str, ...]:
        """The names of every template available, packaged or in the extra directory."""
        found = {
            entry.name.removesuffix(".md")
            for entry in resources.files(self._package).iterdir()
            if entry.name.endswith(".md") and entry.is_file()
        }
        if self._extra is not None:
            found.update(p.stem for p in self._extra.glob("*.md") if p.is_file())
        return tuple(sorted(n for n in found if _NAME.fullmatch(n)))

    def _read(self, name: str) -> tuple[str, str]:
        filename = f"{name}.md"
        try:
            if self._extra is not None:
                path = self._extra / filename
                if path.is_file():
                    return path.read_text(encoding="utf-8"), str(path)
            resource = resources.files(self._package).joinpath(filename)
            if resource.is_file():
                return resource.read_text(encoding="utf-8"), f"{self._package}/{filename}"
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"prompt template '{name}' cannot be read ({exc})") from exc
        known = ", ".join(self.names()) or "none"
        raise ConfigError(f"unknown prompt template '{name}'; known templates: {known}")


def load_template(name: str, *, extra_dir: str | Path | None = None) -> PromptTemplate:
    """Load one template without keeping a loader (use ``TemplateLoader`` to cache).

    Args:
        name: the template's name, e.g. ``"step2_plan_validator"``.
        extra_dir: an optional directory of user templates that override the packaged ones.

    Raises:
        ConfigError: unknown name or invalid template.
    """
    return TemplateLoader(extra_dir).load(name)
