"""``orchestrator schema``, ``graph`` and ``decide``: their output and their exit codes.

Output is checked in-process with click's ``CliRunner``; exit codes and stderr are checked
in-process and, for a representative few, through the real console script in subprocesses.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner, Result

from orchestrator.cli.app import cli  # importing the package registers every command
from orchestrator.deciding.machine import build_transition_table
from state.config import WorkflowConfig
from state.reports import PlanDraft
from state.steps import GATE_OF_STATE, MachineState
from state.workflow import HumanAnswerKind, WorkflowState

from builders import Driver, plan_report
from support.not_an_api import not_an_api

ROOT = Path(__file__).resolve().parent.parent
_SCRIPT = Path(sys.executable).parent / "orchestrator"
PLAN = PlanDraft(version=1, markdown="# plan")
COMMAND = (
    [str(_SCRIPT)]
    if _SCRIPT.exists()
    else [sys.executable, "-c", "from orchestrator.cli import main; main()"]
)


# -- states written to files ------------------------------------------------------------------


def standard_state() -> WorkflowState:
    """Step 1 done: a standard state whose decision is to validate the plan."""
    return Driver().run_step(PLAN)


def borderline_state() -> WorkflowState:
    """Step 1 failed once: borderline (step_errors)."""
    d = Driver()
    d.decide()
    return d.fail()


def answered_gate_state() -> WorkflowState:
    """Waiting at the plan gate, and a human approved."""
    d = Driver()
    d.to_plan_gate()
    d.answer(HumanAnswerKind.APPROVE)
    return d.state


def waiting_state() -> WorkflowState:
    """Waiting at the plan gate with no answer yet."""
    return Driver().to_plan_gate()


def plan_not_converged() -> WorkflowState:
    """The first plan validated and not converged."""
    d = Driver()
    d.run_step(PLAN)
    return d.run_step(plan_report(7.0, 7.0, 7.0, critical=1))


def step5_in_phase1() -> WorkflowState:
    """Code validation running, but the snapshot claims phase 1."""
    d = Driver()
    d.to_phase2()
    return d.decide().model_copy(update={"phase": 1})


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """State and config files, good and bad, by name."""
    tmp = tmp_path_factory.mktemp("cli")
    good = standard_state()
    data = json.loads(good.model_dump_json())
    texts = {
        "standard.json": good.model_dump_json(),
        "borderline.json": borderline_state().model_dump_json(),
        "answered_gate.json": answered_gate_state().model_dump_json(),
        "waiting.json": waiting_state().model_dump_json(),
        "step5_phase1.json": step5_in_phase1().model_dump_json(),
        "not_json.json": '{"workflow_id": "wf-test", "phase": 1,',
        "missing_field.json": json.dumps({k: v for k, v in data.items() if k != "workflow_id"}),
        "wrong_enum.json": json.dumps({**data, "machine_state": "flying"}),
        "newer_schema.json": json.dumps({**data, "schema_version": 2}),
        "unknown_key.yaml": "coordinator: programmatic\nmax_revisons: 3\n",
        "negative_limit.yaml": "limits:\n  max_plan_revisions: -1\n",
        "broken.yaml": "limits: {max_plan_revisions: 1\ngates: [\n",
        "tight.yaml": "limits:\n  max_plan_revisions: 1\n",
        "plan_not_converged.json": plan_not_converged().model_dump_json(),
    }
    out = {}
    for name, text in texts.items():
        (tmp / name).write_text(text, encoding="utf-8")
        out[name] = tmp / name
    return out


# -- exit codes and stderr ---------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one CLI run left behind: its exit code, stdout and stderr."""

    code: int
    stdout: str
    stderr: str


def run_in_process(folder: Path, args: list[str]) -> Outcome:
    """Run the CLI in-process from ``folder``; an exception other than an exit is re-raised."""
    old = Path.cwd()
    os.chdir(folder)
    try:
        result = CliRunner().invoke(cli, args)
    finally:
        os.chdir(old)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # it would have been a traceback
    return Outcome(result.exit_code, result.stdout, result.stderr)


