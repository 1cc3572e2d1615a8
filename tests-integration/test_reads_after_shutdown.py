"""A script that reads through ``task_manager.store`` after shutdown exits cleanly.

Reading after shutdown opens the backend again (docs/task-manager.md); a synchronous read
from inside the event loop's thread goes through a private thread with a backend of its
own. Nothing closed that one: at exit the interpreter destroyed it with its thread, and
SQLite's writer task said so on stderr ("Task was destroyed but it is pending!").
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys

    from fastapi_taskflow import ManagedBackgroundTasks, TaskManager, TaskStatus

    task_manager = TaskManager(backend=sys.argv[1])


    @task_manager.task(name="report")
    def report() -> str:
        return "sent"


    async def main() -> None:
        async with task_manager:
            tasks = ManagedBackgroundTasks(task_manager)
            task_id = tasks.add_task(report)
            await tasks()
        record = task_manager.store.get(task_id)  # after shutdown, from the loop's thread
        assert record is not None and record.status is TaskStatus.SUCCESS, record
        print("read", record.result)


    asyncio.run(main())
    """
)


def test_a_read_after_shutdown_leaves_nothing_running_at_exit(tmp_path: Path) -> None:
    script = tmp_path / "after_shutdown.py"
    script.write_text(SCRIPT)
    url = f"sqlite:///{tmp_path / 'tasks.db'}"
    done = subprocess.run(
        [sys.executable, str(script), url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "read sent"
    assert "Task was destroyed" not in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
