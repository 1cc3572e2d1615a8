"""Benchmark the dashboard in a real browser: how soon a page shows tasks at scale.

Fills a SQLite file with N finished tasks, serves the same app as ``admin_stream.py``
(``TaskAdmin`` under uvicorn on localhost), then opens ``/tasks/dashboard`` in headless
Chromium (Debian's package, through Playwright) and reads the page's own performance
marks, in milliseconds since the navigation started:

* ``first rows``: the first 50 tasks are in the table;
* ``charts``: counts and both charts are drawn (``/api/stats``);
* ``live``: the event stream is open.

The first load has an empty browser cache; the next ``--repeat`` loads are reloads
(assets revalidated with their ETag). Target (issue 11): the first page of the dashboard
in under 300 ms with 100k tasks in the store.

    python benchmarks/dashboard_page.py --rows 100000

Needs ``pip install playwright`` and ``apt-get install chromium``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from admin_stream import Served, build, fill
from playwright.sync_api import Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
TARGET_FIRST_ROWS_MS = 300.0
MARKS = ("taskflow:first-rows", "taskflow:charts", "taskflow:live")


def load(page: Page, url: str | None) -> dict[str, float]:
    """Navigate (or reload when ``url`` is None) and return each mark's time in ms."""
    if url is None:
        page.reload()
    else:
        page.goto(url)
    page.wait_for_function(
        "marks => marks.every(m => performance.getEntriesByName(m).length)",
        arg=list(MARKS),
        timeout=60_000,
    )
    found: dict[str, float] = page.evaluate(
        "marks => Object.fromEntries("
        "marks.map(m => [m, performance.getEntriesByName(m)[0].startTime]))",
        list(MARKS),
    )
    rows = page.locator("#task-rows tr").count()
    assert rows == 50, f"expected the first page of 50 tasks, found {rows}"
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="finished tasks to load")
    parser.add_argument("--repeat", type=int, default=10, help="timed reloads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="taskflow-dashboard-bench-") as folder:
        url = f"sqlite:///{Path(folder) / 'tasks.db'}"
        print(f"== dashboard page on SQLite with {args.rows:,} finished tasks ==")
        print(f"bulk load            {asyncio.run(fill(url, args.rows)):8.1f} s")
        served = Served(build(url))
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM,
                    args=["--no-sandbox", "--headless", "--disable-background-networking"],
                )
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                cold = load(page, f"{served.url}/tasks/dashboard")
                warm = [load(page, None) for _ in range(args.repeat)]
                browser.close()
        finally:
            served.stop()
    for mark in MARKS:
        samples = [w[mark] for w in warm]
        line = (
            f"{mark.split(':')[1]:<12} {statistics.median(samples):8.1f} ms median, "
            f"{max(samples):.1f} ms max, {cold[mark]:.1f} ms cold"
        )
        if mark == "taskflow:first-rows":
            ok = statistics.median(samples) < TARGET_FIRST_ROWS_MS
            line += f"   [{'ok' if ok else 'OVER TARGET'}: < {TARGET_FIRST_ROWS_MS:.0f} ms]"
        print(line)


if __name__ == "__main__":
    main()
