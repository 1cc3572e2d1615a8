"""No password and no server address in an error, a log line or an HTTP answer (issue
8, item 3, and the team's rule for addresses). The SQL and Redis messages are checked
in their packages' tests; real unreachable servers in
``tests-integration/test_addresses_masked.py``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pytest
from fastapi import BackgroundTasks, FastAPI
from fastapi.testclient import TestClient

from fastapi_taskflow import TaskManager
from fastapi_taskflow.errors import BackendNotFoundError, BackendUnavailableError, BackendURLError
from fastapi_taskflow.models import CreateResult, TaskRecord
from fastapi_taskflow.redaction import hide_hosts_of, mask_log_records, mask_secrets
from taskflow_memory import MemoryBackend

SECRET = "s3cret"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql://app:s3cret@db/app", "postgresql://app:***@<host>/app"),
        ("redis://:s3cret@cache:6379/0?prefix=x", "redis://:***@<host>:6379/0?prefix=x"),
        (
            "mysql://root:s3cret@h:3306/db?charset=utf8",
            "mysql://root:***@<host>:3306/db?charset=utf8",
        ),
        ("URL 'postgres://a:s3cret@h/d' refused", "URL 'postgres://a:***@<host>/d' refused"),
        ("redis://h:6379/0?password=s3cret&db=1", "redis://<host>:6379/0?password=***&db=1"),
        ("postgresql://app@db/app", "postgresql://app@<host>/app"),
        # unencoded '/', '?', '#', '@' in a password (SQLAlchemy connects with them)
        ("postgresql://app:s3/c?r#t@db/app", "postgresql://app:***@<host>/app"),
        ("redis://:s3/cret@cache:6379/0", "redis://:***@<host>:6379/0"),
        ("mysql://root:s3@c@h:3306/db", "mysql://root:***@<host>:3306/db"),
        ("postgresql://app@[fd00::5]:5433/app", "postgresql://app@<host>:5433/app"),
        ("redis://n1:7000,n2:7001/0", "redis://<host>:7000,<host>:7001/0"),
        ("postgresql://app@/app?host=10.0.0.9&port=5", "postgresql://app@/app?host=<host>&port=5"),
        (
            "postgresql://app@/app?host=/run/postgresql",
            "postgresql://app@/app?host=/run/postgresql",
        ),
        ("sqlite:///var/tasks.db", "sqlite:///var/tasks.db"),
        ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=0"),
        ("no url here: user:s3cret", "no url here: user:s3cret"),
        # drivers' own texts
        (
            "[Errno 111] Connect call failed ('10.1.2.3', 5432)",
            "[Errno 111] Connect call failed ('<host>', 5432)",
        ),
        (
            "Multiple exceptions: Connect call failed ('::1', 5432, 0, 0), "
            "Connect call failed ('127.0.0.1', 5432)",
            "Multiple exceptions: Connect call failed ('<host>', 5432, 0, 0), "
            "Connect call failed ('<host>', 5432)",
        ),
        ("Error 111 connecting to 10.1.2.3:6379.", "Error 111 connecting to <host>:6379."),
        ("reached fe80::1%eth0 and ::ffff:10.0.0.1.", "reached <host> and <host>."),
        # not addresses
        (
            "at 21:07:32, std::vector, version 1.2.3.4.5",
            "at 21:07:32, std::vector, version 1.2.3.4.5",
        ),
        ("task 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "task 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
    ],
)
def test_mask_secrets_masks_passwords_and_addresses_and_keeps_the_rest(
    text: str, masked: str
) -> None:
    assert mask_secrets(text) == masked


def test_the_server_names_of_a_backend_url_are_masked_outside_urls_too() -> None:
    """A driver names the server as the URL did, not as a URL (MySQL: ``on 'db'``,
    redis-py: ``connecting to db:6379``): the hosts of a URL taskflow was given are
    masked where a text names a server (quoted whole, or before a port)."""
    hide_hosts_of("mysql://root:pw@tasks-db.probe.internal:3306/app")
    hide_hosts_of("redis://cache-probe:6379/0")
    said = (
        "Can't connect to MySQL server on 'tasks-db.probe.internal' (Name not known); "
        "Error -2 connecting to cache-probe:6379. Name or service not known."
    )
    assert mask_secrets(said) == (
        "Can't connect to MySQL server on '<host>' (Name not known); "
        "Error -2 connecting to <host>:6379. Name or service not known."
    )
    # parts of longer names, module paths, schemes and mere words are left alone
    kept = (
        "cache-probe-2:1, my.cache-probe:1, cache-probe.module, cache-probe+x:///f, "
        "/cache-probe/, the cache-probe is 'cache-probe-2'"
    )
    assert mask_secrets(kept) == kept


def test_log_records_are_masked_with_their_tracebacks() -> None:
    """A record of taskflow's logger is masked before any handler sees it, its traceback
    too — the driver's exception, chained as the cause, quotes the server."""
    logger = mask_log_records(logging.getLogger("fastapi_taskflow.probe_masking"))
    stream: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stream.append(self.format(record))

    handler = Collect()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        try:
            try:
                raise ConnectionRefusedError(111, "Connect call failed ('10.1.2.3', 5432)")
            except OSError as driver:
                raise BackendUnavailableError(
                    f"cannot reach postgresql://app:{SECRET}@10.1.2.3/app"
                ) from driver
        except BackendUnavailableError:
            logger.warning("store down at %s", "10.1.2.3:5432", exc_info=True)
        logger.error("plain %s line", "10.9.8.7")
    finally:
        logger.removeHandler(handler)
    text = "\n".join(stream)
    assert "10.1.2.3" not in text and "10.9.8.7" not in text and SECRET not in text
    # still says what failed, where in the code, and why
    assert "WARNING store down at <host>:5432" in text
    assert "ConnectionRefusedError: [Errno 111] Connect call failed ('<host>', 5432)" in text
    assert "The above exception was the direct cause" in text
    assert "postgresql://app:***@<host>/app" in text and "ERROR plain <host> line" in text
    assert "in test_log_records_are_masked_with_their_tracebacks" in text


