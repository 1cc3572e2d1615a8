"""Event fan-out: LISTEN/NOTIFY on PostgreSQL, a polled events table elsewhere.

PostgreSQL delivers notifications in commit order to every listening session, which is
exactly the contract; payloads above NOTIFY's 8000-byte limit are stored in the events
table and the notification carries ``@<id>``. SQLite and MySQL/MariaDB subscribers poll
the events table by id (a publish on the same backend object wakes its subscribers at
once). Ids are allocated before commit, so on MySQL an id can become visible after a
higher one: a poller remembers such gaps for a few seconds and picks them up late
rather than losing them. Old rows are trimmed by the publishers: all but the newest
``event_retention``, and none younger than a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from fastapi_taskflow.clock import Clock
from fastapi_taskflow.events import LifecycleEvent, LogEvent, decode_bus_event, encode_bus_event
from fastapi_taskflow.redaction import mask_log_records

from .context import SQLContext, Tx
from .errors import SQLBackendError, unavailable, wrap_error
from .executor import Executor, connect, release

__all__ = ["SQLEvents"]

Event = LifecycleEvent | LogEvent

logger = mask_log_records(logging.getLogger("taskflow_sql"))

_NOTIFY_LIMIT = 7900
_TRIM_EVERY = 100
_GAP_GRACE = 5.0
_MAX_GAP = 10_000
_POLL_BATCH = 500
_UNREAD_GRACE = timedelta(seconds=60)
"""Rows younger than this are never trimmed, however many there are: a burst larger
than ``event_retention`` (a task logging a line per row) is read by the pollers first."""
_NOTIFY_EACH = text(
    "SELECT pg_notify(:channel, p) FROM unnest(CAST(:payloads AS text[])) "
    "WITH ORDINALITY AS batch(p, n) ORDER BY n"
)
"""One notification per payload, in the batch's order, in one statement."""


def _decode(payload: str, skip_instance: str | None = None) -> Event | None:
    """The event in ``payload``; None for one of ``skip_instance``'s or a malformed one."""
    try:
        return decode_bus_event(payload, skip_instance)
    except ValidationError as exc:
        logger.error("skipping a malformed event: %s", exc)
        return None


