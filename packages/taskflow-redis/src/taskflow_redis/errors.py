"""Errors specific to the Redis backend."""

from __future__ import annotations

from fastapi_taskflow.errors import TaskflowError

__all__ = ["RedisBackendError"]


class RedisBackendError(TaskflowError, RuntimeError):
    """Redis answered a command with an error that is not a connection problem.

    Typical causes: the server is out of memory (``maxmemory`` with a no-eviction
    policy), a replica was addressed for writes, or scripting is disabled. The message
    carries the server's reply; fix the server configuration and retry.
    """
