"""Running one attempt of a task: status transitions, context, retries, events.

Every status change is a compare-and-set in the store, so a task is started by exactly
one executor, and a late result (a sync function that outlived a shutdown) never
overwrites a final status.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from . import context as task_context
from . import progress, supervision
from .encoding import encode_result
from .errors import BackendUnavailableError, TaskCancelledError
from .events import LogEvent
from .failure import describe, format_traceback
from .limits import clean_text, storable_changes, storable_entries
from .models import (
    APPLIED,
    Applied,
    LiveRecord,
    LogEntry,
    LogLine,
    TaskRecord,
    TaskStatus,
    TaskUpdate,
    construct,
    log_entry,
    log_line,
)
from .runtime import reraise_if_cancelled

if TYPE_CHECKING:
    from .engine import Engine
    from .invocation import Invocation

__all__ = ["OutcomeNotWritten", "execute", "write_running_lines"]

_T = TypeVar("_T")


def __getattr__(name: str) -> Any:
    """``make_background_func`` lives in ``background`` (it needs the manager, which this
    module must not import); the reference pages import it from here."""
    if name == "make_background_func":
        from .background import make_background_func

        return make_background_func
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


logger = logging.getLogger("fastapi_taskflow")

_PENDING = frozenset({TaskStatus.PENDING})
_RUNNING = frozenset({TaskStatus.RUNNING})
_RUNNING_STATUS = TaskStatus.RUNNING
_PENDING_STATUS = TaskStatus.PENDING
_SUCCESS = TaskStatus.SUCCESS
_NO_ARGS: tuple[Any, ...] = ()

Changes = dict[str, Any]
"""The fields a status change sets (the keys of :class:`~fastapi_taskflow.models.TaskUpdate`)."""

TransitionNow = Callable[..., LiveRecord | None]
"""An in-process store's ``transition_now``."""

Kept = TaskRecord | LiveRecord
"""A record as a status change returns it: a snapshot from a shared store, or the
record an in-process store keeps (changed in place by the task's next change)."""


def _running(
    task_id: str, invocation: Invocation, attempt: int, started_at: datetime, owner: str
) -> LiveRecord:
    """What the attempt needs of a record it started without reading it back (a start
    answered ``APPLIED``): the RUNNING record as this instance wrote it, from what the
    invocation holds of it. Its ``created_at`` is not known here (``started_at`` stands
    in): it is never stored or handed out, and an event built from it (a listener that
    arrived while the start was being written) carries none of the fields it lacks."""
    return LiveRecord(  # by position, every parameter (see LiveRecord)
        task_id,
        invocation.func_name,
        started_at,  # created_at
        _RUNNING_STATUS,  # status
        invocation.queue,  # queue
        invocation.priority,  # priority
        _NO_ARGS,  # args
        None,  # kwargs
        invocation.tags,  # tags
        None,  # idempotency_key
        attempt,  # attempt
        invocation.config.retries,  # max_retries
        invocation.requeue_on_interrupt,  # requeue_on_interrupt
        started_at,  # updated_at
        owner,  # owner
    )


def _snapshot(record: Kept) -> TaskRecord:
    """``record`` as a ``TaskRecord`` that no later change touches (for events and the
    queue)."""
    return record.to_record() if isinstance(record, LiveRecord) else record


_NOT_RUNNING = "task %s was no longer RUNNING; its outcome was not recorded"

_REFUSED = "the task store refused this task's outcome, so it is not known"


class OutcomeNotWritten(Exception):
    """The store refused a task's outcome even without its result: the task is ended
    INTERRUPTED in the background, with retries (``end_unwritten``)."""


