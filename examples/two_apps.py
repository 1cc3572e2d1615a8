"""install() is per app: two apps with two managers in one process never mix.

``billing`` and ``emails`` each have their own manager; ``legacy`` installs none, so its
``BackgroundTasks`` stay plain Starlette ones.
"""

from __future__ import annotations

from fastapi import BackgroundTasks, FastAPI

from fastapi_taskflow import TaskManager

billing_tasks = TaskManager()
email_tasks = TaskManager()

billing = FastAPI()
emails = FastAPI()
legacy = FastAPI()
billing_tasks.install(billing)
email_tasks.install(emails)

done: list[str] = []


def record(what: str) -> None:
    done.append(what)


def _add_route(app: FastAPI, label: str) -> None:
    @app.post("/work")
    def work(background_tasks: BackgroundTasks) -> dict[str, str | None]:
        task_id = background_tasks.add_task(record, label)
        return {"task_id": task_id, "class": type(background_tasks).__name__}


_add_route(billing, "billing")
_add_route(emails, "emails")
_add_route(legacy, "legacy")

app = billing  # `uvicorn examples.two_apps:app` serves one of them
