"""taskflow-redis: durable taskflow tasks in Redis (``redis://``, ``rediss://``, ``unix://``).

Every Store and Backend operation is one Lua script call or one plain command (one round
trip, atomic on the server); batches (``create_many``, ``transition_many``, the
``enqueue`` calls of one event-loop tick) are one round trip for the whole batch. Keys
live under ``{prefix}:`` (a Redis Cluster hash tag), indexes (including who owns which
active task) are sorted sets kept by the same scripts, and time always comes from the
injected clock.
"""

from __future__ import annotations

from .backend import DEFAULT_PREFIX, DEFAULT_RETENTION, DEFAULT_URL, RedisBackend, from_url
from .errors import RedisBackendError

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_RETENTION",
    "DEFAULT_URL",
    "RedisBackend",
    "RedisBackendError",
    "from_url",
]

__version__ = "0.1.0"
