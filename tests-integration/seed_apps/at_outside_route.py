"""adding-tasks, "Adding tasks outside a route": on_startup, run from the app's lifespan."""
# ruff: noqa: E402, F401, F841, I001, RUF006

# --- glue: what the page leaves implicit ---
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from fastapi_taskflow import TaskManager

task_manager = TaskManager()
calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []


def sync_database() -> str:
    calls.append(("sync_database", (), {}))
    return "synced"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with task_manager:
        await on_startup()  # the startup handler the page defines below
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/_glue/sync_database")
async def glue_sync_database_tasks() -> list[Any]:
    page = await task_manager.store.aquery(func_name=f"{__name__}.sync_database")
    return [record.to_dict() for record in page.items]


# --- end glue ---

# fmt: off
# --- verbatim from adding-tasks.txt, section "Adding tasks outside a route" ---
import asyncio
from fastapi_taskflow import ManagedBackgroundTasks
from fastapi_taskflow.executor import make_background_func

async def on_startup():
    tasks = ManagedBackgroundTasks(task_manager)
    task_id = tasks.add_task(sync_database)
    asyncio.ensure_future(tasks.tasks[-1]())
# --- end verbatim ---
# fmt: on
