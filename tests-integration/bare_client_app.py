"""A bare ``TestClient(app)`` (FastAPI's tutorial style, no ``with``) on the store
``sys.argv[1]``, run as a process of its own by ``test_bare_test_client.py``.

Each request runs on an event loop of its own that ends with the request. It prints
one JSON line: the statuses the app read back, the number of threads alive after the
first requests and at the end (after a garbage collection, which is when connections
left open by an ended loop would be cleaned up, and complain). Every log record of
level WARNING and above, and every warning, goes to stderr.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
import threading
import warnings

from fastapi import BackgroundTasks, FastAPI

# Python 3.10 gets no httpx2 (it needs 3.11), and Starlette says so at the import: that
# is the test's environment, not something taskflow did.
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from fastapi.testclient import TestClient  # noqa: E402

from fastapi_taskflow import TaskManager  # noqa: E402

logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
warnings.simplefilter("always")
logging.captureWarnings(True)

task_manager = TaskManager(backend=sys.argv[1])
app = FastAPI()
task_manager.install(app)


@task_manager.task(name="tests.bare_client.greet")
async def greet(name: str) -> str:
    return f"hello {name}"


@app.post("/greet/{name}")
async def add_greeting(name: str, background_tasks: BackgroundTasks) -> dict[str, str]:
    return {"task_id": background_tasks.add_task(greet, name)}


@app.get("/tasks/{task_id}")
async def read_task(task_id: str) -> dict[str, str | None]:
    record = await task_manager.store.aget(task_id)
    return {"status": record.status.value if record is not None else None}


client = TestClient(app)
statuses: list[str | None] = []
threads_early = 0
for n in range(int(sys.argv[2])):
    task_id = client.post(f"/greet/n{n}").json()["task_id"]
    statuses.append(client.get(f"/tasks/{task_id}").json()["status"])
    if n == 1:
        threads_early = threading.active_count()
gc.collect()
print(
    json.dumps(
        {
            "statuses": statuses,
            "threads_early": threads_early,
            "threads_late": threading.active_count(),
        }
    )
)
