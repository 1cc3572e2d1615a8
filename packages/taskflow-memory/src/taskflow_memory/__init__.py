"""taskflow-memory: the in-process backend (``memory://``), taskflow's default.

Tasks live in this process only: they are visible to this process's task managers and
are lost when it exits. Use it for development, tests and apps that can afford that;
use ``taskflow-sql`` or ``taskflow-redis`` when tasks must survive a crash.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from fastapi_taskflow.clock import Clock, SystemClock
from fastapi_taskflow.errors import BackendURLError
from fastapi_taskflow.redaction import mask_secrets

from .coordination import CoordinationState, MemoryCoordination
from .store import DEFAULT_MAX_RECORDS, MemoryState, MemoryStore

__all__ = ["DEFAULT_MAX_RECORDS", "MemoryBackend", "from_url"]

__version__ = "0.1.0"


class MemoryBackend(MemoryStore, MemoryCoordination):
    """Store and Backend in process memory; thread-safe, usable from any event loop.

    Args:
        clock: where time comes from; the system clock unless a test injects one.
        max_records: how many task records to keep at most; past it the oldest
            finished tasks are dropped (active ones never are), so a long-running
            process stays flat. None keeps every record (until purged).
    """

    durable = False

    def __init__(
        self, *, clock: Clock | None = None, max_records: int | None = DEFAULT_MAX_RECORDS
    ) -> None:
        if max_records is not None and (
            isinstance(max_records, bool) or not isinstance(max_records, int) or max_records < 1
        ):
            raise BackendURLError(
                f"max_records must be an integer >= 1 or None, got {max_records!r}"
            )
        self.clock = clock or SystemClock()
        self._state = MemoryState(max_records)
        self._coord = CoordinationState()

    async def open(self) -> None:
        """Nothing to connect to."""

    async def close(self) -> None:
        """Nothing to release."""

    def fork(self) -> MemoryBackend:
        """Return a backend sharing this one's tasks, queues, heartbeats and subscribers."""
        twin = MemoryBackend.__new__(MemoryBackend)
        twin.clock = self.clock
        twin._state = self._state
        twin._coord = self._coord
        return twin

    def __repr__(self) -> str:
        return f"MemoryBackend(tasks={len(self._state.records)})"


def from_url(url: str, *, clock: Clock) -> MemoryBackend:
    """Build a fresh, empty memory backend for ``memory://`` (the entry point).

    ``memory://?max_records=N`` sets the cap on records kept (``none``: no cap).
    """
    parts = urlsplit(url)
    options = parse_qs(parts.query, keep_blank_values=True)
    if (
        parts.scheme != "memory"
        or parts.path not in ("", "/")
        or set(options) - {"max_records"}
        or any(len(values) != 1 for values in options.values())
    ):
        raise BackendURLError(
            f"malformed memory backend URL {mask_secrets(str(url))!r}: use exactly "
            "'memory://' or 'memory://?max_records=N' (every TaskManager gets its own "
            "in-process store)"
        )
    max_records: int | None = DEFAULT_MAX_RECORDS
    if "max_records" in options:
        raw = options["max_records"][0]
        if raw.lower() == "none":
            max_records = None
        elif raw.isdigit() and int(raw) >= 1:
            max_records = int(raw)
        else:
            raise BackendURLError(
                f"malformed memory backend URL {mask_secrets(str(url))!r}: max_records "
                "must be an integer "
                ">= 1 or 'none'"
            )
    return MemoryBackend(clock=clock, max_records=max_records)
