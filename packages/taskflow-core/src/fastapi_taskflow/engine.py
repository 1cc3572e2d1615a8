"""The engine: the machinery behind ``TaskManager``.

It owns the per-loop runtime, the write buffer, the group commit of status changes, the
heartbeat, the queue workers, recovery of dead instances' tasks, event fan-out, and
shutdown. Accepting a task lives in
``accept``, running one attempt in ``executor``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from functools import partial
from typing import Any

from .accept import accept
from .bridge import BlockingBridge
from .clock import Clock
from .config import DEFAULT_QUEUE, QueueConfig, TaskConfig
from .context import TaskContext
from .dispatcher import QueueWorker
from .errors import BackendUnavailableError
from .events import LifecycleEvent, LogEvent, lifecycle_event
from .executor import execute, log_event, write_running_lines
from .fanout import EventHub
from .group_commit import GroupCommit
from .invocation import Invocation
from .liveness import beat_forever, open_control_backend
from .local_tasks import LocalTasks
from .log_flush import LogFlusher
from .lost_claims import LostClaims
from .models import (
    Applied,
    Claim,
    LiveRecord,
    LogEntry,
    TaskRecord,
    TaskStatus,
    TaskUpdate,
    Transition,
)
from .observers import ObserverChain
from .pending import PendingCreates
from .progress import ProgressWiring
from .protocols import InProcessStore, TaskBackend
from .redaction import mask_secrets
from .refused import RefusedTasks, record_refusals
from .registry import TaskRegistry
from .resilience import Availability
from .retention import Retention
from .runtime import Runtime, reraise_if_cancelled
from .supervision import CancelScopes
from .write_hooks import enqueue_batch

__all__ = ["Engine", "Invocation"]  # Invocation re-exported

logger = logging.getLogger("fastapi_taskflow")

_LOOP_END_SECONDS = 1.0
"""How long each step of releasing a runtime whose loop ends may take (its tasks'
end, the writes in flight, the events to publish)."""


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
        liveness_seconds: float,
        poll_interval: float,
        instance_id: str | None,
        publish_events: bool | None = None,
        require_backend_at_startup: bool = False,
        retention: timedelta | None = None,
    ) -> None:
        self.base_backend = backend
        self.require_backend_at_startup = require_backend_at_startup
        self.durable = bool(backend.durable)
        in_process = (
            backend
            if not self.durable
            and isinstance(backend, InProcessStore)
            and callable(backend.create_now)
            else None
        )
        self.create_now = in_process.create_now if in_process is not None else None
        """The store's synchronous create when it lives in this process (no write buffer)."""
        self.transition_now = in_process.transition_now if in_process is not None else None
        """The store's synchronous compare-and-set when it lives in this process."""
        self.start_now = in_process.start_now if in_process is not None else None
        """The store's synchronous start of an attempt when it lives in this process."""
        self.finish_now = in_process.finish_now if in_process is not None else None
        """The store's synchronous end of an attempt when it lives in this process."""
        self.append_now = in_process.append_now if in_process is not None else None
        """The store's synchronous log append when it lives in this process."""
        self.clock = clock
        self.registry = registry
        self.observers = observers
        self.queues = queues
        self.liveness_seconds = liveness_seconds
        self.poll_interval = poll_interval
        self._named_here = instance_id is None
        self.instance_id = instance_id or _new_instance_id()
        """This instance's name in heartbeats and as its tasks' owner: one per process
        when taskflow names it (a forked child takes a new one, see ``_forked``)."""
        self.retention = Retention(clock, retention)
        self.availability = Availability()
        self.hub = EventHub(
            observers,
            lambda: self.instance_id,
            lambda: self.backend,
            publish=self.durable if publish_events is None else publish_events,
        )
        self.progress_wiring = ProgressWiring(self.hub, clock, lambda: self.backend)
        self._sync_workers = sync_workers
        self._base_used = False
        self._shut_down = False
        self.warned_names: set[str] = set()
        self._process_state()
        _engines.add(self)
        self.rehydrate: Callable[[Claim], Awaitable[Invocation | None]] = _cannot_rehydrate
        """Rebuilds the invocation of a claimed task this process did not accept (the
        manager sets it: see ``rehydrate``)."""
        self.start_hooks: list[Callable[[Runtime], None]] = []
        """Called with each full runtime the engine starts (periodic schedules, the
        cancellation watcher: see ``schedules`` and ``cancellation``)."""

    def _process_state(self) -> None:
        """Set up what belongs to this process: the tasks it accepted and runs, its
        threads and locks, the runtime of its event loop (see ``_forked``)."""
        self.pending = PendingCreates()
        self.refused = RefusedTasks()
        self.tasks = LocalTasks()
        """The in-process state of every task accepted here and not finished."""
        self.cancel_scopes = CancelScopes()
        """The attempts running here that a deadline or a cancel request can interrupt."""
        self.log_flusher = LogFlusher(self.cancel_scopes, partial(write_running_lines, self))
        """Writes the log lines of long attempts while they run."""
        self.bridge = BlockingBridge(self.base_backend, self.app_loop, self.started_backend)
        self._pool: ThreadPoolExecutor | None = None
        self._runtime: Runtime | None = None
        """The runtime of the loop the engine last started on (it holds that loop's
        backends)."""
        self._group_commit: GroupCommit | None = None
        self._deferred: list[tuple[str, str, int]] = []
        self._starting: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        """The loop the engine is (or was last) started on, and the lock its first
        callers take in turn (see ``started``)."""
        self._lock = threading.Lock()
        self._flush_scheduled = False
        self._holding: Counter[str] = Counter()
        """Tasks between a store write and the enqueue that follows it (see holding)."""
        self._parked: set[str] = set()
        """Queued tasks this instance could not release: they may wait for a later due
        time under its ownership (see release)."""

    def _forked(self) -> None:
        """Become the engine of a child process forked from this one (gunicorn's
        ``--preload`` forks its workers from a process that imported the app; a
        ``multiprocessing`` pool forks the app's process).

        A child is another instance: it takes a name of its own (unless one was given),
        or its heartbeat and its tasks' owner would be its parent's and siblings' — a
        killed worker's tasks would never be adopted while one of them lived, and a
        worker shutting down would delete the heartbeat they all share. It starts with
        nothing of its parent's: no accepted tasks (its parent's to write and run), no
        event loop runtime (its connections are the parent's sockets: dropped, not
        closed), no threads (a thread pool and the bridge's loop do not survive a
        fork), fresh locks."""
        if self._named_here:
            self.instance_id = _new_instance_id()
        self._process_state()

    # -- loop and backend -------------------------------------------------------------

    @property
    def backend(self) -> TaskBackend:
        """The backend opened on the current runtime's loop."""
        runtime = self._runtime
        assert runtime is not None, "engine used before started()"
        return runtime.backend

    @property
    def thread_pool(self) -> ThreadPoolExecutor:
        """The bounded pool that runs sync task functions."""
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self._sync_workers, thread_name_prefix="taskflow-sync"
                )
            return self._pool

    @property
    def current_runtime(self) -> Runtime | None:
        """The runtime of the loop the engine last started on, if any."""
        return self._runtime

    def runtime(self) -> Runtime:
        """The runtime of the running loop (call from the loop, after ``started()``)."""
        assert self._runtime is not None, "engine used before started()"
        return self._runtime

    def app_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop the engine runs on, if it is running."""
        runtime = self._runtime
        if runtime is None or not runtime.usable or not runtime.loop.is_running():
            return None
        return runtime.loop

    def dispatch_loop(self) -> asyncio.AbstractEventLoop | None:
        """The loop new work should start on: this thread's, else the engine's."""
        try:
            return asyncio.get_running_loop()
        except RuntimeError:
            return self.app_loop()

    async def started(self) -> Runtime:
        """Return the runtime of the running loop, starting the engine on it if needed.

        Callers that arrive while the engine is starting on their loop (a startup
        handler's task, its flush and a read, all at once) wait for that start and share
        its runtime: the store is opened once, and every background loop runs once.
        """
        loop = asyncio.get_running_loop()
        runtime = self._runtime
        if runtime is not None and runtime.loop is loop:
            return runtime
        starting = self._starting
        if starting is None or starting[0] is not loop:
            starting = self._starting = (loop, asyncio.Lock())
        async with starting[1]:
            runtime = self._runtime
            if runtime is not None and runtime.loop is loop:
                return runtime  # started by the caller this one waited for
            return await self._start(loop)

    async def _start(self, loop: asyncio.AbstractEventLoop) -> Runtime:
        """Open a backend for ``loop`` and start the engine's runtime on it."""
        backend = self.base_backend if not self._base_used else self.base_backend.fork()
        self._base_used = True
        try:
            await backend.open()
        except BackendUnavailableError as exc:
            if self.require_backend_at_startup or self._shut_down:
                raise
            runtime = self._start_unopened(loop, backend, exc)
            await runtime.on_loop_end(self._loop_ended)
            return runtime
        runtime = self._runtime = Runtime(loop, backend)
        self._group_commit = self._new_group_commit(backend, loop)
        await runtime.on_loop_end(self._loop_ended)
        if self._shut_down:
            # Reading the store after shutdown() opens the backend, nothing more: no
            # background loops that nobody would stop (not even a queue worker for a
            # task armed now). startup() resumes fully.
            runtime.passive = True
            return runtime
        return await self._start_loops(runtime, backend)

    async def drain_writes(self, timeout: float) -> None:
        """Let the group commit's writes in flight end (at most ``timeout`` seconds, then
        they are cancelled): what a shutdown does before it closes the store."""
        group = self._group_here()
        if group is not None:
            await group.drain(timeout)

    def _group_here(self) -> GroupCommit | None:
        """The group commit of the running loop (durable backends), else None."""
        group = self._group_commit
        runtime = self._runtime
        if (
            group is not None
            and runtime is not None
            and group.loop is runtime.loop
            and runtime.is_current()
        ):
            return group
        return None

    def _new_group_commit(
        self, backend: TaskBackend, loop: asyncio.AbstractEventLoop
    ) -> GroupCommit | None:
        if not self.durable:
            return None
        return GroupCommit(
            backend,
            loop,
            self.pending,
            after=partial(enqueue_batch, self.tasks, backend),
            on_refused=self.refusal_handler(backend),
            now=self.clock.now,
        )

    def _start_unopened(
        self, loop: asyncio.AbstractEventLoop, backend: TaskBackend, exc: BaseException
    ) -> Runtime:
        """Start without the store (unreachable at boot): the same state as an outage
        after startup (``availability`` down, new tasks refused but for probes), plus a
        background task that opens the backend once the store answers, then starts the
        engine's loops. ``require_backend_at_startup=True`` fails instead."""
        runtime = self._runtime = Runtime(loop, backend, opened=False)
        self._group_commit = self._new_group_commit(backend, loop)
        logger.warning(
            "the task store is unreachable at startup (%s); starting anyway: new tasks "
            "are refused (503 with install()) until it answers, then taskflow connects "
            "on its own. Pass require_backend_at_startup=True to fail startup instead",
            mask_secrets(str(exc)),
        )
        self.availability.failed(exc)

        async def open_when_reachable() -> None:
            await self.availability.persist(backend.open)
            if self._runtime is runtime and not runtime.stopping:
                runtime.opened = True
                await self._start_loops(runtime, backend)

        runtime.spawn(open_when_reachable(), name="taskflow-open")
        return runtime

    @property
    def store_opened(self) -> bool:
        """False while the current runtime's store has not answered since boot."""
        runtime = self._runtime
        return runtime is None or runtime.opened

    def check_opened(self) -> None:
        """Raise ``BackendUnavailableError`` while the store has not answered since boot."""
        if not self.store_opened:
            raise BackendUnavailableError(
                "the task store has been unreachable since startup; retry later"
            )

    async def _start_loops(self, runtime: Runtime, backend: TaskBackend) -> Runtime:
        """Start the background loops of a runtime whose backend is open."""
        loop = runtime.loop
        if self.durable:
            runtime.control = await open_control_backend(backend)
            runtime.spawn(
                beat_forever(
                    self.control_backend,
                    self.availability,
                    self.instance_id,
                    self.liveness_seconds,
                ),
                name="taskflow-heartbeat",
            )
        if self.retention.keep is not None:
            runtime.spawn(self.retention.run(backend), name="taskflow-retention")
        runtime.spawn(
            self.log_flusher.run(partial(runtime.spawn, awaited=True)), name="taskflow-log-lines"
        )
        if self.durable and self.hub.publish:
            runtime.spawn(self.hub.listen(), name="taskflow-events")
            await self.hub.check_readers()  # a reader there now sees the first task
            runtime.spawn(self.hub.watch_readers(), name="taskflow-readers")
        # On every backend (memory too): a task put on a queue from outside this engine
        # (``operations.retry_task`` from the admin API) is found at the next poll.
        for queue in self._known_queues():
            self.worker(queue)
        for hook in self.start_hooks:  # extensions: schedules, cancellation watcher
            hook(runtime)
        with self._lock:
            deferred, self._deferred = self._deferred, []
        for task_id, queue, priority in deferred:
            runtime.spawn(self.submit(task_id, queue, priority))
        if len(self.pending):
            self.schedule_flush(loop)
        return runtime

    @property
    def control_backend(self) -> TaskBackend:
        """The backend the heartbeat and recovery use: a fork with a pool of its own on
        shared backends, so heartbeats never queue behind request traffic."""
        runtime = self._runtime
        control = runtime.control if runtime is not None else None
        return control or self.backend

    async def started_backend(self) -> TaskBackend:
        """Start the engine on the running loop if needed and return its backend.

        Raises:
            BackendUnavailableError: the store has not been reachable since startup.
        """
        await self.started()
        self.check_opened()
        return self.backend

    def _known_queues(self) -> set[str]:
        names = {DEFAULT_QUEUE, *self.queues}
        for name in self.registry.names():
            entry = self.registry.by_name(name)
            if entry is not None and entry.config.queue:
                names.add(entry.config.queue)
        return names

    # -- accepting --------------------------------------------------------------------

    def accept(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        **options: Any,
    ) -> str:
        """Accept a task; see :func:`fastapi_taskflow.accept.accept`."""
        return accept(self, func, args, kwargs, **options)

    def register_invocation(
        self,
        record: TaskRecord | LiveRecord,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        config: TaskConfig,
        route: str,
        *,
        is_async: bool | None = None,
    ) -> Invocation:
        """Remember how to run an accepted task in this process and return it (the
        entry of a request's background task list for a task run after the response;
        ``is_async``: whether ``func`` returns a coroutine, when the caller knows it)."""
        invocation = Invocation(
            func,
            args,
            kwargs,
            config,
            record.task_id,
            self,
            self.registry.is_async(func) if is_async is None else is_async,
            record.queue,
            record.priority,
            route,
        )
        if self.start_now is None:  # a shared store: a start need not be read back
            invocation.func_name = record.func_name
            invocation.tags = record.tags or None
            invocation.requeue_on_interrupt = record.requeue_on_interrupt
        self.tasks.add(record.task_id, invocation)
        return invocation

    def queue_config(self, queue: str) -> QueueConfig:
        """Return the configuration of ``queue`` (defaults for an unconfigured one)."""
        config = self.queues.get(queue)
        if config is None:
            config = self.queues.setdefault(queue, QueueConfig())
        return config

    def submit_soon(
        self, loop: asyncio.AbstractEventLoop | None, task_id: str, queue: str, priority: int
    ) -> None:
        """Queue a task on ``loop`` now, or when the engine starts if no loop runs."""
        if loop is None:
            with self._lock:
                self._deferred.append((task_id, queue, priority))
        else:
            self.spawn_on(loop, self.submit(task_id, queue, priority))

    def spawn_on(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` on ``loop`` (from any thread) once the engine has started there.

        If the wrapper is cancelled before it runs (a shutdown), ``coro`` is closed
        rather than left un-awaited.
        """
        began = False

        async def started_then() -> None:
            nonlocal began
            began = True
            try:
                await self.started()
            except BaseException:
                coro.close()
                raise
            await coro

        def close_if_never_run(_: asyncio.Task[Any]) -> None:
            if not began:
                coro.close()

        def create() -> None:
            task = loop.create_task(started_then())
            task.add_done_callback(close_if_never_run)
            if self._runtime is not None and self._runtime.loop is loop:
                self._runtime.adopt(task)
            else:
                _keep(task)

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            create()
        else:
            loop.call_soon_threadsafe(create)

    def schedule_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """Flush the write buffer on ``loop`` soon (once per batch)."""
        with self._lock:
            if self._flush_scheduled:
                return
            self._flush_scheduled = True

        async def flush_soon() -> None:
            with self._lock:
                self._flush_scheduled = False
            try:
                await self.flush()
            except BackendUnavailableError:
                reraise_if_cancelled()
                logger.debug("store unreachable; accepted tasks stay buffered", exc_info=True)
                await asyncio.sleep(0.1)
                self.schedule_flush(asyncio.get_running_loop())
            except Exception:
                reraise_if_cancelled()
                logger.exception("writing accepted tasks to the store failed; will retry")
                await asyncio.sleep(0.1)
                self.schedule_flush(asyncio.get_running_loop())

        self.spawn_on(loop, flush_soon())

    async def flush(self) -> None:
        """Write every accepted task still in the buffer to the store.

        On a durable backend each record names this instance as its owner, so a task is
        never in the store without one. An empty buffer is no news about the store: it
        neither touches nor marks it available.
        """
        runtime = self._runtime
        if runtime is None or not runtime.is_current():
            await self.started()
        if not len(self.pending):
            return
        self.check_opened()
        backend = self.backend
        group = self._group_here()
        if group is not None:
            await self.availability.call(group.flush)  # with the status changes waiting
            return
        after = partial(enqueue_batch, self.tasks, backend) if self.durable else None
        refused = self.refusal_handler(backend)
        await self.availability.call(lambda: self.pending.flush(backend, after, refused))

    def refusal_handler(
        self, backend: TaskBackend
    ) -> Callable[[list[tuple[TaskRecord, Exception]]], Awaitable[None]]:
        """What the write buffer calls with the records ``backend`` refused."""
        return partial(record_refusals, self.refused, self.forget, self.emit_lifecycle, backend)

    async def flush_for(self, task_id: str) -> bool:
        """Wait until ``task_id``'s record has left the write buffer; True if it still
        is to run here.

        The buffer is flushed, with retries while the store is unreachable, as long as
        the record is in it: other tasks' records failing to be written never fail this
        one. False means the task was dropped (its request was refused, see
        ``install()``'s middleware) or has already run.
        """
        if task_id in self.pending:
            await self.availability.persist_while(lambda: task_id in self.pending, self.flush)
        return task_id in self.tasks

    # -- what this instance holds -------------------------------------------------

    @contextmanager
    def holding(self, task_id: str) -> Iterator[None]:
        """Hold ``task_id`` in process for the block: a store write that makes it
        PENDING and this instance's, and the enqueue that follows, happen inside it.

        Without it, a lost-claim sweep (``lost_claims``) running between the two would
        find a PENDING task of this instance on no queue, and run it (or, after the
        enqueue, put it back due at once: early, for a firing due later)."""
        self._holding[task_id] += 1
        try:
            yield
        finally:
            self._holding[task_id] -= 1
            if self._holding[task_id] <= 0:
                del self._holding[task_id]

    def holds(self, task_id: str) -> bool:
        """True when this instance holds ``task_id`` somewhere other than a queue: its
        record is in the write buffer; it runs here; it was accepted here for a
        container (background list, eager start) or is on its way to its queue; it is
        inside a :meth:`holding` block (recovery's adopt and re-enqueue, arming a
        firing, a requeue, a submit); or it was left on a queue under this instance's
        ownership, maybe with a later due time (a failed :meth:`release`).

        A PENDING task of this instance that it does not hold is on a queue, or was
        taken by a claim whose reply was lost: ``lost_claims`` tells the two apart. A
        queue worker adds the tasks it claimed (its active set)."""
        if task_id in self._holding or task_id in self._parked or task_id in self.pending:
            return True
        runtime = self._runtime
        if runtime is not None and task_id in runtime.running:
            return True
        return self.tasks.held_here(task_id)

    # -- running ----------------------------------------------------------------------

    async def submit(self, task_id: str, queue: str, priority: int) -> None:
        """Put an accepted task on its queue and make sure a worker runs the queue."""
        with self.holding(task_id):
            if not await self.flush_for(task_id):
                return
            if not self.tasks.take_enqueued(task_id):  # else enqueued with its record
                await self.availability.persist(
                    lambda: self.backend.enqueue(task_id, queue=queue, priority=priority)
                )
            self.tasks.put_on_queue(task_id)
        self.worker(queue).wake()

    async def requeue(
        self,
        record: TaskRecord,
        delay: float = 0.0,
        *,
        wake: bool = True,
        release: bool = False,
    ) -> None:
        """Put a PENDING task (back) on its queue, runnable ``delay`` seconds from now.

        ``wake=False`` leaves this instance's worker to find it at its next poll (used
        for a task this instance cannot run, so it does not win every race for it).
        ``release=True`` then gives up this instance's ownership (the queue holds the
        task), so that if this instance dies the task still waits for its due time
        instead of being adopted and queued at once; a claim that came first keeps it.
        """
        not_before = self.clock.now() + timedelta(seconds=delay) if delay else None
        with self.holding(record.task_id):
            await self.availability.persist(
                lambda: self.backend.enqueue(
                    record.task_id,
                    queue=record.queue,
                    priority=record.priority,
                    not_before=not_before,
                )
            )
            if release and self.durable:
                await self.release(record.task_id)
            self.tasks.put_on_queue(record.task_id)
        worker = self.worker(record.queue)
        if not wake:
            return
        if delay:
            worker.wake_later(delay)
        else:
            worker.wake()

    async def release(self, task_id: str) -> None:
        """Give up this instance's ownership of a queued task (best effort: if it fails,
        the task is adopted and queued again should this instance die, and this
        instance's lost-claim sweeps leave it to its queue: see :meth:`holds`)."""
        try:
            await self.backend.adopt(task_id, owner=self.instance_id, new_owner=None)
        except Exception:
            reraise_if_cancelled()
            self._parked.add(task_id)
            logger.debug("releasing task %s failed", task_id, exc_info=True)

    def worker(self, queue: str) -> QueueWorker:
        """Return the running worker of ``queue`` on the current loop, starting it."""
        runtime = self.runtime()
        worker = runtime.workers.get(queue)
        if worker is None:
            worker = runtime.workers[queue] = QueueWorker(
                queue,
                self.queue_config(queue),
                runtime=runtime,
                claim=partial(self._claim, queue),
                run=self.run_claimed,
                availability=self.availability,
                poll_interval=self.poll_interval,
                lost=self._lost_claims(queue) if self.durable else None,
            )
        worker.start()
        return worker

    def _lost_claims(self, queue: str) -> LostClaims:
        return LostClaims(
            queue, owner=self.instance_id, backend=lambda: self.backend, held=self.holds
        )

    async def _claim(self, queue: str, limit: int) -> list[Claim]:
        return await self.backend.claim(queue=queue, owner=self.instance_id, limit=limit)

    async def run_now(
        self, task_id: str, *, finishing: list[asyncio.Task[None]] | None = None
    ) -> None:
        """Run an accepted task now (background list, eager, or awaited by hand);
        ``finishing``: see :func:`~fastapi_taskflow.executor.execute`.

        A task whose record is still in the write buffer (no response has carried its
        id yet: an eager task, a container awaited by hand, a script) starts without a
        flush of its own on a durable backend: its start (PENDING -> RUNNING) goes to
        the group commit, whose next write holds the buffered record too, created
        before the start in the same ``write_many``.
        """
        runtime = self._runtime
        if runtime is None or not runtime.is_current():
            await self.started()
        if (
            task_id in self.pending
            and self._group_here() is None
            and not await self.flush_for(task_id)
        ):
            return  # dropped, or not accepted by this manager
        invocation = self.tasks.get(task_id)
        if invocation is None:
            return  # already ran, or not accepted by this manager
        await execute(self, task_id, invocation, claimed=False, finishing=finishing)

    async def run_claimed(self, claim: Claim) -> None:
        """Run a task a queue worker claimed (ours, a retry, or adopted)."""
        self.tasks.left_queue(claim.task_id, claim.queue)
        self._parked.discard(claim.task_id)
        invocation = self.tasks.get(claim.task_id)
        taken_over = invocation is None  # accepted elsewhere (or in an earlier life)
        if taken_over:
            invocation = await self.rehydrate(claim)
        if invocation is not None:
            await execute(self, claim.task_id, invocation, claimed=True, taken_over=taken_over)

    def forget(self, task_id: str) -> None:
        """Drop the in-process state of a task that finished or left this instance."""
        self.tasks.forget(task_id)
        self._parked.discard(task_id)

    async def transition(
        self,
        task_id: str,
        *,
        expected: frozenset[TaskStatus],
        new: TaskStatus,
        update: TaskUpdate | None,
        read_back: bool = True,
    ) -> TaskRecord | Applied | None:
        """``Store.transition`` on this loop's backend, batched with the other status
        changes of this loop turn on a durable backend (see ``group_commit``).
        ``read_back=False``: the caller needs only to know whether the change applied,
        and may get ``APPLIED`` instead of the record (see ``Transition``)."""
        group = self._group_here()
        if group is not None:
            try:
                change = Transition(task_id, expected, new, update, read_back)
                return await group.transition(change)
            except BackendUnavailableError:
                if task_id in self.pending:
                    # A start sent with its task's record (see run_now), neither known
                    # to be written: the caller retries the start on the store itself,
                    # which needs the record there first.
                    await self.flush_for(task_id)
                raise
        return await self.backend.transition(task_id, expected=expected, new=new, update=update)

    # -- events -----------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        """True when someone receives events: observers, other instances or a stream.
        Events are built only then."""
        return self.hub.listening

    async def emit_lifecycle(self, record: TaskRecord, *, signal: bool = False) -> None:
        """Announce ``record``'s current status to observers and other instances;
        ``signal``: to the other instances even if nobody reads (see ``fanout``)."""
        if self.listening or (signal and self.hub.publish):
            await self.hub.emit(lifecycle_event(record, self.instance_id), signal=signal)

    def log_emitter(self) -> Callable[[TaskContext, LogEntry], None] | None:
        """Return the callback ``task_log()`` uses to announce a line, or None when
        nobody can come to listen (no shared backend, no observer, no stream). On a
        shared backend a reader may arrive while the task runs (``taskflow follow``):
        each line then asks whether someone listens."""
        hub = self.hub
        if not (hub.listening or hub.publish):
            return None
        loop = asyncio.get_running_loop()
        loop_thread = threading.get_ident()
        instance_id = self.instance_id

        def emit(ctx: TaskContext, entry: LogEntry) -> None:
            if not hub.listening:
                return
            event: LifecycleEvent | LogEvent = log_event(ctx, entry, instance_id)
            if hub.observers.observers:  # observers are awaited: a task of its own
                self.spawn_on(loop, hub.emit(event))
            elif threading.get_ident() == loop_thread:  # no task per line, none waits
                hub.deliver(event)
            else:  # a sync task's thread
                loop.call_soon_threadsafe(hub.deliver, event)

        return emit

    # -- shutdown ---------------------------------------------------------------------

    async def resume(self) -> Runtime:
        """Start (again) on the running loop with every background loop, even after a
        shutdown; what ``TaskManager.startup()`` and ``async with`` do."""
        if self._shut_down:
            self._shut_down = False
            passive = self._runtime
            if passive is not None and passive.loop is asyncio.get_running_loop():
                # The runtime that served reads after shutdown: replace it by a full one.
                passive.released = True
                await passive.backend.close()
                self._runtime = None
        return await self.started()

    async def _loop_ended(self, runtime: Runtime) -> None:
        """Release ``runtime`` as its loop ends without a shutdown (see
        ``Runtime.on_loop_end``): its tasks stopped, its backends' connections closed
        on the loop they belong to.

        Nothing else changes: accepted tasks not written yet stay in the write buffer
        for the next loop, and the instance keeps its tasks and its heartbeat (a test
        client's next request starts the engine again, on its own loop)."""
        runtime.stopping = True
        runtime.released = True
        await runtime.stop_background(timeout=_LOOP_END_SECONDS)
        current = self._runtime is runtime
        if current:
            await self.drain_writes(timeout=_LOOP_END_SECONDS)
            await self.hub.drain(timeout=_LOOP_END_SECONDS)
        try:
            await runtime.close_backends()
        except Exception:
            logger.debug(
                "closing the store's connections as their loop ended failed", exc_info=True
            )
        if current:
            self._runtime = None
            self._group_commit = None

    def stopped(self) -> None:
        """Forget the runtime after a shutdown; later reads open the backend only."""
        self._shut_down = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        if self._runtime is not None:
            self._runtime.released = True  # its backends were closed by the shutdown
        self._runtime = None
        self._group_commit = None


async def _cannot_rehydrate(claim: Claim) -> Invocation | None:
    logger.warning("task %s was claimed, but this engine cannot run stored tasks", claim.task_id)
    return None


def _new_instance_id() -> str:
    """A name for this process's instance: host, process id and 8 random hex digits."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
"""Every engine of this process (see ``Engine._forked``)."""


def _after_fork_in_child() -> None:
    for engine in list(_engines):
        engine._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)

_keep_alive: set[asyncio.Task[Any]] = set()


def _keep(task: asyncio.Task[Any]) -> None:
    _keep_alive.add(task)
    task.add_done_callback(_keep_alive.discard)
