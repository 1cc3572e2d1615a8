"""taskflow-memory: the in-process backend (``memory://``), taskflow's default.

Tasks live in this process only: they are visible to this process's task managers and
are lost when it exits. Use it for development, tests and apps that can afford that;
use ``taskflow-sql`` or ``taskflow-redis`` when tasks must survive a crash.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi_taskflow.clock import Clock, SystemClock
from fastapi_taskflow.errors import BackendURLError
from fastapi_taskflow.redaction import mask_secrets

from .coordination import CoordinationState, MemoryCoordination
from .store import MemoryState, MemoryStore

__all__ = ["MemoryBackend", "from_url"]

__version__ = "0.1.0"


class MemoryBackend(MemoryStore, MemoryCoordination):
    """Store and Backend in process memory; thread-safe, usable from any event loop.

    Args:
        clock: where time comes from; the system clock unless a test injects one.
    """

    durable = False

    def __init__(self, *, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self._state = MemoryState()
        self._coord = CoordinationState()

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    def fork(self) -> MemoryBackend:
        """Return a backend sharing this one's tasks, queues, leases and subscribers."""
        twin = MemoryBackend.__new__(MemoryBackend)
        twin.clock = self.clock
        twin._state = self._state
        twin._coord = self._coord
        return twin

    def __repr__(self) -> str:
        return f"MemoryBackend(tasks={len(self._state.records)})"


def from_url(url: str, *, clock: Clock) -> MemoryBackend:
    """Build a fresh, empty memory backend for ``memory://`` (the entry point)."""
    parts = urlsplit(url)
    if parts.scheme != "memory" or parts.path not in ("", "/") or parts.query:
        raise BackendURLError(
            f"malformed memory backend URL {mask_secrets(str(url))!r}: use exactly "
            "'memory://' (every TaskManager gets its own in-process store)"
        )
    return MemoryBackend(clock=clock)
