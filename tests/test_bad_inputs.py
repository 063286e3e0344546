"""Every bad input gets one clear line on stderr, exit 2, and leaves the store as it was.

Files that are not UTF-8, configs that are not strict, unsafe workflow ids, oversized or
control-character requirements, unloadable coordinator scripts and workspaces that cannot
be made are each refused before anything is stored; ``list`` and the data directory's tree
are compared before and after. Stored text is displayed escaped.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from orchestrator.cli import cli
from orchestrator.composition import open_store
from orchestrator.running.updates import new_workflow
from state.config import WorkflowConfig, load_config

from builders import Driver
from support.fake_openai import FakeOpenAIServer
from support.not_an_api import NOT_AN_API, not_an_api
from support.world import GOOD_PLAN, World

ROOT = Path(__file__).resolve().parent.parent
ID_RULE = "A-Z a-z 0-9 . _ -"
CLI_MAIN = "from orchestrator.cli import main; main()"
# What must never reach a terminal raw: C0 controls but tab and newline, DEL, C1, bidi.
DISPLAY_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    """An OpenAI-compatible loopback server playing a workflow that reaches the plan gate."""
    world = World(plan_reports=[GOOD_PLAN])
    with FakeOpenAIServer(responder=world.http_responder) as srv:
        yield srv


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """The data directory the CLI uses in these tests."""
    return tmp_path / "data"


@pytest.fixture
def env(data: Path, server: FakeOpenAIServer) -> dict[str, str]:
    """The environment of a CLI run: the fake server and the data directory."""
    return {
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_MODEL": "fake-model",
        "ORCHESTRATOR_DATA_DIR": str(data),
    }


def invoke(env: dict[str, str], *args: str, input: bytes | None = None) -> Result:
    """Run the CLI in-process; an exception other than an exit is kept in the result."""
    return CliRunner().invoke(cli, list(args), env=env, input=input)


def run_args(wid: str = "wf-cli", *extra: str) -> list[str]:
    """``run`` arguments that stop at the plan gate without asking anything."""
    return ["run", "--id", wid, "--coordinator", "programmatic", "--no-input", "--quiet", *extra]


def run_to_plan_gate(env: dict[str, str], wid: str = "wf-cli", *extra: str) -> None:
    """A stored workflow waiting at the plan gate."""
    result = invoke(env, *run_args(wid, "--requirements", "fill missing values", *extra))
    assert result.exit_code == 0, (result.output, result.exception)


@dataclass(frozen=True)
class Snapshot:
    """What ``list`` shows and which paths exist under a directory."""

    listed: str
    tree: frozenset[str]


def snapshot(env: dict[str, str], folder: Path) -> Snapshot:
    """``list --json`` and every path under ``folder`` (SQLite's journal files aside)."""
    listed = invoke(env, "list", "--json")
    assert listed.exit_code == 0, listed.output
    tree = frozenset(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if not p.name.endswith(("-wal", "-shm", "-journal"))
    )
    return Snapshot(listed.stdout, tree)


def refused(result: Result, *fragments: str) -> str:
    """Assert exit 2 with exactly one ``error:`` line on stderr holding ``fragments``."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: ") and "Traceback" not in result.stderr, line
    for fragment in fragments:
        assert fragment in line, (fragment, line)
    assert DISPLAY_UNSAFE.search(line) is None, line
    return line


@pytest.fixture
def stored(env: dict[str, str], tmp_path: Path) -> Snapshot:
    """One workflow at the plan gate; the snapshot of everything under ``tmp_path``."""
    run_to_plan_gate(env)
    return snapshot(env, tmp_path)


# -- 1. files that are not UTF-8 -----------------------------------------------------------

LATIN1 = "requirement: caf\xe9 au lait\n".encode("latin-1")  # 0xe9 at byte offset 16


def test_state_file_not_utf8_is_one_line(tmp_path: Path) -> None:
    """A Latin-1 state snapshot is refused naming the file, UTF-8 and the byte offset."""
    bad = tmp_path / "state.json"
    bad.write_bytes(b'{"workflow_id": "caf\xe9"}')
    refused(invoke({}, "decide", str(bad)), "state.json", "not UTF-8", "byte offset 20")


def test_state_on_stdin_not_utf8_is_one_line() -> None:
    """A state snapshot piped in that is not UTF-8 is refused the same way, naming stdin."""
    result = invoke({}, "decide", "-", input=b'{"a": "\xff"}')
    refused(result, "stdin", "not UTF-8", "byte offset 7")


def test_config_not_utf8_is_one_line(tmp_path: Path) -> None:
    """A Latin-1 config is refused naming the file, UTF-8 and the byte offset."""
    state = tmp_path / "s.json"
    state.write_text(Driver().state.model_dump_json(), encoding="utf-8")
    bad = tmp_path / "c.yaml"
    bad.write_bytes(b"coordinator: programmatic\n# caf\xe9\n")
    line = refused(invoke({}, "decide", str(state), "--config", str(bad)), "c.yaml")
    assert "not UTF-8" in line and "byte offset 31" in line


def test_requirements_file_not_utf8_stores_nothing(
    env: dict[str, str], tmp_path: Path, stored: Snapshot
) -> None:
    """A Latin-1 requirements file is refused before anything is stored or made."""
    bad = tmp_path / "req.txt"
    bad.write_bytes(LATIN1)
    before = snapshot(env, tmp_path)
    result = invoke(env, *run_args("wf-latin", "--requirements-file", str(bad)))
    refused(result, "req.txt", "not UTF-8", "byte offset 16")
    assert snapshot(env, tmp_path) == before


def test_missing_requirements_file_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    """A requirements file that does not exist is one line, not a usage screen."""
    result = invoke(env, *run_args("wf-none", "--requirements-file", str(tmp_path / "no.txt")))
    refused(result, "no.txt", "cannot read the requirements")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("option", "make", "fragment"),
    [
        ("--requirements-file", "dir", "cannot read the requirements"),
        ("--workspace", "file", "cannot create the workspace"),
        ("--data-dir", "file", "is a file, not a directory"),
    ],
    ids=["requirements-file-is-a-directory", "workspace-is-a-file", "data-dir-is-a-file"],
)
def test_a_path_of_the_wrong_kind_is_one_line(
    env: dict[str, str], tmp_path: Path, stored: Snapshot, option: str, make: str, fragment: str
) -> None:
    """A directory where a file is wanted (or a file for a directory) is one line, not usage."""
    odd = tmp_path / "odd"
    if make == "dir":
        odd.mkdir()
    else:
        odd.write_text("not a directory", encoding="utf-8")
    before = snapshot(env, tmp_path)
    extra = [] if option == "--requirements-file" else ["-r", "x"]
    refused(invoke(env, *run_args("wf-odd", *extra, option, str(odd))), "odd", fragment)
    assert snapshot(env, tmp_path) == before


# -- 2. strict configs ---------------------------------------------------------------------

STRICT_CASES = [
    ("limits:\n  step_timeout_s: .inf\n", "limits.step_timeout_s", "finite"),
    ("llm:\n  call_timeout_s: .inf\n", "llm.call_timeout_s", "finite"),
    ("llm:\n  decision_deadline_s: .Inf\n", "llm.decision_deadline_s", "finite"),
    ("classifier:\n  score_drop: .inf\n", "classifier.score_drop", "finite"),
    ("plan_thresholds:\n  alignment: .nan\n", "plan_thresholds.alignment", "finite"),
    ("llm:\n  max_retry_after_s: .inf\n", "llm.max_retry_after_s", "finite"),
    ("limits:\n  max_decisions: true\n", "limits.max_decisions", "valid integer"),
    ("llm:\n  max_tokens: 300.0\n", "llm.max_tokens", "valid integer"),
    ("code_thresholds:\n  tool_pass_rate: true\n", "code_thresholds.tool_pass_rate", "number"),
    ("gates:\n  code_review: 1\n", "gates.code_review", "valid boolean"),
    (
        "limits:\n  max_decisions: 9\ngates: {plan: true}\nlimits:\n  max_plan_revisions: 2\n",
        "duplicate key 'limits'",
        "line 4",
    ),
    ("gates: {plan: true, plan: false}\n", "duplicate key 'plan'", "line 1"),
]


@pytest.mark.parametrize(("text", "name", "problem"), STRICT_CASES)
def test_lax_config_values_are_refused(tmp_path: Path, text: str, name: str, problem: str) -> None:
    """Infinite or NaN numbers, booleans for numbers and repeated keys are refused by name."""
    state = tmp_path / "s.json"
    state.write_text(Driver().state.model_dump_json(), encoding="utf-8")
    config = tmp_path / "c.yaml"
    config.write_text(text, encoding="utf-8")
    refused(invoke({}, "decide", str(state), "--config", str(config)), "c.yaml", name, problem)


def test_lax_config_is_refused_before_run_stores(
    env: dict[str, str], tmp_path: Path, stored: Snapshot
) -> None:
    """Run with an infinite timeout stores nothing (such a workflow could never be loaded)."""
    config = tmp_path / "c.yaml"
    config.write_text("limits:\n  step_timeout_s: .inf\n", encoding="utf-8")
    before = snapshot(env, tmp_path)
    result = invoke(env, *run_args("wf-inf", "-r", "x", "--config", str(config)))
    refused(result, "limits.step_timeout_s")
    assert snapshot(env, tmp_path) == before


def test_strict_config_still_takes_whole_numbers_for_floats(tmp_path: Path) -> None:
    """An integer where a float is wanted is still accepted (and read as that float)."""
    config = tmp_path / "c.yaml"
    config.write_text("plan_thresholds: {alignment: 9}\nllm: {temperature: 1}\n", "utf-8")
    loaded = load_config(config)
    assert loaded.plan_thresholds.alignment == 9.0 and loaded.llm.temperature == 1.0


# -- 3. run checks everything before it stores ---------------------------------------------


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        (None, "no such file"),
        ("def decide(ctx:\n", "importing it failed"),
        ("x = 1\n", "define a function decide(ctx)"),
    ],
    ids=["missing", "syntax-error", "no-decide"],
)
def test_unloadable_coordinator_script_stores_nothing(
    env: dict[str, str], tmp_path: Path, stored: Snapshot, script: str | None, problem: str
) -> None:
    """A script coordinator whose file is missing or broken is refused before run stores."""
    conf = tmp_path / "conf"
    conf.mkdir()
    if script is not None:
        (conf / "mine.py").write_text(script, encoding="utf-8")
    config = conf / "c.yaml"
    config.write_text("coordinator: script\ncoordinator_script: mine.py\n", encoding="utf-8")
    before = snapshot(env, tmp_path)
    result = invoke(
        env, "run", "--id", "wf-script", "-r", "x", "--config", str(config), "--no-input", "-q"
    )
    refused(result, "coordinator_script", "mine.py", problem)
    assert snapshot(env, tmp_path) == before


def test_workspace_that_cannot_be_made_stores_nothing(
    env: dict[str, str], tmp_path: Path, stored: Snapshot
) -> None:
    """A workspace under a file (mkdir fails) is one line; no workflow, no directory left."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a directory should be", encoding="utf-8")
    before = snapshot(env, tmp_path)
    workspace = blocker / "deeper" / "ws"
    result = invoke(env, *run_args("wf-ws", "-r", "x", "--workspace", str(workspace)))
    refused(result, "cannot create the workspace", "blocker", "nothing was stored")
    assert snapshot(env, tmp_path) == before


