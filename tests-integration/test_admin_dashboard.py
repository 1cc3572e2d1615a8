"""The dashboard in a real browser: headless Chromium (Debian's package) driven by
Playwright, against ``dashboard_app`` (a real TaskAdmin) under uvicorn.

What a user relies on: the page lists tasks; a task enqueued after the page loaded appears
and changes status without a reload (only its row is touched); filters narrow the list;
the retry button re-runs a failed task; markup in arguments, tags, logs and errors is
shown as text and never runs; the detail panel has the logs, the traceback and every
attempt; light and dark both render.

Every wait is Playwright's ``expect(...)`` (polling with a deadline). Screenshots of the
dashboard and the detail panel are taken in both themes; with
``TASKFLOW_UPDATE_SCREENSHOTS=1`` they are written to ``docs/images/`` (the docs show
them), otherwise to the test's temporary directory.

Skipped when chromium or Playwright is missing (failed instead with
``TASKFLOW_REQUIRE_SERVICES=1``, as CI sets): ``apt-get install chromium`` and
``pip install playwright``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from fastapi_taskflow.testing.services import service_missing

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IMAGES = ROOT / "docs" / "images"
CHROMIUM = os.environ.get("TASKFLOW_CHROMIUM", "/usr/bin/chromium")
XSS = "<img src=x onerror=alert(1)>"
TIMEOUT_MS = 15_000

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - reported by the browser fixture
    sync_playwright = None  # type: ignore[assignment]
else:
    expect.set_options(timeout=TIMEOUT_MS)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``dashboard_app:app`` under uvicorn in a process of its own."""

    def __init__(
        self, backend: str, log_path: Path, *, port: int | None = None, **env_vars: str
    ) -> None:
        self.backend = backend
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        env = dict(os.environ, TASKFLOW_BACKEND=backend, PYTHONUNBUFFERED="1", **env_vars)
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "dashboard_app:app", "--app-dir", str(HERE)),
                *("--host", "127.0.0.1", "--port", str(self.port), "--lifespan", "on"),
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"dashboard_app exited at startup:\n{self.log()}")
            try:
                httpx.get(f"{self.url}/openapi.json", timeout=2).raise_for_status()
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        pytest.fail(f"dashboard_app did not start within 60 s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post(self, path: str, **params: Any) -> str:
        response = httpx.post(f"{self.url}{path}", params=params, timeout=10)
        response.raise_for_status()
        task_id: str = response.json()["task_id"]
        return task_id

    def task(self, task_id: str) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/tasks/api/tasks/{task_id}", timeout=10)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def wait_status(self, task_id: str, status: str, timeout: float = 20) -> dict[str, Any]:
        """Poll the API until the task has ``status`` (fails after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while True:
            task = self.task(task_id)
            if task["status"] == status:
                return task
            if time.monotonic() > deadline:
                pytest.fail(f"task {task_id} is {task['status']}, not {status}, after {timeout}s")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self._log.close()


@pytest.fixture(scope="module", params=["memory://", "sqlite:///{tmp}/dashboard.db"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One app per backend for the whole module (each test makes its own tasks)."""
    tmp = tmp_path_factory.mktemp("dashboard")
    backend = str(request.param).replace("{tmp}", str(tmp))
    if backend.startswith("sqlite"):
        pytest.importorskip("taskflow_sql")
    srv = Server(backend, tmp / "server.log", DASHBOARD_HISTORY="1")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        service_missing("Playwright for Python is not installed (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        service_missing(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--headless", "--disable-background-networking"],
        )
        yield chromium
        chromium.close()


