"""Periodic schedules: ``@task_manager.schedule(every=... | cron=...)``.

Each firing is an ordinary task (record, retries, logs, events). Every instance runs the
same timer; at each tick every instance *arms* the tick's task (see ``arming``) under a
task id and an idempotency key derived from the schedule's name and the tick time
(``schedule:{name}:{tick}``). The store's atomic insert-if-absent lets exactly one
record exist per tick, and the queue's claim plus the PENDING → RUNNING compare-and-set
let exactly one instance run it: each tick fires once in total, however many instances
run.

Ticks are absolute, so every instance computes the same ones: an ``every=`` schedule
ticks at whole multiples of its interval since the Unix epoch (``every=timedelta(hours=1)``
fires on the hour, UTC); a ``cron=`` schedule ticks at the expression's times in its
``timezone`` (daylight-saving changes handled by ``cronsim``). A tick that passes while no
instance runs is not fired later (no catch-up); ``run_on_startup=True`` fires the latest
tick at startup if nobody fired it yet. With ``overlap=False`` a tick whose schedule
still has an unfinished firing (PENDING or RUNNING, on any instance) is skipped.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .arming import arm
from .config import DEFAULT_QUEUE, TaskConfig
from .errors import ScheduleError
from .models import TaskQuery, TaskRecord, TaskStatus
from .runtime import Runtime, reraise_if_cancelled

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["EVERY_MIN", "Schedule", "Scheduler", "TICK_TAG", "SCHEDULE_TAG"]

logger = logging.getLogger("fastapi_taskflow")

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
SCHEDULE_TAG = "taskflow.schedule"
"""The tag naming the schedule a firing came from."""
TICK_TAG = "taskflow.tick"
"""The tag holding a firing's tick time (ISO 8601, UTC)."""
_NAMESPACE = uuid.UUID("8d3f3a52-43c6-4a1e-9a55-3f6f3cb0b7a1")
EVERY_MIN = timedelta(milliseconds=1)
"""The shortest ``every=`` interval a schedule takes: each tick is a task record, so a
shorter one would only flood the store (and the event loop)."""
_FAR = datetime(9000, 1, 1, tzinfo=timezone.utc)
"""Every interval schedule must still have a next tick after this date: a longer
interval would put it past the last date a ``datetime`` holds (year 9999)."""
_CRON_STEPS_MAX = 2 * 24 * 60
"""How many of cronsim's times :func:`_cron_step` reads past before giving up. From a
wall time in the repeated hour of a daylight-saving fall-back cronsim starts with the
times of that hour's first pass, already past; no zone's clocks went back by more than
a day, and a 5-field expression ticks at most once a minute."""
_CRON_FORMAT = "use 5 fields 'minute hour day-of-month month day-of-week', e.g. '0 2 * * *'"


