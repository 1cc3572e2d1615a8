"""A bare ``TestClient(app)``, as in FastAPI's testing tutorial, on every durable store.

Without ``with``, the client runs each request on an event loop of its own that ends
with the request, and the app's lifespan never runs: taskflow starts on each of those
loops by itself. When such a loop ends, what taskflow opened on it is closed on it:
no threads pile up (SQLite: a writer thread and driver threads per loop did), no
connection is left for the garbage collector to close off its loop (SQLAlchemy logged
an error or a warning for each), and nothing is logged as an error. Each case runs the
client in a process of its own (``bare_client_app.py``), which is what a test run is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from durable_stores import DURABLE, isolated_url

HERE = Path(__file__).resolve().parent
REQUESTS = 12


@pytest.fixture(params=sorted(DURABLE))
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from isolated_url(request.param, tmp_path)


def test_a_bare_test_client_runs_tasks_and_leaves_nothing_behind(durable_url: str) -> None:
    done = subprocess.run(
        [sys.executable, str(HERE / "bare_client_app.py"), durable_url, str(REQUESTS)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=HERE,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # the tasks ran (before each response returned, as FastAPI's own do)
    assert report["statuses"] == ["success"] * REQUESTS
    # what each request's loop opened was closed with it: no thread per request
    assert report["threads_late"] <= report["threads_early"], report
    # nothing logged at WARNING or above, no warning (unclosed connections), no traceback
    assert done.stderr.strip() == "", done.stderr[-3000:]
