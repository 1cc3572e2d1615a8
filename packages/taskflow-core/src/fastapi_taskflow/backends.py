"""Finding a backend from a URL through the ``taskflow.backends`` entry points."""

from __future__ import annotations

import os
from importlib.metadata import entry_points
from urllib.parse import urlsplit

from .clock import Clock, SystemClock
from .errors import BackendNotFoundError, BackendURLError
from .protocols import BackendFactory, TaskBackend
from .redaction import hide_hosts_of, mask_secrets

__all__ = ["DEFAULT_BACKEND_URL", "ENV_VAR", "open_backend", "registered_schemes"]

ENV_VAR = "TASKFLOW_BACKEND"
"""The environment variable read when ``TaskManager(backend=None)``."""

DEFAULT_BACKEND_URL = "memory://"
"""The backend used when neither an argument nor ``TASKFLOW_BACKEND`` names one."""

_PACKAGE_FOR_SCHEME = {
    "memory": "taskflow-core[memory]",
    "sqlite": "taskflow-core[sql]",
    "postgres": "taskflow-core[postgres]",
    "postgresql": "taskflow-core[postgres]",
    "mysql": "taskflow-core[mysql]",
    "mariadb": "taskflow-core[mysql]",
    "redis": "taskflow-core[redis]",
    "rediss": "taskflow-core[redis]",
    "unix": "taskflow-core[redis]",
}


def registered_schemes() -> dict[str, str]:
    """Return ``{scheme: "module:attr"}`` for every installed backend entry point."""
    return {ep.name: ep.value for ep in entry_points(group="taskflow.backends")}


def _scheme_of(url: str) -> str:
    if not isinstance(url, str) or "://" not in url:
        raise BackendURLError(
            f"malformed backend URL {mask_secrets(str(url))!r}: expected 'scheme://...', for "
            "example 'memory://', 'sqlite:///tasks.db', 'postgresql://host/db' or 'redis://host:6379/0'"
        )
    scheme = urlsplit(url).scheme.lower()
    base = scheme.split("+", 1)[0]
    if not base:
        raise BackendURLError(
            f"malformed backend URL {mask_secrets(url)!r}: the scheme before '://' is empty"
        )
    return base


def open_backend(url: str | None = None, *, clock: Clock | None = None) -> TaskBackend:
    """Build (unopened) the backend that ``url`` names.

    ``url`` None means the ``TASKFLOW_BACKEND`` environment variable, else ``memory://``.
    A scheme may carry a driver suffix (``postgresql+asyncpg://``); the part before ``+``
    selects the entry point.

    Raises:
        BackendURLError: the URL is empty or has no ``scheme://``.
        BackendNotFoundError: no installed package registers the scheme; the message
            names the package to install.
    """
    if url is not None and (not isinstance(url, str) or not url.strip()):
        raise BackendURLError(
            f"backend URL {url!r} is empty: pass a URL such as 'memory://', "
            "'sqlite:///tasks.db' or 'redis://host:6379/0', or None to read the "
            f"{ENV_VAR} environment variable (default {DEFAULT_BACKEND_URL!r})"
        )
    url = url or os.environ.get(ENV_VAR) or DEFAULT_BACKEND_URL
    scheme = _scheme_of(url)
    hide_hosts_of(url)  # whichever backend serves it, its server is never named
    found = [ep for ep in entry_points(group="taskflow.backends") if ep.name == scheme]
    if not found:
        hint = _PACKAGE_FOR_SCHEME.get(scheme)
        fix = (
            f'install it with: pip install "{hint}"'
            if hint
            else "install the package that provides it (it registers the scheme under the "
            "'taskflow.backends' entry point group)"
        )
        known = ", ".join(sorted(registered_schemes())) or "none"
        raise BackendNotFoundError(
            f"no backend is installed for {scheme}:// URLs ({mask_secrets(url)!r}); {fix}. "
            f"Installed schemes: {known}."
        )
    factory: BackendFactory = found[0].load()
    return factory(url, clock=clock or SystemClock())
