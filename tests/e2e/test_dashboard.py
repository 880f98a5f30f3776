"""The dashboard at `/` in a real browser (Debian's headless Chromium, driven by Playwright) against a
real `ttsd run` with HTTP on: a job queued through the page's form runs to done and plays; a job
dropped into the inbox shows up in the same list; a failed job's reason shows under recent failures;
and a daemon with an API key gets one from the page's key form."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.support.daemon_harness import GHOST_MODEL, DaemonEnv, wait_for
from tests.support.http import HttpDaemon, start_http_daemon

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("Debian's chromium is not installed (scripts/install.sh --dev installs it)", allow_module_level=True)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Lets the page's play() start without a click the browser trusts; no audio device is needed.
    "--autoplay-policy=no-user-gesture-required",
]
DONE_TIMEOUT_MS = 60_000  # the first job also waits for the tiny model's worker to start
SEEN_TIMEOUT_MS = 15_000  # the page polls every second; the inbox is scanned every 0.5 s here


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module (each test gets its own page)."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


class Dashboard:
    """A browser page on the daemon's dashboard that records what would betray a broken page:
    uncaught script errors, and requests that leave the daemon (the page must work offline)."""

    def __init__(self, browser: Browser, base_url: str) -> None:
        self.base_url = base_url
        self.page: Page = browser.new_page()
        self.script_errors: list[str] = []
        self.foreign_requests: list[str] = []
        self.page.on("pageerror", lambda error: self.script_errors.append(str(error)))
        self.page.on("request", lambda request: self._note(request.url))
        self.page.goto(base_url)

    def _note(self, url: str) -> None:
        if not (url.startswith(self.base_url + "/") or url.startswith("blob:")):
            self.foreign_requests.append(url)

    def row(self, job_id: str) -> Locator:
        """The queue table's row of a job."""
        return self.page.locator(f'#job-rows tr[data-job-id="{job_id}"]')

    def row_named(self, name: str) -> Locator:
        """The queue table's row whose name cell says exactly `name`."""
        name_cell = self.page.locator("td.col-name", has_text=re.compile(f"^{re.escape(name)}$"))
        return self.page.locator("#job-rows tr").filter(has=name_cell)

    def check_clean(self) -> None:
        """No script error and no request to anywhere but the daemon, all along."""
        assert self.script_errors == []
        assert self.foreign_requests == []

    def close(self) -> None:
        self.page.close()


def job_document(server: HttpDaemon, job_id: str) -> dict[str, Any]:
    """The job's status document, as the API gives it."""
    with server.client() as client:
        answer = client.get(f"/v1/jobs/{job_id}")
        answer.raise_for_status()
        document: dict[str, Any] = answer.json()
        return document


def submit_through_the_form_and_play(dashboard: Dashboard, server: HttpDaemon) -> None:
    """(a) The form queues a job; its row shows the progress reaching done; Play plays the file."""
    page = dashboard.page
    page.fill("#job-text", "Hello from the dashboard.")
    page.click("#submit-button")
    expect(page.locator("#submit-message")).to_have_text(re.compile(r"^Queued as "), timeout=SEEN_TIMEOUT_MS)
    expect(page.locator("#job-text")).to_have_value("")
    first = page.locator("#job-rows tr").first
    expect(first).to_have_count(1, timeout=SEEN_TIMEOUT_MS)
    job_id = first.get_attribute("data-job-id")
    assert job_id

    row = dashboard.row(job_id)
    expect(row).to_have_attribute("data-state", "done", timeout=DONE_TIMEOUT_MS)
    expect(row.locator(".state")).to_have_text("done")
    expect(row.locator("progress")).to_have_attribute("aria-valuenow", "100")
    assert row.locator("progress").evaluate("bar => bar.value === bar.max")
    document = job_document(server, job_id)
    assert document["state"] == "done"
    expect(row.locator("td.col-name")).to_have_text(document["name"])
    expect(row.locator("td.col-model")).to_have_text(document["model"])

    row.get_by_role("button", name="Play").click()
    expect(page.locator("#now-playing")).to_have_text(document["name"])
    # The audio came as a blob (fetched with the key, if any) and the browser decoded its header.
    page.wait_for_function(
        """() => {
            const audio = document.querySelector('audio');
            return audio.src.startsWith('blob:') && audio.error === null && audio.readyState >= 1 && audio.duration > 0;
        }""",
        timeout=SEEN_TIMEOUT_MS,
    )
    page.evaluate("() => document.querySelector('audio').play()")
    page.wait_for_function(
        """() => {
            const audio = document.querySelector('audio');
            return audio.error === null && (audio.currentTime > 0 || audio.paused === false);
        }""",
        timeout=SEEN_TIMEOUT_MS,
    )


