"""Developer sessions: tests, conformance, integration, lint, docs, demo, bench.

Service URLs come from environment variables with local defaults:
TASKFLOW_TEST_POSTGRES_URL, TASKFLOW_TEST_MYSQL_URL, TASKFLOW_TEST_REDIS_URL. Set
TASKFLOW_REQUIRE_SERVICES=1 to make a missing service fail tests instead of skipping them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nox

nox.options.reuse_existing_virtualenvs = True
# uv makes the venvs and installs into them when it is installed (`pip install uv`; CI does),
# in seconds instead of minutes; virtualenv + pip otherwise.
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).parent
PACKAGES = ["taskflow-core", "taskflow-memory", "taskflow-sql", "taskflow-redis"]
EXTRAS = {"taskflow-core": "[cron]", "taskflow-sql": "[sqlite,postgres,mysql]"}
TEST_DEPS = [
    "pytest>=8",
    "pytest-timeout>=2.3",
    "httpx>=0.27",
    # Starlette's TestClient runs on httpx2 when it is installed (with httpx alone it
    # warns that this is deprecated); the tests' own clients stay on httpx
    "httpx2>=2.17",
    "uvicorn>=0.29",
    "hypothesis>=6",
    "python-multipart>=0.0.9",  # the upload tests (UploadFile arguments)
    "playwright>=1.44",
    "schemathesis>=4.0",
    "pytest-xdist>=3.5",  # the suite on several workers (groups: ./conftest.py)
    "gunicorn>=22",  # test_preload_workers: workers forked from a master that imported the app
    "pip>=23",  # test_the_wheel_ships_the_dashboard_assets builds a wheel (uv venvs have none)
]
# `nox -s tests` with no arguments: the whole suite on 3 workers. Most of its time is spent
# waiting (on real seconds, processes, servers), so 3 workers pay off on 2 cores too.
# Tests that must not run beside each other share an xdist group (see ./conftest.py).
TEST_WORKERS = os.environ.get("TASKFLOW_TEST_WORKERS", "3")

# The test sessions let Python cache modules' bytecode even where the environment says
# PYTHONDONTWRITEBYTECODE (this machine's does): the suite starts hundreds of processes
# (uvicorn instances, the `taskflow` command, scripts), and each would compile FastAPI,
# pydantic and SQLAlchemy from source again -- about half of a process's start-up.
WRITE_BYTECODE = {"PYTHONDONTWRITEBYTECODE": ""}

# conformance -- NAME  runs packages/*/tests/test_conformance_NAME*.py
CONFORMANCE = {
    "memory": ["packages/taskflow-memory/tests/test_conformance_memory.py"],
    "toy": ["packages/taskflow-core/tests/test_toy_backend_conformance.py"],
    "sqlite": ["packages/taskflow-sql/tests/test_conformance_sqlite.py"],
    "postgres": ["packages/taskflow-sql/tests/test_conformance_postgres.py"],
    "mysql": ["packages/taskflow-sql/tests/test_conformance_mysql.py"],
    "redis": [
        "packages/taskflow-redis/tests/test_conformance_redis.py",
        "packages/taskflow-redis/tests/test_conformance_redis_cluster.py",
    ],
}


def _install_packages(session: nox.Session, *extra: str) -> None:
    args: list[str] = []
    for name in PACKAGES:
        if (ROOT / "packages" / name / "pyproject.toml").exists():
            args += ["-e", f"packages/{name}{EXTRAS.get(name, '')}"]
    session.install(*args, *extra)


def _seed_backends() -> str:
    """The backends the reference-page examples run on (each test isolated by ``{uid}``).

    MySQL is left out by default because its DDL makes the per-test schema slow; add
    ``mysql://root@127.0.0.1:3306/test?table_prefix=s{uid}_`` to run it too.
    """
    postgres = os.environ.get(
        "TASKFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )
    redis = os.environ.get("TASKFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    return ",".join(
        [
            "memory://",
            "sqlite:///{tmp}/tasks.db",
            f"{postgres}?schema=seed_{{uid}}",
            f"{redis}?prefix=seed{{uid}}",
        ]
    )


@nox.session
def tests(session: nox.Session) -> None:
    """Run every test: each package's own tests and tests-integration/.

    The reference-page examples run once per backend (``TASKFLOW_SEED_BACKENDS``).
    """
    _install_packages(session, *TEST_DEPS)
    env = {
        "TASKFLOW_SEED_BACKENDS": os.environ.get("TASKFLOW_SEED_BACKENDS", _seed_backends()),
        **WRITE_BYTECODE,
    }
    default = ["packages", "tests-integration", "-q", "-n", TEST_WORKERS, "--dist", "loadgroup"]
    session.run("pytest", *(session.posargs or default), env=env)


@nox.session
def conformance(session: nox.Session) -> None:
    """Run the shared backend suite: ``nox -s conformance -- memory sqlite redis``."""
    names = session.posargs or ["memory"]
    unknown = [n for n in names if n not in CONFORMANCE]
    if unknown:
        session.error(f"unknown backend(s) {unknown}; choose from {sorted(CONFORMANCE)}")
    _install_packages(session, *TEST_DEPS)
    files = [f for name in names for f in CONFORMANCE[name]]
    session.run("pytest", "-q", *files, env=WRITE_BYTECODE)


@nox.session
def integration(session: nox.Session) -> None:
    """Run tests-integration/ only (real apps, real servers, several processes)."""
    _install_packages(session, *TEST_DEPS)
    session.run("pytest", "-q", "tests-integration", *session.posargs, env=WRITE_BYTECODE)


# What each extra must make work, checked in a fresh venv with only that extra installed.
INSTALL_CHECKS = {
    "": "memory://",
    "[sql]": "sqlite:///check.db",
    "[postgres]": "postgresql://user@localhost/db",
    "[mysql]": "mysql://user@localhost/db",
    "[redis]": "redis://localhost:6379/0",
    "[cron]": "memory://",
    "[all]": "redis://localhost:6379/0",
}


def _fresh_venv(session: nox.Session, venv: Path) -> tuple[list[str], Path]:
    """Make an empty venv at ``venv``; return the command that installs into it, and its
    bin/. With uv (when installed) it takes a second; with ``python -m venv`` + pip, ~10 s."""
    uv = shutil.which("uv")
    if uv:
        session.run(uv, "venv", "--quiet", "--clear", "--python", sys.executable, str(venv),
                    external=True)  # fmt: skip
        return [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python")], venv
    session.run(sys.executable, "-m", "venv", "--clear", str(venv), external=True)
    return [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"], venv


@nox.session
def install_check(session: nox.Session) -> None:
    """Build every wheel, then install ``taskflow-core`` alone and with each extra into a
    fresh venv and build a ``TaskManager`` for the extra's URL (catches undeclared
    sibling imports and broken extras)."""
    dist = Path(session.create_tmp()) / "dist"
    uv = shutil.which("uv")
    if not uv:
        session.install("pip>=23")
    for name in PACKAGES:
        if uv:
            session.run(uv, "build", "--quiet", "--wheel", "--out-dir", str(dist),
                        f"packages/{name}", external=True)  # fmt: skip
        else:
            session.run("pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), f"packages/{name}")
    for extra, url in INSTALL_CHECKS.items():
        install, venv = _fresh_venv(
            session, Path(session.create_tmp()) / f"venv{extra.strip('[]') or '-core'}"
        )
        python = str(venv / "bin" / "python")
        session.run(*install, "--find-links", str(dist), f"taskflow-core{extra}", external=True)
        session.run(
            python,
            "-c",
            "import sys; from fastapi_taskflow import TaskManager; "
            f"print(type(TaskManager(backend={url!r}).backend).__name__, sys.argv)",
            extra or "core",
            external=True,
        )
        # The `taskflow` command is installed and imports with this extra alone ...
        session.run(str(venv / "bin" / "taskflow"), "--help", external=True, silent=True)
        if not extra:
            # ... and names the extra to install when a backend package is missing (2).
            session.run(
                str(venv / "bin" / "taskflow"),
                "check",
                "--backend",
                "sqlite:///check.db",
                external=True,
                success_codes=[2],
            )


@nox.session
def install_from_repo(session: nox.Session) -> None:
    """The README's install-from-the-repository command, in a fresh venv: the package
    directories named on pip's command line, before the packages are on an index."""
    session.install("pip>=23")
    venv = Path(session.create_tmp()) / "venv-from-repo"
    session.run("python", "-m", "venv", "--clear", str(venv))
    pip, python = str(venv / "bin" / "pip"), str(venv / "bin" / "python")
    dirs = [str(ROOT / "packages" / name) for name in ("taskflow-core", "taskflow-memory")]
    session.run(
        pip, "install", "--quiet", *dirs, str(ROOT / "packages" / "taskflow-redis"), external=True
    )
    session.run(
        python,
        "-c",
        "from fastapi_taskflow import TaskManager; "
        "names = [type(TaskManager(backend=u).backend).__name__ "
        "for u in ('memory://', 'redis://localhost:6379/0')]; "
        "assert names == ['MemoryBackend', 'RedisBackend'], names; print(names)",
        external=True,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint + format check) and mypy --strict on every package's src/, for the
    newest Python and for the oldest the packages declare (an API only a newer Python
    has fails here, not on a user's machine)."""
    _install_packages(
        session,
        "ruff>=0.17,<0.18",
        "mypy>=1.10",
        "pytest>=8",
        # what the code imports on the oldest Python only (backports)
        "exceptiongroup>=1.2",
        "async-timeout>=4",
    )
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    for name in PACKAGES:
        src = ROOT / "packages" / name / "src"
        if src.exists():
            session.run("mypy", "--strict", str(src.relative_to(ROOT)))
            session.run(
                "mypy", "--strict", "--python-version", OLDEST_PYTHON, str(src.relative_to(ROOT))
            )


OLDEST_PYTHON = "3.10"
"""The oldest Python the packages declare (``requires-python``)."""


def _interpreter(version: str) -> str | None:
    """A working Python ``version`` on this machine: on PATH, or installed by pyenv."""
    candidates = [shutil.which(f"python{version}")]
    candidates += sorted(
        str(path) for path in Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}")
    )
    for candidate in candidates:
        if (
            candidate
            and subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0
        ):
            return candidate
    return None