class Watched:
    """A page plus what it reported: console errors (CSP violations land here), uncaught
    exceptions and dialogs (an ``alert`` from injected markup would be one)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("dialog", self._dialog)

    def _console(self, message: Any) -> None:
        # The login page (not the dashboard's) has no icon: the browser's own request
        # for /favicon.ico is not the dashboard's error.
        if message.type == "error" and not message.location.get("url", "").endswith("/favicon.ico"):
            self.errors.append(f"console: {message.text} ({message.location.get('url')})")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


@contextmanager
def _open(browser: Browser, scheme: str = "light") -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, color_scheme=scheme)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    watched = Watched(page)
    try:
        yield watched
    finally:
        context.close()
    assert watched.errors == [], f"the page reported errors: {watched.errors}"
    assert watched.dialogs == [], f"a dialog opened: {watched.dialogs}"


@pytest.fixture
def watched(browser: Browser, server: Server) -> Iterator[Watched]:
    with _open(browser) as opened:
        yield opened


def _goto_dashboard(watched: Watched, server: Server, query: str = "") -> Page:
    page = watched.page
    response = page.goto(f"{server.url}/tasks/dashboard{query}")
    assert response is not None and response.ok
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    expect(page.locator("#live")).to_have_attribute("data-state", "live")
    _wait_for_marks(page, "taskflow:first-rows", "taskflow:charts")
    return page


def _wait_for_marks(page: Page, *names: str) -> None:
    """Wait until the page has made these performance marks (app.js ``markOnce``): the
    list, then the counts and charts, are on screen."""
    page.wait_for_function(
        "(names) => names.every((n) => performance.getEntriesByName(n).length > 0)",
        arg=list(names),
    )


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _row(page: Page, task_id: str) -> Any:
    return page.locator(f'#task-rows tr[data-task-id="{task_id}"]')


def _count(page: Page, status: str) -> Any:
    return page.locator(f'#counts .count-card[data-status="{status}"] .count-n')


# ---- the page --------------------------------------------------------------------------


def test_the_page_loads_and_lists_tasks(watched: Watched, server: Server) -> None:
    ids = [server.post("/enqueue/quick", email=f"u{i}@example.com") for i in range(3)]
    for task_id in ids:
        server.wait_status(task_id, "success")
    page = _goto_dashboard(watched, server)
    for task_id in ids:
        row = _row(page, task_id)
        expect(row.locator(".badge")).to_have_text("success")
        expect(row.locator(".func")).to_have_text("send_welcome_email")
        expect(row.locator(".tags")).to_contain_text("tenant=acme")
        # The id column shows the random tail of the id (its first digits are the time
        # it was made: the same for all three), the whole id on hover.
        expect(row.locator(".task-id")).to_have_text(f"…{task_id[-8:]}")
        expect(row.locator(".task-id")).to_have_attribute("title", task_id)
    assert len({task_id[-8:] for task_id in ids}) == len(ids)
    # Newest first, and a page of 50 with a "load more" that uses the cursor.
    first = page.locator("#task-rows tr").first
    expect(first).to_have_attribute("data-task-id", ids[-1])
    expect(page.locator("#task-rows tr")).to_have_count(50)
    page.locator("#more").click()
    expect(page.locator("#task-rows tr")).to_have_count(100)
    # Counts and both charts come from /api/stats.
    expect(_count(page, "success")).not_to_have_text("0")
    expect(page.locator("#throughput svg rect.ok").first).to_be_attached()
    expect(page.locator("#durations svg text.label", has_text="generate_report")).to_be_visible()


def test_a_task_enqueued_after_loading_appears_and_changes_status_live(
    watched: Watched, server: Server
) -> None:
    page = _goto_dashboard(watched, server)
    expect(_count(page, "success")).not_to_have_text("0")
    page.evaluate(
        """() => {
            window.__sameDocument = true;
            document.querySelector('#task-rows tr').__untouched = true;
            // Which rows the page changes from now on (any attribute, text or child).
            window.__touched = new Set();
            new MutationObserver((records) => {
                for (const r of records) {
                    const el = r.target.nodeType === 1 ? r.target : r.target.parentElement;
                    const tr = el && el.closest('#task-rows tr[data-task-id]');
                    if (tr) window.__touched.add(tr.dataset.taskId);
                }
            }).observe(document.querySelector('#task-rows'),
                {subtree: true, childList: true, attributes: true, characterData: true});
        }"""
    )
    success_before = int(_count(page, "success").inner_text().replace(",", ""))
    gate = uuid.uuid4().hex
    task_id = server.post(f"/enqueue/gated/{gate}", user_id=7)

    row = _row(page, task_id)
    expect(row.locator(".badge")).to_have_text("running")
    expect(row.locator(".tags")).to_have_text("user_id=7")
    expect(page.locator("#task-rows tr").first).to_have_attribute("data-task-id", task_id)
    row.evaluate("tr => { tr.__mine = true; }")

    httpx.post(f"{server.url}/release/{gate}", timeout=10).raise_for_status()
    expect(row.locator(".badge")).to_have_text("success")
    expect(_count(page, "success")).to_have_text(f"{success_before + 1:,}")
    # No reload; the task's row was updated in place and the other rows left alone.
    assert page.evaluate("() => window.__sameDocument === true")
    assert row.evaluate("tr => tr.__mine === true")
    assert page.evaluate("() => document.querySelectorAll('#task-rows tr')[1].__untouched === true")
    assert page.evaluate("() => [...window.__touched]") == [task_id]


def test_filters_narrow_the_list(watched: Watched, server: Server) -> None:
    order = int(time.time() * 1000) % 1_000_000
    failing = server.post(f"/enqueue/explode/{order}")
    quick = server.post("/enqueue/quick", tenant="umbrella")
    server.wait_status(failing, "failed")
    server.wait_status(quick, "success")
    page = _goto_dashboard(watched, server)
    expect(_row(page, quick)).to_be_visible()
    rows = page.locator("#task-rows tr")

    # Function: only charge_card rows remain, and the URL keeps the filter.
    expect(page.locator('#f-func option[value="charge_card"]')).to_be_attached()
    page.select_option("#f-func", "charge_card")
    expect(_row(page, quick)).to_have_count(0)
    expect(_row(page, failing)).to_be_visible()
    expect(rows.locator(".func")).to_have_text(["charge_card"] * rows.count())
    assert "func=charge_card" in page.url

    # Status (a click on the count card) narrows further: failed charge_card tasks only.
    page.locator('#counts .count-card[data-status="failed"]').click()
    expect(page.locator("#f-status")).to_have_value("failed")
    expect(_row(page, failing)).to_be_visible()
    # The failing row was listed before the click too: wait for the filtered list to replace
    # the old one (under load it comes later) before reading every row's status.
    expect(rows.locator(".badge").filter(has_not_text="failed")).to_have_count(0)
    statuses = rows.locator(".badge").all_inner_texts()
    assert statuses and set(statuses) == {"failed"}

    # Tag filter, then clearing everything and a text search.
    page.fill("#f-tag", f"order:{order}")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-task-id", failing)
    page.locator("#f-clear").click()
    expect(page.locator("#f-func")).to_have_value("")
    page.fill("#f-q", "umbrella")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-task-id", quick)

    # A reload keeps the filters (they live in the URL).
    expect(page).to_have_url(re.compile(r"\?q=umbrella$"))
    page.reload()
    expect(page.locator("#f-q")).to_have_value("umbrella")
    expect(rows).to_have_count(1)

    # Time range: the list asks for tasks created in the last 15 minutes.
    page.locator("#f-clear").click()
    with page.expect_response(lambda r: "created_after=" in r.url) as answer:
        page.select_option("#f-range", "900")
    since = _when(unquote(answer.value.request.url.split("created_after=", 1)[1].split("&")[0]))
    items = answer.value.json()["items"]
    assert items and all(_when(item["created_at"]) >= since for item in items)
    expect(rows.first).to_have_attribute("data-task-id", items[0]["task_id"])


def test_a_page_told_it_fell_behind_reloads_its_list(watched: Watched, server: Server) -> None:
    """The server drops events for a page too slow to take them (a tab in the
    background) and says so (``event: dropped``): the page reloads its list, so a task
    it never heard of shows up."""
    page = watched.page
    held: list[Any] = []

    def hold(route: Any) -> None:  # the stream answers when the test says
        held.append(route)

    page.route("**/api/events", hold)
    # A tab in the background: the page stops merging in the list's first page every
    # few seconds, so only the stream (here: its dropped message) can bring news.
    page.add_init_script(
        "Object.defineProperty(document, 'visibilityState', {get: () => 'hidden'})"
    )
    page.goto(f"{server.url}/tasks/dashboard")
    _wait_for_marks(page, "taskflow:first-rows")
    task_id = server.post("/enqueue/quick", tenant="missed")
    server.wait_status(task_id, "success")
    expect(_row(page, task_id)).to_have_count(0)  # the page never heard of it
    assert len(held) == 1
    # One message, then the stream ends; the browser would reconnect (and reload) only
    # after 10 minutes, so a reload within the test's deadline is the dropped event's.
    body = 'retry: 600000\n\nevent: dropped\ndata: {"dropped": 3}\n\n'
    held[0].fulfill(status=200, headers={"content-type": "text/event-stream"}, body=body)
    expect(_row(page, task_id).locator(".badge")).to_have_text("success")


def test_a_live_task_joins_a_searched_list_as_the_server_would_find_it(
    watched: Watched, server: Server
) -> None:
    """With a search in the filters, a task first seen on the stream is shown only if
    the server's search finds it: ``A``-``Z`` fold, other letters (``É``) do not."""
    mark = uuid.uuid4().hex[:8]
    page = _goto_dashboard(watched, server, f"?q=élodie-{mark}")
    other_case = server.post("/enqueue/note", text="x", tag=f"ÉLODIE-{mark.upper()}")
    same = server.post("/enqueue/note", text="x", tag=f"éLODIE-{mark.upper()}")
    expect(_row(page, same)).to_have_count(1)  # its events came after the other's
    expect(_row(page, other_case)).to_have_count(0)
    page.reload()  # what the server finds
    expect(_row(page, same)).to_have_count(1)
    expect(_row(page, other_case)).to_have_count(0)


