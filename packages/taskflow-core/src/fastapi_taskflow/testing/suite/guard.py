"""The guard: a standard test may only be skipped out loud, with an ``xfail`` reason.

A subclass that overrides a standard test, or sets it to ``None``, would silently turn a
failing contract check green. The guard test fails in that case unless the override is
marked ``@pytest.mark.xfail(reason="...")``, which keeps the opt-out visible in every
test report::

    class TestMyBackendConformance(BackendConformance):
        @pytest.mark.xfail(reason="our server has no pub/sub yet; tracked in #12")
        async def test_events_reach_a_fork(self, backend, clock):
            await super().test_events_reach_a_fork(backend, clock)
"""

from __future__ import annotations

import inspect
from typing import Any

from ._base import GUARD_TEST_NAME, SUITE_PACKAGE, ConformanceBase

__all__ = ["GuardTests", "find_unmarked_overrides", "standard_tests"]


def standard_tests(cls: type) -> dict[str, Any]:
    """Map each standard test name reachable from ``cls`` to the suite's function."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith(SUITE_PACKAGE):
            continue
        for name, value in vars(klass).items():
            if name.startswith("test_") and callable(value):
                found[name] = value
    return found


def _xfail_reason(func: Any) -> str | None:
    for mark in getattr(func, "pytestmark", ()):
        if getattr(mark, "name", None) == "xfail":
            reason = mark.kwargs.get("reason")
            if isinstance(reason, str) and reason.strip():
                return reason
    return None


def find_unmarked_overrides(cls: type) -> list[str]:
    """Return one message per standard test ``cls`` replaced without an xfail reason.

    Args:
        cls: a subclass of the suite (usually the backend's test class).
    """
    problems = []
    for name, original in standard_tests(cls).items():
        current = inspect.getattr_static(cls, name, None)
        if current is original:
            continue
        if not callable(current):
            problems.append(
                f"{name} was removed (set to {current!r}); to opt out, override it with "
                "@pytest.mark.xfail(reason=...) instead"
            )
        elif _xfail_reason(current) is None:
            problems.append(
                f"{name} is overridden without @pytest.mark.xfail(reason=...); standard "
                "tests may not be replaced silently"
            )
    return problems


class GuardTests(ConformanceBase):
    """The test that keeps the other standard tests from being dropped silently."""

    def test_no_standard_test_is_overridden(self) -> None:
        """No standard test was overridden or deleted without an xfail reason.

        If this fails, your test class replaced a standard test. Remove the override,
        or opt out visibly: override it with ``@pytest.mark.xfail(reason="why")``.
        """
        running = inspect.currentframe()
        assert running is not None and running.f_code.co_name == GUARD_TEST_NAME, (
            f"GUARD_TEST_NAME is {GUARD_TEST_NAME!r}, not the name of this guard test: "
            "ConformanceBase would protect the wrong test from being overridden"
        )
        problems = find_unmarked_overrides(type(self))
        assert not problems, "\n".join(problems)
