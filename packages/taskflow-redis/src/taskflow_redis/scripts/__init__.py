"""The Lua scripts that make every operation one atomic round trip.

Each ``<name>.lua`` file in this package is prefixed with ``lib.lua`` (shared helpers)
and registered once per client; calls go out as ``EVALSHA``, and redis-py reloads a
script transparently when the server answers ``NOSCRIPT`` (after a restart or a
``SCRIPT FLUSH``).
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

__all__ = ["SCRIPT_NAMES", "source"]

SCRIPT_NAMES = (
    "create",
    "transition",
    "adopt",
    "get",
    "find_key",
    "append_logs",
    "query",
    "stats",
    "durations",
    "throughput",
    "purge",
    "enqueue",
    "claim",
    "dequeue",
    "schedule_once",
    "acquire_lock",
    "release_lock",
)
"""Every script, by file name without ``.lua``."""


@cache
def source(name: str) -> str:
    """Return the full text of script ``name``: the shared helpers then its body.

    Raises:
        ValueError: ``name`` is not one of :data:`SCRIPT_NAMES`.
    """
    if name not in SCRIPT_NAMES:
        raise ValueError(f"unknown taskflow Redis script {name!r}")
    here = files(__package__)
    lib = here.joinpath("lib.lua").read_text(encoding="utf-8")
    body = here.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return f"{lib}\n{body}"
