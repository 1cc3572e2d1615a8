"""The ``taskflow`` command line: list, show, logs, retry, cancel, purge, stats, watch,
check — against a shared store given by ``--backend URL`` or ``TASKFLOW_BACKEND``.

Installed with taskflow-core as the ``taskflow`` console script; ``python -m
fastapi_taskflow.cli`` runs it too. See docs/cli.md.
"""

from __future__ import annotations

from .app import app, main
from .errors import ExitCode

__all__ = ["ExitCode", "app", "main"]
