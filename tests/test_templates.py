"""The prompt templates: the shipped ones, their format and the loader's checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.validator import CODE_REVIEW, PLAN_REPORT, STANDARDIZATION, ReportSpec
from prompt_templates.loader import TemplateLoader, load_template
from state.errors import ConfigError
from state.steps import ALL_TEMPLATES

STEP_TEMPLATES = sorted(ALL_TEMPLATES)


def write_template(
    directory: Path,
    name: str,
    body: str,
    *,
    variables: str = "[plan]",
    description: str = "a test template",
) -> Path:
    path = directory / f"{name}.md"
    path.write_text(
        f"---\nname: {name}\ndescription: {description}\nvariables: {variables}\n---\n{body}",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def loader() -> TemplateLoader:
    return TemplateLoader()


def test_every_step_template_ships(loader: TemplateLoader) -> None:
    """Every template named in STEP_SPECS is in the prompt_templates package."""
    assert set(STEP_TEMPLATES) <= set(loader.names())


@pytest.mark.parametrize("name", STEP_TEMPLATES)
def test_template_renders_with_its_declared_variables(loader: TemplateLoader, name: str) -> None:
    """Each step template fills every placeholder from its declared variables."""
    template = loader.load(name)
    values = {var: f"<<value of {var}>>" for var in template.variables}
    messages = template.render(**values)
    assert [m.role for m in messages] == ["system", "user"]
    text = "\n".join(m.content for m in messages)
    for var in template.variables:
        assert f"<<value of {var}>>" in text
    assert "{{" not in text
    assert template.description


@pytest.mark.parametrize("name", STEP_TEMPLATES)
def test_missing_variable_is_named(loader: TemplateLoader, name: str) -> None:
    """Rendering without a declared variable fails naming the variable and the template."""
    template = loader.load(name)
    missing = template.variables[-1]
    values = {var: "x" for var in template.variables if var != missing}
    with pytest.raises(ConfigError, match=rf"'{name}'.*'{missing}'"):
        template.render(**values)


@pytest.mark.parametrize(
    ("name", "spec"),
    [
        ("step2_plan_validator", PLAN_REPORT),
        ("step5a_alignment_validator", CODE_REVIEW),
        ("step5b_standardization_validator", STANDARDIZATION),
    ],
)
def test_validator_templates_spell_out_both_output_formats(
    loader: TemplateLoader, name: str, spec: ReportSpec
) -> None:
    """A validator template names every JSON field and every labelled line the parser reads."""
    template = loader.load(name)
    text = template.system + template.user
    for field in spec.fields:
        assert f"`{field.name}`" in text
        assert f"\n{field.labels[0]}: " in text
    assert "`report`" in text


def test_unknown_template_is_named(loader: TemplateLoader) -> None:
    """Asking for a template that does not exist names it and lists the known ones."""
    with pytest.raises(ConfigError, match=r"unknown prompt template 'step9_nothing'.*step1"):
        loader.load("step9_nothing")


def test_template_name_cannot_be_a_path(loader: TemplateLoader) -> None:
    """A name with a path in it is refused before any file is opened."""
    with pytest.raises(ConfigError, match=r"'\.\./secrets' is not a valid"):
        loader.load("../secrets")


def test_undeclared_placeholder_is_named(tmp_path: Path) -> None:
    """A placeholder the front matter does not declare fails the load, naming it."""
    write_template(tmp_path, "mine", "System {{plan}}.\n<!-- user -->\nUser {{code}}.\n")
    with pytest.raises(ConfigError, match=r"'mine'.*\{\{code\}\}"):
        TemplateLoader(tmp_path).load("mine")


def test_declared_but_unused_variable_is_an_error(tmp_path: Path) -> None:
    """A declared variable that the text never uses fails the load, naming it."""
    write_template(
        tmp_path, "mine", "System.\n<!-- user -->\nUser {{plan}}.\n", variables="[plan, code]"
    )
    with pytest.raises(ConfigError, match=r"'code'.*never used"):
        TemplateLoader(tmp_path).load("mine")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("System {{plan}}, no separator.\n", "found no"),
        ("A\n<!-- user -->\nB {{plan}}\n<!-- user -->\nC\n", "found 2"),
        ("System {{plan}}.\n<!-- user -->\n   \n", "user message .* is empty"),
    ],
)
def test_separator_problems_are_reported(tmp_path: Path, body: str, problem: str) -> None:
    """The user marker must appear exactly once, with a user message after it."""
    write_template(tmp_path, "mine", body)
    with pytest.raises(ConfigError, match=problem):
        TemplateLoader(tmp_path).load("mine")


@pytest.mark.parametrize(
    "front",
    [
        "no front matter at all\n<!-- user -->\nx\n",
        "---\nname: mine\n---\nx\n<!-- user -->\ny\n",
        "---\nname: mine\ndescription: d\nvariables: []\ncolour: red\n---\nx\n<!-- user -->\ny\n",
        "---\nname: other\ndescription: d\nvariables: []\n---\nx\n<!-- user -->\ny\n",
        "---\nname: mine\ndescription: d\nvariables: [not-a-name]\n---\nx\n<!-- user -->\ny\n",
        "---\n[unclosed\n---\nx\n<!-- user -->\ny\n",
    ],
)
def test_bad_front_matter_is_a_config_error(tmp_path: Path, front: str) -> None:
    """Missing, incomplete, unknown-key, misnamed or invalid front matter fails the load."""
    (tmp_path / "mine.md").write_text(front, encoding="utf-8")
    with pytest.raises(ConfigError, match="'mine'"):
        TemplateLoader(tmp_path).load("mine")


def test_extra_dir_overrides_a_packaged_template(tmp_path: Path) -> None:
    """A user's file named like a shipped template replaces it."""
    write_template(tmp_path, "step1_initial_planner", "Be brief.\n<!-- user -->\n{{plan}}\n")
    template = TemplateLoader(tmp_path).load("step1_initial_planner")
    assert template.system == "Be brief."
    assert template.source == str(tmp_path / "step1_initial_planner.md")
    assert (
        TemplateLoader(tmp_path).load("step2_plan_validator").source.startswith("prompt_templates/")
    )


