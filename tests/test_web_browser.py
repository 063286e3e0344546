"""The console in a real headless Chromium: inbox, workflow page, chart, diagram, approval.

Uses Debian's chromium and chromedriver (scripts/install puts them there); no browser is
downloaded. Set ORCHESTRATOR_SCREENSHOTS=DIR to keep screenshots of the pages it visits.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from orchestrator.cli import cli
from orchestrator.composition import open_store
from orchestrator.web.access import AccessPolicy
from orchestrator.web.app import create_app
from orchestrator.web.service import build_service

from support.console import ServerThread, make_service, run_to_plan_gate, store_waiting
from support.fake_openai import FakeOpenAIServer
from support.gitrepo import cli_env, make_repo, served_world
from support.tiers import tier_missing
from support.world import GOOD_PLAN, World

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1800",
)

if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    tier_missing(
        "Debian's chromium and chromium-driver are not installed (scripts/install adds them)",
        module=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def llm() -> Iterator[FakeOpenAIServer]:
    world = World(plan_reports=[GOOD_PLAN])
    with FakeOpenAIServer(responder=world.http_responder) as server:
        yield server


def _shot(driver: Any, name: str) -> None:
    folder = os.environ.get("ORCHESTRATOR_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        # The whole page, not just the window: grow the window to the page's height.
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(1400, min(int(height) + 40, 6000))
        driver.save_screenshot(str(Path(folder) / f"{name}.png"))
        driver.set_window_size(1400, 1800)


def test_approve_a_waiting_workflow_in_the_browser(
    browser: Any, llm: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inbox -> workflow -> chart and diagram -> approve with a comment -> it moves on."""
    data = tmp_path / "data"
    run_to_plan_gate(data, llm, monkeypatch)
    service = build_service(data, base_url=llm.base_url, model="fake-model")
    app = create_app(service, AccessPolicy(), watch_interval_s=0.2)
    # Live updates redraw the page at any time: a read that meets a redrawn element retries.
    wait = WebDriverWait(
        browser, 90, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
    )
    with ServerThread(app) as server:
        browser.get(server.url + "/")
        row = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "tr.inbox-row"))
        assert "wf-web" in row.text and "plan" in row.text
        wait.until(lambda d: "live" in d.find_element(By.ID, "live").text)
        _shot(browser, "inbox")
        row.find_element(By.LINK_TEXT, "wf-web").click()

        form = wait.until(lambda d: d.find_element(By.ID, "answer-form"))
        assert form.get_attribute("data-gate") == "plan"
        assert browser.find_element(By.ID, "machine-state").text == "awaiting_plan_approval"
        points = browser.find_elements(
            By.CSS_SELECTOR, '#chart g[data-metric="alignment"] circle.point'
        )
        assert [p.get_attribute("data-value") for p in points] == ["9.5"]
        threshold = browser.find_element(
            By.CSS_SELECTOR, '#chart g[data-metric="alignment"] line.threshold'
        )
        assert threshold.get_attribute("data-value") == "9"
        edge = browser.find_element(
            By.CSS_SELECTOR,
            '#diagram g.edge.taken[data-from="plan_validation"][data-to="awaiting_plan_approval"]',
        )
        assert edge.get_attribute("data-programmatic") == "1"
        current = browser.find_element(By.CSS_SELECTOR, "#diagram g.node.current")
        assert current.get_attribute("data-state") == "awaiting_plan_approval"
        assert len(browser.find_elements(By.CSS_SELECTOR, "table.timeline tr.decision")) == 3
        first = browser.find_element(By.CSS_SELECTOR, "details.round")
        first.find_element(By.TAG_NAME, "summary").click()
        heading = first.find_element(By.CSS_SELECTOR, ".md h3").text
        assert heading == "Implementation Plan: tabular preprocessing"  # the plan, rendered
        _shot(browser, "workflow")

        browser.find_element(By.ID, "by").send_keys("fatima")
        browser.find_element(By.ID, "comment").send_keys("looks right")
        browser.find_element(By.CSS_SELECTOR, 'button[value="approve"]').click()
        result = wait.until(lambda d: d.find_element(By.ID, "answer-result").text or None)
        assert "approve recorded at the plan gate by fatima" in result

        # No reload: the live feed redraws the page as the workflow runs on.
        def at_final_gate(d: Any) -> tuple[Any, Any, Any] | None:
            if not d.find_element(By.ID, "machine-state").text.startswith("awaiting_final"):
                return None
            gate = d.find_element(By.ID, "answer-form").get_attribute("data-gate")
            left = d.find_element(
                By.CSS_SELECTOR,
                '#diagram g.edge[data-from="awaiting_plan_approval"][data-to="implementation"]',
            )
            return gate, d.find_element(By.ID, "answers").text, left.get_attribute("data-human")

        moved_on = wait.until(at_final_gate)
        assert moved_on is not None
        gate, answers, by_human = moved_on
        assert gate == "final" and "fatima approve at plan" in answers
        assert by_human == "1"  # leaving a gate is the human's move
        _shot(browser, "workflow-final-gate")
        browser.get(server.url + "/workflows")
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "table.workflows"))
        _shot(browser, "workflows")
    with open_store(data) as store:
        answer = store.load("wf-web").state.human_answers[0]
    assert (answer.by, answer.comment) == ("fatima", "looks right")