def test_the_retry_button_reruns_a_failed_task(watched: Watched, server: Server) -> None:
    task_id = server.post(f"/enqueue/flaky/{uuid.uuid4().hex}")
    server.wait_status(task_id, "failed")
    page = _goto_dashboard(watched, server)
    row = _row(page, task_id)
    expect(row.locator(".badge")).to_have_text("failed")
    expect(row.locator('button[data-action="cancel"]')).to_be_hidden()

    # Hold the retry's answer (status pending) until the stream has told the page the
    # task already succeeded: the late answer must not turn the row back to pending.
    held: list[Any] = []

    def hold(route: Any) -> None:
        held.append((route, route.fetch()))

    page.route(f"**/api/tasks/{task_id}/retry", hold)
    row.locator('button[data-action="retry"]').click()
    expect(row.locator(".badge")).to_have_text("success")
    assert len(held) == 1
    route, answer = held[0]
    assert answer.json()["status"] == "pending"
    route.fulfill(response=answer)
    expect(page.locator("#toast")).to_have_text("Retry queued")
    assert row.locator(".badge").inner_text() == "success"
    expect(row.locator('button[data-action="retry"]')).to_be_hidden()

    task = server.task(task_id)
    assert task["status"] == "success" and task["error"] is None
    # The same task ran again: its first failure is still in its log.
    assert any("CRM unreachable" in log["message"] for log in task["logs"])


