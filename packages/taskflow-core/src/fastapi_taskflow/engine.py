"""The engine: accepts tasks, routes them, and runs them through the executor.

``TaskManager`` is the public face; this module holds the machinery. Routing of an
accepted task:

* ``priority=`` set, or the task names a queue → the backend's priority queue, run by a
  :class:`~fastapi_taskflow.dispatcher.QueueWorker` (``eager`` is ignored);
* ``eager=True`` → started on the event loop at once, before the response;
* otherwise → appended to the request's background task list; Starlette runs it after
  the response is sent.

Retries of every route go through the queue with ``not_before``, so a waiting retry
never holds up anything else.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from starlette.background import BackgroundTask

from .bridge import BlockingBridge
from .clock import Clock
from .config import DEFAULT_QUEUE, QueueConfig, TaskConfig, check_priority, check_tags
from .context import TaskContext
from .dispatcher import QueueWorker
from .encoding import encode_arguments
from .errors import EagerDispatchError, InvalidTaskError, QueueFullError
from .executor import execute, lifecycle_event, log_event, not_before
from .models import Claim, LogEntry, TaskRecord, TaskStatus
from .observers import ObserverChain
from .pending import PendingCreates
from .protocols import TaskBackend
from .registry import TaskRegistry
from .runtime import Runtime

__all__ = ["Engine", "Invocation"]

logger = logging.getLogger("fastapi_taskflow")


@dataclass
class Invocation:
    """A task's function and arguments, held in process until it finishes."""

    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    config: TaskConfig
    attempts: int = 0