async def execute(
    engine: Engine,
    task_id: str,
    invocation: Invocation,
    *,
    claimed: bool,
    finishing: list[asyncio.Task[None]] | None = None,
    current: asyncio.Task[Any] | None = None,
    taken_over: bool = False,
) -> None:
    """Run ``task_id`` if it is PENDING, and record what happened.

    Args:
        engine: the engine the task belongs to.
        task_id: the task to run.
        invocation: the function and arguments.
        claimed: the task came off a queue (claimed by this instance) rather than
            from this instance's own list of accepted tasks.
        finishing: when given (a container running its tasks one after another on a
            shared store), a successful outcome is written by a task added to this list,
            and ``execute`` returns before that write commits: the next task's start
            then shares the write (group commit). The container awaits the list.
        current: the asyncio task this runs in, when the caller knows it already.
        taken_over: the task was accepted by another instance (its record rebuilt
            here): its start is announced to the others even if nobody reads events,
            so the instance that accepted it lets go of it (see ``cancellation``).

    The PENDING → RUNNING compare-and-set makes this instance the task's owner and
    admits one starter, whoever else tries. A failed attempt whose retry is due at once
    (``delay=0``) is retried right here, through PENDING → RUNNING again, without a trip
    through the queue; a later retry goes to the queue with its not-before time.
    """
    owner = engine.instance_id
    clock = engine.clock
    in_process = engine.transition_now
    start_now = engine.start_now
    finish_now = engine.finish_now
    hub = engine.hub
    runtime = engine.runtime()
    running = runtime.running
    if current is None:
        current = asyncio.current_task(runtime.loop)  # no getpid() (see Runtime.is_current)
        assert current is not None
    loop = current.get_loop()
    while True:  # one attempt per turn; again when a retry is due at once
        attempt = invocation.attempts + 1
        started_at = clock.now()
        record: Kept | None
        if start_now is not None:  # a store in this process: no await, nothing to retry
            record = start_now(task_id, attempt=attempt, started_at=started_at, owner=owner)
        else:
            started = await _transition(
                engine,
                task_id,
                expected=_PENDING,
                new=_RUNNING_STATUS,
                changes={
                    "attempt": attempt,
                    "started_at": started_at,
                    "owner": owner,
                    "error": None,
                },
                landed=_started_by(owner, attempt, started_at),
                read_back=hub.listening,
            )
            record = (
                _running(task_id, invocation, attempt, started_at, owner)
                if started is APPLIED
                else started
            )
        if record is None:  # cancelled, or started by someone else
            return
        invocation.attempts = attempt
        running[task_id] = current
        if hub.listening or taken_over:
            await engine.emit_lifecycle(_snapshot(record), signal=taken_over)
            taken_over = False  # a retry here needs no second word
        # On a shared backend a reader may come while the task runs: lines ask then.
        on_log = engine.log_emitter() if hub.publish or hub.listening else None
        is_async = invocation.is_async
        ctx = supervision.Attempt(
            task_id,
            record.func_name,
            attempt,
            record.tags,
            clock,
            on_log,
            engine.progress_wiring,
            loop,
            current,
            is_async,
        )
        again = False
        succeeded: Changes | None = None
        try:
            token = task_context.bind(ctx)
            # Timeout, cancellation and progress of the attempt: see supervision.py
            # (inline here: no coroutine frame of its own). What the call raised is
            # dispatched below, outside the ``except``: no re-raise.
            scopes = engine.cancel_scopes
            supervision.enter(scopes, ctx, invocation.config.timeout)
            raised: BaseException | None = None
            try:
                result = await (
                    invocation.func(*invocation.args, **invocation.kwargs)
                    if is_async
                    else _call_in_thread(engine, invocation, ctx)
                )
            except BaseException as exc:
                raised = supervision.failure(ctx, exc) or exc
            finally:
                supervision.leave(scopes, ctx)
                task_context.unbind(token)
                if ctx._reporter is not None:  # it reported: write what is unwritten
                    await progress.close(ctx)
            try:
                if raised is None and in_process is not None:  # a store in this process
                    ended: LiveRecord | None
                    if result is None and ctx._entries is None and finish_now is not None:
                        # nothing to make storable: the shortest way
                        ended = finish_now(task_id, status=_SUCCESS, finished_at=clock.now())
                        if ended is None:
                            logger.info(_NOT_RUNNING, task_id)
                    else:
                        done = _success(clock.now(), result)
                        ended = _finish_now(engine, in_process, task_id, ctx, _SUCCESS, done)
                    if ended is not None and hub.listening:
                        await engine.emit_lifecycle(_snapshot(ended))
                    engine.forget(task_id)
                elif raised is None:
                    done = _success(clock.now(), result)
                    if finishing is not None:
                        succeeded = done
                    else:
                        await _finish(engine, record, ctx, _SUCCESS, done)
                        engine.forget(task_id)
                elif isinstance(raised, asyncio.CancelledError) and _stopped(current):
                    # a shutdown, or whoever runs the container, stopped the task
                    await _interrupted(engine, record, ctx)
                    raise raised
                elif isinstance(raised, KeyboardInterrupt):
                    await _interrupted(engine, record, ctx)  # never RUNNING forever
                    raise raised
                elif isinstance(raised, TaskCancelledError):
                    # task_manager.cancel(): CANCELLED, never retried
                    cancelled = {
                        "finished_at": engine.clock.now(),
                        "error": f"{type(raised).__name__}: {raised}",
                        "cancel_requested": True,
                    }
                    await _finish(engine, record, ctx, TaskStatus.CANCELLED, cancelled)
                    engine.forget(task_id)
                else:
                    # An exception, or what else the task's own code raised: SystemExit
                    # (sys.exit(), argparse), a CancelledError nobody asked for (a child
                    # task cancelled and awaited), a library's BaseException. A failure
                    # of this task, retried as any other: it does not end the app's
                    # event loop (asyncio would stop on a SystemExit leaving a task),
                    # nor the tasks after it.
                    again = await _failed(engine, record, invocation, ctx, raised)
            finally:
                raised = None  # the traceback holds this frame: no cycle left behind
        except Exception as exc:
            # The store refused the outcome (OutcomeNotWritten), or taskflow's own code
            # failed around the call (what the call raised was caught above: a defect).
            # Never RUNNING forever: end it INTERRUPTED (a plain write) once the store
            # takes it; the container's next tasks still run.
            engine.forget(task_id)
            runtime.spawn(
                end_unwritten(engine, record, error=_unwritten_error(task_id, exc)),
                name=f"taskflow-unwritten-{task_id}",
            )
            reraise_if_cancelled()
        finally:
            running.pop(task_id, None)
        if succeeded is not None and finishing is not None:
            # Counted as running until written, so a graceful shutdown waits for the write.
            writing = runtime.spawn(
                _finish_later(engine, record, ctx, succeeded), name=f"taskflow-finish-{task_id}"
            )
            running[task_id] = writing
            writing.add_done_callback(partial(_stop_counting, running, task_id, writing))
            finishing.append(writing)
        if not again:
            return


