"""Testing tools for taskflow: the shared backend conformance suite.

A backend package proves it implements :class:`~fastapi_taskflow.protocols.TaskBackend`
by subclassing :class:`BackendConformance` and providing one async fixture, ``backend``,
that yields a fresh, empty, opened backend built with the suite's ``clock``::

    import pytest
    from fastapi_taskflow.testing import BackendConformance

    class TestMyBackendConformance(BackendConformance):
        @pytest.fixture
        async def backend(self, clock):
            backend = MyBackend(..., clock=clock)
            await backend.open()
            yield backend
            await backend.close()

The individual areas live in :mod:`fastapi_taskflow.testing.suite` (``QueueTests``,
``LeaseTests`` ...) for authors who want to run only some of them while developing.
Importing this package requires pytest (the ``testing`` extra).
"""

from __future__ import annotations

import pytest

# Plain ``assert`` in the suite gets pytest's detailed failure messages.
pytest.register_assert_rewrite("fastapi_taskflow.testing.suite")

from .suite import BackendConformance  # noqa: E402

__all__ = ["BackendConformance"]
