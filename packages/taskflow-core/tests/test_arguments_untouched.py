"""Recording a task's arguments never reads, iterates or changes them (issue 8, item 1).

On an in-process backend the task receives the very objects it was given, full; the
record shows a summary of what it could not store. On a durable backend an argument that
cannot be stored without consuming it is refused at ``add_task()``, named, and left as
it was. ``bytes`` are always stored (base64, marked) and come back as ``bytes``.
"""

from __future__ import annotations

import io
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import BackgroundTasks, FastAPI, UploadFile
from fastapi.testclient import TestClient

from fastapi_taskflow import ManagedBackgroundTasks, TaskArgumentError, TaskManager, TaskStatus
from fastapi_taskflow.encoding import decode_arguments, encode_arguments
from taskflow_memory import MemoryBackend
from taskflow_sql import SQLBackend

pytestmark = pytest.mark.anyio

# The documented stored forms (docs/adding-tasks.md, "Arguments").
BYTES_MARKER = "__taskflow_bytes__"
UNSTORED_MARKER = "__taskflow_unstored__"


class DurableMemory(MemoryBackend):
    """The memory backend, declared durable so the engine applies the durable rules."""

    durable = True


@pytest.mark.parametrize("size", [6, 100_000])
def test_an_uploaded_file_reaches_the_task_whole_with_install(size: int) -> None:
    tm = TaskManager()
    app = FastAPI()
    tm.install(app)
    received: list[bytes] = []

    def save(upload: Any) -> None:
        received.append(upload.read())

    @app.post("/upload")
    def upload(file: UploadFile, background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"task_id": background_tasks.add_task(save, file.file)}

    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    with TestClient(app) as client:
        response = client.post("/upload", files={"file": ("data.bin", payload)})
        assert response.status_code == 200
        record = tm.store.get(response.json()["task_id"])
    assert received == [payload]
    assert record is not None and record.status is TaskStatus.SUCCESS
    assert record.args is not None and UNSTORED_MARKER in record.args[0]


def numbers() -> Iterator[int]:
    yield from range(5)


async def test_streams_and_generators_reach_the_task_untouched_in_process() -> None:
    tm = TaskManager()
    got: dict[str, Any] = {}

    def consume(text: Any, gen: Any, *, raw: Any) -> None:
        got.update(text=text.read(), gen=list(gen), raw=raw.read())

    text, gen, raw = io.StringIO("line one\nline two\n"), numbers(), io.BytesIO(b"\x00\xff")
    async with tm:
        managed = ManagedBackgroundTasks(tm)
        task_id = managed.add_task(consume, text, gen, raw=raw)
        await managed()
    assert got == {"text": "line one\nline two\n", "gen": [0, 1, 2, 3, 4], "raw": b"\x00\xff"}
    record = tm.store.get(task_id)
    assert record is not None and record.status is TaskStatus.SUCCESS
    assert record.args == [{UNSTORED_MARKER: "StringIO"}, {UNSTORED_MARKER: "generator"}]
    assert record.kwargs == {"raw": {UNSTORED_MARKER: "BytesIO"}}


def handler(first: Any = None, *, second: Any = None) -> None:
    pass


def _unstorables() -> Iterator[tuple[str, Any, Any]]:
    """(type name, value, a probe returning what is left to read)."""
    text = io.StringIO("abc\ndef\n")
    yield "StringIO", text, lambda: text.getvalue()[text.tell() :]
    spooled = tempfile.SpooledTemporaryFile()  # noqa: SIM115 (closed with the test)
    spooled.write(b"upload body\n" * 10)
    spooled.seek(0)
    yield "SpooledTemporaryFile", spooled, lambda: spooled.read()
    gen = numbers()
    yield "generator", gen, lambda: list(gen)
    it = iter([1, 2, 3])
    yield "list_iterator", it, lambda: list(it)


@pytest.mark.parametrize("backend", ["durable-memory", "sqlite"])
async def test_a_durable_backend_refuses_streams_by_name_and_leaves_them_unread(
    backend: str, tmp_path: Path
) -> None:
    store: MemoryBackend | SQLBackend = (
        DurableMemory() if backend == "durable-memory" else SQLBackend(f"sqlite:///{tmp_path}/t.db")
    )
    tm = TaskManager(backend=store)
    async with tm:
        managed = ManagedBackgroundTasks(tm)
        for type_name, value, _left in _unstorables():
            with pytest.raises(TaskArgumentError) as positional:
                managed.add_task(handler, value)
            assert f"positional argument 'first' of handler is a {type_name}" in str(
                positional.value
            )
            with pytest.raises(TaskArgumentError, match="keyword argument 'second'"):
                managed.add_task(handler, second=[1, {"nested": value}])
        for type_name, value, left in _unstorables():
            with pytest.raises(TaskArgumentError):
                managed.add_task(handler, value)
            rest = left()
            assert rest and rest not in ("", b"", []), f"{type_name} was consumed: {rest!r}"
        lock, sock = threading.Lock(), socket.socket()
        try:
            with pytest.raises(TaskArgumentError, match="'first' of handler is a lock"):
                managed.add_task(handler, lock)
            with pytest.raises(TaskArgumentError, match="'second' of handler is a socket"):
                managed.add_task(handler, second=sock)
        finally:
            sock.close()
        assert managed.tasks == []
        assert (await tm.store.astats()).total == 0


def test_the_full_content_is_left_after_a_refusal() -> None:
    tm = TaskManager(backend=DurableMemory())
    text = io.StringIO("line one\nline two\n")
    with pytest.raises(TaskArgumentError):
        ManagedBackgroundTasks(tm).add_task(handler, text)
    assert text.tell() == 0 and text.read() == "line one\nline two\n"


def takes_bytes(data: bytes, more: list[bytes]) -> None:
    pass


@pytest.mark.parametrize("data", [b"utf-8 text", b"\xff\xfe not utf-8", b""])
def test_bytes_are_always_stored_as_marked_base64_and_come_back_as_bytes(data: bytes) -> None:
    args, kwargs = encode_arguments(takes_bytes, (data,), {"more": [bytearray(data)]}, strict=True)
    assert args is not None and kwargs is not None
    assert set(args[0]) == {BYTES_MARKER} and set(kwargs["more"][0]) == {BYTES_MARKER}
    back_args, back_kwargs = decode_arguments(takes_bytes, args, kwargs)
    assert back_args == (data,) and back_kwargs == {"more": [data]}
    unhinted, _ = decode_arguments(handler, args, {})
    assert unhinted == (data,)


def test_a_summary_is_never_passed_to_a_task_as_if_it_were_the_argument() -> None:
    """Only the accepting process has an unstored argument; decoding the record refuses
    (the engine then leaves the task for that process instead of running it)."""
    args, kwargs = encode_arguments(handler, (io.StringIO("x"),), {}, strict=False)
    assert args == [{UNSTORED_MARKER: "StringIO"}]
    with pytest.raises(ValueError, match="kept in memory"):
        decode_arguments(handler, args, kwargs or {})