def _stopped(current: asyncio.Task[Any]) -> bool:
    """True when the asyncio task running an attempt was asked to stop (a shutdown,
    a server cancelling the request's task). A ``CancelledError`` raised while nobody
    asked is the task's own doing (Python >= 3.11 can tell; 3.10 takes it as a stop)."""
    cancelling = getattr(current, "cancelling", None)
    return cancelling is None or cancelling() > 0


def _success(finished_at: datetime, result: Any) -> Changes:
    """The fields of a successful outcome (the result as JSON data)."""
    return {
        "finished_at": finished_at,
        "result": result if result is None else encode_result(result),
        "error": None,
    }


def _started_by(owner: str, attempt: int, started_at: datetime) -> Callable[[TaskRecord], bool]:
    """Whether a record read back shows the start this attempt wrote (a lost reply)."""
    return lambda r: r.owner == owner and r.attempt == attempt and r.started_at == started_at


async def _finish_later(
    engine: Engine, record: Kept, ctx: task_context.TaskContext, changes: Changes
) -> None:
    """Write a successful outcome after ``execute`` returned (see its ``finishing``)."""
    try:
        await _finish(engine, record, ctx, _SUCCESS, changes)
    except Exception as exc:  # see execute
        engine.forget(record.task_id)
        await end_unwritten(engine, record, error=_unwritten_error(record.task_id, exc))
        return
    engine.forget(record.task_id)


def _unwritten_error(task_id: str, exc: Exception) -> str:
    """The error of a task whose outcome was not recorded: the store refused it
    (``OutcomeNotWritten``), or taskflow's own code failed (a defect: logged here with
    its traceback)."""
    if isinstance(exc, OutcomeNotWritten):
        return _REFUSED
    logger.exception("recording the outcome of task %s failed", task_id)
    reason = clean_text(f"{type(exc).__name__}: {exc}")[0][:500]
    return (
        f"taskflow failed to record this task's outcome ({reason}), so it is not known; "
        "the application log has the traceback"
    )