def test_retry_failed_reruns_every_failed_task_matching_the_filters(
    watched: Watched, server: Server
) -> None:
    batch = uuid.uuid4().hex[:10]
    ids = [server.post(f"/enqueue/flaky/{uuid.uuid4().hex}", batch=batch) for _ in range(2)]
    for task_id in ids:
        server.wait_status(task_id, "failed")
    page = _goto_dashboard(watched, server, f"?tag=batch:{batch}")
    rows = page.locator("#task-rows tr")
    expect(rows).to_have_count(2)
    button = page.locator("#retry-all")
    button.click()  # arms
    expect(button).to_have_text("Click again to retry")
    button.click()
    for task_id in ids:
        expect(_row(page, task_id).locator(".badge")).to_have_text("success")
        assert server.task(task_id)["status"] == "success"


def test_the_cancel_button_cancels_pending_and_running_tasks(
    watched: Watched, server: Server
) -> None:
    gate = uuid.uuid4().hex
    running = server.post(f"/enqueue/single/{gate}")
    server.wait_status(running, "running")
    page = _goto_dashboard(watched, server)
    expect(_row(page, running).locator(".badge")).to_have_text("running")
    # A task waiting behind it sends no event until it starts; the page still shows it
    # (it polls the counts while tasks wait and merges in the newest ones).
    waiting = server.post(f"/enqueue/single/{gate}")
    try:
        server.wait_status(waiting, "pending")
        row = _row(page, waiting)
        expect(row.locator(".badge")).to_have_text("pending")
        row.locator('button[data-action="cancel"]').click()
        expect(row.locator(".badge")).to_have_text("cancelled")
        expect(row.locator('button[data-action="retry"]')).to_be_visible()
        # The running task (its gate still closed) is stopped where it runs.
        running_row = _row(page, running)
        running_row.locator('button[data-action="cancel"]').click()
        expect(running_row.locator(".badge")).to_have_text("cancelled")
        expect(running_row.locator('button[data-action="cancel"]')).to_be_hidden()
    finally:
        httpx.post(f"{server.url}/release/{gate}", timeout=10)
    assert server.task(waiting)["status"] == "cancelled"
    assert server.task(running)["status"] == "cancelled"