CASES: dict[str, list[str]] = {
    "ok": ["decide", "standard.json", "--json"],
    "not_json": ["decide", "not_json.json"],
    "missing_field": ["decide", "missing_field.json"],
    "wrong_enum": ["decide", "wrong_enum.json"],
    "unknown_config_key": ["decide", "standard.json", "--config", "unknown_key.yaml"],
    "negative_limit": ["decide", "standard.json", "--config", "negative_limit.yaml"],
    "broken_yaml": ["decide", "standard.json", "--config", "broken.yaml"],
    "inconsistent": ["decide", "step5_phase1.json"],
    "newer_schema": ["decide", "newer_schema.json"],
    "missing_file": ["decide", "no_such_state.json"],
    "waiting": ["decide", "waiting.json"],
    "script_without_file": ["decide", "standard.json", "--coordinator", "script"],
}


@pytest.fixture(scope="module")
def in_process(files: dict[str, Path]) -> Callable[[str], Outcome]:
    """Run a case in-process."""
    folder = next(iter(files.values())).parent
    return lambda case: run_in_process(folder, CASES[case])


# Through the real console script too: exit 0, 2 and 3. Each subprocess pays about a second
# of interpreter start-up, so these few run concurrently; every case also runs in-process.
SUBPROCESS_CASES = {
    "ok": (0, r"^$"),
    "inconsistent": (2, r"^error: .*inconsistent state: machine state 'code_validation' "),
    "waiting": (3, r"^waiting: workflow wf-test waits for a human at the 'plan' gate"),
}