@dataclass(frozen=True)
class Schedule:
    """When a periodic task fires: ``every`` (an interval) or ``cron`` (an expression).

    Attributes:
        name: the task's registered name; also the schedule's identity across instances.
        every: the interval, when it is an interval schedule.
        cron: the cron expression (5 fields), when it is a cron schedule.
        timezone: the zone ``cron`` is read in.
        run_on_startup: fire the latest tick at startup if nobody fired it.
        overlap: False to skip a tick while an earlier firing has not finished.
    """

    name: str
    every: timedelta | None = None
    cron: str | None = None
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    run_on_startup: bool = False
    overlap: bool = True

    @classmethod
    def build(
        cls,
        name: str,
        *,
        every: timedelta | float | None,
        cron: str | None,
        timezone: str | ZoneInfo | None,
        run_on_startup: bool,
        overlap: bool = True,
    ) -> Schedule:
        """Validate the decorator's settings and return the schedule.

        Raises:
            ScheduleError: not exactly one of ``every``/``cron``, a bad interval (not
                positive, shorter than ``EVERY_MIN``, or with ticks past year 9999), a
                cron expression that is invalid or has not exactly 5 fields, an unknown
                time zone, or no cron parser.
        """
        if (every is None) == (cron is None):
            raise ScheduleError(
                "a schedule needs exactly one of every=timedelta(...) or cron='m h dom mon dow'"
            )
        zone = _zone(timezone)
        if not isinstance(run_on_startup, bool):
            raise ScheduleError(f"run_on_startup must be True or False, got {run_on_startup!r}")
        if not isinstance(overlap, bool):
            raise ScheduleError(f"overlap must be True or False, got {overlap!r}")
        if every is not None:
            given = every
            if isinstance(every, (int, float)) and not isinstance(every, bool):
                try:
                    every = timedelta(seconds=every)
                except (ValueError, OverflowError):  # NaN, infinity, past any date
                    every = None
            if not isinstance(every, timedelta) or every <= timedelta(0):
                raise ScheduleError(
                    f"every= must be a positive timedelta (or seconds), got {given!r}"
                )
            if every < EVERY_MIN:
                raise ScheduleError(
                    f"every={given!r} is shorter than 1 ms, the shortest interval a schedule "
                    "takes; pass every=timedelta(milliseconds=1) or longer"
                )
            schedule = cls(
                name, every=every, timezone=zone, run_on_startup=run_on_startup, overlap=overlap
            )
            try:
                schedule.next_after(_FAR)
            except OverflowError:
                raise ScheduleError(
                    f"every={given!r} is too long: its ticks fall past the last date a "
                    "datetime holds (year 9999); pass a shorter interval (or use cron=...)"
                ) from None
            return schedule
        if not isinstance(cron, str):
            raise ScheduleError(f"cron= must be a string such as '0 2 * * *', got {cron!r}")
        fields = len(cron.split())
        if fields != 5:
            # cronsim would read 6 fields as "second minute hour ...", shifting each one.
            alias = (
                " (aliases such as '@daily' are not read)" if cron.strip().startswith("@") else ""
            )
            raise ScheduleError(
                f"invalid cron expression {cron!r}: it has {fields} field"
                f"{'' if fields == 1 else 's'}{alias}; {_CRON_FORMAT}"
            )
        schedule = cls(
            name, cron=cron, timezone=zone, run_on_startup=run_on_startup, overlap=overlap
        )
        schedule.next_after(EPOCH + timedelta(days=20000))  # validates the expression
        return schedule

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after ``moment`` (aware UTC)."""
        if self.every is not None:
            n = (moment - EPOCH) // self.every
            return EPOCH + (n + 1) * self.every
        return _cron_step(self, moment, reverse=False)

    def latest_at_or_before(self, moment: datetime) -> datetime:
        """The last tick at or before ``moment`` (aware UTC)."""
        if self.every is not None:
            n = (moment - EPOCH) // self.every
            return EPOCH + n * self.every
        latest = _cron_step(self, moment + timedelta(microseconds=1), reverse=True)
        # Checked forwards: cronsim before 2.8 (the last for Python 3.10) steps back
        # over a tick that a daylight-saving jump moved (02:00 fired at 03:00).
        while (later := self.next_after(latest)) <= moment:
            latest = later
        return latest


def _zone(value: str | ZoneInfo | None) -> ZoneInfo:
    if value is None:
        return ZoneInfo("UTC")
    if isinstance(value, ZoneInfo):
        return value
    if not isinstance(value, str):
        raise ScheduleError(f"timezone= must be an IANA name such as 'Europe/Paris', got {value!r}")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError(
            f"unknown time zone {value!r}: use an IANA name such as 'Europe/Paris' (on "
            "Windows, pip install tzdata)"
        ) from exc


def _cron_step(schedule: Schedule, moment: datetime, *, reverse: bool) -> datetime:
    try:
        from cronsim import CronSim, CronSimError
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ScheduleError(
            'cron= schedules need the cron parser: pip install "taskflow-core[cron]"'
        ) from exc
    assert schedule.cron is not None
    local = moment.astimezone(schedule.timezone)
    try:
        times = iter(CronSim(schedule.cron, local, reverse=reverse))
        # cronsim reads wall times and returns the first pass of a repeated hour
        # (fold=0): from the second pass its first times are already past. Skip them.
        for _ in range(_CRON_STEPS_MAX):
            found = next(times).astimezone(timezone.utc)
            if (found < moment) if reverse else (found > moment):
                return found
    except (CronSimError, StopIteration) as exc:
        raise ScheduleError(
            f"invalid cron expression {schedule.cron!r}: {exc}; {_CRON_FORMAT}"
        ) from exc
    raise ScheduleError(
        f"cron expression {schedule.cron!r} in {schedule.timezone}: no tick "
        f"{'before' if reverse else 'after'} {moment.isoformat()} within "
        f"{_CRON_STEPS_MAX} steps"
    )


@dataclass
class _Entry:
    schedule: Schedule
    func: Callable[..., Any]
    config: TaskConfig


class Scheduler:
    """The periodic schedules of one task manager, and their timers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.entries: dict[str, _Entry] = {}
        self._runtimes: list[Runtime] = []

    def add(self, schedule: Schedule, func: Callable[..., Any], config: TaskConfig) -> None:
        """Add a schedule; its timer starts with the engine (or now, if it runs).

        Raises:
            ScheduleError: another schedule has the same name.
        """
        if schedule.name in self.entries:
            raise ScheduleError(
                f"two schedules are named {schedule.name!r}; give one name=... in "
                "@task_manager.schedule(...)"
            )
        entry = self.entries[schedule.name] = _Entry(schedule, func, config)
        runtime = self.engine.current_runtime
        if runtime is not None and runtime in self._runtimes and runtime.usable:
            runtime.loop.call_soon_threadsafe(self._spawn, runtime, entry)

    def start(self, runtime: Runtime) -> None:
        """Start hook: run every schedule's timer on ``runtime``."""
        self._runtimes = [r for r in self._runtimes if r.usable] + [runtime]
        for entry in self.entries.values():
            self._spawn(runtime, entry)

    def _spawn(self, runtime: Runtime, entry: _Entry) -> None:
        runtime.spawn(self._timer(entry), name=f"taskflow-schedule-{entry.schedule.name}")

    async def _timer(self, entry: _Entry) -> None:
        clock, schedule = self.engine.clock, entry.schedule
        if schedule.run_on_startup:
            await self._fire_logged(entry, schedule.latest_at_or_before(clock.now()))
        tick = schedule.next_after(clock.now())
        # A clock moved by hand (ManualClock) is re-read every poll interval.
        longest = None if getattr(clock, "moves_by_itself", True) else self.engine.poll_interval
        while True:
            wait = (tick - clock.now()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait if longest is None else min(wait, longest))
                continue  # woke early (or the clock moved): check again
            await self._fire_logged(entry, tick)
            # Let the loop run even when the next tick is due already (a firing that
            # took longer than the interval; a clock moved by hand).
            await asyncio.sleep(0)
            tick = schedule.next_after(max(tick, clock.now()))  # late: skip missed ticks

    async def _fire_logged(self, entry: _Entry, tick: datetime) -> None:
        try:
            await self.fire(entry, tick)
        except Exception:
            reraise_if_cancelled()
            logger.warning(
                "schedule %r could not fire its %s tick; it is not replayed",
                entry.schedule.name,
                tick.isoformat(),
                exc_info=True,
            )

    async def fire(self, entry: _Entry, tick: datetime) -> str | None:
        """Arm the task of ``tick`` (once across instances); return its task id, or
        None when the tick is skipped (``overlap=False`` and a firing is unfinished)."""
        engine, name, config = self.engine, entry.schedule.name, entry.config
        stamp = tick.astimezone(timezone.utc).isoformat()
        task_id = str(uuid.uuid5(_NAMESPACE, f"{name}\n{stamp}"))
        if not entry.schedule.overlap:
            unfinished = await self._unfinished(name)
            if unfinished is not None and unfinished.task_id != task_id:
                logger.info(
                    "schedule %r skips its %s tick: its firing %s (%s) has not finished",
                    name,
                    stamp,
                    unfinished.task_id,
                    unfinished.status.value,
                )
                return None
        now = engine.clock.now()
        record = TaskRecord(
            task_id=task_id,
            func_name=config.name,
            queue=config.queue or DEFAULT_QUEUE,
            priority=config.priority or 0,
            args=[],
            kwargs={},
            tags={SCHEDULE_TAG: name, TICK_TAG: stamp},
            idempotency_key=f"schedule:{name}:{stamp}",
            max_retries=config.retries,
            requeue_on_interrupt=config.requeue_on_interrupt,
            created_at=now,
            updated_at=now,
            owner=engine.instance_id if engine.durable else None,
        )
        await arm(engine, record, None)
        return task_id

    async def _unfinished(self, name: str) -> TaskRecord | None:
        """A firing of schedule ``name`` still PENDING (a retry waiting, too) or RUNNING,
        on any instance; None when there is none."""
        engine = self.engine  # firings are armed straight into the store: nothing buffered
        query = TaskQuery(statuses=_UNFINISHED, tags={SCHEDULE_TAG: name}, limit=1)
        page = await engine.availability.call(lambda: engine.backend.query(query))
        return page.items[0] if page.items else None


_UNFINISHED = [TaskStatus.PENDING, TaskStatus.RUNNING]