def test_default_workspace_blocked_by_a_file_stores_nothing(
    env: dict[str, str], tmp_path: Path, stored: Snapshot
) -> None:
    """A file at DATA_DIR/workspaces/ID: the run is refused and that file is untouched."""
    squatter = tmp_path / "data" / "workspaces" / "wf-taken-path"
    squatter.write_text("keep me", encoding="utf-8")
    before = snapshot(env, tmp_path)
    result = invoke(env, *run_args("wf-taken-path", "-r", "x"))
    refused(result, "cannot create the workspace", "wf-taken-path")
    assert snapshot(env, tmp_path) == before
    assert squatter.read_text(encoding="utf-8") == "keep me"


def test_existing_id_is_refused_before_anything_is_made(
    env: dict[str, str], tmp_path: Path, stored: Snapshot
) -> None:
    """Running with the id of a stored workflow is refused as bad input and changes nothing."""
    before = invoke(env, "export", "wf-cli").stdout
    refused(invoke(env, *run_args("wf-cli", "-r", "again")), "wf-cli already exists", "resume")
    assert invoke(env, "export", "wf-cli").stdout == before
    assert snapshot(env, tmp_path) == stored


FILE_SIZE_LIMIT = 32 * 1024  # SQLite's shared-memory file fits; a 60 KB snapshot does not


