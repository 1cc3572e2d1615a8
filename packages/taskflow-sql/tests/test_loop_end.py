"""An event loop that ends without a shutdown takes taskflow's SQLite backend with it.

``asyncio.run()`` returning (and a bare ``TestClient`` finishing a request) ends a
loop without the app's lifespan: taskflow, started on that loop by its first use,
closes what it opened there as the loop ends — its writer thread, its driver's
threads, its pool — and starts afresh on the next loop. A cancelled connection return
(the loop cancels every task at once) is logged at DEBUG, not as SQLAlchemy's ERROR.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from pathlib import Path

import pytest

from fastapi_taskflow import ManagedBackgroundTasks, TaskManager
from fastapi_taskflow.models import TaskStatus
from taskflow_sql.engine import make_engine
from taskflow_sql.pool_log import POOL_LOGGING_NAME
from taskflow_sql.urls import parse_url


async def double(n: int) -> int:
    return n * 2


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def _no_thread_but(before: set[threading.Thread]) -> None:
    """Wait until every thread not in ``before`` has ended (a thread told to stop, a
    driver's, may take a moment to exit); fail naming those still alive after 5 s."""
    deadline = time.monotonic() + 5
    while (left := _threads() - before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not left, sorted(thread.name for thread in left)


def test_each_asyncio_run_closes_what_it_opened(tmp_path: Path) -> None:
    task_manager = TaskManager(backend=f"sqlite:///{tmp_path}/tasks.db")
    task_manager.task(name="tests.loop_end.double")(double)

    async def one_task(n: int) -> str:
        tasks = ManagedBackgroundTasks(task_manager)
        task_id = tasks.add_task(double, n)
        await tasks()
        return task_id

    before = _threads()
    ids = [asyncio.run(one_task(n)) for n in range(5)]
    # no thread left per run (each run opened a writer thread and driver threads)
    _no_thread_but(before)
    assert task_manager._engine.current_runtime is None  # released with its loop

    async def read_all() -> list[object]:
        records = [await task_manager.store.aget(task_id) for task_id in ids]
        return [(r.status, r.result) if r is not None else None for r in records]

    assert asyncio.run(read_all()) == [(TaskStatus.SUCCESS, n * 2) for n in range(5)]
    _no_thread_but(before)


def _cancelled_reset_record(logger: logging.Logger) -> logging.LogRecord:
    try:
        raise asyncio.CancelledError
    except asyncio.CancelledError:
        exc_info = sys.exc_info()
    return logger.makeRecord(
        logger.name, logging.ERROR, __file__, 1, "Exception during reset or similar", (), exc_info
    )


def test_a_cancelled_return_of_a_taskflow_connection_is_a_debug_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = make_engine(parse_url("sqlite:///unused.db"))
    logger = logging.getLogger(engine.sync_engine.pool.logger.name)
    assert logger.name.endswith("." + POOL_LOGGING_NAME)

    with caplog.at_level(logging.WARNING):
        logger.handle(_cancelled_reset_record(logger))
    assert caplog.records == []  # dropped unless the pool's logger shows DEBUG

    with caplog.at_level(logging.DEBUG, logger=logger.name):
        logger.handle(_cancelled_reset_record(logger))
    (record,) = caplog.records
    assert record.levelno == logging.DEBUG and record.exc_info is None
    assert "cancelled" in record.getMessage()

    caplog.clear()
    with caplog.at_level(logging.WARNING):  # any other error stays an error
        logger.error("Exception during reset or similar", exc_info=ValueError("boom"))
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.exc_info is not None


def test_a_pool_named_by_the_user_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(
        parse_url("sqlite:///unused.db"), engine_options={"pool_logging_name": "mine"}
    )
    logger = logging.getLogger(engine.sync_engine.pool.logger.name)
    with caplog.at_level(logging.WARNING):
        logger.handle(_cancelled_reset_record(logger))
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