def _stop_counting(
    running: dict[str, asyncio.Task[Any]],
    task_id: str,
    task: asyncio.Task[Any],
    _: asyncio.Task[Any] | None = None,
) -> None:
    if running.get(task_id) is task:
        del running[task_id]


async def _call_in_thread(
    engine: Engine, invocation: Invocation, attempt: supervision.Attempt
) -> Any:
    """Run a sync task function on the engine's thread pool, in a copy of the current
    context (so ``get_task_context()`` works there); await what it returns if that is
    awaitable. A timeout counts from when the thread starts the call."""
    call = functools.partial(
        contextvars.copy_context().run, invocation.func, *invocation.args, **invocation.kwargs
    )
    loop = asyncio.get_running_loop()
    started = (
        None
        if invocation.config.timeout is None
        else functools.partial(loop.call_soon_threadsafe, supervision.thread_started, attempt)
    )
    result, raised = await loop.run_in_executor(engine.thread_pool, _outcome_of, call, started)
    if raised is not None:
        try:
            raise raised  # here, in this coroutine's frame: the caller's ``except`` sees it
        finally:
            raised = None  # its traceback holds this frame: no cycle left behind
    if inspect.isawaitable(result):
        return await result
    return result


def _outcome_of(
    call: Callable[[], Any], started: Callable[[], object] | None = None
) -> tuple[Any, BaseException | None]:
    """``call()``'s result, or what it raised, as a value (on the pool's thread).

    What a sync task raises must not travel through the pool's future: a
    ``StopIteration`` (``next()`` on an exhausted iterator) cannot be set on an asyncio
    future at all (the await would never return: the task RUNNING for ever, its
    request's next tasks never run), nor a ``GeneratorExit`` be thrown into the
    awaiting coroutine. Raised again by the awaiting coroutine, a ``StopIteration``
    becomes the ``RuntimeError`` an ``async def`` task raising it gets.

    ``started`` is called first, on this thread (it tells the loop the call begins).
    """
    if started is not None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits for it
            started()
    try:
        return call(), None
    except BaseException as exc:
        return None, exc


async def _failed(
    engine: Engine,
    record: Kept,
    invocation: Invocation,
    ctx: task_context.TaskContext,
    exc: BaseException,
) -> bool:
    """Record a failed attempt: PENDING again for a retry, else FAILED. True when the
    retry is due at once and runs in place (not while shutting down)."""
    error = describe(exc)
    attempt = ctx.attempt
    config = invocation.config
    retrying = attempt <= config.retries
    failed_line = f"attempt {attempt} failed: {error}"
    if retrying and config.retry_on is not None and not config.retries_for(exc):
        retrying = False
        failed_line += f" (not retried: retry_on takes only {_class_names(config.retry_on)})"
    delay = config.retry_delay(attempt) if retrying else 0.0
    traceback = format_traceback(exc)
    retry_line = f"retrying in {delay:g}s (retry {attempt} of {config.retries})"
    if ctx._on_log is not None:  # someone listens: announced as task_log() lines are
        ctx.log(failed_line, "error", traceback=traceback)
        if retrying:
            ctx.log(retry_line, "warning")
    else:  # kept only: both lines at once, as the tuples they are stored as
        now = engine.clock.now()
        failed_entry: LogLine = (now, "error", failed_line, attempt, (("traceback", traceback),))
        if retrying:
            ctx.add_lines(failed_entry, (now, "warning", retry_line, attempt, ()))
        else:
            ctx.add_line(failed_entry)
    if retrying:
        retry = {"error": error}
        in_process = engine.transition_now
        retried: Kept | None
        if in_process is not None:  # no coroutine for _finish
            retried = _finish_now(engine, in_process, record.task_id, ctx, _PENDING_STATUS, retry)
            if retried is not None and engine.listening:
                await engine.emit_lifecycle(_snapshot(retried))
        else:
            retried = await _finish(engine, record, ctx, _PENDING_STATUS, retry, read_back=True)
        if retried is None:
            return False
        if delay <= 0 and not engine.runtime().stopping:
            return True
        await engine.requeue(_snapshot(retried), delay, release=delay > 0)
        return False
    failed = {"finished_at": engine.clock.now(), "error": error}
    await _finish(engine, record, ctx, TaskStatus.FAILED, failed)
    engine.forget(record.task_id)
    return False