def inbox_job_shows_up(dashboard: Dashboard, env: DaemonEnv) -> None:
    """(b) A job file dropped into the inbox appears in the page's list: one queue for both doors."""
    env.drop_json("x.json", {"text": "Dropped into the inbox."})
    row = dashboard.row_named("x")
    expect(row).to_have_count(1, timeout=SEEN_TIMEOUT_MS)
    expect(row).to_have_attribute("data-state", re.compile(r"^(queued|running|done)$"))


def failure_reason_shows(dashboard: Dashboard, server: HttpDaemon) -> None:
    """(c) A job whose model has no weights fails, and its reason shows under recent failures; a job
    the daemon refuses outright (400) gets its reason next to the form instead."""
    page = dashboard.page
    with server.client() as client:
        answer = client.post("/v1/jobs", json={"text": "hi", "model": GHOST_MODEL})
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["job_id"]

        def has_failed() -> dict[str, Any] | None:
            document = job_document(server, job_id)
            return document if document["state"] == "failed" else None

        failed = wait_for(has_failed, 30, lambda: f"the ghost job to fail (now {job_document(server, job_id)})")
        refused = client.post("/v1/jobs", json={"text": "hi", "model": "tiny-design"})
        assert refused.status_code == 400, refused.text

    failure = page.locator(f'#failures li[data-job-id="{job_id}"]')
    expect(failure).to_have_count(1, timeout=SEEN_TIMEOUT_MS)
    expect(failure.locator(".failure-message")).to_have_text(failed["error"]["message"])
    expect(failure.locator("code")).to_have_text(failed["error"]["code"])
    expect(dashboard.row(job_id)).to_have_attribute("data-state", "failed")

    page.fill("#job-text", "hi")
    page.select_option("#job-model", "tiny-design")
    page.click("#submit-button")
    message = page.locator("#submit-message")
    expect(message).to_have_attribute("data-kind", "error", timeout=SEEN_TIMEOUT_MS)
    expect(message).to_have_text(refused.json()["error"]["message"])


def test_the_dashboard_follows_jobs_from_the_form_the_inbox_and_failures(
    daemon_env: DaemonEnv, browser: Browser
) -> None:
    # One daemon for all three parts: the tiny model is the default, and `ghost` has no weights.
    server = start_http_daemon(daemon_env, TTS_MODELS=json.dumps({GHOST_MODEL: "/nonexistent/weights"}))
    dashboard = Dashboard(browser, server.base_url)
    try:
        expect(dashboard.page.locator("#health-status")).to_have_text("ok", timeout=SEEN_TIMEOUT_MS)
        expect(dashboard.page.locator("#key-form")).to_be_hidden()
        submit_through_the_form_and_play(dashboard, server)
        expect(dashboard.page.locator("#models-loaded")).to_contain_text("tiny", timeout=SEEN_TIMEOUT_MS)
        inbox_job_shows_up(dashboard, daemon_env)
        failure_reason_shows(dashboard, server)
        dashboard.check_clean()
    finally:
        dashboard.close()


def test_the_dashboard_asks_for_the_api_key_when_the_daemon_wants_one(ghost_env: DaemonEnv, browser: Browser) -> None:
    server = start_http_daemon(ghost_env, TTS_API_KEY="dashboard-test-key-0123")
    dashboard = Dashboard(browser, server.base_url)
    page = dashboard.page
    try:
        expect(page.locator("#key-form")).to_be_visible(timeout=SEEN_TIMEOUT_MS)
        with server.client() as client:
            answer = client.post("/v1/jobs", json={"text": "behind a key"})
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["job_id"]
        page.fill("#key-input", "dashboard-test-key-0123")
        page.click("#key-form button[type=submit]")
        expect(page.locator("#key-form")).to_be_hidden()
        expect(dashboard.row(job_id)).to_have_count(1, timeout=SEEN_TIMEOUT_MS)
        expect(page.locator("#health-status")).to_have_text("ok")
        assert page.evaluate("() => localStorage.getItem('ttsd.apiKey')") == "dashboard-test-key-0123"
        dashboard.check_clean()
    finally:
        dashboard.close()