def test_a_log_record_that_cannot_be_formatted_is_left_to_the_handler() -> None:
    record = logging.LogRecord("fastapi_taskflow", logging.ERROR, __file__, 1, "%d", ("x",), None)
    assert mask_log_records(logging.getLogger("fastapi_taskflow")).filter(record)
    assert record.msg == "%d"  # logging reports the bad format as it always does


def test_a_long_run_of_colons_is_masked_in_linear_time() -> None:
    text = "a:" * 200_000 + "z"
    assert mask_secrets(text) == text  # returns (a quadratic scan would not, in time)


def test_a_long_word_is_masked_in_linear_time() -> None:
    """A long run of letters (a token, a blob in a driver's message) was scanned again
    from each of its characters for a scheme: 40,000 letters took ~10 s."""
    text = "a" * 400_000
    assert mask_secrets(text) == text  # returns (a quadratic scan would not, in time)
    text = "x://b:a" * 60_000  # many schemes and colons in one word, no '@'
    assert mask_secrets(text).startswith("x://<host>")


def test_a_missing_backend_package_does_not_print_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import fastapi_taskflow.backends as backends

    monkeypatch.setattr(backends, "entry_points", lambda group: [])  # nothing installed
    with pytest.raises(BackendNotFoundError) as info:
        TaskManager(backend=f"postgresql://app:{SECRET}@db/app")
    assert SECRET not in str(info.value)
    assert "postgresql://app:***@<host>/app" in str(info.value)


@pytest.mark.parametrize("url", [f"://app:{SECRET}@db/app", f"memory://app:{SECRET}@db/x"])
def test_malformed_urls_do_not_print_the_password(url: str) -> None:
    with pytest.raises(BackendURLError) as info:
        TaskManager(backend=url)
    assert SECRET not in str(info.value) and "***" in str(info.value)


class DownBackend(MemoryBackend):
    """A memory backend whose writes fail as an unreachable server's do, with the
    server's address (and a password, as some drivers echo the DSN) in the message."""

    create_now = None  # type: ignore[assignment]  # through the write buffer, like a server

    down = True

    async def create_many(self, records: Sequence[TaskRecord]) -> list[CreateResult]:
        if self.down:
            raise BackendUnavailableError(
                f"cannot reach postgresql://app:{SECRET}@10.1.2.3:5432/app (connection refused)"
            )
        return await super().create_many(records)


def test_the_503_names_neither_the_store_nor_its_address_and_the_log_masks_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    task_manager = TaskManager(backend=DownBackend())
    app = FastAPI()
    task_manager.install(app)

    @app.post("/add")
    def add(background_tasks: BackgroundTasks) -> dict[str, str]:
        return {"task_id": background_tasks.add_task(print, "never")}

    caplog.set_level(logging.WARNING, logger="fastapi_taskflow")
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/add")
    assert response.status_code == 503
    body = response.text
    assert "task store is unavailable" in response.json()["detail"]
    for leak in ("10.1.2.3", "5432", SECRET, "postgresql", "connection refused"):
        assert leak not in body
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "10.1.2.3" not in logged and SECRET not in logged
    assert "cannot reach postgresql://app:***@<host>:5432/app (connection refused)" in logged


def test_the_refusal_while_down_does_not_carry_the_store_error_text() -> None:
    task_manager = TaskManager(backend=DownBackend())
    engine = task_manager._engine
    engine.availability.failed(BackendUnavailableError(f"postgresql://app:{SECRET}@10.1.2.3/x"))
    engine.availability._probe_at = float("inf")  # no probe lets this call through
    with pytest.raises(BackendUnavailableError) as info:
        task_manager.add_task(print, "x")
    assert "10.1.2.3" not in str(info.value) and SECRET not in str(info.value)
    assert info.value.__cause__ is not None  # the cause is kept for the operator