def _class_names(classes: tuple[type[BaseException], ...]) -> str:
    return ", ".join(cls.__name__ for cls in classes)


async def _interrupted(engine: Engine, record: Kept, ctx: task_context.TaskContext) -> None:
    error = "interrupted by shutdown"
    if supervision.cancel_asked(ctx):
        # cancelled before the shutdown cut it off: CANCELLED is final (never requeued)
        cancelled = {
            "finished_at": engine.clock.now(),
            "error": f"TaskCancelledError: task {record.task_id} was cancelled ({error})",
            "cancel_requested": True,
        }
        await _last_write(engine, _finish(engine, record, ctx, TaskStatus.CANCELLED, cancelled))
        return
    if engine.durable and record.requeue_on_interrupt:
        # At least once: another instance runs it again.
        again = await _last_write(
            engine,
            _finish(engine, record, ctx, TaskStatus.PENDING, {"error": error}, read_back=True),
        )
        if again is not None:
            await _last_write(engine, engine.requeue(_snapshot(again)))
        return
    interrupted = {"finished_at": engine.clock.now(), "error": error}
    await _last_write(engine, _finish(engine, record, ctx, TaskStatus.INTERRUPTED, interrupted))


async def _last_write(engine: Engine, write: Coroutine[Any, Any, _T]) -> _T:
    """Await ``write``, an interrupted task's last write, shielded from the task's own
    cancellation (which is what interrupted it) but as a task of the runtime: a
    shutdown cancels it with the runtime's other background tasks once the running
    tasks had their time (a store that stays unreachable would have it retried for
    ever), so nothing of the instance writes after ``shutdown()`` returns."""
    return await asyncio.shield(engine.runtime().spawn(write, awaited=True))


def _prepare(
    engine: Engine, ctx: task_context.TaskContext, changes: Changes
) -> tuple[list[LogLine] | None, Changes]:
    """The attempt's unwritten log lines and ``changes``, made storable (a note says
    how many characters were replaced, if any)."""
    lines = ctx.take_lines()
    replaced = 0
    if lines:
        lines, replaced = _storable_lines(lines)
    error = changes.get("error")
    if changes.get("result") is not None or (
        error is not None and (not error.isascii() or "\x00" in error)
    ):
        changes, replaced_too = storable_changes(changes)
        replaced += replaced_too
    if replaced:
        note = (
            f"{replaced} character(s) no task store can hold (NUL, lone surrogates) were "
            f"replaced with U+FFFD in this task's result, error or log lines"
        )
        if changes.get("error") is not None:
            changes = {**changes, "error": f"{changes['error']} [{note}]"}
        if lines is None:
            lines = []
        lines.append((engine.clock.now(), "warning", note, ctx.attempt, ()))
    return lines, changes


def write_running_lines(
    engine: Engine, ctx: task_context.TaskContext
) -> Coroutine[Any, Any, None] | None:
    """Write the unwritten log lines of ``ctx``, an attempt still running (what the
    engine's ``log_flush.LogFlusher`` calls): at once on a store in this process, else
    the coroutine that writes them (None: nothing to write)."""
    lines, _ = _prepare(engine, ctx, {})
    if not lines:
        return None
    if engine.append_now is not None:
        engine.append_now(ctx.task_id, lines)
        return None
    return _append_logs(engine, ctx.task_id, [log_entry(line) for line in lines])


def _finish_now(
    engine: Engine,
    in_process: TransitionNow,
    task_id: str,
    ctx: task_context.TaskContext,
    status: TaskStatus,
    changes: Changes,
) -> LiveRecord | None:
    """:func:`_finish` on a store in this process, without a coroutine and without
    telling observers (the caller does, when someone listens)."""
    if ctx._entries is not None or changes.get("result") is not None or changes.get("error"):
        lines, changes = _prepare(engine, ctx, changes)
        if lines:
            assert engine.append_now is not None
            engine.append_now(task_id, lines)
    done = in_process(
        task_id, expected=_RUNNING, new=status, changes=changes, at=changes.get("finished_at")
    )
    if done is None:
        logger.info(_NOT_RUNNING, task_id)
    return done