class SQLEvents:
    """publish/subscribe; mixed into :class:`taskflow_sql.SQLBackend`."""

    clock: Clock
    _ctx: SQLContext
    _exec: Executor
    _poll_interval: float
    _event_retention: int
    _published: int
    _wakers: dict[asyncio.Event, str | None]
    """The pollers on this backend object, each with the instance it leaves out."""

    @property
    def _channel(self) -> str:
        tables = self._ctx.tables
        name = f"{tables.prefix}events"
        if tables.schema:
            name = f"{tables.schema}.{name}"
        if len(name) > 63:
            name = "taskflow_" + hashlib.sha256(name.encode()).hexdigest()[:40]
        return name

    async def publish(self, event: Event) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.publish`."""
        await self.publish_many([event])

    async def publish_many(self, events: Sequence[Event]) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.publish_many`: one transaction;
        on PostgreSQL one ``pg_notify`` statement for the batch (a payload above the
        NOTIFY limit is stored and notified as ``@<id>``), elsewhere one multi-row
        insert into the events table."""
        if not events:
            return
        payloads = [encode_bus_event(event) for event in events]
        before, self._published = self._published, self._published + len(payloads)
        trim = before // _TRIM_EVERY != self._published // _TRIM_EVERY
        notify = self._ctx.kind == "postgresql"
        channel = self._channel if notify else ""
        now = self.clock.now()

        async def op(tx: Tx) -> None:
            table = tx.ctx.tables.events
            stored = not notify
            if notify:
                notes: list[str] = []
                for payload in payloads:
                    if len(payload.encode()) <= _NOTIFY_LIMIT:
                        notes.append(payload)
                        continue
                    result = await tx.conn.execute(
                        table.insert().values(payload=payload, created_at=now)
                    )
                    notes.append(f"@{int(result.inserted_primary_key[0])}")  # type: ignore[index]
                    stored = True
                await tx.conn.execute(_NOTIFY_EACH, {"channel": channel, "payloads": notes})
            else:
                rows = [{"payload": payload, "created_at": now} for payload in payloads]
                await tx.conn.execute(table.insert(), rows)
            if trim and stored:
                newest = await tx.conn.scalar(select(func.max(table.c.id)))
                if newest is not None:
                    keep_from = int(newest) - self._event_retention
                    await tx.conn.execute(
                        delete(table).where(
                            table.c.id <= keep_from, table.c.created_at < now - _UNREAD_GRACE
                        )
                    )

        await self._exec.write("publishing events", op)
        publishers = {event.instance_id for event in events}
        for waker, skipped in list(self._wakers.items()):
            if publishers != {skipped}:  # a poller that leaves them all out waits its turn
                waker.set()

    @asynccontextmanager
    async def subscribe(
        self, *, skip_instance: str | None = None
    ) -> AsyncIterator[AsyncIterator[Event]]:
        """See :meth:`fastapi_taskflow.protocols.Backend.subscribe`.

        On PostgreSQL the subscription holds one pooled connection for LISTEN; if that
        connection is lost (a server restart), the stream raises
        ``BackendUnavailableError`` instead of waiting forever, so the subscriber can
        subscribe again.
        """
        if self._ctx.kind == "postgresql":
            async with self._listen(skip_instance) as events:
                yield events
        else:
            async with self._poll(skip_instance) as events:
                yield events

    async def _fetch_stored(self, event_id: int, skip_instance: str | None) -> Event | None:
        table = self._ctx.tables.events

        async def op(conn: AsyncConnection) -> str | None:
            value = await conn.scalar(select(table.c.payload).where(table.c.id == event_id))
            return None if value is None else str(value)

        payload = await self._exec.read("reading an event", op)
        return None if payload is None else _decode(payload, skip_instance)

    @asynccontextmanager
    async def _listen(self, skip_instance: str | None) -> AsyncIterator[AsyncIterator[Event]]:
        conn = await connect(self._ctx, write=False)
        inbox: asyncio.Queue[str | None] = asyncio.Queue()

        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            inbox.put_nowait(payload)

        lost = False

        def on_terminate(_conn: Any) -> None:
            nonlocal lost
            lost = True
            inbox.put_nowait(None)  # the server went away: end the stream with an error

        try:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            if not hasattr(driver, "add_listener"):
                raise SQLBackendError(
                    "subscribe() on PostgreSQL needs the asyncpg driver "
                    "(postgresql+asyncpg://, the default)"
                )
            await driver.add_listener(self._channel, on_notify)
            driver.add_termination_listener(on_terminate)
        except BaseException as exc:  # cancelled too: the connection goes back to the pool
            with contextlib.suppress(Exception):
                await release(conn)
            if isinstance(exc, Exception):
                raise wrap_error("subscribing to events", exc) from exc
            raise

        async def events() -> AsyncIterator[Event]:
            while True:
                payload = await inbox.get()
                if payload is None:
                    raise unavailable(
                        "receiving events", ConnectionError("the LISTEN connection was closed")
                    )
                if payload.startswith("@") and payload[1:].isdigit():
                    event = await self._fetch_stored(int(payload[1:]), skip_instance)
                else:
                    event = _decode(payload, skip_instance)
                if event is not None:
                    yield event

        try:
            yield events()
        finally:
            driver.remove_termination_listener(on_terminate)
            try:
                if lost:  # never hand a dead connection back to the pool
                    raise ConnectionError("the LISTEN connection was closed")
                await driver.remove_listener(self._channel, on_notify)
            except Exception:  # the connection may be gone; it is discarded below
                await conn.invalidate()
            await release(conn)

    @asynccontextmanager
    async def _poll(self, skip_instance: str | None) -> AsyncIterator[AsyncIterator[Event]]:
        table = self._ctx.tables.events

        async def newest(conn: AsyncConnection) -> int:
            return int(await conn.scalar(select(func.max(table.c.id))) or 0)

        start = await self._exec.read("subscribing to events", newest)
        waker = asyncio.Event()
        self._wakers[waker] = skip_instance
        try:
            yield self._poll_events(start, waker, skip_instance)
        finally:
            self._wakers.pop(waker, None)

    async def _poll_events(
        self, start: int, waker: asyncio.Event, skip_instance: str | None
    ) -> AsyncIterator[Event]:
        table = self._ctx.tables.events
        loop = asyncio.get_running_loop()
        last = start
        gaps: dict[int, float] = {}
        while True:
            waker.clear()
            now = loop.time()
            for gap in [gap for gap, deadline in gaps.items() if deadline < now]:
                del gaps[gap]
            cond: Any = table.c.id > last
            if gaps:
                cond = or_(cond, table.c.id.in_(sorted(gaps)[:_POLL_BATCH]))
            stmt = select(table.c.id, table.c.payload).where(cond).order_by(table.c.id)
            rows = await self._exec.read("polling events", _fetch_all(stmt.limit(_POLL_BATCH)))
            for event_id, payload in rows:
                if event_id in gaps:
                    del gaps[event_id]
                elif event_id > last:
                    if 1 < event_id - last <= _MAX_GAP:
                        gaps.update(dict.fromkeys(range(last + 1, event_id), now + _GAP_GRACE))
                    last = event_id
                event = _decode(payload, skip_instance)
                if event is not None:
                    yield event
            if not rows:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(waker.wait(), self._poll_interval)


def _fetch_all(stmt: Any) -> Callable[[AsyncConnection], Any]:
    async def op(conn: AsyncConnection) -> list[tuple[int, str]]:
        return [(int(row[0]), str(row[1])) for row in await conn.execute(stmt)]

    return op
