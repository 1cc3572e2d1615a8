"""The toy backend of the "Writing a backend" guide passes the conformance suite.

The backend is loaded from ``docs/examples/toy_backend.py`` by path, so the code the
guide shows is the code that is tested. The guard test's own behaviour is checked here
too.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from fastapi_taskflow.clock import ManualClock
from fastapi_taskflow.errors import BackendURLError
from fastapi_taskflow.testing import BackendConformance
from fastapi_taskflow.testing.suite import GuardTests, QueueTests, find_unmarked_overrides

TOY_PATH = Path(__file__).resolve().parents[3] / "docs" / "examples" / "toy_backend.py"


def load_toy() -> ModuleType:
    """Import ``docs/examples/toy_backend.py`` as the module ``toy_backend``."""
    if "toy_backend" in sys.modules:
        return sys.modules["toy_backend"]
    spec = importlib.util.spec_from_file_location("toy_backend", TOY_PATH)
    assert spec is not None and spec.loader is not None, f"cannot load {TOY_PATH}"
    module = importlib.util.module_from_spec(spec)
    sys.modules["toy_backend"] = module
    spec.loader.exec_module(module)
    return module


toy = load_toy()


class TestToyBackendConformance(BackendConformance):
    """Every standard test, on the guide's toy backend."""

    @pytest.fixture
    async def backend(self, clock: ManualClock) -> AsyncIterator[Any]:
        backend = toy.from_url("toy://", clock=clock)
        await backend.open()
        yield backend
        await backend.close()


def test_toy_url_is_checked() -> None:
    """The toy factory refuses URLs that are not ``toy://``."""
    with pytest.raises(BackendURLError):
        toy.from_url("toy://somewhere/else", clock=ManualClock())


# -- the guard ----------------------------------------------------------------------


def test_guard_accepts_untouched_subclass() -> None:
    """A subclass that only adds the fixture passes the guard."""
    assert find_unmarked_overrides(TestToyBackendConformance) == []


def test_guard_reports_silent_override_and_deletion() -> None:
    """Overriding a test without xfail, or setting it to None, is reported by name."""

    class Sloppy(QueueTests, GuardTests):
        async def test_claim_limit(self, backend: Any, clock: ManualClock) -> None:
            pass

        test_dequeue = None  # type: ignore[assignment]

    problems = find_unmarked_overrides(Sloppy)
    assert len(problems) == 2
    assert any(p.startswith("test_claim_limit is overridden") for p in problems)
    assert any(p.startswith("test_dequeue was removed") for p in problems)


def test_guard_accepts_xfail_with_reason_only() -> None:
    """An override marked ``xfail(reason=...)`` is accepted; a bare ``xfail`` is not."""

    class Explicit(QueueTests, GuardTests):
        @pytest.mark.xfail(reason="no delayed queues on this server")
        async def test_not_before_is_respected(self, backend: Any, clock: ManualClock) -> None:
            pass

        @pytest.mark.xfail
        async def test_claim_limit(self, backend: Any, clock: ManualClock) -> None:
            pass

    problems = find_unmarked_overrides(Explicit)
    assert len(problems) == 1 and problems[0].startswith("test_claim_limit")


def test_guard_itself_cannot_be_overridden() -> None:
    """Overriding the guard test is an error when the class is defined."""
    with pytest.raises(TypeError, match="test_no_standard_test_is_overridden"):

        class Cheater(GuardTests):
            def test_no_standard_test_is_overridden(self) -> None:
                pass


def test_the_guard_fails_when_its_name_constant_names_another_test(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """GUARD_TEST_NAME must name the guard itself, or the protection above checks the
    wrong test; the guard notices."""
    import fastapi_taskflow.testing.suite.guard as guard

    class Plain(QueueTests, GuardTests):
        pass

    Plain().test_no_standard_test_is_overridden()  # the constant is right: passes
    monkeypatch.setattr(guard, "GUARD_TEST_NAME", "test_something_else")
    with pytest.raises(AssertionError, match="not the name of this guard test"):
        Plain().test_no_standard_test_is_overridden()
