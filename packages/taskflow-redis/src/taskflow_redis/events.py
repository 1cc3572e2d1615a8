"""Event fan-out over Redis pub/sub on the channel ``{prefix}:events``.

Events travel in ``encode_bus_event``'s form (the publisher's id, then JSON). On Redis
Cluster a plain ``PUBLISH`` reaches subscribers on every node. Delivery is best effort,
as pub/sub is: a subscriber that is disconnected misses what was published meanwhile
(the store stays the truth).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from pydantic import ValidationError

from fastapi_taskflow.errors import BackendUnavailableError
from fastapi_taskflow.events import LifecycleEvent, LogEvent, decode_bus_event, encode_bus_event
from fastapi_taskflow.runtime import reraise_if_cancelled

from .base import RedisBase, logger
from .connection import driver_errors

__all__ = ["RedisEvents"]

Event = LifecycleEvent | LogEvent

SUBSCRIBE_TIMEOUT = 10.0
"""Seconds to wait for the server to confirm a subscription."""


class RedisEvents(RedisBase):
    """The event part of the Backend protocol."""

    async def publish(self, event: Event) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.publish`; one ``PUBLISH``."""
        client = self._redis()
        payload = encode_bus_event(event)
        with driver_errors("publishing an event", self._where()):
            await client.publish(self._keys.channel, payload)

    async def publish_many(self, events: Sequence[Event]) -> None:
        """See :meth:`fastapi_taskflow.protocols.Backend.publish_many`; one script call
        that publishes each event (one round trip, on a cluster too)."""
        if not events:
            return
        payloads = [encode_bus_event(event) for event in events]
        await self._run("publish", (self._keys.channel, *payloads), "publishing events")

    @asynccontextmanager
    async def subscribe(
        self, *, skip_instance: str | None = None
    ) -> AsyncIterator[AsyncIterator[Event]]:
        """See :meth:`fastapi_taskflow.protocols.Backend.subscribe`.

        The context is entered only once the server has confirmed the subscription,
        so every event published afterwards is delivered. Each subscription uses its
        own connection. A message that is not a taskflow event is reported and skipped.
        """
        client = self._redis()
        pubsub: Any = client.pubsub()
        channel = self._keys.channel
        try:
            with driver_errors("subscribing to events", self._where()):
                await pubsub.subscribe(channel)
                await self._confirmed(pubsub)
            yield self._events(pubsub, skip_instance)
        finally:
            try:
                await pubsub.aclose()
            except Exception:
                logger.debug("error while closing a Redis subscription", exc_info=True)

    async def _confirmed(self, pubsub: Any) -> None:
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
        while time.monotonic() < deadline:
            message = await pubsub.get_message(timeout=deadline - time.monotonic())
            if message is not None and message.get("type") == "subscribe":
                return
            # redis-py may turn a cancellation into an empty answer: stop waiting then.
            reraise_if_cancelled()
        raise BackendUnavailableError(
            f"Redis at {self._where()} did not confirm the event subscription within "
            f"{SUBSCRIBE_TIMEOUT:.0f}s; check the server's load and network"
        )

    async def _events(self, pubsub: Any, skip_instance: str | None) -> AsyncIterator[Event]:
        while True:
            with driver_errors("receiving events", self._where()):
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
            if message is None or message.get("type") != "message":
                continue
            data = message["data"]
            try:
                event = decode_bus_event(data, skip_instance)
            except ValidationError:
                logger.warning(
                    "skipped a message on %s that is not a taskflow event: %.200r",
                    self._keys.channel,
                    data,
                )
                continue
            if event is not None:
                yield event