@pytest.fixture(scope="module")
def console_script_runs(files: dict[str, Path]) -> dict[str, Outcome]:
    """The subprocess cases, run concurrently through the console script, by case name."""
    folder = next(iter(files.values())).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    env["PYTHONPATH"] = str(ROOT)  # this checkout, whatever the venv was installed from

    def run(case: str) -> Outcome:
        r = subprocess.run(
            [*COMMAND, *CASES[case]],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Outcome(r.returncode, r.stdout, r.stderr)

    with ThreadPoolExecutor(max_workers=len(SUBPROCESS_CASES)) as pool:
        return dict(zip(SUBPROCESS_CASES, pool.map(run, SUBPROCESS_CASES), strict=True))


@pytest.mark.parametrize("case", list(SUBPROCESS_CASES))
def test_console_script_exit_codes(console_script_runs: dict[str, Outcome], case: str) -> None:
    """The installed command exits 0, 2 (bad input) or 3 (waiting) with at most one stderr line."""
    code, pattern = SUBPROCESS_CASES[case]
    r = console_script_runs[case]
    assert r.code == code, (r.code, r.stderr)
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 1, r.stderr
    assert re.search(pattern, r.stderr.strip()), r.stderr
    if code == 0:
        assert json.loads(r.stdout)["route"] == "standard"
    else:
        assert r.stdout == ""


def test_decide_a_state(in_process: Callable[[str], Outcome]) -> None:
    """A valid state is decided: exit 0, one JSON object on stdout, nothing on stderr."""
    r = in_process("ok")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["route"] == "standard" and out["legal_actions"][0] == "invoke_step2"
    assert r.stderr == ""


BAD_INPUTS = [
    ("not_json", r"not_json\.json: not valid JSON \(line 1"),
    ("missing_field", r"field 'workflow_id': Field required"),
    ("wrong_enum", r"field 'machine_state': Input should be 'new'"),
    ("unknown_config_key", r"unknown_key\.yaml: field 'max_revisons': Extra inputs"),
    ("negative_limit", r"field 'limits\.max_plan_revisions': .*greater than or equal to 0"),
    ("inconsistent", r"inconsistent state: machine state 'code_validation' belongs to phase 2"),
    ("newer_schema", r"newer schema \(version 2\)"),
    ("missing_file", r"no_such_state\.json: cannot read the state snapshot"),
    ("broken_yaml", r"broken\.yaml: not valid YAML \(line 2, column \d+: "),
]


@pytest.mark.parametrize(("case", "pattern"), BAD_INPUTS)
def test_bad_input_exits_2_with_one_line(
    in_process: Callable[[str], Outcome], case: str, pattern: str
) -> None:
    """Bad input exits 2 with one line on stderr naming the problem, and no traceback."""
    r = in_process(case)
    assert r.code == 2, (r.code, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert r.stdout == ""


def test_waiting_gate_exits_3(in_process: Callable[[str], Outcome]) -> None:
    """A state waiting at a gate with no answer exits 3 with a one-line waiting message."""
    r = in_process("waiting")
    assert r.code == 3, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("waiting: ")
    assert "'plan' gate" in lines[0]
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_script_coordinator_without_a_script_is_a_usage_error(
    in_process: Callable[[str], Outcome],
) -> None:
    """``--coordinator script`` with no coordinator_script in the config is a usage error."""
    r = in_process("script_without_file")
    assert r.code == 2
    assert "Usage:" in r.stderr and "coordinator_script" in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


# -- output, in-process -------------------------------------------------------------------------


def invoke(*args: str) -> Result:
    """Run the CLI in-process; fail on an unexpected exception."""
    result = CliRunner().invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.mark.parametrize("kind", ["config", "state", "decision"])
def test_schema_prints_a_valid_json_schema(kind: str) -> None:
    """``schema KIND`` prints a JSON Schema that is itself valid."""
    result = invoke("schema", kind)
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object" and schema["additionalProperties"] is False


def _schema(kind: str) -> dict[str, Any]:
    return json.loads(invoke("schema", kind).stdout)  # type: ignore[no-any-return]


def test_real_state_validates_against_the_state_schema() -> None:
    """States the machine produced (each phase, a gate, an error) validate against the schema."""
    validator = jsonschema.Draft202012Validator(_schema("state"))
    d = Driver()
    d.to_phase2()
    states = [standard_state(), borderline_state(), answered_gate_state(), d.state]
    for state in states:
        validator.validate(json.loads(state.model_dump_json()))


@pytest.mark.parametrize(
    "change",
    [
        {"machine_state": "flying"},
        {"bogus": 1},
        {"phase": 3},
        {"workflow_id": ""},
    ],
    ids=["enum", "extra-key", "phase", "empty-id"],
)
def test_state_schema_rejects_a_bad_state(change: dict[str, Any]) -> None:
    """The state schema refuses what the model refuses (validating against it means something)."""
    validator = jsonschema.Draft202012Validator(_schema("state"))
    data = {**json.loads(standard_state().model_dump_json()), **change}
    assert not validator.is_valid(data)


def test_real_config_and_decision_validate_against_their_schemas() -> None:
    """A config and a decision record dumped to JSON validate against their schemas."""
    config = WorkflowConfig.model_validate({"gates": {"code_review": True}})
    jsonschema.validate(config.model_dump(mode="json"), _schema("config"))
    record = borderline_state().decisions[-1]
    jsonschema.validate(json.loads(record.model_dump_json()), _schema("decision"))


_MERMAID_EDGE = re.compile(r"^\s*(\w+) --> (\w+):", re.MULTILINE)
_DOT_EDGE = re.compile(r"^\s*(\w+) -> (\w+) \[", re.MULTILINE)
LOOPS = [
    (MachineState.PLAN_VALIDATION, MachineState.PLAN_REVISION),
    (MachineState.PLAN_REVISION, MachineState.PLAN_VALIDATION),
    (MachineState.CODE_REFINEMENT, MachineState.CONVERGENCE_VALIDATION),
    (MachineState.CONVERGENCE_VALIDATION, MachineState.CODE_REFINEMENT),
]


@pytest.mark.parametrize(
    ("args", "edge_re"),
    [(["graph"], _MERMAID_EDGE), (["graph", "--format", "dot"], _DOT_EDGE)],
    ids=["mermaid", "dot"],
)
def test_graph_shows_every_state_both_loops_and_every_gate(
    args: list[str], edge_re: re.Pattern[str]
) -> None:
    """The rendered machine has every state, both loops, every gate and every forward edge."""
    result = invoke(*args)
    assert result.exit_code == 0
    text = result.stdout
    edges = {(a, b) for a, b in edge_re.findall(text)}
    drawn = {name for edge in edges for name in edge}
    for st in MachineState:
        assert st.value in drawn, f"{st.value} has no edge"
    for src, dest in LOOPS:
        assert (src.value, dest.value) in edges
    for st, gate in GATE_OF_STATE.items():
        assert f"gate {gate.value}: {st.value}" in text
    for spec in build_transition_table():
        if not spec.continuation and spec.trigger != "escalate":
            assert (spec.source.value, spec.dest.value) in edges, spec


def test_graph_formats_differ() -> None:
    """Mermaid and DOT are distinct renderings with their own headers."""
    mermaid, dot = invoke("graph").stdout, invoke("graph", "--format", "dot").stdout
    assert mermaid.startswith("stateDiagram-v2")
    assert dot.startswith("digraph workflow {") and dot.rstrip().endswith("}")


def decide_json(files: dict[str, Path], name: str, *extra: str) -> dict[str, Any]:
    result = invoke("decide", str(files[name]), "--json", *extra)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1  # one JSON object
    return json.loads(lines[0])  # type: ignore[no-any-return]


def test_decide_json_standard(files: dict[str, Path]) -> None:
    """A standard state: route standard, no signals, and the programmatic decision taken."""
    out = decide_json(files, "standard.json")
    assert {"route", "signals", "legal_actions", "programmatic_decision", "decision"} <= set(out)
    assert out["route"] == "standard" and out["signals"] == []
    assert out["legal_actions"] == ["invoke_step2", "escalate"]
    assert out["programmatic_decision"]["action"] == "invoke_agent"
    assert out["programmatic_decision"]["step"] == 2
    assert out["decision"]["source"] == "programmatic"
    assert out["decision"]["decision"] == out["programmatic_decision"]
    assert out["decision"]["state_after"] == "plan_validation"


def test_decide_json_borderline(files: dict[str, Path]) -> None:
    """A borderline state: its signals are listed, and the retry is decided programmatically."""
    out = decide_json(files, "borderline.json")
    assert out["route"] == "borderline"
    assert [s["name"] for s in out["signals"]] == ["step_errors"]
    assert out["signals"][0]["route"] == "borderline"
    assert set(out["legal_actions"]) == {"retry_step", "escalate"}
    assert out["programmatic_decision"]["action"] == "retry_step"
    assert out["decision"]["route"] == "borderline"
    assert out["decision"]["signals"] == out["signals"]


def test_decide_json_gate_with_answer(files: dict[str, Path]) -> None:
    """At a gate with an approval, the decision carries out the human's answer."""
    out = decide_json(files, "answered_gate.json")
    assert out["machine_state"] == "awaiting_plan_approval"
    assert "transition_phase" in out["legal_actions"]
    assert out["programmatic_decision"]["action"] == "transition_phase"
    assert out["decision"]["source"] == "human"
    assert out["decision"]["state_after"] == "implementation"


def test_decide_reads_the_config(files: dict[str, Path]) -> None:
    """``--config`` is applied: with one revision allowed, an unconverged plan is borderline."""
    assert decide_json(files, "plan_not_converged.json")["route"] == "standard"
    out = decide_json(files, "plan_not_converged.json", "--config", str(files["tight.yaml"]))
    assert out["route"] == "borderline"
    assert [s["name"] for s in out["signals"]] == ["last_round"]
    assert out["programmatic_decision"]["step"] == 3


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        (
            "standard.json",
            [
                "workflow wf-test: initial_planning (phase 1, step 1 done)",
                "route: standard",
                "signals: none",
                "legal actions: invoke_step2, escalate",
                "programmatic decision: invoke_agent, step 2, agent validator, "
                "template step2_plan_validator",
                "decision (programmatic): invoke_agent, step 2",
            ],
        ),
        (
            "borderline.json",
            [
                "route: borderline",
                "  - step_errors (borderline): 1 failed attempt(s) at step 1",
                "legal actions: retry_step, escalate",
                "programmatic decision: retry_step, step 1",
                "strategy backoff",
            ],
        ),
        (
            "answered_gate.json",
            [
                "awaiting_plan_approval (phase 1, step 2 done)",
                "programmatic decision: transition_phase, step 4, agent programmer",
                "decision (human): transition_phase",
            ],
        ),
    ],
    ids=["standard", "borderline", "answered-gate"],
)
def test_decide_human_output(files: dict[str, Path], name: str, expected: list[str]) -> None:
    """The human rendering names the state, route, signals, legal actions and decision."""
    result = invoke("decide", str(files[name]))
    assert result.exit_code == 0, result.output
    for fragment in expected:
        assert fragment in result.stdout, (fragment, result.stdout)