@overload
async def _finish(
    engine: Engine,
    record: Kept,
    ctx: task_context.TaskContext,
    status: TaskStatus,
    changes: Changes,
    *,
    read_back: Literal[True],
) -> Kept | None: ...


@overload
async def _finish(
    engine: Engine,
    record: Kept,
    ctx: task_context.TaskContext,
    status: TaskStatus,
    changes: Changes,
    *,
    read_back: bool = False,
) -> Kept | Applied | None: ...


async def _finish(
    engine: Engine,
    record: Kept,
    ctx: task_context.TaskContext,
    status: TaskStatus,
    changes: Changes,
    *,
    read_back: bool = False,
) -> Kept | Applied | None:
    """Write the attempt's log lines, then move ``record`` from RUNNING to ``status``
    with ``changes``; the record written, or None when it was no longer RUNNING.

    On a shared store the record is read back only when ``read_back`` says the caller
    needs it, or someone listens for events; else a change that applied may answer
    ``APPLIED``."""
    in_process = engine.transition_now
    done: Kept | Applied | None
    if in_process is not None:  # a store in this process: no await, nothing to retry
        done = _finish_now(engine, in_process, record.task_id, ctx, status, changes)
        if done is None:
            return None
    else:
        if engine.log_flusher.writing:  # this attempt's earlier lines land first
            await engine.log_flusher.settled(record.task_id)
        lines, changes = _prepare(engine, ctx, changes)
        if lines:
            await _append_logs(engine, record.task_id, [log_entry(line) for line in lines])
        try:
            done = await _transition(
                engine,
                record.task_id,
                expected=_RUNNING,
                new=status,
                changes=changes,
                landed=lambda r: r.attempt == record.attempt and r.updated_at >= record.updated_at,
                read_back=read_back or engine.listening,
            )
        except Exception as exc:
            reraise_if_cancelled()
            done = await _finish_plainly(engine, record, status, changes, exc)
        if done is None:
            logger.info(_NOT_RUNNING, record.task_id)
            return None
    if engine.listening and not isinstance(done, Applied):
        await engine.emit_lifecycle(_snapshot(done))
    return done


def _storable_lines(lines: list[LogLine]) -> tuple[list[LogLine], int]:
    """``storable_entries`` for lines kept as tuples: a plain ASCII line (the common
    case) is kept as it is; any other goes through ``storable_entries``."""
    for line in lines:  # the common case first: every line plain, the list kept as it is
        message, extra = line[2], line[4]
        if not (message.isascii() and "\x00" not in message and (not extra or _plain_ascii(extra))):
            break
    else:
        return lines, 0
    out: list[LogLine] = []
    replaced = 0
    for line in lines:
        message, extra = line[2], line[4]
        if message.isascii() and "\x00" not in message and (not extra or _plain_ascii(extra)):
            out.append(line)
            continue
        (entry,), n = storable_entries([log_entry(line)])
        out.append(
            log_line(entry.timestamp, entry.level, entry.message, entry.attempt, entry.extra)
        )
        replaced += n
    return out, replaced


def _plain_ascii(extra: tuple[tuple[str, Any], ...]) -> bool:
    """True when ``extra`` pairs ASCII text with ASCII text (storable as it is)."""
    for key, value in extra:
        if type(value) is not str or not value.isascii() or not key.isascii():
            return False
    return True


async def _append_logs(engine: Engine, task_id: str, entries: list[LogEntry]) -> None:
    """Store an attempt's log lines on a shared store; a refusal is logged, and the
    outcome is written without them."""
    backend = engine.backend
    try:
        await engine.availability.persist(lambda: backend.append_logs(task_id, entries))
    except Exception as exc:
        reraise_if_cancelled()
        logger.error(
            "the task store refused the log lines of task %s (%s); the outcome is "
            "written without them",
            task_id,
            exc,
        )


