"""Key layout: every key of one backend starts with ``{prefix}:``.

The braces make ``prefix`` a Redis Cluster hash tag, so all keys of a backend live in one
slot and multi-key Lua scripts run on a cluster unchanged. The Lua scripts build the
same names (see ``scripts/lib.lua``); this module is the Python side of that contract.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from fastapi_taskflow.errors import BackendURLError

__all__ = ["EPOCH", "KeySpace", "from_micros", "micros", "padded"]

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICRO = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """Return ``moment`` as integer microseconds since the epoch (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - EPOCH) // _MICRO


def from_micros(value: int) -> datetime:
    """Return the aware UTC datetime ``value`` microseconds after the epoch."""
    return EPOCH + timedelta(microseconds=value)


def padded(value: int) -> str:
    """Return microseconds as a 17-digit string, so text order equals time order."""
    return f"{max(value, 0):017d}"


class KeySpace:
    """The names of one backend's keys.

    Args:
        prefix: the namespace; must not contain ``{`` or ``}`` (it becomes the hash tag).
    """

    def __init__(self, prefix: str) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise BackendURLError(
                f"invalid Redis key prefix {prefix!r}: use a non-empty name without braces, "
                "for example 'taskflow' or 'myapp-tasks'"
            )
        self.prefix = prefix
        self.base = "{" + prefix + "}:"
        self.all = self.base + "idx:all"
        self.idem = self.base + "idem"
        self.finished = self.base + "idx:finished"
        self.stats_status = self.base + "stats:status"
        self.stats_func = self.base + "stats:func"
        self.owners = self.base + "owners"
        self.beats = self.base + "beats"
        self.locks = self.base + "locks"
        self.readers = self.base + "readers"
        self.runkeys = self.base + "runkeys"
        self.seq = self.base + "seq"
        self.channel = self.base + "events"
        self.pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self.base) + "*"

    def task(self, task_id: str) -> str:
        """The hash holding one task's record."""
        return f"{self.base}task:{task_id}"

    def logs(self, task_id: str) -> str:
        """The list holding one task's log entries."""
        return f"{self.base}logs:{task_id}"

    def status_index(self, status: str) -> str:
        """The index of tasks currently in ``status``."""
        return f"{self.base}idx:status:{status}"

    def func_index(self, func_name: str) -> str:
        """The index of tasks of one function."""
        return f"{self.base}idx:func:{func_name}"

    def queue_index(self, queue: str) -> str:
        """The index of tasks created for one named queue."""
        return f"{self.base}idx:queue:{queue}"

    def tag_index(self, key: str, value: str) -> str:
        """The index of tasks carrying the tag ``key=value`` (length-prefixed, unambiguous)."""
        return f"{self.base}idx:tag:{len(key)}:{key}={value}"

    def owned(self, owner: str) -> str:
        """The index of the active tasks ``owner`` holds (members as in ``idx:all``)."""
        return f"{self.base}own:{owner}"

    def queue_items(self, queue: str) -> str:
        """The hash of every task waiting on ``queue`` (its length is the queue length)."""
        return f"{self.base}queue:{queue}:items"

    def claim_log(self, token: str) -> str:
        """What the claim call with ``token`` handed over (an empty value: recovered)."""
        return f"{self.base}claim:{token}"

    @staticmethod
    def member(created_at: datetime, task_id: str) -> str:
        """The index member of a task: creation time then id, so text order is list order."""
        return f"{padded(micros(created_at))}:{task_id}"