# -- decide when the LLM cannot be opened -----------------------------------------------------


@pytest.fixture(params=["html", "404", "dead"])
def broken_url(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A base URL with no OpenAI-compatible server behind it, and what the message says."""
    if request.param == "dead":
        with socket.socket() as s:  # a port that was free a moment ago: nothing listens
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1", "could not list the models"
        return
    with not_an_api(request.param) as url:
        yield url, "not an OpenAI-compatible server"


def _failing_state(failures: int) -> WorkflowState:
    """Step 1 failed ``failures`` times (4: escalating is the only move left)."""
    d = Driver()
    for _ in range(failures):
        d.decide()
        d.fail()
    return d.state


@pytest.mark.parametrize(
    ("failures", "expected"),
    [(1, "programmatic_fallback"), (4, "programmatic")],
    ids=["asks-the-llm", "forced-move"],
)
def test_decide_falls_back_when_the_llm_cannot_be_opened(
    tmp_path: Path, broken_url: tuple[str, str], failures: int, expected: str
) -> None:
    """No --model and no usable server: decide still decides, and says why the LLM is out."""
    url, message = broken_url
    state = tmp_path / "s.json"
    state.write_text(_failing_state(failures).model_dump_json(), encoding="utf-8")
    args = ["decide", str(state), "--coordinator", "hybrid", "--base-url", url]
    key = {"OPENAI_API_KEY": "sk-test"}
    result = CliRunner().invoke(cli, [*args, "--json"], env=key)
    assert result.exit_code == 0, (result.output, result.exception)
    out = json.loads(result.stdout)
    assert message in out["llm_unavailable"]
    record = out["decision"]
    assert record["source"] == expected
    assert record["decision"] == out["programmatic_decision"]
    if expected == "programmatic_fallback":
        assert record["llm"]["outcome"] == "unavailable"
        assert any(message in e for e in record["llm"]["validation_errors"])
    text = CliRunner().invoke(cli, args, env=key)
    assert text.exit_code == 0 and "llm unavailable: " in text.stdout
    assert message in text.stdout


def test_commands_that_ask_no_llm_do_not_import_its_client(tmp_path: Path) -> None:
    """The CLI imports the openai client only when a chat model is opened (about 0.6 s)."""
    probe = (
        "import sys\n"
        "from orchestrator.cli import main\n"
        "sys.argv = ['orchestrator', 'list']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('openai', 'aiohttp', 'httpx2') if m in sys.modules))\n"
        # what a worker does before its first claim
        "from orchestrator.composition import import_chat_stack\n"
        "import_chat_stack()\n"
        "print(sorted(m for m in ('openai', 'aiohttp') if m in sys.modules))\n"
    )
    env = {**os.environ, "ORCHESTRATOR_DATA_DIR": str(tmp_path / "data")}
    env.pop("ORCHESTRATOR_STORE", None)
    done = subprocess.run(
        [sys.executable, "-c", probe],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-2:] == ["[]", "['aiohttp', 'openai']"]