class Engine:
    """Accepts, routes and runs tasks for one ``TaskManager``."""

    def __init__(
        self,
        backend: TaskBackend,
        *,
        clock: Clock,
        registry: TaskRegistry,
        observers: ObserverChain,
        queues: dict[str, QueueConfig],
        sync_workers: int,
        lease_seconds: float,
        poll_interval: float,
        instance_id: str | None,
    ) -> None:
        self.base_backend = backend
        self.clock = clock
        self.registry = registry
        self.observers = observers
        self.queues = queues
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.instance_id = (
            instance_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )
        self.pending = PendingCreates()
        self.invocations: dict[str, Invocation] = {}
        self.waiting: dict[str, set[str]] = {}
        self._sync_workers = sync_workers
        self._pool: ThreadPoolExecutor | None = None
        self._runtime: Runtime | None = None
        self._runtime_backend: TaskBackend | None = None
        self._deferred: list[tuple[str, str, int]] = []
        self._base_used = False
        self._lock = threading.Lock()
        self._flush_scheduled = False
        self.bridge = BlockingBridge(backend, self._app_loop, self.started_backend)

    # -- loop and backend -------------------------------------------------------------

    @property
    def backend(self) -> TaskBackend:
        """The backend opened on the current runtime's loop."""
        assert self._runtime_backend is not None, "engine used before started()"
        return self._runtime_backend

    @property
    def thread_pool(self) -> ThreadPoolExecutor:
        """The bounded pool that runs sync task functions."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self._sync_workers, thread_name_prefix="taskflow-sync"
                )
            return self._pool

    def runtime(self) -> Runtime:
        """The runtime of the running loop (call from the loop, after ``started()``)."""
        assert self._runtime is not None, "engine used before started()"
        return self._runtime

    def _app_loop(self) -> asyncio.AbstractEventLoop | None:
        runtime = self._runtime
        if runtime is None or not runtime.usable or not runtime.loop.is_running():
            return None
        return runtime.loop

    def _dispatch_loop(self) -> asyncio.AbstractEventLoop | None:
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            return self._app_loop()

    async def started(self) -> Runtime:
        """Return the runtime of the running loop, starting the engine on it if needed."""
        loop = asyncio.get_running_loop()
        runtime = self._runtime
        if runtime is not None and runtime.loop is loop:
            return runtime
        backend = self.base_backend if not self._base_used else self.base_backend.fork()
        self._base_used = True
        await backend.open()
        runtime = Runtime(loop)
        self._runtime, self._runtime_backend = runtime, backend
        runtime.spawn(self._heartbeat(runtime), name="taskflow-heartbeat")
        with self._lock:
            deferred, self._deferred = self._deferred, []
        for task_id, queue, priority in deferred:
            runtime.spawn(self.submit(task_id, queue, priority))
        if len(self.pending):
            self._schedule_flush(loop)
        return runtime

    async def started_backend(self) -> TaskBackend:
        """Start the engine on the running loop if needed and return its backend."""
        await self.started()
        return self.backend

    # -- accepting --------------------------------------------------------------------

    def accept(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        idempotency_key: str | None,
        tags: dict[str, str] | None,
        eager: bool | None,
        priority: int | None,
        sink: list[BackgroundTask] | None,
    ) -> str:
        """Record a new task and route it; return its id (see the module docstring).

        ``sink`` is the background task list to append to; None means the task goes to
        its queue (``task_manager.add_task``).
        """
        if not callable(func):
            raise InvalidTaskError(
                f"add_task() needs a callable as its first argument, got {func!r}"
            )
        if idempotency_key is not None and not isinstance(idempotency_key, str):
            raise InvalidTaskError(
                f"idempotency_key must be a string, got {type(idempotency_key).__name__}"
            )
        if eager is not None and not isinstance(eager, bool):
            raise InvalidTaskError(f"eager must be True, False or None, got {eager!r}")
        check_priority(priority)
        clean_tags = check_tags(tags)
        entry = self.registry.resolve(func)
        config = entry.config
        effective_priority = priority if priority is not None else config.priority
        queued = sink is None or effective_priority is not None or config.queue is not None
        queue = config.queue or DEFAULT_QUEUE
        eager_now = (eager if eager is not None else config.eager) and not queued
        args_json, kwargs_json = encode_arguments(
            func, args, kwargs, strict=self.base_backend.durable
        )
        now = self.clock.now()
        record = TaskRecord(
            task_id=str(uuid.uuid4()),
            func_name=config.name,
            queue=queue,
            priority=effective_priority or 0,
            args=args_json,
            kwargs=kwargs_json,
            tags=clean_tags,
            idempotency_key=idempotency_key,
            max_retries=config.retries,
            requeue_on_interrupt=config.requeue_on_interrupt,
            created_at=now,
            updated_at=now,
        )
        loop = self._dispatch_loop()
        if eager_now and loop is None:
            raise EagerDispatchError(
                "eager=True needs a running event loop to start the task on, and none is "
                "running: call add_task() from a route or under `async with task_manager:`, "
                "or drop eager=True so the task runs after the response."
            )
        if queued:
            self._check_room(queue, record, loop)
        if idempotency_key is not None:
            result = self.bridge.run(lambda backend: backend.create(record))
            if not result.created:
                return result.record.task_id
        else:
            self.pending.add(record)
            if loop is not None:
                self._schedule_flush(loop)
        task_id = record.task_id
        self.invocations[task_id] = Invocation(func, args, kwargs, config)
        if queued:
            self.waiting.setdefault(queue, set()).add(task_id)
            if loop is None:
                with self._lock:
                    self._deferred.append((task_id, queue, record.priority))
            else:
                self._spawn_on(loop, self.submit(task_id, queue, record.priority))
        elif eager_now:
            assert loop is not None
            self._spawn_on(loop, self.run_now(task_id))
        else:
            assert sink is not None
            sink.append(BackgroundTask(self._background_func(task_id)))
        return task_id

    def _background_func(self, task_id: str) -> Callable[[], Any]:
        async def run_task() -> None:
            await self.run_now(task_id)

        run_task.__qualname__ = run_task.__name__ = f"taskflow_run_{task_id}"
        return run_task

    def _check_room(
        self, queue: str, record: TaskRecord, loop: asyncio.AbstractEventLoop | None
    ) -> None:
        limit = self.queue_config(queue).max_size
        if limit is None or len(self.waiting.get(queue, ())) < limit:
            return
        rejected = record.model_copy(
            update={
                "status": TaskStatus.REJECTED,
                "finished_at": record.created_at,
                "error": f"queue {queue!r} is full",
            }
        )
        if record.idempotency_key is not None:
            self.bridge.run(lambda backend: backend.create(rejected))
        else:
            self.pending.add(rejected)
            if loop is not None:
                self._schedule_flush(loop)
        if loop is not None:
            self._spawn_on(loop, self.emit_lifecycle(rejected))
        raise QueueFullError(queue, limit, record.task_id)

    def queue_config(self, queue: str) -> QueueConfig:
        """Return the configuration of ``queue`` (defaults for an unconfigured one)."""
        config = self.queues.get(queue)
        if config is None:
            config = self.queues.setdefault(queue, QueueConfig())
        return config

    def _spawn_on(self, loop: asyncio.AbstractEventLoop, coro: Any) -> None:
        async def started_then() -> None:
            await self.started()
            await coro

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop and self._runtime is not None and self._runtime.loop is loop:
            self._runtime.spawn(started_then())
        elif running is loop:
            task = loop.create_task(started_then())
            _keep(task)
        else:
            loop.call_soon_threadsafe(lambda: _keep(loop.create_task(started_then())))

    def _schedule_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            if self._flush_scheduled:
                return
            self._flush_scheduled = True

        async def flush_soon() -> None:
            with self._lock:
                self._flush_scheduled = False
            try:
                await self.flush()
            except Exception:
                logger.exception("writing accepted tasks to the store failed; will retry")

        self._spawn_on(loop, flush_soon())

    async def flush(self) -> None:
        """Write every accepted task still in the buffer to the store."""
        await self.started()
        await self.pending.flush(self.backend)

    # -- running ----------------------------------------------------------------------

    async def submit(self, task_id: str, queue: str, priority: int) -> None:
        """Put an accepted task on its queue and make sure a worker runs the queue."""
        await self.flush()
        await self.backend.enqueue(task_id, queue=queue, priority=priority)
        worker = self.worker(queue)
        worker.wake()

    def worker(self, queue: str) -> QueueWorker:
        """Return the running worker of ``queue`` on the current loop, starting it."""
        runtime = self.runtime()
        worker = runtime.workers.get(queue)
        if worker is None:
            worker = runtime.workers[queue] = QueueWorker(self, queue, self.queue_config(queue))
        worker.start()
        return worker

    async def run_now(self, task_id: str) -> None:
        """Run an accepted task now (background list, eager, or awaited by hand)."""
        await self.flush()
        invocation = self.invocations.get(task_id)
        if invocation is None:
            return  # already ran, or not accepted by this manager
        await execute(self, task_id, invocation, claimed=False)

    async def run_claimed(self, claim: Claim) -> None:
        """Run a task a queue worker claimed."""
        self.waiting.get(claim.queue, set()).discard(claim.task_id)
        invocation = self.invocations.get(claim.task_id)
        if invocation is None:
            logger.warning(
                "task %s was claimed but its function and arguments are not known to this "
                "instance; releasing it",
                claim.task_id,
            )
            await self.backend.release_lease(claim.task_id, owner=self.instance_id)
            return
        await execute(self, claim.task_id, invocation, claimed=True)

    async def enqueue_retry(self, record: TaskRecord, delay: float) -> None:
        """Queue the next attempt of ``record`` to start ``delay`` seconds from now."""
        await self.backend.enqueue(
            record.task_id,
            queue=record.queue,
            priority=record.priority,
            not_before=not_before(self, delay),
        )
        self.worker(record.queue).wake_later(delay)

    def forget(self, task_id: str) -> None:
        """Drop the in-process state of a finished task."""
        self.invocations.pop(task_id, None)

    async def _heartbeat(self, runtime: Runtime) -> None:
        interval = max(self.lease_seconds / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            held = list(runtime.running)
            if not held:
                continue
            try:
                kept = await self.backend.renew_leases(
                    held, owner=self.instance_id, lease_seconds=self.lease_seconds
                )
            except Exception:
                logger.exception("renewing task leases failed; will retry")
                continue
            for lost in set(held) - kept:
                logger.warning("lost the lease of running task %s", lost)

    # -- events -----------------------------------------------------------------------

    async def emit_lifecycle(self, record: TaskRecord) -> None:
        """Tell the observers ``record`` has its current status."""
        if self.observers.observers:
            await self.observers.emit(lifecycle_event(record, self.instance_id))

    def log_emitter(self, record: TaskRecord) -> Callable[[TaskContext, LogEntry], None] | None:
        """Return the callback ``task_log()`` uses to reach the observers, or None."""
        if not self.observers.observers:
            return None
        loop = asyncio.get_running_loop()
        instance_id = self.instance_id

        def emit(ctx: TaskContext, entry: LogEntry) -> None:
            event = log_event(ctx, entry, instance_id)
            self._spawn_on(loop, self.observers.emit(event))

        return emit

    # -- shutdown ---------------------------------------------------------------------

    async def shutdown(self, timeout: float) -> None:
        """Stop taking work, let running tasks finish for ``timeout`` seconds, then
        interrupt the rest (they become INTERRUPTED) and release resources."""
        runtime = self._runtime
        if runtime is None or runtime.loop is not asyncio.get_running_loop():
            self.bridge.close()
            return
        runtime.stopping = True
        for worker in list(runtime.workers.values()):
            await worker.stop()
        try:
            await self.flush()
        except Exception:
            logger.exception("could not write accepted tasks at shutdown")
        running = list(runtime.running.values())
        if running:
            _, late = await asyncio.wait(running, timeout=timeout)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5)
        for task in list(runtime.background):
            task.cancel()
        await asyncio.gather(*runtime.background, return_exceptions=True)
        self.bridge.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        await self.backend.close()
        self._runtime = None
        self._runtime_backend = None


_keep_alive: set[asyncio.Task[Any]] = set()


def _keep(task: asyncio.Task[Any]) -> None:
    _keep_alive.add(task)
    task.add_done_callback(_keep_alive.discard)