@nox.session
def oldest_python(session: nox.Session) -> None:
    """Every package's own tests on the oldest Python the packages declare (3.10), with
    the newest dependencies that Python gets (some, such as cronsim, stop earlier there),
    and the bare ``TestClient`` test (an event loop per request: what 3.10's asyncio
    differs most in is cancellation, and a loop's end cancels everything). The shared
    backend suite runs here on memory, SQLite and Redis; on PostgreSQL, MySQL and a
    Redis Cluster on the newest Python only.

    Skipped, saying so, when no such interpreter is on this machine; CI's has one."""
    python = _interpreter(OLDEST_PYTHON)
    if python is None:
        session.skip(f"no Python {OLDEST_PYTHON} on this machine (PATH or ~/.pyenv)")
    # Not under session.create_tmp(): that sets TMPDIR for the tests too, and a unix
    # socket's path under it grows past the 107 characters a socket path may have.
    venv = Path(session.virtualenv.location) / f"venv-{OLDEST_PYTHON}"
    uv = shutil.which("uv")
    if uv:
        session.run(uv, "venv", "--quiet", "--clear", "--python", python, str(venv), external=True)
        install = [uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python")]
    else:
        session.run(python, "-m", "venv", "--clear", str(venv), external=True)
        install = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    packages: list[str] = []
    for name in PACKAGES:
        packages += ["-e", f"packages/{name}{EXTRAS.get(name, '')}"]
    # httpx2 (Starlette's TestClient transport) needs Python 3.11: the TestClient runs on
    # httpx there, as it does for a user of that Python.
    deps = [dep for dep in TEST_DEPS if not dep.startswith(("httpx2", "playwright"))]
    session.run(*install, *packages, *deps, external=True)
    # The shared suite on the database servers runs on the newest Python only: its code
    # paths are the SQLite suite's (shared SQL) plus SQL text, nothing version-specific,
    # and it is the longest part of the packages' tests (~1.5 min of CI's time).
    server_suites = [
        "packages/taskflow-sql/tests/test_conformance_postgres.py",
        "packages/taskflow-sql/tests/test_conformance_mysql.py",
        "packages/taskflow-redis/tests/test_conformance_redis_cluster.py",
    ]
    args = session.posargs or [
        "packages",
        "tests-integration/test_bare_test_client.py",
        *[f"--ignore={path}" for path in server_suites],
        *["-q", "-n", TEST_WORKERS, "--dist", "loadgroup"],
    ]
    session.run(
        str(venv / "bin" / "python"), "-m", "pytest", *args, external=True, env=WRITE_BYTECODE
    )


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site in strict mode (``-- serve`` to preview)."""
    _install_packages(
        session,
        "mkdocs-material>=9.5",
        "mkdocstrings[python]>=0.25",
        "griffe-pydantic>=1.1",  # the fields of pydantic models in the API reference
        "ruff>=0.17,<0.18",  # formats the signatures in the API reference
    )
    if session.posargs and session.posargs[0] == "serve":
        session.run("mkdocs", "serve")
    else:
        session.run("mkdocs", "build", "--strict")
        problems = _reference_problems(ROOT / "site" / "reference")
        if problems:
            session.error("the API reference renders wrongly:\n" + "\n".join(problems))


# What the built API reference must show (models' fields) and must not (private names).
REFERENCE_MUST_SHOW = {
    "models": [
        "fastapi_taskflow.TaskRecord.task_id",
        "fastapi_taskflow.TaskRecord.status",
        "fastapi_taskflow.TaskQuery.func_name",
        "fastapi_taskflow.TaskStats.by_status",
        "fastapi_taskflow.LogEntry.message",
    ],
    "config": ["fastapi_taskflow.QueueConfig.concurrency"],
    "context": ["fastapi_taskflow.TaskContext.task_id"],
}


def _reference_problems(reference: Path) -> list[str]:
    import re

    problems = []
    for page, anchors in REFERENCE_MUST_SHOW.items():
        html = (reference / page / "index.html").read_text(encoding="utf-8")
        problems += [f"{page}: no entry for {a}" for a in anchors if f'id="{a}"' not in html]
    for path in sorted(reference.glob("*/index.html")):
        text = re.sub(r"<[^>]+>", " ", path.read_text(encoding="utf-8"))
        private = sorted(set(re.findall(r"(?<![\w.])_[a-z]\w*(?=\s*[:=(])", text)))
        if private:
            problems.append(f"{path.parent.name}: private names shown: {', '.join(private)}")
    return problems


@nox.session
def demo(session: nox.Session) -> None:
    """Start the demo app from examples/ on http://127.0.0.1:8000 (opens on the dashboard)."""
    _install_packages(session, "uvicorn>=0.29")
    session.log("open http://127.0.0.1:8000/ : the live dashboard is at /tasks/dashboard")
    session.run(
        "uvicorn", "examples.demo:app", "--host", "127.0.0.1", "--port", "8000", *session.posargs
    )


COMPETITOR = "fastapi-taskflow==0.12.1"


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmark harness: issue 10's scenarios for plain ``BackgroundTasks``,
    taskflow and the competitor (fastapi-taskflow 0.12.1, installed here into a
    virtualenv of its own, since its import name is ours), one table of ratios.

    ``nox -s bench`` runs the default sizes (about ten minutes on 2 cores);
    ``nox -s bench -- --only s1,s3 --rounds 5`` passes options to benchmarks/bench.py;
    ``nox -s bench -- benchmarks/sql_store.py --rows 1000000`` runs one older script.
    """
    _install_packages(session, "httpx>=0.27", "uvicorn>=0.29", "playwright>=1.44")
    if session.posargs and session.posargs[0].endswith(".py"):
        session.run("python", *session.posargs)
        return
    fastapi_version = session.run(
        "python", "-c", "import fastapi; print(fastapi.__version__)", silent=True
    )
    if fastapi_version is None:  # --install-only: nothing ran, so nothing to set up
        return
    venv = Path(session.virtualenv.location).parent / "bench-competitor"
    python = venv / "bin" / "python"
    marker = venv / f"installed-{COMPETITOR}-fastapi-{str(fastapi_version).strip()}"
    if not marker.exists():
        session.run(sys.executable, "-m", "venv", "--clear", str(venv), external=True)
        session.run(
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            COMPETITOR,
            f"fastapi=={str(fastapi_version).strip()}",
            "httpx>=0.27",
            external=True,
        )
        marker.touch()
    session.run(
        "python", "benchmarks/bench.py", "--competitor-python", str(python), *session.posargs
    )
    if not session.posargs:
        # The admin API's and the dashboard's figures (issue 11), on a 100k-task store.
        for script in ("benchmarks/admin_stream.py", "benchmarks/dashboard_page.py"):
            session.run("python", script, "--rows", "100000")
