"""The engine's state that belongs to one event loop.

asyncio objects (tasks, events, timers) are bound to the loop that made them. A
``TaskManager`` can outlive a loop (a test client opens one per test), so everything
loop-bound lives in a :class:`Runtime`, made on first use in a loop and replaced when
the manager finds itself on a new loop after the old one closed. The store's backend
for a loop is the runtime's too (its connections belong to the loop): closed by a
shutdown, or, when the loop ends without one, by the runtime on that loop as it ends.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .protocols import TaskBackend

__all__ = ["Runtime", "reraise_if_cancelled", "within"]

logger = logging.getLogger("fastapi_taskflow")

T = TypeVar("T")

_RECANCEL_SECONDS = 0.1
"""How long :meth:`Runtime.stop_background` waits before it cancels again a task that
lost its cancellation."""


if sys.version_info >= (3, 11):

    def _new_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], name: str | None
    ) -> asyncio.Task[T]:
        return loop.create_task(coro, name=name)

else:

    class _CountingTask(asyncio.Task):  # type: ignore[type-arg]
        """An engine task on Python 3.10 that counts the requests to cancel it, as
        3.11's ``Task.cancelling()`` and ``Task.uncancel()`` do.

        Without it nothing on 3.10 says that a task was asked to stop once its
        ``CancelledError`` is gone: a driver that turns one into an error (redis-py
        tearing a subscription down) left an engine loop retrying for ever, and the end
        of the event loop, which cancels every task once and waits for them (a bare
        ``TestClient`` ends one per request), never came."""

        _cancel_requests = 0

        def cancel(self, msg: Any = None) -> bool:
            if self.done():
                return False
            self._cancel_requests += 1
            return super().cancel(msg)

        def cancelling(self) -> int:
            return self._cancel_requests

        def uncancel(self) -> int:
            if self._cancel_requests > 0:
                self._cancel_requests -= 1
            return self._cancel_requests

    def _new_task(
        loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], name: str | None
    ) -> asyncio.Task[T]:
        return _CountingTask(coro, loop=loop, name=name)


async def within(seconds: float, awaitable: Awaitable[T]) -> T:
    """``await awaitable``, raising ``TimeoutError`` after ``seconds``.

    In the calling task on Python 3.11+ (``asyncio.timeout``: a task of its own would
    outlive a loop that ends). On 3.10, which has no ``asyncio.timeout``, in a task of its
    own awaited through ``asyncio.wait``: 3.10's ``asyncio.wait_for`` returns the result
    and drops the caller's cancellation when both come in the same loop iteration (a loop
    that retries then outlives a shutdown), and the ``async-timeout`` backport can take a
    cancellation for its timeout.
    """
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    inner: asyncio.Future[T] = (
        _new_task(asyncio.get_running_loop(), awaitable, None)
        if asyncio.iscoroutine(awaitable)
        else asyncio.ensure_future(awaitable)
    )
    try:
        done, _ = await asyncio.wait({inner}, timeout=seconds)
    except BaseException:  # the caller was cancelled: so is the call, once
        # A loop's end cancels every task, the call's too: cancelling it again would
        # interrupt its own clean-up (SQLAlchemy closing a connection it was using).
        if not getattr(inner, "cancelling", lambda: 0)():
            inner.cancel()
        await asyncio.wait({inner})
        if not inner.cancelled():
            inner.exception()  # retrieved: nobody else will
        raise
    if not done:
        inner.cancel()
        await asyncio.wait({inner})
        if inner.cancelled():
            raise TimeoutError(f"gave up after {seconds:g} s")
    return inner.result()


def reraise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop.

    Call it in an ``except Exception`` block of a loop that retries: a driver that turns a
    cancellation into an ordinary error (some do, while tearing a connection down) would
    otherwise make the loop outlive its cancellation and hang shutdown. On Python 3.10
    it knows of the cancellations of the tasks :meth:`Runtime.spawn` started.
    """
    cancelling = getattr(asyncio.current_task(), "cancelling", None)
    if cancelling is not None and cancelling():
        raise asyncio.CancelledError


def _lost_its_cancellation(task: asyncio.Task[Any]) -> bool:
    """True if ``task``, cancelled, may have dropped the cancellation: when nothing is
    cancelling it any more; always, for a task that cannot tell (Python 3.10)."""
    if task.done():
        return False
    cancelling = getattr(task, "cancelling", None)
    return cancelling is None or cancelling() == 0


