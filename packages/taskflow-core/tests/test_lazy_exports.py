"""The command line starts without importing FastAPI; the packages still export
every name they list, whether imported at once or on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import fastapi_taskflow
import fastapi_taskflow.admin


def test_the_command_line_does_not_import_fastapi() -> None:
    """Importing FastAPI is about half a second of every ``taskflow`` command."""
    code = (
        "import sys, fastapi_taskflow.cli.app, fastapi_taskflow.admin.schemas;"
        "print(sorted(m for m in sys.modules if m == 'fastapi' or m.startswith('fastapi.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("package", [fastapi_taskflow, fastapi_taskflow.admin])
def test_every_listed_name_is_exported(package: object) -> None:
    names = package.__all__  # type: ignore[attr-defined]
    for name in names:
        value = getattr(package, name)
        assert getattr(value, "__name__", name) == name or name == "SESSION_COOKIE"
        assert name in dir(package)
    namespace: dict[str, object] = {}
    exec(f"from {package.__name__} import *", namespace)  # type: ignore[attr-defined]
    assert set(names) <= set(namespace)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'TaskManagr'"):
        fastapi_taskflow.TaskManagr  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(ImportError):
        exec("from fastapi_taskflow.admin import Dashboard", {})


def test_the_lazy_names_are_the_defining_modules_own() -> None:
    from fastapi_taskflow.admin.core import TaskAdmin
    from fastapi_taskflow.background import ManagedBackgroundTasks
    from fastapi_taskflow.manager import TaskManager

    assert fastapi_taskflow.TaskManager is TaskManager
    assert fastapi_taskflow.ManagedBackgroundTasks is ManagedBackgroundTasks
    assert fastapi_taskflow.admin.TaskAdmin is TaskAdmin
