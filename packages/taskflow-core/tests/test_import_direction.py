"""Imports run one way: no module the engine builds on imports the engine.

The engine (``engine.py``, with its two halves ``accept.py`` and ``executor.py``) sits
between the modules it uses (models, protocols, the write buffer, group commit, queue
workers, the event hub, ...) and the modules that use it (the manager, recovery,
shutdown, schedules, cancellation, the store view, ``install()``). A module below may
not import the engine, not even for typing: it gets the few collaborators it needs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import fastapi_taskflow

PACKAGE = Path(fastapi_taskflow.__file__).parent
ENGINE_HALVES = {"accept", "executor"}


def _top_level_imports(path: Path) -> set[str]:
    """The sibling modules ``path`` imports at module level (incl. ``TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes: list[ast.stmt] = []
    for node in tree.body:
        nodes.append(node)
        if isinstance(node, ast.If):
            nodes.extend(node.body)
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
    return found


def test_no_module_below_the_engine_imports_it() -> None:
    imports = {p.stem: _top_level_imports(p) for p in PACKAGE.glob("*.py")}
    below: set[str] = set()
    todo = ["engine"]
    while todo:
        for name in imports.get(todo.pop(), set()):
            if name not in below and name != "engine":
                below.add(name)
                todo.append(name)
    assert "manager" not in below and "recovery" not in below and "shutdown" not in below
    offenders = {name for name in below if "engine" in imports.get(name, set())}
    assert offenders == ENGINE_HALVES, offenders - ENGINE_HALVES
