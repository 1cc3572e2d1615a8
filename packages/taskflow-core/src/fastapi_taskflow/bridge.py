"""Blocking calls into an async backend, from sync code or from inside the event loop.

``task_manager.store.get(id)`` is synchronous (the seed API calls it from a plain ``def``
route). This module runs the backend's coroutine where it can run:

* from a thread with no event loop while the application's loop runs elsewhere (a sync
  route in the thread pool): on the application's loop, with its backend and pool;
* otherwise (inside the loop thread, or with no application loop at all): on a private
  daemon thread with its own loop and a ``fork()`` of the backend.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TypeVar

from .protocols import TaskBackend

__all__ = ["BlockingBridge"]

T = TypeVar("T")


class BlockingBridge:
    """Runs ``call(backend)`` to completion from synchronous code.

    Args:
        backend: the application's backend, forked for the private loop.
        loop_getter: returns the application's running loop, or None.
        backend_getter: returns the backend to use on the application's loop.
    """

    def __init__(
        self,
        backend: TaskBackend,
        loop_getter: Callable[[], asyncio.AbstractEventLoop | None],
        backend_getter: Callable[[], Awaitable[TaskBackend]],
    ) -> None:
        self._backend = backend
        self._loop_getter = loop_getter
        self._backend_getter = backend_getter
        self._lock = threading.Lock()
        self._portal_loop: asyncio.AbstractEventLoop | None = None
        self._portal_backend: TaskBackend | None = None
        self._portal_thread: threading.Thread | None = None

    def run(self, call: Callable[[TaskBackend], Awaitable[T]], timeout: float = 30.0) -> T:
        """Run ``call`` against a backend and return its result, blocking this thread."""
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        app_loop = self._loop_getter()
        if current is None and app_loop is not None and app_loop.is_running():
            future = asyncio.run_coroutine_threadsafe(
                _on_app_loop(call, self._backend_getter), app_loop
            )
            return future.result(timeout)
        loop, backend = self._portal()
        return asyncio.run_coroutine_threadsafe(_call(call, backend), loop).result(timeout)

    def _portal(self) -> tuple[asyncio.AbstractEventLoop, TaskBackend]:
        with self._lock:
            if self._portal_loop is None or self._portal_backend is None:
                loop = asyncio.new_event_loop()
                ready: Future[None] = Future()
                thread = threading.Thread(
                    target=_serve, args=(loop, ready), name="taskflow-bridge", daemon=True
                )
                thread.start()
                ready.result()
                backend = self._backend.fork()
                asyncio.run_coroutine_threadsafe(backend.open(), loop).result(30)
                self._portal_loop, self._portal_backend = loop, backend
                self._portal_thread = thread
            return self._portal_loop, self._portal_backend

    def close(self) -> None:
        """Close the private loop and its backend fork, if they were started."""
        with self._lock:
            loop, backend, thread = self._portal_loop, self._portal_backend, self._portal_thread
            self._portal_loop = self._portal_backend = self._portal_thread = None
        if loop is None or backend is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(backend.close(), loop).result(10)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


async def _on_app_loop(
    call: Callable[[TaskBackend], Awaitable[T]],
    backend_getter: Callable[[], Awaitable[TaskBackend]],
) -> T:
    return await call(await backend_getter())


async def _call(call: Callable[[TaskBackend], Awaitable[T]], backend: TaskBackend) -> T:
    return await call(backend)


def _serve(loop: asyncio.AbstractEventLoop, ready: Future[None]) -> None:
    asyncio.set_event_loop(loop)
    loop.call_soon(ready.set_result, None)
    loop.run_forever()