class Runtime:
    """Tasks, timers and store connections of the engine on one event loop."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, backend: TaskBackend, *, opened: bool = True
    ) -> None:
        """Build it on ``loop``'s own thread (the engine does, on the running loop).

        ``backend`` is the store's backend for this loop (its connections belong to
        the loop); ``opened=False``: it could not be opened yet (store down at boot).
        """
        self.loop = loop
        self.thread = threading.get_ident()
        """The thread ``loop`` runs on."""
        self.backend = backend
        """The backend every store call made on this loop goes to."""
        self.opened = opened
        """False while ``backend`` has not been opened (the store has not answered)."""
        self.control: TaskBackend | None = None
        """A fork of ``backend`` for the heartbeat and recovery, when they have one."""
        self.stopping = False
        self.passive = False
        """It serves the store after a shutdown (reads, and writes such as
        ``schedule_once()``): no queue worker starts on it, so nothing runs until the
        manager starts again (or another instance runs the task)."""
        self.released = False
        """Its backends are closed (a shutdown, or its loop ended): it serves nothing."""
        self.background: set[asyncio.Task[Any]] = set()
        self.running: dict[str, asyncio.Task[Any]] = {}
        self.workers: dict[str, Any] = {}
        self._loop_end: AsyncIterator[None] | None = None

    async def on_loop_end(self, release: Callable[[Runtime], Awaitable[None]]) -> None:
        """Have ``release(self)`` run on this loop when the loop shuts down.

        ``asyncio.run()``, ``anyio.run()`` (Starlette's ``TestClient`` runs one per
        request when used without ``with``) and pytest's event loops end by cancelling
        every task and then finalising the async generators still open
        (``loop.shutdown_asyncgens()``), on the loop, before closing it. An async
        generator held open by this runtime is how it hears of that: its ``finally``
        awaits ``release``, which closes the connections the loop's tasks left open.
        Without it they would be closed later by the garbage collector, off their loop
        (SQLAlchemy logs an error for each), and SQLite's threads would live on.
        """
        watch = _until_loop_end(self, release)
        await watch.__anext__()  # registers it with the loop (its first iteration)
        self._loop_end = watch  # a strong reference: the loop holds only a weak one

    async def close_backends(self) -> None:
        """Close the heartbeat's fork (a failure is logged: the heartbeat only), then the
        backend (a failure raises)."""
        control, self.control = self.control, None
        if control is not None:
            try:
                await control.close()
            except Exception:
                logger.debug("closing the heartbeat backend failed", exc_info=True)
        await self.backend.close()

    def is_current(self) -> bool:
        """True when called on this runtime's loop: what ``asyncio.get_running_loop() is
        self.loop`` says, without the system call Python 3.11 makes for it (``getpid``,
        to notice a fork) — asked once or twice per request. A thread runs one loop at
        a time, so this loop running, on this thread, is the running loop."""
        return self.thread == threading.get_ident() and self.loop.is_running()

    @property
    def usable(self) -> bool:
        """True while the loop can still run work for this runtime."""
        return not self.loop.is_closed() and not self.stopping

    def spawn(
        self, coro: Coroutine[Any, Any, T], *, name: str | None = None, awaited: bool = False
    ) -> asyncio.Task[T]:
        """Start ``coro`` as a task this runtime keeps a reference to until it ends
        (``awaited``: see :meth:`adopt`)."""
        task = _new_task(self.loop, coro, name)
        self.adopt(task, awaited=awaited)
        return task

    def adopt(self, task: asyncio.Task[Any], *, awaited: bool = False) -> None:
        """Keep a reference to ``task`` until it ends (and cancel it at shutdown).

        ``awaited``: someone awaits ``task`` and handles its error, so an error is not
        logged here as well."""
        self.background.add(task)
        task.add_done_callback(self.background.discard if awaited else self._forget)

    async def stop_background(self, timeout: float) -> None:
        """Cancel every background task and wait for them to end, at most ``timeout``
        seconds.

        A task that dropped its cancellation (a driver turned it into an error that
        nothing raised again) is cancelled again every :data:`_RECANCEL_SECONDS`; one
        still running when the time is up is left behind, with a warning, rather than
        holding up the loop's end or a shutdown."""
        deadline = self.loop.time() + max(timeout, 0.0)
        pending = set(self.background)
        for task in pending:
            task.cancel()
        while pending:
            left = max(deadline - self.loop.time(), 0.0)
            # with no time left, still one pass of the loop: most end at their first step
            _, pending = await asyncio.wait(pending, timeout=min(left, _RECANCEL_SECONDS))
            if not left:
                break
            for task in pending:
                if _lost_its_cancellation(task):
                    task.cancel()
        if pending:
            logger.warning(
                "%d engine task(s) did not stop when cancelled: %s",
                len(pending),
                ", ".join(sorted(task.get_name() for task in pending)),
            )

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self.background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("taskflow engine task failed", exc_info=task.exception())


async def _until_loop_end(
    runtime: Runtime, release: Callable[[Runtime], Awaitable[None]]
) -> AsyncIterator[None]:
    """Suspended until the loop finalises it (see ``Runtime.on_loop_end``)."""
    try:
        yield
    finally:
        if not runtime.released:
            await release(runtime)