async def _finish_plainly(
    engine: Engine, record: Kept, status: TaskStatus, changes: Changes, exc: Exception
) -> TaskRecord | None:
    """Write ``status`` without the result and with a plain error after the store refused
    the full outcome; raise ``OutcomeNotWritten`` if it refuses that too."""
    reason = clean_text(f"{type(exc).__name__}: {exc}")[0][:500]
    logger.error("the task store refused the outcome of task %s: %s", record.task_id, reason)
    plain = {k: v for k, v in changes.items() if k not in ("result", "error")}
    plain["error"] = (
        f"the task store refused this task's outcome ({reason}); its result and "
        "error message were not stored"
    )
    try:
        return await _transition(
            engine,
            record.task_id,
            expected=_RUNNING,
            new=status,
            changes=plain,
            landed=lambda r: r.attempt == record.attempt,
        )
    except Exception as again:
        reraise_if_cancelled()
        logger.error(
            "the task store refused the outcome of task %s again (%s); it will be ended "
            "INTERRUPTED",
            record.task_id,
            again,
        )
        raise OutcomeNotWritten(record.task_id) from again


@overload
async def _transition(
    engine: Engine,
    task_id: str,
    *,
    expected: frozenset[TaskStatus],
    new: TaskStatus,
    changes: Changes,
    landed: Callable[[TaskRecord], bool],
    read_back: Literal[True] = ...,
) -> TaskRecord | None: ...


@overload
async def _transition(
    engine: Engine,
    task_id: str,
    *,
    expected: frozenset[TaskStatus],
    new: TaskStatus,
    changes: Changes,
    landed: Callable[[TaskRecord], bool],
    read_back: bool,
) -> TaskRecord | Applied | None: ...


async def _transition(
    engine: Engine,
    task_id: str,
    *,
    expected: frozenset[TaskStatus],
    new: TaskStatus,
    changes: Changes,
    landed: Callable[[TaskRecord], bool],
    read_back: bool = True,
) -> TaskRecord | Applied | None:
    """Compare-and-set on a shared store through outages, telling a lost reply from a
    lost race (``read_back``: see ``Transition``).

    The call is retried while the store is unreachable. If a retry finds the status
    already moved, the first try may have committed before its reply was lost: the
    record is read back and taken as ours when it is in ``new`` and ``landed`` says the
    change is the one this call made.
    """
    update = construct(TaskUpdate, **changes)
    backend = engine.backend
    availability = engine.availability
    try:  # the common case: one (group-committed) call, no retry machinery
        done = await engine.transition(
            task_id, expected=expected, new=new, update=update, read_back=read_back
        )
    except BackendUnavailableError as exc:
        availability.failed(exc)
        reraise_if_cancelled()
    else:
        if not availability.available:
            availability.succeeded()
        return done
    tries = 1

    async def attempt() -> TaskRecord | None:
        nonlocal tries
        tries += 1
        return await backend.transition(task_id, expected=expected, new=new, update=update)

    await asyncio.sleep(availability.first_delay)
    done = await availability.persist(attempt)
    if done is None and tries > 1:
        current = await engine.availability.persist(lambda: backend.get(task_id))
        if current is not None and current.status is new and landed(current):
            logger.info("task %s: a reply was lost, but the change had landed", task_id)
            return current.model_copy(update={"logs": []})
    return done


async def end_unwritten(engine: Engine, record: Kept, *, error: str) -> None:
    """End a RUNNING task whose outcome the store refused (or taskflow failed to
    record: ``error`` says which): INTERRUPTED with a plain error, retried with backoff
    until the store takes it (or the task is no longer RUNNING)."""
    update = TaskUpdate(finished_at=engine.clock.now(), error=error)
    delay = engine.availability.first_delay
    while True:
        try:
            ended = await engine.backend.transition(
                record.task_id, expected=_RUNNING, new=TaskStatus.INTERRUPTED, update=update
            )
        except Exception:
            reraise_if_cancelled()
            logger.debug("ending task %s failed; will retry", record.task_id, exc_info=True)
            await asyncio.sleep(delay)
            delay = min(delay * 2, engine.availability.max_delay)
            continue
        if ended is not None:
            logger.warning("task %s INTERRUPTED: its outcome could not be stored", record.task_id)
            await engine.emit_lifecycle(ended)
        return


def log_event(ctx: task_context.TaskContext, entry: LogEntry, instance_id: str) -> LogEvent:
    """Build the log event for one ``task_log()`` line."""
    return LogEvent(
        task_id=ctx.task_id,
        func_name=ctx.func_name,
        attempt=entry.attempt,
        tags=ctx.tags,
        timestamp=entry.timestamp,
        instance_id=instance_id,
        level=entry.level,
        message=entry.message,
        extra=entry.extra,
    )
