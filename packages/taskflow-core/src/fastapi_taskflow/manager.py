"""``TaskManager``: registers tasks, hands out ``ManagedBackgroundTasks``, owns the engine."""

from __future__ import annotations

import inspect
import math
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta
from functools import partial
from types import TracebackType
from typing import Any, TypeVar

from fastapi import BackgroundTasks, FastAPI

from . import cancellation, one_off
from .backends import open_backend
from .background import ManagedBackgroundTasks
from .clock import Clock, SystemClock
from .config import QueueConfig, TaskConfig
from .engine import Engine
from .errors import InvalidOperationError, InvalidTaskError, ScheduleError
from .events import LifecycleEvent, LogEvent
from .fanout import STREAM_BACKLOG
from .limits import NAME_MAX, check_name, check_text
from .models import TaskRecord
from .observers import ObserverChain
from .one_off import ScheduledTask
from .protocols import Observer, TaskBackend
from .recovery import start_recovery
from .registry import TaskRegistry, default_name
from .rehydrate import rehydrate
from .retention import DEFAULT_RETENTION, check_retention
from .schedules import Schedule, Scheduler
from .shutdown import shutdown
from .store_view import TaskStore

__all__ = ["TaskManager"]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_SYNC_WORKERS = 40
"""Threads for ``def`` task functions unless ``sync_workers=`` says otherwise: as many as
plain ``BackgroundTasks`` may use at once (Starlette runs them through anyio's default
thread limiter, 40 threads), so blocking tasks run as many at a time as before."""