def test_markup_in_task_data_renders_as_text(watched: Watched, server: Server) -> None:
    task_id = server.post("/enqueue/note", text=XSS, tag=XSS, fail=True)
    server.wait_status(task_id, "failed")
    page = _goto_dashboard(watched, server)
    row = _row(page, task_id)
    expect(row.locator(".tags")).to_have_text(f"note={XSS}")
    row.click()
    detail = page.locator("#detail")
    expect(detail.locator("#d-args")).to_have_text(f'["{XSS}"]')
    expect(detail.locator("#d-error")).to_have_text(f"RuntimeError: {XSS}")
    expect(detail.locator("#d-logs")).to_contain_text(f"note: {XSS}")
    expect(detail.locator(".tag-list")).to_contain_text(XSS)
    # A function name that is markup, in the table, the panel and the function filter.
    named = server.post("/enqueue/marked-up")
    server.wait_status(named, "success")
    expect(_row(page, named).locator(".func")).to_have_text(
        "<img src=x onerror=alert(1)>.<b>markup</b>"
    )
    _row(page, named).click()
    expect(detail.locator("#d-func")).to_have_text("<img src=x onerror=alert(1)>.<b>markup</b>")
    expect(detail.locator("#d-logs")).to_contain_text("<script>alert(1)</script>")
    page.reload()
    expect(page.locator("#f-func option", has_text="<b>markup</b>")).to_be_attached()
    # Nothing was parsed as markup: no <img> from task data exists, no handler ran.
    assert page.locator('img[src="x"]').count() == 0
    assert page.evaluate("() => document.querySelectorAll('main img, #detail img, b').length") == 0
    assert watched.dialogs == []


def test_the_task_list_does_not_move_when_counts_and_charts_arrive(
    watched: Watched, server: Server
) -> None:
    """The counts, queue depths and charts load after the list: the list must not jump
    down under the pointer when they arrive (a click meant for one row would land on
    another)."""
    gate = uuid.uuid4().hex
    running = server.post(f"/enqueue/single/{gate}")
    server.wait_status(running, "running")
    waiting = server.post(f"/enqueue/single/{gate}")  # queue "single" now has one waiting
    page = watched.page
    held: list[Any] = []
    released = False

    def hold(route: Any) -> None:  # the stats wait until the list was measured
        if released:
            route.continue_()
        else:
            held.append(route)

    page.route("**/api/stats", hold)
    try:
        page.goto(f"{server.url}/tasks/dashboard")
        _wait_for_marks(page, "taskflow:first-rows")
        expect(_row(page, waiting)).to_be_visible()
        table = page.locator("#tasks")
        before = table.bounding_box()
        deadline = time.monotonic() + 20
        while not held:  # the page asks for its stats once the list is on screen
            assert time.monotonic() < deadline, "the page never asked for /api/stats"
            page.wait_for_timeout(20)
        released = True
        for route in held:
            route.continue_()
        _wait_for_marks(page, "taskflow:charts")
        expect(page.locator("#queues .queue-chip")).not_to_have_count(0)
        expect(page.locator("#durations svg")).to_be_visible()
        assert table.bounding_box() == before
    finally:
        httpx.post(f"{server.url}/release/{gate}", timeout=10)
    server.wait_status(waiting, "success")


def test_a_running_tasks_progress_is_live_in_its_row_and_its_detail(
    watched: Watched, server: Server
) -> None:
    gate = uuid.uuid4().hex
    page = _goto_dashboard(watched, server)
    task_id = server.post(f"/enqueue/staged/{gate}")
    try:
        row = _row(page, task_id)
        expect(row.locator(".progress-text")).to_have_text("25%")
        row.click()
        progress = page.locator("#detail dt:text-is('Progress') + dd")
        expect(progress).to_have_text("25%")
        httpx.post(f"{server.url}/release/{gate}-half", timeout=10).raise_for_status()
        expect(row.locator(".progress-text")).to_have_text("75%")
        expect(progress).to_have_text("75%")  # the open panel follows too
        expect(page.locator("#d-logs")).to_contain_text("second half")
    finally:
        httpx.post(f"{server.url}/release/{gate}-half", timeout=10)
        httpx.post(f"{server.url}/release/{gate}", timeout=10)
    server.wait_status(task_id, "success")


