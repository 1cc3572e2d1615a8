"""Construction-time limits and the warning about functions nobody can recover.

The per-call limits (priority, tags, keys, arguments) are in the conformance suite
(``fastapi_taskflow.testing.suite.limits``) so every backend proves the same answer.
"""

from __future__ import annotations

import functools
import logging

import pytest

from fastapi_taskflow import BackendURLError, InvalidTaskError, TaskflowError, TaskManager
from fastapi_taskflow.limits import NAME_MAX, clean_json, clean_text


@pytest.mark.parametrize("url", ["", "   "])
def test_an_empty_backend_url_is_refused(url: str) -> None:
    """``backend=""`` used to mean ``memory://`` silently."""
    with pytest.raises(BackendURLError, match="is empty"):
        TaskManager(backend=url)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"name": "n" * (NAME_MAX + 1)}, "the limit is 255"),
        ({"name": "job\x00"}, "NUL"),
        ({"name": "job\ud800"}, "lone surrogate"),
        ({"queue": "q" * (NAME_MAX + 1)}, "the limit is 255"),
        ({"queue": "q\x00"}, "NUL"),
        ({"priority": 2**31}, "priority must be between"),
    ],
)
def test_task_settings_past_the_limits_fail_at_decoration(
    options: dict[str, object], fragment: str
) -> None:
    tm = TaskManager()
    with pytest.raises(InvalidTaskError, match=fragment):
        tm.task(**options)(lambda: None)  # type: ignore[arg-type]


def test_an_unregistered_function_name_past_the_limit_fails_at_add_task() -> None:
    tm = TaskManager()
    namespace: dict[str, object] = {}
    exec(f"def {'f' * 300}(): pass", namespace)
    with pytest.raises(TaskflowError, match="the limit is 255"):
        tm.add_task(namespace["f" * 300])  # type: ignore[arg-type]


def test_clean_text_and_json_replace_only_what_no_store_holds() -> None:
    assert clean_text("a\x00b\ud800c é😀") == ("a\ufffdb\ufffdc é😀", 2)
    assert clean_text("plain") == ("plain", 0)
    assert clean_json({"k\ud800": ["\x00", "\udfff"]}) == ({"k\ufffd": ["\x00", "\ufffd"]}, 2)


def _module_level() -> None:
    pass


async def _send(to: str, subject: str) -> None:
    pass


@pytest.mark.anyio
async def test_a_partial_is_named_after_its_function_and_warned_about(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A ``functools.partial`` is named after the function it wraps (partials of
    different functions are told apart in stats and on the dashboard), and on a durable
    backend accepted with a warning: its bound arguments are not stored with the task,
    so no other instance could run it."""
    tm = TaskManager(backend=f"sqlite:///{tmp_path}/tasks.db")
    async with tm:
        with caplog.at_level(logging.WARNING, logger="fastapi_taskflow"):
            sent = tm.add_task(functools.partial(_send, "a@example.com"), "hi")
            nested = tm.add_task(functools.partial(functools.partial(_module_level)))
        sent_record = await tm.store.aget(sent)
        nested_record = await tm.store.aget(nested)
    assert sent_record is not None and nested_record is not None
    assert sent_record.func_name == f"functools.partial({__name__}._send)"
    assert nested_record.func_name == f"functools.partial({__name__}._module_level)"
    warnings = [r.getMessage() for r in caplog.records if "cannot be recovered" in r.getMessage()]
    assert len(warnings) == 2
    assert all("bound arguments are not stored" in w for w in warnings)


@pytest.mark.anyio
async def test_warning_for_functions_no_other_instance_can_recover(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    """On a durable backend, a lambda or a closure is accepted with a warning (once per
    name) saying another instance cannot recover it; a registered function is not."""
    tm = TaskManager(backend=f"sqlite:///{tmp_path}/tasks.db")
    tm.task(name="registered")(_module_level)

    def closure() -> None:
        pass

    async with tm:
        with caplog.at_level(logging.WARNING, logger="fastapi_taskflow"):
            tm.add_task(lambda: None)
            tm.add_task(closure)
            tm.add_task(closure)
            tm.add_task(_module_level)
    warnings = [r.getMessage() for r in caplog.records if "cannot be recovered" in r.getMessage()]
    assert len(warnings) == 2
    assert "it is a lambda" in warnings[0]
    assert "defined inside another function" in warnings[1]
