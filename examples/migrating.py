"""Coming from FastAPI's BackgroundTasks: the same route, managed by adding two lines.

The route below is unchanged FastAPI code. With ``task_manager.install(app)`` its
``background_tasks`` is a ``ManagedBackgroundTasks``: ``add_task()`` returns a task id
(plain ``BackgroundTasks.add_task()`` returns ``None``) and every task gets a record.
``plain_app`` is the same route without ``install()``: FastAPI's own behaviour.

Run it with ``uvicorn examples.migrating:app`` from the repository root, then::

    curl -X POST 'http://127.0.0.1:8000/orders/7'
"""

from __future__ import annotations

from fastapi import BackgroundTasks, FastAPI

from fastapi_taskflow import TaskManager

sent: list[int] = []  # stands in for a mail provider


def send_receipt(order_id: int) -> None:
    sent.append(order_id)


def build_app() -> FastAPI:
    """The app as it was before taskflow: one route adding one background task."""
    app = FastAPI()

    @app.post("/orders/{order_id}")
    def place_order(order_id: int, background_tasks: BackgroundTasks) -> dict[str, object]:
        result = background_tasks.add_task(send_receipt, order_id)
        return {"order_id": order_id, "add_task_returned": result}

    return app


plain_app = build_app()  # FastAPI's BackgroundTasks: add_task() returns None

task_manager = TaskManager()  # the two added lines: a manager ...
app = build_app()
task_manager.install(app)  # ... installed: the same route now gets task ids