def test_the_detail_panel_shows_no_earlier_runs_traceback(watched: Watched, server: Server) -> None:
    """A task that failed, was retried and then cancelled before its retry started ends
    with an error of its own and no traceback: the panel does not show the first run's
    traceback under it."""
    key, gate = uuid.uuid4().hex, uuid.uuid4().hex
    task_id = server.post(f"/enqueue/flaky_single/{key}")
    server.wait_status(task_id, "failed")  # ConnectionError, with its traceback
    blocker = server.post(f"/enqueue/single/{gate}")  # holds the queue of one
    try:
        server.wait_status(blocker, "running")
        api = f"{server.url}/tasks/api/tasks/{task_id}"
        httpx.post(f"{api}/retry", timeout=10).raise_for_status()
        server.wait_status(task_id, "pending")
        httpx.post(f"{api}/cancel", timeout=10).raise_for_status()
        server.wait_status(task_id, "cancelled")
        page = _goto_dashboard(watched, server)
        _row(page, task_id).click()
        expect(page.locator("#d-error")).to_contain_text("cancelled before it started")
        expect(page.locator("#d-logs")).to_contain_text("CRM unreachable")  # run 1 is there
        expect(page.locator("#d-traceback")).to_have_count(0)
    finally:
        httpx.post(f"{server.url}/release/{gate}", timeout=10)


def test_the_detail_panel_shows_logs_traceback_and_attempts(
    watched: Watched, server: Server
) -> None:
    order = int(time.time() * 1000) % 1_000_000
    task_id = server.post(f"/enqueue/explode/{order}")
    server.wait_status(task_id, "failed")
    page = _goto_dashboard(watched, server)
    _row(page, task_id).click()
    detail = page.locator("#detail")
    expect(detail.locator("#d-func")).to_have_text("charge_card")
    expect(detail.locator("#d-status")).to_have_text("failed")
    expect(detail.locator("#d-error")).to_have_text(
        f"ValueError: payment for order {order} declined: do_not_honor"
    )
    traceback = detail.locator("#d-traceback")
    expect(traceback).to_contain_text("Traceback (most recent call last)")
    expect(traceback).to_contain_text(f"payment for order {order} declined")
    expect(detail.locator("#d-logs")).to_contain_text("charging order")
    expect(detail.locator("#d-logs")).to_contain_text("card declined by the gateway")
    expect(detail.locator(".attempts > li")).to_have_count(2)  # retries=1: two attempts
    expect(detail.locator("#d-retry")).to_be_visible()
    assert f"#task={task_id}" in page.url
    page.keyboard.press("Escape")
    expect(detail).to_be_hidden()
    # By keyboard: Escape returned focus to the row, Enter opens it again.
    expect(_row(page, task_id)).to_be_focused()
    page.keyboard.press("Enter")
    expect(detail.locator("#d-traceback")).to_be_visible()


def test_the_theme_toggle_switches_light_and_dark(watched: Watched, server: Server) -> None:
    page = _goto_dashboard(watched, server)
    background = "() => getComputedStyle(document.body).backgroundColor"
    light = page.evaluate(background)
    toggle = page.locator("#theme")
    toggle.click()  # auto -> light
    expect(toggle).to_have_attribute("data-mode", "light")
    toggle.click()  # light -> dark
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    assert page.evaluate(background) != light
    page.reload()  # remembered
    expect(page.locator("html")).to_have_attribute("data-theme", "dark")


