"""The console's HTTP API: reads, answers and every refusal, access rules, SVG, feed, hooks."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.composition import open_store
from orchestrator.web.access import AccessPolicy, parse_tokens
from orchestrator.web.app import STATIC, create_app
from orchestrator.web.events import Watcher
from orchestrator.web.notify import GateWait, HookKind, Notifier, Webhook, parse_webhook
from orchestrator.web.service import ConsoleService, build_service
from state.config import WorkflowConfig
from state.errors import ConfigError
from state.examples import BAD_PLAN, plan_draft, plan_report
from state.store import Store

from builders import Driver
from support.console import ServerThread, make_service, run_to_plan_gate, store_waiting
from support.fake_openai import FakeOpenAIServer
from support.world import GOOD_PLAN, World

ALICE = "alice-token-0123456789"
LOCAL = "http://127.0.0.1"
JSON_POST = {"Content-Type": "application/json"}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "data") as s:
        store_waiting(s, "wf-a", tmp_path / "ws")
        yield s


@pytest.fixture
def service(store: Store, tmp_path: Path) -> ConsoleService:
    return make_service(store, tmp_path / "ws")


@pytest.fixture
async def client(service: ConsoleService) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(service, AccessPolicy())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LOCAL) as c:
        yield c


@pytest.fixture
async def guarded(service: ConsoleService) -> AsyncIterator[httpx.AsyncClient]:
    """A console bound to a non-loopback address, with alice's token configured."""
    app = create_app(service, AccessPolicy(host="0.0.0.0", tokens={ALICE: "alice"}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://console.example") as c:
        yield c


def approve(**extra: Any) -> dict[str, Any]:
    return {"gate": "plan", "answer": "approve", "by": "fatima", "comment": "ok"} | extra


# --- reading ---------------------------------------------------------------------------


async def test_list_inbox_and_inspect_mirror_the_cli(client: httpx.AsyncClient) -> None:
    """The API lists, summarises and explains a stored workflow as the CLI does."""
    rows = (await client.get("/api/workflows")).json()
    assert [r["workflow_id"] for r in rows] == ["wf-a"] and rows[0]["waiting_gate"] == "plan"
    assert (await client.get("/api/workflows?gate=final")).json() == []
    assert (await client.get("/api/workflows?status=completed")).json() == []
    inbox = (await client.get("/api/inbox")).json()
    assert inbox[0]["workflow_id"] == "wf-a" and inbox[0]["waiting_gate"] == "plan"
    assert inbox[0]["asked"] and inbox[0]["waiting_since"]
    info = (await client.get("/api/workflows/wf-a")).json()
    assert info["workflow"]["machine_state"] == "awaiting_plan_approval"
    assert [d["source"] for d in info["decisions"]] == ["programmatic"] * 5
    assert info["decisions"][-1]["chosen"].startswith("request_approval")
    rounds = info["validation_rounds"]
    assert [r["converged"] for r in rounds] == [False, True]
    status = (await client.get("/api/workflows/wf-a/status")).json()
    assert status["waiting_gate"] == "plan" and status["decisions"] == 5
    ledger = (await client.get("/api/workflows/wf-a/export")).json()
    assert ledger == []  # created whole by the test: its ledger starts empty


async def test_the_openapi_document_lists_the_api(client: httpx.AsyncClient) -> None:
    """/api/openapi.json documents every API route (and no page), with the answer's schema."""
    doc = (await client.get("/api/openapi.json")).json()
    paths = set(doc["paths"])
    assert {
        "/api/workflows",
        "/api/inbox",
        "/api/workflows/{workflow_id}",
        "/api/workflows/{workflow_id}/answer",
        "/api/workflows/{workflow_id}/resume",
        "/api/workflows/{workflow_id}/export",
        "/api/events",
    } <= paths
    assert all(p.startswith("/api/") for p in paths)
    assert "AnswerIn" in doc["components"]["schemas"]
    assert (await client.get("/api/docs")).status_code == 404  # the CDN-loading page is off


async def test_unknown_workflow_is_404(client: httpx.AsyncClient) -> None:
    """Every per-workflow route answers 404 with a JSON error naming the id."""
    for path in ("", "/status", "/export", "/chart.svg", "/diagram.svg", "/artifacts"):
        response = await client.get(f"/api/workflows/wf-nope{path}")
        assert response.status_code == 404, path
        assert "wf-nope" in response.json()["error"]
    response = await client.post("/api/workflows/wf-nope/answer", json=approve())
    assert response.status_code == 404 and "wf-nope" in response.json()["error"]


async def test_the_answers_offered_are_the_ones_the_gate_takes(
    client: httpx.AsyncClient, store: Store, tmp_path: Path
) -> None:
    """A plan gate offers no accept; an escalation with a plan to accept offers it."""
    at_gate = (await client.get("/api/workflows/wf-a")).json()
    assert at_gate["answers_allowed"] == ["approve", "reject", "request_changes"]
    d = Driver(workflow_id="wf-esc")
    d.run_step(plan_draft(1, "# plan"))
    d.run_step(BAD_PLAN)
    for version in range(2, d.config.limits.max_plan_revisions + 2):
        d.run_step(plan_draft(version, "# plan"))
        d.run_step(BAD_PLAN)
    escalated = d.decide()
    assert escalated.waiting_gate is not None and escalated.waiting_gate.value == "escalation"
    store.create(escalated.model_copy(update={"workspace": str(tmp_path / "ws")}), d.config)
    offered = (await client.get("/api/workflows/wf-esc")).json()["answers_allowed"]
    assert "accept" in offered


# --- answering -------------------------------------------------------------------------


async def test_an_answer_is_recorded_with_who_and_why(
    client: httpx.AsyncClient, store: Store
) -> None:
    """An approval goes through the CLI's path: recorded with the answerer and the comment."""
    response = await client.post("/api/workflows/wf-a/answer", json=approve())
    assert response.status_code == 200, response.text
    assert response.json()["recorded"]["by"] == "fatima"
    assert response.json()["resumed"] is False  # no launcher: the CLI resumes it
    answer = store.load("wf-a").state.human_answers[-1]
    assert (answer.by, answer.comment, answer.answer.value) == ("fatima", "ok", "approve")


async def test_wrong_gate_is_409_naming_the_gate_it_waits_at(
    client: httpx.AsyncClient, store: Store
) -> None:
    """An answer meant for another gate is refused with the gate the workflow waits at."""
    response = await client.post("/api/workflows/wf-a/answer", json=approve(gate="final"))
    assert response.status_code == 409
    body = response.json()
    assert body["waiting_gate"] == "plan" and "'plan' gate, not 'final'" in body["error"]
    assert store.load("wf-a").state.human_answers == ()


async def test_not_waiting_is_409(client: httpx.AsyncClient) -> None:
    """A second answer after the first is refused: the workflow no longer waits there."""
    assert (await client.post("/api/workflows/wf-a/answer", json=approve())).status_code == 200
    response = await client.post("/api/workflows/wf-a/answer", json=approve(answer="reject"))
    assert response.status_code == 409
    body = response.json()
    assert body["waiting_gate"] is None
    assert "already answered" in body["error"] and "fatima" in body["error"]


async def test_two_browsers_answering_at_once_one_wins(
    client: httpx.AsyncClient, store: Store
) -> None:
    """Two concurrent answers: exactly one is recorded, the other gets 409 saying so."""
    first, second = await asyncio.gather(
        client.post("/api/workflows/wf-a/answer", json=approve(by="ann")),
        client.post("/api/workflows/wf-a/answer", json=approve(by="bob", answer="reject")),
    )
    codes = sorted([first.status_code, second.status_code])
    assert codes == [200, 409], (first.text, second.text)
    loser = first if first.status_code == 409 else second
    assert (
        "nothing was recorded" in loser.json()["error"] or "answer again" in (loser.json()["error"])
    )
    assert len(store.load("wf-a").state.human_answers) == 1


async def test_request_changes_needs_a_change(client: httpx.AsyncClient) -> None:
    """request_changes without a change is invalid input (422), not a gate conflict."""
    body = approve(answer="request_changes")
    response = await client.post("/api/workflows/wf-a/answer", json=body)
    assert response.status_code == 422 and "at least one change" in response.json()["error"]
    body["changes"] = ["validate the inputs"]
    assert (await client.post("/api/workflows/wf-a/answer", json=body)).status_code == 200


async def test_an_open_console_needs_a_name(client: httpx.AsyncClient) -> None:
    """Without tokens the answerer names themself; an answer without a name is refused."""
    response = await client.post("/api/workflows/wf-a/answer", json=approve(by=" "))
    assert response.status_code == 422 and "who answers" in response.json()["error"]


# --- access ----------------------------------------------------------------------------


async def test_missing_or_unknown_token_is_401(guarded: httpx.AsyncClient) -> None:
    """With tokens configured, requests without a known token are refused (401)."""
    assert (await guarded.get("/api/workflows")).status_code == 401
    response = await guarded.post("/api/workflows/wf-a/answer", json=approve())
    assert response.status_code == 401 and "access token" in response.json()["error"]
    bad = {"Authorization": "Bearer not-a-known-token"}
    assert (await guarded.get("/api/workflows", headers=bad)).status_code == 401
    page = await guarded.get("/workflows/wf-a")
    assert page.status_code == 303 and page.headers["location"].startswith("/login")


async def test_answers_record_the_token_holder(guarded: httpx.AsyncClient, store: Store) -> None:
    """A token's holder is the answerer, whatever name the body claims."""
    headers = {"Authorization": f"Bearer {ALICE}"}
    response = await guarded.post(
        "/api/workflows/wf-a/answer", json=approve(by="mallory"), headers=headers
    )
    assert response.status_code == 200, response.text
    assert store.load("wf-a").state.human_answers[-1].by == "alice"
    assert (await guarded.get("/api/whoami", headers=headers)).json()["name"] == "alice"


async def test_login_sets_cookies_and_cookie_posts_need_the_csrf_header(
    guarded: httpx.AsyncClient,
) -> None:
    """After logging in, a cookie-borne answer without the CSRF header is refused (403)."""
    assert (await guarded.post("/api/session", json={"token": "wrong"})).status_code == 401
    login = await guarded.post("/api/session", json={"token": ALICE})
    assert login.status_code == 200 and login.json()["name"] == "alice"
    assert (await guarded.get("/api/workflows")).status_code == 200  # the cookie suffices
    refused = await guarded.post("/api/workflows/wf-a/answer", json=approve())
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["error"]
    csrf = guarded.cookies["orch_csrf"]
    ok = await guarded.post(
        "/api/workflows/wf-a/answer", json=approve(), headers={"X-CSRF-Token": csrf}
    )
    assert ok.status_code == 200, ok.text


async def test_cross_site_form_posts_are_refused(client: httpx.AsyncClient, store: Store) -> None:
    """A form posted from another site is refused, whether it says so or not."""
    form = "gate=plan&answer=approve&by=eve"
    evil = {"Origin": "https://evil.example", "Content-Type": "application/x-www-form-urlencoded"}
    response = await client.post("/api/workflows/wf-a/answer", content=form, headers=evil)
    assert response.status_code == 403 and "cross-site" in response.json()["error"]
    fetch_site = {"Sec-Fetch-Site": "cross-site", **JSON_POST}
    response = await client.post(
        "/api/workflows/wf-a/answer", content=json.dumps(approve()), headers=fetch_site
    )
    assert response.status_code == 403
    # No Origin at all (an old browser): a form still cannot send JSON.
    plain = {"Content-Type": "application/x-www-form-urlencoded"}
    response = await client.post("/api/workflows/wf-a/answer", content=form, headers=plain)
    assert response.status_code == 415
    assert store.load("wf-a").state.human_answers == ()


async def test_an_open_console_answers_only_to_loopback_names(service: ConsoleService) -> None:
    """A rebinding page's host name is refused by an open console (400)."""
    app = create_app(service, AccessPolicy())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://evil.example") as c:
        response = await c.get("/api/workflows")
    assert response.status_code == 400 and "loopback" in response.json()["error"]


def test_serve_takes_the_store_option_like_every_command(tmp_path: Path) -> None:
    """``serve --store URL --data-dir DIR`` is refused in one line: both name a store."""
    result = CliRunner().invoke(
        cli, ["serve", "--store", "memory://", "--data-dir", str(tmp_path / "d")]
    )
    assert result.exit_code == 2
    assert "both --store and --data-dir" in result.output
    assert not (tmp_path / "d").exists()  # nothing was created


async def test_the_console_serves_a_store_it_is_given(tmp_path: Path) -> None:
    """``build_service(store=...)`` (``serve --store``) lists that store's workflows."""
    with open_store("memory://") as memory:
        store_waiting(memory, "wf-mem", tmp_path / "ws")
        service = build_service(tmp_path / "data", store=memory, run_workflows=False)
        listed = await service.list_workflows()
        assert [w["workflow_id"] for w in listed.items] == ["wf-mem"]
        assert [w["workflow_id"] for w in (await service.inbox()).items] == ["wf-mem"]


def test_a_non_loopback_bind_without_tokens_refuses_to_start(tmp_path: Path) -> None:
    """Serve --host 0.0.0.0 without tokens exits 2 with one line saying what to do."""
    saved = structlog.get_config()
    try:
        result = CliRunner().invoke(
            cli,
            ["serve", "--host", "0.0.0.0", "--data-dir", str(tmp_path)],
            env={"ORCHESTRATOR_WEB_TOKENS": ""},
        )
    finally:
        structlog.configure(**saved)
    assert result.exit_code == 2
    assert "without an access token" in result.output and "--token-file" in result.output
    with pytest.raises(ConfigError, match="shorter than 16"):
        parse_tokens("bob:short", "test")
    assert AccessPolicy(host="::1").open  # loopback may run open


# --- files -----------------------------------------------------------------------------


async def test_files_are_served_only_from_the_workspace(
    client: httpx.AsyncClient, store: Store, tmp_path: Path
) -> None:
    """A recorded artifact is served; traversal, links out and unrecorded paths are not."""
    ok = await client.get("/api/workflows/wf-a/file", params={"path": "plans/plan_v2.md"})
    assert ok.status_code == 200 and ok.text == "# plan v2\n"
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret", encoding="utf-8")
    for path in ("../../secret.txt", str(secret), "plans/../../../secret.txt"):
        response = await client.get("/api/workflows/wf-a/file", params={"path": path})
        assert response.status_code == 403, path
    # Recorded, but a link pointing out of the workspace.
    (tmp_path / "ws" / "wf-a" / "leak.md").symlink_to(secret)
    store.add_artifact("wf-a", "code", "leak.md")
    response = await client.get("/api/workflows/wf-a/file", params={"path": "leak.md"})
    assert response.status_code == 403 and "outside its workspace" in response.json()["error"]
    store.add_artifact("wf-a", "code", "../../secret.txt")
    response = await client.get("/api/workflows/wf-a/file", params={"path": "../../secret.txt"})
    assert response.status_code == 403 and "top secret" not in response.text


# --- SVG -------------------------------------------------------------------------------


async def test_the_chart_draws_each_score_per_round_against_its_threshold(
    client: httpx.AsyncClient,
) -> None:
    """The convergence chart has one point per round and the config's threshold line."""
    response = await client.get("/api/workflows/wf-a/chart.svg")
    assert response.headers["content-type"].startswith("image/svg+xml")
    svg = response.text
    panel = re.search(
        r'<g class="panel" data-phase="1" data-metric="alignment">(.*?)</g>', svg, re.S
    )
    assert panel is not None
    values = re.findall(r'data-round="(\d)" data-value="([\d.]+)"', panel.group(1))
    assert values == [("1", "7"), ("2", "9.5")]  # BAD_PLAN, then the passing report
    assert 'class="threshold" data-value="9"' in panel.group(1)
    assert "point miss" in panel.group(1) and "point ok" in panel.group(1)
    assert 'data-phase="2"' not in svg  # no code round yet


async def test_the_diagram_counts_each_edge_by_source(client: httpx.AsyncClient) -> None:
    """The diagram marks the path taken, with per-source counts, and the current state."""
    svg = (await client.get("/api/workflows/wf-a/diagram.svg")).text
    edge = re.search(
        r'<g class="edge taken" data-from="plan_validation" data-to="plan_revision" '
        r'data-programmatic="(\d+)" data-llm="(\d+)"',
        svg,
    )
    assert edge is not None and edge.groups() == ("1", "0")
    assert 'data-from="plan_validation" data-to="awaiting_plan_approval"' in svg
    assert re.search(r'class="node gate visited current" data-state="awaiting_plan_approval"', svg)
    assert 'class="edge" data-from="implementation" data-to="code_validation"' in svg  # not taken


# --- pages and offline assets -----------------------------------------------------------


async def test_pages_and_assets_are_served_locally(client: httpx.AsyncClient) -> None:
    """Every page and asset comes from the package; nothing points at another host."""
    for path in ("/", "/workflows", "/workflows/wf-a", "/login"):
        response = await client.get(path)
        assert response.status_code == 200 and 'src="/static/console.js"' in response.text
        assert "http://" not in response.text and "https://" not in response.text
    for asset in ("console.js", "console.css"):
        response = await client.get(f"/static/{asset}")
        assert response.status_code == 200
    for asset_path in STATIC.iterdir():
        text = asset_path.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), asset_path
        assert "@import" not in text and "url(" not in text.replace("url(#", "")


async def test_pages_set_the_csrf_cookie(client: httpx.AsyncClient) -> None:
    """A page load hands the browser the CSRF cookie its script repeats in a header."""
    response = await client.get("/")
    assert "orch_csrf" in response.cookies


async def test_start_records_a_workflow_from_a_requirement(client: httpx.AsyncClient) -> None:
    """POST /api/workflows stores a new workflow with its config; bad input is 422."""
    made = await client.post(
        "/api/workflows",
        json={"requirements": "dedupe rows", "config": {"gates": {"final": False}}},
    )
    assert made.status_code == 201 and made.json() == {"workflow_id": "wf-web-1", "started": False}
    info = (await client.get("/api/workflows/wf-web-1")).json()
    assert info["workflow"]["requirements"] == "dedupe rows"
    assert info["config"]["gates"]["final"] is False
    bad = await client.post("/api/workflows", json={"requirements": "x", "config": {"gates": 3}})
    assert bad.status_code == 422 and "gates" in bad.json()["error"]
    blank = await client.post("/api/workflows", json={"requirements": "   "})
    assert blank.status_code == 422 and "empty" in blank.json()["error"]
    extra = await client.post("/api/workflows", json={"requirements": "x", "colour": "red"})
    assert extra.status_code == 422


async def test_resume_without_a_runner_says_how(client: httpx.AsyncClient) -> None:
    """A console started with --no-run refuses to resume and names the CLI command."""
    response = await client.post("/api/workflows/wf-a/resume", json={})
    assert response.status_code == 422
    assert "orchestrator resume wf-a" in response.json()["error"]


# --- the live feed and the webhooks --------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    """A webhook receiver that fails its first post, then accepts."""

    bodies: list[dict[str, Any]]
    fail_first: list[bool]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        failing = self.fail_first.pop(0) if self.fail_first else False
        if not failing:
            self.bodies.append(body)
        self.send_response(500 if failing else 204)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    bodies: list[dict[str, Any]] = []
    handler = type("Hook", (_Hook,), {"bodies": bodies, "fail_first": [True]})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hook", bodies
    httpd.shutdown()
    httpd.server_close()


async def test_a_new_gate_wait_is_posted_and_retried(
    service: ConsoleService,
    store: Store,
    tmp_path: Path,
    receiver: tuple[str, list[dict[str, Any]]],
) -> None:
    """A workflow that starts waiting is posted (JSON and Slack); a failed post is retried."""
    url, bodies = receiver
    notifier = Notifier((Webhook(url), Webhook(url, HookKind.SLACK)), attempts=3, backoff_s=0.01)
    watcher = Watcher(service, notifier=notifier, answer_url=lambda w: f"http://c/workflows/{w}")
    assert await watcher.poll() == []  # the first poll learns what already waits
    store_waiting(store, "wf-b", tmp_path / "ws")
    changes = await watcher.poll()
    assert [c["workflow_id"] for c in changes] == ["wf-b"]
    deliveries = list(notifier._tasks)
    assert await asyncio.gather(*deliveries) == [True, True]
    await notifier.aclose()
    generic = next(b for b in bodies if "event" in b)
    assert generic["workflow_id"] == "wf-b" and generic["gate"] == "plan"
    assert generic["answer_url"] == "http://c/workflows/wf-b"
    slack = next(b for b in bodies if "text" in b)
    assert "wf-b waits at the plan gate" in slack["text"] and "|Answer it>" in slack["text"]
    assert await watcher.poll() == []  # nothing changed: nothing posted again


async def test_the_live_feed_sees_commits_notes_and_new_workflows_of_other_handles(
    service: ConsoleService, store: Store, tmp_path: Path
) -> None:
    """After the first poll, another handle's commit, lease note and new workflow are changes.

    An unchanged workflow keeps the very Version object of the poll before (the feed reads
    only the versions of those, not their summaries), and is not published again.
    """
    store_waiting(store, "wf-b", tmp_path / "ws")
    watcher = Watcher(service)
    assert await watcher.poll() == []
    before = await service.versions()
    assert (await service.versions(before))["wf-a"] is before["wf-a"]
    with open_store(tmp_path / "data") as other:  # a worker's, say
        stored = other.load("wf-b")
        other.commit("wf-b", stored.state, expected_version=stored.version, owner=None)
        changes = await watcher.poll()
        assert [(c["workflow_id"], c["version"]) for c in changes] == [("wf-b", stored.version + 1)]
        other.acquire_lease("wf-a", "worker-1", 60.0)
        other.note_activity("wf-a", "worker-1", "building the environment")
        changes = await watcher.poll()
        assert [(c["workflow_id"], c["activity"]) for c in changes] == [
            ("wf-a", "building the environment")
        ]
        assert await watcher.poll() == []
        other.release_lease("wf-a", "worker-1")
        store_waiting(other, "wf-c", tmp_path / "ws")
        changes = await watcher.poll()
        assert {(c["workflow_id"], c["activity"]) for c in changes} == {
            ("wf-a", None),
            ("wf-c", None),
        }
        assert next(c for c in changes if c["workflow_id"] == "wf-c")["waiting_gate"] == "plan"


async def test_an_unreachable_webhook_gives_up_without_raising(service: ConsoleService) -> None:
    """Delivery to a closed port is retried, logged and abandoned; nothing raises."""
    notifier = Notifier((Webhook("http://127.0.0.1:9/hook"),), attempts=2, backoff_s=0.01)
    wait = GateWait("wf-a", "plan", "approve the plan", None, "http://c/workflows/wf-a")
    assert await asyncio.gather(*notifier.notify(wait)) == [False]
    await notifier.aclose()
    assert parse_webhook("slack:https://hooks.example/x").kind is HookKind.SLACK
    assert parse_webhook("https://hooks.example/x").kind is HookKind.JSON
    with pytest.raises(ConfigError, match="http"):
        parse_webhook("ftp://x")


def test_the_event_stream_announces_a_change(service: ConsoleService) -> None:
    """A browser on /api/events hears 'hello', then a 'workflow' event after an answer."""
    app = create_app(service, AccessPolicy(), watch_interval_s=0.05)
    with (
        ServerThread(app) as server,
        httpx.Client(base_url=server.url) as http,
        http.stream("GET", "/api/events") as stream,
    ):
        lines = stream.iter_lines()
        assert next(lines) == "event: hello"
        answered = http.post("/api/workflows/wf-a/answer", json=approve())
        assert answered.status_code == 200
        events = []
        for line in lines:
            if line.startswith('data: {"workflow_id"'):
                events.append(json.loads(line[6:]))
                break
        assert events[0]["workflow_id"] == "wf-a" and events[0]["waiting_gate"] is None


def test_shutting_down_ends_open_event_streams_cleanly(service: ConsoleService) -> None:
    """A stop finishes each open stream's response, rather than cutting it off after a wait."""
    app = create_app(service, AccessPolicy(), watch_interval_s=0.05)
    with (
        ServerThread(app) as server,
        httpx.Client(base_url=server.url) as http,
        http.stream("GET", "/api/events") as first,
        http.stream("GET", "/api/events") as second,
    ):
        streams = [first.iter_lines(), second.iter_lines()]
        for lines in streams:
            assert [next(lines), next(lines)] == ["event: hello", "data: {}"]
        server.stop()
        for lines in streams:  # a stream cut off mid-response raises RemoteProtocolError
            assert [line for line in lines if line] == []


@pytest.fixture
def llm() -> Iterator[FakeOpenAIServer]:
    world = World(plan_reports=[GOOD_PLAN])
    with FakeOpenAIServer(responder=world.http_responder) as server:
        yield server


@pytest.fixture
def at_plan_gate(tmp_path: Path, llm: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir holding wf-r, run by the CLI to the plan gate (outside the test's loop)."""
    run_to_plan_gate(tmp_path / "data", llm, monkeypatch, wid="wf-r")
    return tmp_path / "data"


async def test_resume_runs_the_workflow_on_and_refuses_a_second_run(
    at_plan_gate: Path, llm: FakeOpenAIServer
) -> None:
    """After an answer, resume runs the workflow in the console; a second resume is 409."""
    service = build_service(at_plan_gate, base_url=llm.base_url, model="fake-model")
    app = create_app(service, AccessPolicy())
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url=LOCAL) as c:
            answered = await c.post("/api/workflows/wf-r/answer", json=approve())
            assert answered.status_code == 200 and answered.json()["resumed"] is False
            first = await c.post("/api/workflows/wf-r/resume", json={})
            assert first.status_code == 202, first.text
            again = await c.post("/api/workflows/wf-r/resume", json={})
            assert again.status_code == 409 and "running already" in again.json()["error"]
            for _ in range(3000):  # until the run stops at the next gate
                status = (await c.get("/api/workflows/wf-r/status")).json()
                if status["waiting_gate"] == "final" and not status["running"]:
                    break
                await asyncio.sleep(0.05)
            assert status["waiting_gate"] == "final", status
            chart = (await c.get("/api/workflows/wf-r/chart.svg")).text
            panel = re.search(r'data-phase="2" data-metric="overall">(.*?)</g>', chart, re.S)
            assert panel is not None  # code rounds: step 5, then step 7 after a refinement
            assert len(re.findall(r'data-round="\d"', panel.group(1))) == 2
    finally:
        await service.close()


async def test_rounds_and_nan_scores_are_served_as_json(
    client: httpx.AsyncClient, store: Store, tmp_path: Path
) -> None:
    """Each attempt's plan and report is served; a NaN score arrives as "NaN", not a 500."""
    rounds = (await client.get("/api/workflows/wf-a/rounds")).json()
    assert [(r["step"], r["status"]) for r in rounds] == [
        (1, "completed"),
        (2, "completed"),
        (3, "completed"),
        (2, "completed"),
    ]
    assert rounds[2]["result"]["markdown"] == "# plan v2"
    assert "alignment 7/9" in rounds[1]["summary"] and "not converged" in rounds[1]["summary"]
    d = Driver(workflow_id="wf-nan")
    d.run_step(plan_draft(1))
    d.run_step(plan_report(a=float("nan")))
    store.create(d.state.model_copy(update={"workspace": str(tmp_path)}), WorkflowConfig())
    for path in ("", "/rounds"):
        response = await client.get(f"/api/workflows/wf-nan{path}")
        assert response.status_code == 200, path
        assert '"NaN"' in response.text
    assert (await client.get("/api/workflows/wf-nan/chart.svg")).status_code == 200


def test_orchestrator_serve_starts_a_console_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The real command serves on loopback, open, and on SIGTERM ends an open event stream."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "orchestrator", "serve", "--port", str(port)]
    argv += ["--data-dir", str(tmp_path / "data"), "--no-run"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        whoami = None
        for _ in range(600):  # until it listens (startup, not a timing assertion)
            try:
                whoami = httpx.get(f"http://127.0.0.1:{port}/api/whoami").json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[1]
                time.sleep(0.05)
        assert whoami == {"name": None, "open": True, "can_run": False}
        with httpx.stream("GET", f"http://127.0.0.1:{port}/api/events") as stream:
            lines = stream.iter_lines()
            assert [next(lines), next(lines)] == ["event: hello", "data: {}"]
            proc.send_signal(signal.SIGTERM)
            assert [line for line in lines if line] == []  # finished, not cut off
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal it caught.
    assert proc.returncode == -signal.SIGTERM and "Traceback" not in err, err
    assert "Cancel" not in err and "ERROR" not in err, err
    assert f"console at http://127.0.0.1:{port}/ (open (loopback))" in err


async def test_the_inbox_lists_the_longest_waiting_first(
    client: httpx.AsyncClient, store: Store, tmp_path: Path
) -> None:
    """Waiting workflows come oldest first (by when they reached the gate), not by id or update."""
    store_waiting(store, "wf-z-quick", tmp_path / "ws", revised=False)  # reached its gate first
    inbox = (await client.get("/api/inbox")).json()
    assert [i["workflow_id"] for i in inbox] == ["wf-z-quick", "wf-a"]
    assert inbox[0]["waited_s"] > inbox[1]["waited_s"] > 0
    await client.post("/api/workflows/wf-z-quick/answer", json=approve())
    assert [i["workflow_id"] for i in (await client.get("/api/inbox")).json()] == ["wf-a"]


async def test_the_inbox_sees_a_new_question_at_a_new_version(
    client: httpx.AsyncClient, store: Store
) -> None:
    """The inbox remembers questions per version: a waiting workflow that changes is re-read."""
    first = (await client.get("/api/inbox")).json()
    stored = store.load("wf-a")
    last = stored.state.decisions[-1]
    reworded = last.model_copy(
        update={"decision": last.decision.model_copy(update={"rationale": "a new question"})}
    )
    state = stored.state.model_copy(update={"decisions": (*stored.state.decisions[:-1], reworded)})
    store.acquire_lease("wf-a", "test", 60.0)
    store.commit("wf-a", state, expected_version=stored.version, entries=(), owner="test")
    store.release_lease("wf-a", "test")
    again = (await client.get("/api/inbox")).json()
    assert first[0]["asked"] != "a new question"
    assert again[0]["asked"] == "a new question" and again[0]["version"] == stored.version + 1


async def test_the_inbox_and_the_list_come_a_page_at_a_time(
    client: httpx.AsyncClient, store: Store, tmp_path: Path
) -> None:
    """``limit``/``offset`` page the inbox and the list; headers give the total and the way on."""
    for i in range(4):
        store_waiting(store, f"wf-p{i}", tmp_path / "ws", revised=False)
    whole = [i["workflow_id"] for i in (await client.get("/api/inbox")).json()]
    assert len(whole) == 5
    first = await client.get("/api/inbox", params={"limit": 2})
    assert [i["workflow_id"] for i in first.json()] == whole[:2]
    assert first.headers["X-Total-Count"] == "5"
    assert 'rel="next"' in first.headers["Link"] and 'rel="prev"' not in first.headers["Link"]
    last = await client.get("/api/inbox", params={"limit": 2, "offset": 4})
    assert [i["workflow_id"] for i in last.json()] == whole[4:]
    assert 'rel="prev"' in last.headers["Link"] and 'rel="next"' not in last.headers["Link"]
    prev = re.search(r'<([^>]+)>; rel="prev"', last.headers["Link"])
    assert prev is not None and "offset=2" in prev.group(1)
    beyond = await client.get("/api/inbox", params={"offset": 50})
    assert beyond.json() == [] and beyond.headers["X-Total-Count"] == "5"
    listed = await client.get("/api/workflows", params={"limit": 3, "offset": 1})
    assert len(listed.json()) == 3 and listed.headers["X-Total-Count"] == "5"


@pytest.mark.parametrize("query", [{"limit": 0}, {"limit": 1001}, {"offset": -1}, {"limit": "x"}])
async def test_a_page_outside_the_bounds_is_refused(
    client: httpx.AsyncClient, query: dict[str, Any]
) -> None:
    """A limit outside 1..1000 or a negative offset is a 422 naming the parameter."""
    for path in ("/api/inbox", "/api/workflows"):
        response = await client.get(path, params=query)
        assert response.status_code == 422, response.text
        assert next(iter(query)) in response.text