def test_log_in_with_a_token_and_answer_as_its_holder(browser: Any, tmp_path: Path) -> None:
    """With tokens, the browser logs in, and its answer (cookie + CSRF header) is the holder's."""
    token = "alice-token-0123456789"
    with open_store(tmp_path / "data") as store:
        store_waiting(store, "wf-a", tmp_path / "ws")
        app = create_app(
            make_service(store, tmp_path / "ws"), AccessPolicy(tokens={token: "alice"})
        )
        wait = WebDriverWait(
            browser, 60, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
        )
        with ServerThread(app) as server:
            browser.get(server.url + "/workflows/wf-a")
            field = wait.until(lambda d: d.find_element(By.NAME, "token"))
            assert "/login" in browser.current_url
            field.send_keys(token)
            browser.find_element(By.CSS_SELECTOR, "form button").click()
            wait.until(lambda d: d.find_element(By.ID, "answer-form"))
            assert "signed in as alice" in browser.find_element(By.ID, "whoami").text
            assert not browser.find_elements(By.ID, "by")  # the token names the answerer
            browser.find_element(By.ID, "comment").send_keys("out of scope")
            browser.find_element(By.CSS_SELECTOR, 'button[value="reject"]').click()
            result = wait.until(lambda d: d.find_element(By.ID, "answer-result").text or None)
            assert "reject recorded at the plan gate by alice" in result
        answer = store.load("wf-a").state.human_answers[-1]
        assert (answer.by, answer.comment) == ("alice", "out of scope")


def test_a_repo_workflow_shows_its_branch_and_the_change_in_the_browser(
    browser: Any, tmp_path: Path
) -> None:
    """A --repo workflow at the final gate: branch, diff to approve, round diffs, a line request."""
    with served_world() as llm:
        repo = make_repo(tmp_path / "repo")
        (tmp_path / "config.yaml").write_text(
            "coordinator: programmatic\ngates: {plan: false, final: true}\n"
        )
        data = tmp_path / "data"
        result = CliRunner().invoke(
            cli,
            [
                *("run", "-r", "fill missing values", "--id", "wf-repo", "--no-input"),
                *("--quiet", "--config", str(tmp_path / "config.yaml"), "--repo", str(repo)),
            ],
            env=cli_env(llm, data),
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        service = build_service(data, run_workflows=False)
        app = create_app(service, AccessPolicy(), watch_interval_s=0.2)
        wait = WebDriverWait(
            browser, 60, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
        )
        with ServerThread(app) as server:
            browser.get(server.url + "/workflows/wf-repo")
            branch = wait.until(lambda d: d.find_element(By.ID, "branch"))
            assert branch.text.startswith("orchestrator/wf-repo (from main")
            change = browser.find_element(By.ID, "change")
            added = change.find_elements(By.CSS_SELECTOR, "pre.diff span.add")
            assert any("def fill_missing(rows, value):" in a.text for a in added)
            assert "coverage of the changed lines:" in change.text
            rounds = browser.find_elements(By.CSS_SELECTOR, "details.round")
            diffs = [r for r in rounds if r.find_elements(By.CSS_SELECTOR, "details.diff-box")]
            assert len(diffs) == 2, "both code rounds show their diff"
            _shot(browser, "repo-change")

            browser.find_element(By.ID, "by").send_keys("fatima")
            browser.find_element(By.ID, "at").send_keys("prep.py:4: skip empty rows")
            browser.find_element(By.CSS_SELECTOR, 'button[value="request_changes"]').click()
            result = wait.until(lambda d: d.find_element(By.ID, "answer-result").text or None)
            assert "request_changes recorded at the final gate by fatima" in result
        with open_store(data) as store:
            answer = store.load("wf-repo").state.human_answers[-1]
        assert answer.changes == ("At prep.py:4: skip empty rows",)


def test_a_running_workflow_shows_what_its_process_is_doing(browser: Any, tmp_path: Path) -> None:
    """The lease's activity note (an environment build's line) shows, follows and goes."""
    with open_store(tmp_path / "data") as store:
        store_waiting(store, "wf-a", tmp_path / "ws")
        store.acquire_lease("wf-a", "worker-7", 300)  # a live process of this host: this one
        store.note_activity("wf-a", "worker-7", "building the project environment (pip)")
        wait = WebDriverWait(
            browser, 60, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
        )
        app = create_app(make_service(store, tmp_path / "ws"), AccessPolicy(), watch_interval_s=0.2)
        with ServerThread(app) as server:
            browser.get(server.url + "/workflows/wf-a")
            shown = wait.until(lambda d: d.find_element(By.ID, "activity").text or None)
            assert shown == "building the project environment (pip)"
            assert "(running)" in browser.find_element(By.ID, "machine-state").text
            _shot(browser, "activity")
            # Another process writes a newer line: the live feed redraws the page.
            store.note_activity("wf-a", "worker-7", "Collecting pandas")
            wait.until(lambda d: d.find_element(By.ID, "activity").text == "Collecting pandas")
            browser.get(server.url + "/workflows")  # the listing says it too
            row = wait.until(
                lambda d: d.find_element(By.CSS_SELECTOR, 'tr[data-workflow-id="wf-a"] .activity')
            )
            assert row.text == "Collecting pandas"
            browser.get(server.url + "/workflows/wf-a")
            store.release_lease("wf-a", "worker-7")
            wait.until(lambda d: not d.find_elements(By.ID, "activity"))
