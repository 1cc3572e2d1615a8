"""taskflow-redis: durable taskflow tasks in Redis (``redis://``, ``rediss://``, ``unix://``).

Every Store and Backend operation is one Lua script call (one round trip, atomic on the
server). Keys live under ``{prefix}:`` (a Redis Cluster hash tag), indexes are sorted
sets, counters are kept by the same scripts, and time always comes from the injected
clock.
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