def _set_file_size_limit() -> None:
    # Runs in the child: a write past the limit fails with EFBIG (Python ignores SIGXFSZ).
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


def test_full_disk_while_storing_leaves_no_workspace(
    env: dict[str, str], tmp_path: Path, stored: Snapshot
) -> None:
    """When the database cannot be written (file size limit), no workspace directory stays."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    child_env.update(env, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    before = snapshot(env, tmp_path)
    r = subprocess.run(
        [sys.executable, "-c", CLI_MAIN, *run_args("wf-full"), "-r", "a" * 60_000],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        preexec_fn=_set_file_size_limit,
    )
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "wf-full" in r.stderr, r.stderr
    assert snapshot(env, tmp_path) == before
    assert not (tmp_path / "data" / "workspaces" / "wf-full").exists()


# -- 4. workflow ids -----------------------------------------------------------------------

BAD_IDS = ["../escaped", "{tmp}/absolute", "a/b", ".hidden", "-flag", "sp ace", "x" * 65, "wf\x1b"]


@pytest.mark.parametrize("wid", BAD_IDS, ids=range(len(BAD_IDS)))
def test_unsafe_id_is_refused_by_run(
    env: dict[str, str], tmp_path: Path, stored: Snapshot, wid: str
) -> None:
    """Run --id with a path, a separator or an odd character is refused; nothing is written."""
    result = invoke(env, *run_args(wid.format(tmp=tmp_path), "-r", "x"))
    refused(result, "workflow id", ID_RULE)
    assert snapshot(env, tmp_path) == stored


COMMANDS_TAKING_IDS = [
    ["resume", "{}", "--no-input"],
    ["status", "{}"],
    ["inspect", "{}"],
    ["export", "{}"],
    ["state", "{}"],
    ["approve", "{}"],
    ["reject", "{}"],
    ["request-changes", "{}", "--change", "more"],
]


@pytest.mark.parametrize("args", COMMANDS_TAKING_IDS, ids=lambda a: a[0])
def test_unsafe_and_unknown_ids_are_one_line(
    env: dict[str, str], tmp_path: Path, stored: Snapshot, args: list[str]
) -> None:
    """Each command taking an id refuses an unsafe one (with the charset) and an unknown one."""
    unsafe = invoke(env, *(a.format("../wf-cli") for a in args))
    refused(unsafe, "'../wf-cli'", ID_RULE)
    unknown = invoke(env, *(a.format("wf-nope") for a in args))
    refused(unknown, "wf-nope")
    assert snapshot(env, tmp_path) == stored


# -- 5. the coordinator script is found from anywhere --------------------------------------

SCRIPT = "def decide(ctx):\n    return None  # the programmatic decision\n"


def test_coordinator_script_is_relative_to_its_config(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative coordinator_script is read beside its config and stored absolute for resume."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "mine.py").write_text(SCRIPT, encoding="utf-8")
    (conf / "c.yaml").write_text(
        "coordinator: script\ncoordinator_script: mine.py\n", encoding="utf-8"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    args = ["--id", "wf-s", "-r", "fill missing values", "--no-input", "-q"]
    result = invoke(env, "run", *args, "--config", str(conf / "c.yaml"))
    assert result.exit_code == 0, (result.output, result.exception)
    config_out = tmp_path / "out.yaml"
    assert invoke(env, "state", "wf-s", "--config-out", str(config_out)).exit_code == 0
    assert load_config(config_out).coordinator_script == str((conf / "mine.py").resolve())
    monkeypatch.chdir(tmp_path)
    assert invoke(env, "approve", "wf-s").exit_code == 0
    resumed = invoke(env, "resume", "wf-s", "--no-input", "-q")
    assert resumed.exit_code == 0, (resumed.output, resumed.exception)
    decisions = json.loads(invoke(env, "inspect", "wf-s", "--json").stdout)["decisions"]
    assert len(decisions) > 3 and {d["source"] for d in decisions} <= {"script", "human"}
    assert "script" in {d["source"] for d in decisions[3:]}


# -- 6. requirements: size and control characters ------------------------------------------


def test_requirements_over_the_default_limit_are_refused(
    env: dict[str, str], tmp_path: Path, stored: Snapshot
) -> None:
    """More than 64 KiB of requirements is refused naming the size, limit and setting."""
    big = tmp_path / "big.txt"
    big.write_text("a" * (64 * 1024 + 1), encoding="utf-8")
    before = snapshot(env, tmp_path)
    result = invoke(env, *run_args("wf-big", "--requirements-file", str(big)))
    refused(result, "big.txt", "65537 characters", "65536", "requirements_max_chars")
    assert snapshot(env, tmp_path) == before


def test_requirements_limit_is_configurable(
    env: dict[str, str], tmp_path: Path, stored: Snapshot
) -> None:
    """requirements_max_chars in the config sets the limit; at the limit the run goes on."""
    config = tmp_path / "c.yaml"
    config.write_text("requirements_max_chars: 19\n", encoding="utf-8")
    before = snapshot(env, tmp_path)
    over = invoke(env, *run_args("wf-20", "-r", "fill missing values!", "--config", str(config)))
    refused(over, "20 characters", "limit of 19")
    assert snapshot(env, tmp_path) == before
    run_to_plan_gate(env, "wf-19", "--config", str(config))  # "fill missing values": 19


CONTROL = [
    ("nul\x00", "U+0000", "column 4"),
    ("bell\x07", "U+0007", "column 5"),
    ("clear\x1b[2J", "U+001B", "column 6"),
    ("first line\r\nsecond \x1b]0;title\x07", "U+001B", "line 2, column 8"),
    ("abc\u202edcba", "U+202E", "column 4"),
    ("isolate\u2066x\u2069", "U+2066", "column 8"),
    ("lone\rreturn", "U+000D", "column 5"),
]


@pytest.mark.parametrize(("text", "char", "where"), CONTROL, ids=range(len(CONTROL)))
def test_requirements_with_control_characters_are_refused(
    env: dict[str, str], tmp_path: Path, stored: Snapshot, text: str, char: str, where: str
) -> None:
    """Control characters and bidi overrides in requirements are refused with their position."""
    req = tmp_path / "req.txt"
    req.write_bytes(text.encode("utf-8"))
    before = snapshot(env, tmp_path)
    refused(invoke(env, *run_args("wf-ctl", "--requirements-file", str(req))), char, where)
    refused(invoke(env, *run_args("wf-ctl", "--requirements", text)), char, "--requirements")
    assert snapshot(env, tmp_path) == before


@pytest.mark.parametrize(
    "args",
    [
        ["approve", "wf-cli", "--comment", "ok\x1b[31m"],
        ["approve", "wf-cli", "--as", "ev\u202eil"],
        ["request-changes", "wf-cli", "--change", "fine", "--change", "bad\x00"],
    ],
    ids=["comment", "as", "change"],
)
def test_answers_with_control_characters_are_refused(
    env: dict[str, str], stored: Snapshot, args: list[str]
) -> None:
    """An answer whose text carries control characters is refused and nothing is recorded."""
    before = invoke(env, "export", "wf-cli").stdout
    refused(invoke(env, *args), args[2], "control character")
    assert invoke(env, "export", "wf-cli").stdout == before


EVIL = "build it\x1b[2J\x1b]0;owned\x07 \u202eevil\u202c\r"


def test_stored_control_characters_are_escaped_on_display(env: dict[str, str], data: Path) -> None:
    """Text stored by older versions or other clients is shown escaped by list/status/inspect."""
    d = Driver(workflow_id="wf-evil")
    d.to_plan_gate()
    state = d.state.model_copy(update={"requirements": EVIL, "workspace": f"/tmp/{EVIL}"})
    data.mkdir()
    with open_store(data) as store:
        store.create(state, WorkflowConfig())
        odd_id = new_workflow("wf-\x1b[31mred", EVIL, "/tmp/x", d.clock.now())
        store.create(odd_id, WorkflowConfig())
    outputs = {
        "list": invoke(env, "list"),
        "status": invoke(env, "status", "wf-evil"),
        "inspect": invoke(env, "inspect", "wf-evil"),
        "approve": invoke(env, "approve", "wf-evil", "--comment", "fine"),
        "state": invoke(env, "state", "wf-evil"),
    }
    for name, result in outputs.items():
        assert result.exit_code == 0, (name, result.output, result.exception)
        assert DISPLAY_UNSAFE.search(result.output) is None, (name, result.output)
    assert "\\x1b[2J" in outputs["status"].output and "\\u202e" in outputs["status"].output
    assert "wf-\\x1b[31mred" in outputs["list"].output
    assert json.loads(outputs["state"].stdout)["requirements"] == EVIL


# -- 7. state ID prints what decide reads --------------------------------------------------


def test_state_config_out_that_cannot_be_written_is_one_line(
    env: dict[str, str], tmp_path: Path, stored: Snapshot
) -> None:
    """A --config-out under a file is refused in one line and prints no snapshot."""
    (tmp_path / "f").write_text("", encoding="utf-8")
    result = invoke(env, "state", "wf-cli", "--config-out", str(tmp_path / "f" / "c.yaml"))
    refused(result, "cannot write the configuration")
    assert result.stdout == ""


# -- 8. an endpoint that is not an OpenAI-compatible server ------------------------------


@pytest.mark.parametrize("kind", list(NOT_AN_API))
def test_run_against_a_non_openai_endpoint_is_one_line(
    env: dict[str, str], tmp_path: Path, stored: Snapshot, kind: str
) -> None:
    """Run pointed at a web page or a 404 says so in one line and stores nothing."""
    no_model = {k: v for k, v in env.items() if k != "OPENAI_MODEL"}
    with not_an_api(kind) as url:
        result = invoke(no_model, *run_args("wf-web", "-r", "x", "--base-url", url))
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("error: ") and "not an OpenAI-compatible server" in lines[0]
    assert snapshot(env, tmp_path) == stored
