"""Observers: where task lifecycle and log events go.

Pass them to ``TaskManager(observers=[...])``. Built-ins: :class:`StdoutObserver`,
:class:`FileObserver`, :class:`MemoryObserver` (tests) and :class:`LoggingObserver`
(stdlib ``logging``). Write your own by subclassing :class:`BaseObserver` and overriding
``on_lifecycle`` and/or ``on_log``.
"""

from __future__ import annotations

from .base import BaseObserver, ObserverChain
from .builtin import FileObserver, LoggingObserver, MemoryObserver, StdoutObserver

__all__ = [
    "BaseObserver",
    "FileObserver",
    "LoggingObserver",
    "MemoryObserver",
    "ObserverChain",
    "StdoutObserver",
]
