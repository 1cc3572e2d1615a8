"""Enqueuing tasks without a request: startup hooks, scripts and other tasks.

``task_manager.add_task()`` sends a task to its queue; it runs as soon as the manager is
started. ``ManagedBackgroundTasks(task_manager)`` built by hand keeps its tasks in
``.tasks`` until you await them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager
from fastapi_taskflow.executor import make_background_func

task_manager = TaskManager()

warmed: list[str] = []
synced: list[str] = []


@task_manager.task(retries=2, delay=5.0)
async def warm_cache(region: str) -> None:
    warmed.append(region)


@task_manager.task()
async def sync_database(source: str = "startup") -> None:
    synced.append(source)


@task_manager.task()
async def nightly_cleanup() -> None:
    # A task can enqueue further tasks.
    task_manager.add_task(warm_cache, "eu-west")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with task_manager:  # starts the engine; shuts it down gracefully on exit
        app.state.warmup_task_id = task_manager.add_task(warm_cache, "us-east")
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/cleanup")
async def start_cleanup() -> dict[str, str]:
    return {"task_id": task_manager.add_task(nightly_cleanup)}


async def run_by_hand(source: str) -> str:
    """Direct construction: nothing runs until the queued callable is awaited."""
    tasks = ManagedBackgroundTasks(task_manager)
    task_id = tasks.add_task(sync_database, source)
    await tasks.tasks[-1]()  # runs the task with its retries, status and events
    return task_id


async def run_with_make_background_func(source: str) -> str:
    """The same, holding on to the runner by task id instead of list position."""
    tasks = ManagedBackgroundTasks(task_manager)
    task_id = tasks.add_task(sync_database, source)
    run = make_background_func(task_manager, task_id)
    await run()
    return task_id
