"""Bad input gets a TaskflowError subclass that names the fix, and loses nothing."""

from __future__ import annotations

import pytest

from fastapi_taskflow import (
    BackendNotFoundError,
    BackendURLError,
    BaseObserver,
    EagerDispatchError,
    InvalidOperationError,
    InvalidTaskError,
    LogEvent,
    LoggingObserver,
    ManagedBackgroundTasks,
    QueueConfig,
    TaskflowError,
    TaskManager,
)
from fastapi_taskflow.clock import ManualClock


def noop() -> None:
    pass


class SyncObserver(BaseObserver):
    def on_log(self, event: LogEvent) -> None:  # type: ignore[override]
        pass


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"retries": -1}, "retries must be an integer >= 0"),
        ({"retries": 1.5}, "retries must be an integer >= 0"),
        ({"delay": -0.1}, "delay must be a number of seconds >= 0"),
        ({"backoff": 0.5}, "backoff must be a number >= 1"),
        ({"priority": "high"}, "priority must be an integer"),
        ({"priority": True}, "priority must be an integer"),
        ({"eager": "yes"}, "eager must be True or False"),
        ({"requeue_on_interrupt": "y"}, "requeue_on_interrupt must be True or False"),
        ({"queue": ""}, "queue must be a non-empty string"),
        # accepted before: a NaN deadline broke the order of the loop's timers, and an
        # infinite wait failed the task's first retry
        ({"timeout": float("nan")}, "timeout must be a number of seconds > 0"),
        ({"timeout": float("inf")}, "timeout must be a number of seconds > 0"),
        ({"delay": float("inf")}, "delay must be a number of seconds >= 0"),
        ({"delay": float("nan")}, "delay must be a number of seconds >= 0"),
        ({"max_delay": float("inf")}, "max_delay must be a number of seconds > 0"),
        ({"backoff": float("inf")}, "backoff must be a number >= 1"),
        ({"delay": 10**400}, "delay must be a number of seconds >= 0"),
    ],
)
def test_bad_decorator_options_fail_at_decoration(
    options: dict[str, object], fragment: str
) -> None:
    tm = TaskManager()
    with pytest.raises(InvalidTaskError, match=fragment):
        tm.task(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        # read from an environment variable and not converted: failed the app's
        # shutdown (TypeError), after its running tasks had been left unattended
        ({"shutdown_timeout": "30"}, "shutdown_timeout must be a number of seconds, 0 or more"),
        ({"shutdown_timeout": -1}, "shutdown_timeout must be a number of seconds, 0 or more"),
        ({"shutdown_timeout": float("nan")}, "shutdown_timeout must be a number of seconds"),
        # 0 made every idle queue worker poll the store without pause
        ({"poll_interval": 0}, "poll_interval must be a positive number of seconds"),
        (
            {"poll_interval": "1"},
            r"poll_interval must be a positive number of seconds \(default 1.0\)",
        ),
        ({"liveness_seconds": 0}, "liveness_seconds must be a positive number of seconds"),
        ({"sync_workers": 0}, "sync_workers"),
        # failed at the first add_task() to that queue with an AttributeError
        ({"queues": {"emails": 2}}, r"queues\['emails'\] must be a QueueConfig"),
        ({"queues": [("emails", QueueConfig())]}, "queues must map queue names to QueueConfig"),
        ({"queues": {"": QueueConfig()}}, "a queue name must be a non-empty string"),
        ({"queues": {"q" * 300: QueueConfig()}}, "is 300 characters; the limit is 255"),
        # failed on every event, logged only
        ({"observers": [BaseObserver]}, r"pass BaseObserver\(\), not the class"),
        ({"observers": [object()]}, r"object is not an observer: it has no on_lifecycle\(\)"),
        ({"observers": [SyncObserver()]}, "SyncObserver.on_log must be 'async def'"),
        # written as the owner of every task and the heartbeat's key
        ({"instance_id": 7}, "instance_id must be a string"),
        ({"instance_id": "w" * 256}, "instance_id is 256 characters; the limit is 255"),
        ({"instance_id": "web\x001"}, "instance_id contains a NUL character"),
        # a TypeError / AttributeError from inside taskflow, or accepted and failing later
        ({"observers": 5}, "observers must be a list of observers"),
        ({"observers": LoggingObserver()}, "observers must be a list of observers"),
        ({"backend": 5}, "backend must be a URL such as 'sqlite:///tasks.db'"),
        ({"clock": 5}, r"clock must have a now\(\) method"),
        ({"publish_events": "no"}, "publish_events must be True, False or None"),
    ],
)
def test_bad_manager_settings_fail_at_construction(
    options: dict[str, object], fragment: str
) -> None:
    with pytest.raises(InvalidTaskError, match=fragment):
        TaskManager(**options)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_a_bad_shutdown_timeout_is_refused_before_anything_stops() -> None:
    tm = TaskManager()
    async with tm:
        with pytest.raises(InvalidTaskError, match="timeout must be a number of seconds"):
            await tm.shutdown(timeout="5")  # type: ignore[arg-type]
        assert tm.add_task(noop)  # still running: nothing was stopped
    assert TaskManager(shutdown_timeout=0).shutdown_timeout == 0.0