def test_behind_the_built_in_login_the_page_and_its_stream_work(
    browser: Browser, tmp_path: Path
) -> None:
    """The page redirects to the login; once signed in, the session cookie carries the
    assets, the API and the event stream (EventSource cannot send other credentials)."""
    srv = Server(
        "memory://",
        tmp_path / "server.log",
        DASHBOARD_PASSWORD="s3cret-pass",
        DASHBOARD_DISPLAY_ARGS="0",
    )
    try:
        assert httpx.get(f"{srv.url}/tasks/api/tasks", timeout=5).status_code == 401
        with _open(browser) as watched:
            page = watched.page
            page.goto(f"{srv.url}/tasks/dashboard")
            expect(page).to_have_url(re.compile(r"/tasks/login\?next=/tasks/dashboard$"))
            expect(page.locator("form")).to_have_css("display", "grid")  # its style applies
            page.fill('input[name="username"]', "admin")
            page.fill('input[name="password"]', "s3cret-pass")
            page.locator('button[type="submit"]').click()
            expect(page).to_have_url(re.compile(r"/tasks/dashboard$"))
            expect(page.locator("#live")).to_have_attribute("data-state", "live")
            task_id = srv.post("/enqueue/quick", tenant="signed-in")
            expect(_row(page, task_id).locator(".badge")).to_have_text("success")
            # Without display_args the API sends no arguments, and the panel says why.
            _row(page, task_id).click()
            expect(page.locator("#d-body")).to_contain_text("display_args=True")
            expect(page.locator("#d-args")).to_have_count(0)
        with _open(browser) as watched:  # another site frames the sign-in form
            page = watched.page
            with page.expect_console_message(lambda m: "frame" in m.text.lower()) as refusal:
                page.set_content(f'<iframe src="{srv.url}/tasks/login"></iframe>')
            assert "blocked" in refusal.value.text, refusal.value.text
            expect(page.frame_locator("iframe").locator('input[name="password"]')).to_have_count(0)
            watched.errors[:] = [e for e in watched.errors if "frame" not in e.lower()]
    finally:
        srv.stop()


def test_after_the_server_comes_back_the_page_catches_up(browser: Browser, tmp_path: Path) -> None:
    """The stream drops when the server restarts; the page says so, reconnects by itself
    and reloads the list, so a task that ran while it was away is shown."""
    pytest.importorskip("taskflow_sql")
    backend = f"sqlite:///{tmp_path / 'restart.db'}"
    srv = Server(backend, tmp_path / "server.log")
    try:
        with _open(browser) as watched:
            page = _goto_dashboard(watched, srv)
            page.evaluate("() => { window.__sameDocument = true; }")
            srv.stop()
            expect(page.locator("#live")).to_have_attribute("data-state", "reconnecting")
            expect(page.locator("#live")).to_contain_text("reconnecting")
            srv = Server(backend, tmp_path / "server.log", port=srv.port)
            task_id = srv.post("/enqueue/quick", tenant="while-away")
            srv.wait_status(task_id, "success")
            expect(page.locator("#live")).to_have_attribute("data-state", "live")
            expect(_row(page, task_id).locator(".badge")).to_have_text("success")
            assert page.evaluate("() => window.__sameDocument === true")  # no reload
            # While the server was down the browser logged its refused connections.
            watched.errors[:] = [e for e in watched.errors if "ERR_CONNECTION_REFUSED" not in e]
    finally:
        srv.stop()


def test_the_page_and_assets_are_served_with_a_strict_policy() -> None:
    """No browser needed: the HTML, its assets, their types, caching and the CSP."""
    from fastapi import APIRouter, FastAPI

    from fastapi_taskflow.admin.dashboard import dashboard_routes

    router = APIRouter(prefix="/ops/tasks")
    dashboard_routes(router, title="<script>alert(1)</script> & co")
    app = FastAPI()
    app.include_router(router)

    async def check() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            page = await client.get("/ops/tasks/dashboard")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            csp = page.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            assert "frame-ancestors 'none'" in csp and "unsafe" not in csp
            assert "<script>alert" not in page.text
            assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page.text
            # No inline script; assets are relative to the page, so any prefix works.
            assert 'src="dashboard/static/app.js"' in page.text and "<script>" not in page.text

            static = "/ops/tasks/dashboard/static"
            script = await client.get(f"{static}/app.js")
            assert script.status_code == 200
            assert script.headers["content-type"].startswith("text/javascript")
            assert script.headers["x-content-type-options"] == "nosniff"
            etag = script.headers["etag"]
            again = await client.get(f"{static}/app.js", headers={"if-none-match": etag})
            assert again.status_code == 304
            # As a compressing proxy passes it on (weak), or among other tags: still 304.
            for sent in (f"W/{etag}", f'"other", {etag}', f'W/"other" , W/{etag}', "*"):
                again = await client.get(f"{static}/app.js", headers={"if-none-match": sent})
                assert again.status_code == 304, sent
            for sent in ('"other"', f'{etag[:-2]}"', ""):
                fresh = await client.get(f"{static}/app.js", headers={"if-none-match": sent})
                assert fresh.status_code == 200, sent
            css = await client.get(f"{static}/dashboard.css")
            assert css.headers["content-type"].startswith("text/css")
            for name in ("dashboard.html", "..%2Fdashboard.py", "nope.js"):
                assert (await client.get(f"{static}/{name}")).status_code == 404

    # A thread of its own: Playwright's sync API keeps a loop running in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, check()).result()


