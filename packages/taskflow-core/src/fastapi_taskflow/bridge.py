"""Blocking calls into an async backend, from sync code or from inside the event loop.

``task_manager.store.get(id)`` is synchronous (the seed API calls it from a plain ``def``
route). This module runs the backend's coroutine where it can run:

* from a thread with no event loop while the application's loop runs elsewhere (a sync
  route in the thread pool): on the application's loop, with its backend and pool;
* otherwise (inside the loop thread, or with no application loop at all): on a private
  daemon thread with its own loop and a ``fork()`` of the backend (a ``_Portal``).

The manager's shutdown closes the portal. One opened again after that (a read after
shutdown, in a script or a test) is closed when the interpreter exits: its backend ends
cleanly (connections closed, the SQLite writer stopped) instead of being destroyed with
the daemon thread ("Task was destroyed but it is pending!").
"""

from __future__ import annotations

import asyncio
import atexit
import os
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
        self._open_portal: _Portal | None = None

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
        portal = self._portal()
        return asyncio.run_coroutine_threadsafe(_call(call, portal.backend), portal.loop).result(
            timeout
        )

    def _portal(self) -> _Portal:
        with self._lock:
            if self._open_portal is None:
                self._open_portal = _Portal.open(self._backend.fork())
            return self._open_portal

    def close(self) -> None:
        """Close the private loop and its backend fork, if they were started."""
        with self._lock:
            portal, self._open_portal = self._open_portal, None
        if portal is not None:
            portal.close()


class _Portal:
    """A private daemon thread running an event loop, with a backend open on it."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, thread: threading.Thread, backend: TaskBackend
    ) -> None:
        self.loop = loop
        self.thread = thread
        self.backend = backend

    @classmethod
    def open(cls, backend: TaskBackend) -> _Portal:
        """Start the thread and its loop, and open ``backend`` on it."""
        loop = asyncio.new_event_loop()
        ready: Future[None] = Future()
        thread = threading.Thread(
            target=_serve, args=(loop, ready), name="taskflow-bridge", daemon=True
        )
        thread.start()
        ready.result()
        portal = cls(loop, thread, backend)
        try:
            asyncio.run_coroutine_threadsafe(backend.open(), loop).result(30)
        except BaseException:
            portal._stop()
            raise
        _open_portals.add(portal)
        return portal

    def close(self) -> None:
        """Close the backend, then stop the loop and its thread."""
        _open_portals.discard(self)
        try:
            asyncio.run_coroutine_threadsafe(self.backend.close(), self.loop).result(10)
        finally:
            self._stop()

    def _stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


_open_portals: set[_Portal] = set()
"""The portals not closed yet, whoever held them (closed at interpreter exit). A forked
child has none: its parent's threads and their loops do not exist in it."""
os.register_at_fork(after_in_child=_open_portals.clear)


@atexit.register
def _close_open_portals() -> None:
    for portal in list(_open_portals):
        try:
            portal.close()
        except Exception:  # exiting anyway: close the others
            continue


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