def test_missing_extra_dir_is_a_config_error(tmp_path: Path) -> None:
    """An override directory that does not exist is reported when the loader is built."""
    with pytest.raises(ConfigError, match="does not exist"):
        TemplateLoader(tmp_path / "nope")


def test_loader_parses_each_template_once(tmp_path: Path) -> None:
    """A loaded template is cached: later changes to the file are not re-read."""
    path = write_template(tmp_path, "mine", "First.\n<!-- user -->\n{{plan}}\n")
    loader = TemplateLoader(tmp_path)
    first = loader.load("mine")
    path.write_text("garbage", encoding="utf-8")
    assert loader.load("mine") is first


def test_values_are_substituted_once(tmp_path: Path) -> None:
    """A value that contains a placeholder (code often does) is inserted literally."""
    write_template(tmp_path, "mine", "S.\n<!-- user -->\nPlan: {{ plan }}\n")
    (message_system, message_user) = load_template("mine", extra_dir=tmp_path).render(
        plan="uses {{plan}} and {{other}}", unused="ignored"
    )
    assert message_system.content == "S."
    assert message_user.content == "Plan: uses {{plan}} and {{other}}"


def test_template_without_system_message_renders_user_only(tmp_path: Path) -> None:
    """An empty system part yields a single user message."""
    write_template(tmp_path, "mine", "\n<!-- user -->\nOnly {{plan}}\n")
    messages = TemplateLoader(tmp_path).load("mine").render(plan="this")
    assert [(m.role, m.content) for m in messages] == [("user", "Only this")]