def test_the_scripts_never_parse_strings_as_markup_or_code() -> None:
    """A guard for future edits: the browser tests prove today's page, this keeps the
    APIs that turn a string into markup or code out of every script."""
    static = ROOT / "packages/taskflow-core/src/fastapi_taskflow/admin/static"
    sinks = re.compile(
        r"\.(innerHTML|outerHTML|insertAdjacentHTML)\b|document\.write|\beval\(|new Function"
        r"|setTimeout\(\s*[\"'`]|\bon[a-z]+\s*="
    )
    scripts = sorted(static.glob("*.js"))
    assert scripts
    for script in scripts:
        found = sinks.search(script.read_text())
        assert found is None, f"{script.name} uses {found.group(0)!r}"
    html = (static / "dashboard.html").read_text()
    assert "<script>" not in html and not re.search(r"\son[a-z]+=|style=", html)


def test_the_wheel_ships_the_dashboard_assets(tmp_path: Path) -> None:
    """Users get the page from ``pip install taskflow-core`` alone: no build step."""
    static = ROOT / "packages/taskflow-core/src/fastapi_taskflow/admin/static"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps"),
            *("-w", str(tmp_path), str(ROOT / "packages" / "taskflow-core")),
        ],
        check=True,
        timeout=240,
    )
    (wheel,) = tmp_path.glob("taskflow_core-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {
            name.rsplit("/", 1)[1]
            for name in archive.namelist()
            if name.startswith("fastapi_taskflow/admin/static/")
        }
    expected = {p.name for p in static.iterdir() if p.is_file()}
    assert {"dashboard.html", "app.js", "dashboard.css"} <= expected
    assert shipped == expected


# ---- screenshots for the docs ----------------------------------------------------------


@pytest.fixture(scope="module")
def showcase(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An app of its own for the screenshots: an hour of history and only the tasks the
    screenshots make (none of the other tests' markup)."""
    tmp = tmp_path_factory.mktemp("showcase")
    srv = Server("memory://", tmp / "server.log", DASHBOARD_HISTORY="1")
    yield srv
    srv.stop()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_screenshots(browser: Browser, showcase: Server, scheme: str, tmp_path: Path) -> None:
    """The dashboard and the detail panel, following the system's light or dark scheme."""
    server = showcase
    gate = uuid.uuid4().hex
    running = server.post(f"/enqueue/gated/{gate}", user_id=42)
    failed = server.post(f"/enqueue/explode/{1000 + len(scheme)}")
    server.post(f"/enqueue/flaky/{uuid.uuid4().hex}")
    for tenant in ("acme", "globex", "initech"):
        server.post("/enqueue/quick", email=f"ops@{tenant}.example", tenant=tenant)
    server.wait_status(failed, "failed")
    server.wait_status(running, "running")
    out = IMAGES if os.environ.get("TASKFLOW_UPDATE_SCREENSHOTS") == "1" else tmp_path
    update = out == IMAGES
    try:
        with _open(browser, scheme) as watched:
            page = _goto_dashboard(watched, server)
            expect(_row(page, failed).locator(".badge")).to_have_text("failed")
            expect(page.locator("#throughput svg")).to_be_visible()
            expect(page.locator("#durations svg")).to_be_visible()
            page.mouse.move(0, 0)
            shot = tmp_path / f"dashboard-{scheme}.png"
            page.screenshot(path=shot, animations="disabled")
            _row(page, failed).click()
            expect(page.locator("#d-traceback")).to_be_visible()
            detail_shot = tmp_path / f"dashboard-detail-{scheme}.png"
            page.screenshot(path=detail_shot, animations="disabled")
            for path in (shot, detail_shot):
                assert path.stat().st_size > 20_000  # a rendered page, not a blank one
                if update:
                    IMAGES.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(path, IMAGES / path.name)
    finally:
        httpx.post(f"{server.url}/release/{gate}", timeout=10)