class TaskManager:
    """The hub of taskflow: one per application.

    Args:
        backend: where tasks are stored and coordinated: a URL (``"memory://"``,
            ``"sqlite:///tasks.db"``, ``"postgresql://..."``, ``"redis://..."``), a backend
            object, or None for the ``TASKFLOW_BACKEND`` environment variable, else
            ``memory://``.
        observers: receivers of every task's lifecycle and log events.
        queues: limits per named queue (``{"emails": QueueConfig(concurrency=2)}``);
            unnamed queues get ``QueueConfig()``.
        sync_workers: size of the thread pool that runs sync (``def``) task functions;
            default :data:`DEFAULT_SYNC_WORKERS` (40, as many threads as plain
            ``BackgroundTasks`` use).
        shutdown_timeout: seconds running tasks get to finish at shutdown before they
            are INTERRUPTED; ``shutdown()`` returns at most
            :data:`~fastapi_taskflow.shutdown.CLEANUP_SECONDS` (5 s) after that, whatever
            the store does.
        liveness_seconds: how long another instance's heartbeat must stay unchanged,
            while this one watches without interruption, before its tasks are adopted.
            Each instance beats every fifth of it, so a dead instance's tasks move on
            within about 1.5 times ``liveness_seconds`` (default 5 s: under 10 s). Raise it if
            your event loop can block for seconds (long sync code in ``async def``).
        poll_interval: how often idle queue workers look for tasks from other instances
            (seconds, above 0).
        clock: the time source (tests inject ``ManualClock``).
        instance_id: this instance's name in heartbeats and as its tasks' owner;
            generated when None, once per process (a worker forked from the process
            that made the manager takes a new one). One given must differ in every
            process.
        publish_events: publish every task event through the backend so every instance
            sees every instance's events (default: on for shared backends).
        require_backend_at_startup: fail the app's startup when the store cannot be
            reached. By default the app starts anyway: the outage is logged, ``add_task()``
            raises ``BackendUnavailableError`` (a ``503`` with ``install()``) until the
            store answers, and the engine connects on its own once it does.
        retention: how long finished tasks (SUCCESS, FAILED, INTERRUPTED, CANCELLED,
            REJECTED) are kept, counted from when they finished; older ones are deleted
            in the background by every instance. Default 7 days; None keeps them all.
            Active tasks are never deleted. (The memory backend also caps how many
            records it keeps, see ``MemoryBackend(max_records=...)``.)
    """

    def __init__(
        self,
        backend: str | TaskBackend | None = None,
        *,
        observers: Iterable[Observer] = (),
        queues: Mapping[str, QueueConfig] | None = None,
        sync_workers: int | None = None,
        shutdown_timeout: float = 30.0,
        liveness_seconds: float = 5.0,
        poll_interval: float = 1.0,
        clock: Clock | None = None,
        instance_id: str | None = None,
        publish_events: bool | None = None,
        require_backend_at_startup: bool = False,
        retention: timedelta | None = DEFAULT_RETENTION,
    ) -> None:
        retention = check_retention(retention)
        clock = _check_clock(clock) or SystemClock()
        if publish_events is not None and not isinstance(publish_events, bool):
            raise InvalidTaskError(
                f"publish_events must be True, False or None (the backend's default), got "
                f"{publish_events!r}"
            )
        if backend is None or isinstance(backend, str):
            backend = open_backend(backend, clock=clock)
        elif not callable(getattr(backend, "open", None)):
            raise InvalidTaskError(
                "backend must be a URL such as 'sqlite:///tasks.db' (or None for "
                f"memory://, or a backend object), got {type(backend).__name__}"
            )
        self.backend: TaskBackend = backend
        self.registry = TaskRegistry()
        if isinstance(observers, str | bytes) or not isinstance(observers, Iterable):
            raise InvalidTaskError(
                "observers must be a list of observers, e.g. observers=[LoggingObserver()], "
                f"got {type(observers).__name__}"
            )
        self.observers = ObserverChain(observers)
        shutdown_timeout = _check_seconds("shutdown_timeout", shutdown_timeout, 30.0, zero=True)
        self.shutdown_timeout = shutdown_timeout
        self._engine = Engine(
            backend,
            clock=clock,
            registry=self.registry,
            observers=self.observers,
            queues=_check_queues(queues),
            sync_workers=_check_sync_workers(sync_workers),
            liveness_seconds=_check_seconds("liveness_seconds", liveness_seconds, 5.0),
            poll_interval=_check_seconds("poll_interval", poll_interval, 1.0),
            instance_id=_check_instance_id(instance_id),
            publish_events=publish_events,
            require_backend_at_startup=require_backend_at_startup,
            retention=retention,
        )
        self.retention = retention
        """How long finished tasks are kept (None: forever)."""
        self.store = TaskStore(self._engine)
        """Read tasks: ``store.get(task_id)``, ``store.query(...)``, ``store.stats()``."""
        self._scheduler = Scheduler(self._engine)
        self._engine.rehydrate = partial(rehydrate, self._engine)
        self._engine.start_hooks += [
            partial(start_recovery, self._engine),
            self._scheduler.start,
            partial(cancellation.start_watcher, self._engine),
        ]

    @property
    def instance_id(self) -> str:
        """This instance's id, as written in heartbeats and as its tasks' owner."""
        return self._engine.instance_id

    @property
    def clock(self) -> Clock:
        """The time source tasks are stamped with."""
        return self._engine.clock

    def queue_names(self) -> set[str]:
        """The queues this instance knows: ``default``, configured ones, tasks' own."""
        return self._engine._known_queues()

    def queue_limit(self, queue: str) -> int | None:
        """The ``max_size`` configured for ``queue`` (None: unbounded or unknown)."""
        config = self._engine.queues.get(queue)
        return None if config is None else config.max_size

    async def opened_backend(self) -> TaskBackend:
        """Start the engine if needed and return its opened backend (admin tools use it)."""
        return await self._engine.started_backend()

    # -- registering ------------------------------------------------------------------

    def task(
        self,
        *,
        retries: int = 0,
        delay: float = 0.0,
        backoff: float = 1.0,
        name: str | None = None,
        eager: bool = False,
        priority: int | None = None,
        queue: str | None = None,
        requeue_on_interrupt: bool = False,
        timeout: float | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        max_delay: float | None = None,
        jitter: float = 0.0,
    ) -> Callable[[F], F]:
        """Register a task function: ``@task_manager.task(retries=3, delay=1, backoff=2)``.

        The function itself is returned unchanged, so it can still be called directly.

        Args:
            retries: how many times a failing attempt is retried.
            delay: seconds before the first retry.
            backoff: multiplier of the delay for each further retry (2 doubles it).
            name: the name the task is stored and recovered under (default
                ``module.qualname``).
            eager: start when ``add_task()`` is called instead of after the response.
            priority: always run through the priority queue with this priority.
            queue: the named queue to run on (see ``TaskManager(queues=...)``).
            requeue_on_interrupt: run again if the instance running it dies (at least
                once) instead of becoming INTERRUPTED.
            timeout: seconds one attempt may run; a longer one fails with
                ``TaskTimeoutError`` (and is retried if retries remain).
            retry_on: retry only failures that are instances of these exception
                classes (one class, or a tuple); any other ends the task FAILED at once.
                Default: every failure is retried.
            max_delay: the longest wait between attempts in seconds, however far
                ``backoff`` has grown it (default: no cap).
            jitter: the share of each wait left to chance, from 0 (default: exact
                waits) to 1: each wait is drawn between ``(1 - jitter)`` times the
                computed wait and the computed wait, so tasks that failed together do
                not all retry at the same moment.

        Raises:
            InvalidTaskError: bad settings, or a non-callable.
        """

        def register(target: F) -> F:
            if not callable(target):
                raise InvalidTaskError(
                    f"@task_manager.task() must decorate a function, got {target!r}"
                )
            config = TaskConfig(
                name=name or default_name(target),
                retries=retries,
                delay=delay,
                backoff=backoff,
                eager=eager,
                priority=priority,
                queue=queue,
                requeue_on_interrupt=requeue_on_interrupt,
                timeout=timeout,
                retry_on=retry_on,  # type: ignore[arg-type]  # normalised to a tuple
                max_delay=max_delay,
                jitter=jitter,
            )
            self.registry.register(target, config)
            return target

        TaskConfig(  # validate now, so a bad decorator fails at import time
            name=name or "_",
            retries=retries,
            delay=delay,
            backoff=backoff,
            eager=eager,
            priority=priority,
            queue=queue,
            requeue_on_interrupt=requeue_on_interrupt,
            timeout=timeout,
            retry_on=retry_on,  # type: ignore[arg-type]
            max_delay=max_delay,
            jitter=jitter,
        )
        return register

    # -- schedules --------------------------------------------------------------------

    def schedule(
        self,
        *,
        every: timedelta | float | None = None,
        cron: str | None = None,
        timezone: str | None = None,
        run_on_startup: bool = False,
        overlap: bool = True,
        name: str | None = None,
        retries: int = 0,
        delay: float = 0.0,
        backoff: float = 1.0,
        priority: int | None = None,
        queue: str | None = None,
        timeout: float | None = None,
        retry_on: type[BaseException] | tuple[type[BaseException], ...] | None = None,
        max_delay: float | None = None,
        jitter: float = 0.0,
        requeue_on_interrupt: bool = False,
    ) -> Callable[[F], F]:
        """Run a function periodically: ``@task_manager.schedule(cron="0 2 * * *")``.

        Each firing is an ordinary task (record, retries, logs, events). With several
        instances on one shared backend each tick fires exactly once in total. A tick
        that passes while no instance runs is not fired later. The function takes no
        arguments and is registered as a task (it can also be added by hand).

        Args:
            every: the interval (a ``timedelta`` or seconds); ticks fall on whole
                multiples of it since the Unix epoch (UTC).
            cron: a 5-field cron expression (needs ``taskflow-core[cron]``).
            timezone: the IANA zone ``cron`` is read in (default UTC).
            run_on_startup: also fire the latest tick when the manager starts, unless
                some instance already fired it.
            overlap: False to skip a tick while an earlier firing of the schedule has
                not finished (PENDING, a retry waiting, or RUNNING, on any instance).
            name: the schedule's and the task's name (default ``module.qualname``).
            retries: retries of a failing firing.
            delay: seconds before the first retry.
            backoff: delay multiplier per further retry.
            priority: the firings' queue priority.
            queue: the named queue the firings run on.
            timeout: seconds one attempt of a firing may run.
            retry_on: retry only failures that are instances of these exception
                classes (as for :meth:`task`).
            max_delay: the longest wait between attempts in seconds (as for
                :meth:`task`).
            jitter: the share of each wait left to chance, from 0 to 1 (as for
                :meth:`task`).
            requeue_on_interrupt: run a firing again (at least once) when the instance
                running it shuts down or dies, instead of marking it INTERRUPTED.

        Raises:
            ScheduleError: not exactly one of ``every``/``cron``, or bad values.
        """
        register_task = self.task(
            retries=retries,
            delay=delay,
            backoff=backoff,
            name=name,
            priority=priority,
            queue=queue,
            timeout=timeout,
            retry_on=retry_on,
            max_delay=max_delay,
            jitter=jitter,
            requeue_on_interrupt=requeue_on_interrupt,
        )
        Schedule.build(  # validate now, so a bad decorator fails at import time
            name or "_",
            every=every,
            cron=cron,
            timezone=timezone,
            run_on_startup=run_on_startup,
            overlap=overlap,
        )

        def register(target: F) -> F:
            _check_takes_no_arguments(target)
            register_task(target)
            entry = self.registry.resolve(target)
            plan = Schedule.build(
                entry.config.name,
                every=every,
                cron=cron,
                timezone=timezone,
                run_on_startup=run_on_startup,
                overlap=overlap,
            )
            self._scheduler.add(plan, target, entry.config)
            return target

        return register

    async def schedule_once(
        self,
        func: Callable[..., Any],
        *args: Any,
        run_at: datetime | None = None,
        delay: timedelta | float | None = None,
        run_key: str | None = None,
        tags: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> str:
        """Run ``func(*args, **kwargs)`` once, later; return the task id.

        The firing is stored in the backend: on a shared backend it survives restarts
        and runs exactly once on whichever instance is up when it is due. Scheduling the
        same ``run_key`` again moves the pending firing (it is replaced, and the new id
        returned). On the memory backend it lives in this process only.

        Args:
            func: the task function (register it, so other instances can run it).
            *args: its positional arguments (JSON-encodable on shared backends).
            run_at: when to run (an aware ``datetime``).
            delay: or how long from now (a ``timedelta`` or seconds).
            run_key: a name for the firing, to move it or ``cancel_scheduled()`` it:
                1 to 1,024 characters without a NUL or a lone surrogate.
            tags: tags of the task.
            **kwargs: its keyword arguments.

        Raises:
            ScheduleError: not exactly one of ``run_at``/``delay``, a naive ``run_at``,
                a negative delay or a bad ``run_key``.
            TaskArgumentError: an argument cannot be stored on a shared backend.
        """
        return await one_off.schedule_once(
            self._engine,
            func,
            args,
            kwargs,
            run_at=run_at,
            delay=delay,
            run_key=run_key,
            tags=tags,
        )

    async def cancel_scheduled(self, run_key: str) -> bool:
        """Call off the pending one-off firing named ``run_key``; True if there was one.

        The firing's task becomes CANCELLED and never runs.
        """
        return await one_off.cancel_scheduled(self._engine, run_key)

    async def list_scheduled(self) -> list[ScheduledTask]:
        """Return every pending one-off firing (from every instance), soonest first."""
        return await one_off.list_scheduled(self._engine)

    # -- cancellation -----------------------------------------------------------------

    async def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a task, on whichever instance holds it; return its record.

        A PENDING task becomes CANCELLED and never starts. A RUNNING async task is
        cancelled where it runs (``CancelledError`` at its next ``await``) and ends
        CANCELLED; a RUNNING sync task sees ``get_task_context().cancel_requested`` and
        should stop itself. The returned record is then still RUNNING, with
        ``cancel_requested`` set. CANCELLED is final and never retried; the task keeps
        its idempotency key. Cancelling a CANCELLED task returns it unchanged.

        Raises:
            TaskNotFoundError: no task has this id.
            TaskStateError: the task already ended (SUCCESS, FAILED, ...).
            InvalidOperationError: ``task_id`` is not a string.
        """
        return await cancellation.cancel(self._engine, task_id)

    def cancel_sync(self, task_id: str) -> TaskRecord:
        """Blocking :meth:`cancel`, for ``def`` routes and scripts."""
        return cancellation.cancel_sync(self._engine, task_id)

    # -- injection --------------------------------------------------------------------

    async def get_tasks(self, background_tasks: BackgroundTasks) -> ManagedBackgroundTasks:
        """FastAPI dependency: ``tasks = Depends(task_manager.get_tasks)``.

        Returns a ``ManagedBackgroundTasks`` wrapping the request's ``BackgroundTasks``
        so its tasks run after the response.
        """
        await self._engine.started()
        if isinstance(background_tasks, ManagedBackgroundTasks) and (
            background_tasks.task_manager is self
        ):
            return background_tasks
        return ManagedBackgroundTasks(self, background_tasks)

    def install(self, app: FastAPI) -> None:
        """Make this manager serve ``app``: managed ``BackgroundTasks`` parameters,
        tasks durable before the response, and start/shutdown with the app's lifespan.

        Affects only ``app``: other apps in the process keep plain ``BackgroundTasks``.
        """
        from .integration import install_app

        install_app(self, app)

    # -- enqueuing without a request --------------------------------------------------

    def add_task(
        self,
        func: Callable[..., Any],
        *args: Any,
        idempotency_key: str | None = None,
        tags: dict[str, str] | None = None,
        priority: int | None = None,
        **kwargs: Any,
    ) -> str:
        """Enqueue a task without a request (startup hooks, scripts, other tasks).

        The task goes to its queue and starts as soon as a worker slot is free on the
        running event loop; if no loop runs yet, it starts when the manager starts
        (``async with task_manager`` or the app's lifespan). On a shared store, with no
        event loop at all (a script), the record is written before this returns, so any
        instance runs it even if the script exits right after. Returns the task id.
        Arguments as for :meth:`ManagedBackgroundTasks.add_task`.

        Raises:
            BackendUnavailableError: the store cannot be reached (nothing was accepted).
        """
        return self._engine.accept(
            func,
            args,
            kwargs,
            idempotency_key=idempotency_key,
            tags=tags,
            eager=None,
            priority=priority,
            sink=None,
        )

    async def purge(self, older_than: timedelta | None = None) -> int:
        """Delete finished tasks that finished more than ``older_than`` ago, now.

        ``older_than`` defaults to ``retention``. Active tasks are never deleted.
        Returns how many tasks were deleted. The background loop does the same every
        so often; call this for a one-off clean-up (a script, an admin route).

        Raises:
            InvalidTaskError: ``older_than`` is not a positive ``timedelta``, or it is
                None while ``retention`` is None too.
        """
        keep = check_retention(older_than, "older_than") or self.retention
        if keep is None:
            raise InvalidTaskError(
                "purge() needs older_than= (for example timedelta(days=1)): this manager "
                "has retention=None"
            )
        backend = await self._engine.started_backend()
        await self._engine.flush()
        return await self._engine.retention.purge(backend, keep)

    def events(
        self, *, backlog: int = STREAM_BACKLOG
    ) -> AbstractAsyncContextManager[AsyncIterator[LifecycleEvent | LogEvent]]:
        """Stream every task event from now on, from every instance on a shared backend.

        ``async with task_manager.events() as stream: async for event in stream: ...``

        Args:
            backlog: how many unread events the stream holds for a reader that falls
                behind; past that the oldest are dropped, with a warning (a stuck
                reader must not grow the process's memory without bound).

        Raises:
            InvalidOperationError: ``backlog`` is not a positive integer.
        """
        if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 1:
            raise InvalidOperationError(
                f"events(backlog=...) must be a positive integer, got {backlog!r}"
            )
        return self._engine.hub.stream(backlog)

    # -- lifecycle --------------------------------------------------------------------

    async def startup(self) -> None:
        """Start the engine on the running loop (optional: it starts on first use).

        After ``shutdown()`` this starts it again.
        """
        await self._engine.resume()

    async def shutdown(self, timeout: float | None = None) -> None:
        """Stop taking work, give running tasks ``timeout`` seconds (default
        ``shutdown_timeout``), then mark the rest INTERRUPTED and release resources.

        Returns within ``timeout`` + :data:`~fastapi_taskflow.shutdown.CLEANUP_SECONDS`
        seconds even when the store does not answer: what still waits for it then is
        cancelled, and what this instance still owns is adopted by another instance
        after ``liveness_seconds``."""
        if timeout is None:
            timeout = self.shutdown_timeout
        else:
            timeout = _check_seconds("timeout", timeout, self.shutdown_timeout, zero=True)
        await shutdown(self._engine, timeout)

    async def __aenter__(self) -> TaskManager:
        await self.startup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.shutdown()

    @asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """A lifespan for ``FastAPI(lifespan=task_manager.lifespan)`` when not installing."""
        async with self:
            yield


def _check_sync_workers(sync_workers: object) -> int:
    if sync_workers is None:
        return DEFAULT_SYNC_WORKERS
    if isinstance(sync_workers, bool) or not isinstance(sync_workers, int) or sync_workers < 1:
        raise InvalidTaskError(
            f"sync_workers must be a whole number of threads, at least 1 (default "
            f"{DEFAULT_SYNC_WORKERS}), got {sync_workers!r}"
        )
    return sync_workers


def _check_takes_no_arguments(target: Callable[..., Any]) -> None:
    # A firing calls the function with no arguments: one that needs some would fail
    # at every tick instead of at import time.
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return  # no signature to read (a builtin): the firing will tell
    try:
        signature.bind()
    except TypeError:
        needed = [
            name
            for name, parameter in signature.parameters.items()
            if parameter.default is parameter.empty
            and parameter.kind
            in (parameter.POSITIONAL_ONLY, parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
        ]
        raise ScheduleError(
            f"a schedule calls {getattr(target, '__qualname__', target)!r} with no "
            f"arguments, but it needs {', '.join(needed)}: give them defaults, or schedule "
            "a function that takes none and calls it"
        ) from None


def _check_queues(queues: object) -> dict[str, QueueConfig]:
    if queues is None:
        return {}
    if not isinstance(queues, Mapping):
        raise InvalidTaskError(
            f"queues must map queue names to QueueConfig, e.g. "
            f"queues={{'emails': QueueConfig(concurrency=2)}}, got {type(queues).__name__}"
        )
    checked: dict[str, QueueConfig] = {}
    for name, config in queues.items():
        if not isinstance(name, str) or not name:
            raise InvalidTaskError(f"a queue name must be a non-empty string, got {name!r}")
        check_name("queue name", name)
        if not isinstance(config, QueueConfig):
            raise InvalidTaskError(
                f"queues[{name!r}] must be a QueueConfig, e.g. QueueConfig(concurrency=2), "
                f"got {type(config).__name__}"
            )
        checked[name] = config
    return checked


def _check_clock(clock: object) -> Clock | None:
    if clock is not None and not callable(getattr(clock, "now", None)):
        raise InvalidTaskError(
            f"clock must have a now() method (SystemClock, ManualClock), got {type(clock).__name__}"
        )
    return clock  # type: ignore[return-value]


def _check_instance_id(instance_id: object) -> str | None:
    if instance_id is None or instance_id == "":
        return None  # one is generated per process
    if not isinstance(instance_id, str):
        raise InvalidTaskError(
            f"instance_id must be a string (or None to generate one), got "
            f"{type(instance_id).__name__}"
        )
    if len(instance_id) > NAME_MAX:
        raise InvalidTaskError(
            f"instance_id is {len(instance_id)} characters; the limit is {NAME_MAX}"
        )
    check_text("instance_id", instance_id)
    return instance_id


def _check_seconds(name: str, value: object, default: float, *, zero: bool = False) -> float:
    # ``value`` as a float when it is a finite number of seconds above zero (or zero,
    # when ``zero``); else an error naming the setting, at construction rather than
    # when it is first used (a ``shutdown_timeout`` given as text failed the shutdown).
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not (value >= 0 if zero else value > 0)
    ):
        kind = "a number of seconds, 0 or more" if zero else "a positive number of seconds"
        raise InvalidTaskError(f"{name} must be {kind} (default {default}), got {value!r}")
    return float(value)
