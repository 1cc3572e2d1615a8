"""A task calling ``sys.exit()`` fails alone; the server keeps serving (a real uvicorn
process per durable store).

asyncio stops its event loop when a ``SystemExit`` leaves one of its tasks, and a
queued or eager task runs in a task of taskflow's own: one ``sys.exit(2)`` in such a
task (argparse, a reused command-line entry point) ended the whole server, with every
task it held. Now it is that task's failure, recorded with its text; plain FastAPI
lets uvicorn log it and go on too. The in-process cases are in
``packages/taskflow-core/tests/test_base_exceptions.py``.
"""

from __future__ import annotations

import instances  # tests-integration/ is on sys.path (pytest's pythonpath option)

durable_backend = instances.durable_backend
Backend = instances.Backend


def test_sys_exit_in_a_task_fails_that_task_and_the_server_keeps_serving(
    durable_backend: Backend,
) -> None:
    (server,) = instances.start(durable_backend, "A")
    try:
        with server.client() as client:
            items = [
                {"func": "exit", "label": "queued-exit", "route": "queued", "priority": 1},
                {"func": "exit", "label": "background-exit"},
                {"func": "record", "label": "after-the-exit"},
            ]
            ids = client.post("/tasks", json={"items": items}).json()["ids"]
            final = instances.poll(
                lambda: instances.all_terminal(server, ids), 30, "every task finished"
            )
            assert list(final.values()) == ["failed", "failed", "success"], final
            for task_id in ids[:2]:
                assert client.get(f"/status/{task_id}").json()["error"] == "SystemExit: 2"
            # the same process still answers, and still runs tasks
            assert server.proc.poll() is None, server.output()
            more = client.post("/tasks", json={"items": [{"func": "record", "label": "more"}]})
            assert instances.poll(
                lambda: instances.all_terminal(server, more.json()["ids"]), 30, "a later task"
            ) == {more.json()["ids"][0]: "success"}
        assert durable_backend.where("start", "queued-exit") == ["A"]
        assert durable_backend.where("ran", "after-the-exit") == ["A"]
    finally:
        server.stop()
