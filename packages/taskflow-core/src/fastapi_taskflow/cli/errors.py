"""Exit codes of the ``taskflow`` command and the error that carries one."""

from __future__ import annotations

from enum import IntEnum

from pydantic import ValidationError

from ..errors import (
    BackendNotFoundError,
    BackendUnavailableError,
    BackendURLError,
    InvalidOperationError,
    QueueFullError,
    TaskflowError,
    TaskNotFoundError,
    TaskStateError,
)

__all__ = ["CLIError", "ExitCode", "exit_code_for"]


class ExitCode(IntEnum):
    """What a ``taskflow`` exit status means (documented in docs/cli.md)."""

    OK = 0
    """The command did what was asked."""
    FAILURE = 1
    """Anything else went wrong (the message says what)."""
    USAGE = 2
    """Bad usage: an unknown option or value, a malformed or unusable backend URL, a
    backend package that is not installed."""
    NOT_FOUND = 3
    """No task has the given id."""
    BAD_STATE = 4
    """The task is in a status the operation does not apply to (or a queue is full)."""
    UNAVAILABLE = 5
    """The store cannot be reached or is not a usable taskflow store (no tables, a
    schema newer than this release, a missing SQLite file)."""


class CLIError(TaskflowError):
    """A command failed; ``code`` is the exit status, the message says what to do."""

    def __init__(self, code: ExitCode, message: str, *, kind: str | None = None) -> None:
        self.code = code
        self.kind = kind or code.name.lower()
        super().__init__(message)


def exit_code_for(exc: BaseException) -> ExitCode:
    """Map an error taskflow raised to the exit status the command ends with."""
    if isinstance(exc, CLIError):
        return exc.code
    if isinstance(exc, TaskNotFoundError):
        return ExitCode.NOT_FOUND
    if isinstance(exc, (TaskStateError, QueueFullError)):
        return ExitCode.BAD_STATE
    if isinstance(exc, BackendUnavailableError):
        return ExitCode.UNAVAILABLE
    if isinstance(
        exc, (BackendURLError, BackendNotFoundError, InvalidOperationError, ValidationError)
    ):
        return ExitCode.USAGE
    if type(exc).__name__ == "SchemaVersionError":  # taskflow-sql, not imported here
        return ExitCode.UNAVAILABLE
    return ExitCode.FAILURE