def test_an_observer_added_later_is_checked_too() -> None:
    tm = TaskManager()
    with pytest.raises(InvalidTaskError, match="pass BaseObserver"):
        tm.observers.add(BaseObserver)  # type: ignore[arg-type]
    assert tm.observers.observers == []


def test_decorating_a_non_callable_fails() -> None:
    tm = TaskManager()
    with pytest.raises(InvalidTaskError, match="must decorate a function"):
        tm.task()(42)  # type: ignore[type-var]


def test_two_functions_with_one_name_fail() -> None:
    tm = TaskManager()
    tm.task(name="job")(noop)

    def other() -> None:
        pass

    with pytest.raises(InvalidTaskError, match="distinct name"):
        tm.task(name="job")(other)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda m: m.add_task("not callable"), "needs a callable"),
        (lambda m: m.add_task(noop, tags={"user": 1}), r"tags must be a dict\[str, str\]"),
        (lambda m: m.add_task(noop, tags=["a"]), r"tags must be a dict\[str, str\]"),
        # a firing's own tag, which list_scheduled() and overlap=False trusted
        (lambda m: m.add_task(noop, tags={"taskflow.run_at": "x"}), "are taskflow's own"),
        (lambda m: m.add_task(noop, priority=2.5), "priority must be an integer"),
        (lambda m: m.add_task(noop, idempotency_key=5), "idempotency_key must be a string"),
        (lambda m: m.add_task(noop, eager="soon"), "eager must be True, False or None"),
    ],
)
def test_bad_add_task_input_is_rejected_and_accepts_nothing(call, fragment: str) -> None:  # type: ignore[no-untyped-def]
    tm = TaskManager()
    managed = ManagedBackgroundTasks(tm)
    ok = managed.add_task(noop)
    with pytest.raises(InvalidTaskError, match=fragment):
        call(managed)
    assert len(managed.tasks) == 1
    record = tm.store.get(ok)
    assert record is not None and record.status == "pending"


def test_eager_without_a_running_loop_names_the_fix() -> None:
    tm = TaskManager()
    with pytest.raises(EagerDispatchError, match="drop eager=True"):
        ManagedBackgroundTasks(tm).add_task(noop, eager=True)


def test_malformed_backend_url() -> None:
    with pytest.raises(BackendURLError, match="expected 'scheme://...'"):
        TaskManager(backend="localhost:6379")


def test_unknown_scheme_names_the_package_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import fastapi_taskflow.backends as backends

    monkeypatch.setattr(backends, "entry_points", lambda group: [])  # nothing installed
    with pytest.raises(BackendNotFoundError, match=r'pip install "taskflow-core\[redis\]"'):
        TaskManager(backend="redis://localhost:6379/0")


def test_a_third_party_scheme_points_at_the_entry_point_group() -> None:
    with pytest.raises(BackendNotFoundError, match="'taskflow.backends' entry point group"):
        TaskManager(backend="nosuch://x")


def test_taskflow_backend_variable_selects_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKFLOW_BACKEND", "nosuch://from-env")
    with pytest.raises(BackendNotFoundError, match="no backend is installed for nosuch://"):
        TaskManager()


def test_memory_url_with_a_path_is_malformed() -> None:
    with pytest.raises(BackendURLError, match="use exactly 'memory://'"):
        TaskManager(backend="memory:///somewhere")


def test_every_error_is_a_taskflow_error() -> None:
    import fastapi_taskflow.errors as errors

    for name in errors.__all__:
        assert issubclass(getattr(errors, name), TaskflowError)


def test_a_manual_clock_moved_backwards_raises_a_taskflow_error() -> None:
    clock = ManualClock()
    with pytest.raises(InvalidOperationError, match="only moves forward"):
        clock.advance(-1)


@pytest.mark.anyio
async def test_a_task_cannot_pass_for_a_scheduled_firing() -> None:
    """A task tagged ``taskflow.run_at`` (tags copied from a firing, or taken from a
    client) made list_scheduled() fail for everyone and ``overlap=False`` schedules skip
    every tick; such tags are refused, by add_task() and by schedule_once()."""
    tm = TaskManager()

    @tm.task()
    async def remind() -> None: ...

    async with tm:
        for tags in ({"taskflow.run_at": "tomorrow"}, {"taskflow.schedule": "remind"}):
            with pytest.raises(InvalidTaskError, match="are taskflow's own"):
                ManagedBackgroundTasks(tm).add_task(remind, tags=tags)
            with pytest.raises(InvalidTaskError, match="are taskflow's own"):
                await tm.schedule_once(remind, delay=60, tags=tags)
        assert await tm.list_scheduled() == []
