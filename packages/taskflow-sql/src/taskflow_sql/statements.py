"""Statements built once per shape and reused, so SQLAlchemy compiles each only once.

Building an ``UPDATE`` with literal values on every call costs more Python time than
running it; these builders return statements with named bind parameters (``p_*``), cached
by shape, and the callers pass the values at execution time.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import Table, bindparam, null, update

__all__ = ["task_change"]


@lru_cache(maxsize=1024)
def task_change(
    tasks: Table,
    fields: tuple[str, ...],
    *,
    compare_status: bool,
    release_key: bool,
    returning: tuple[Any, ...] | None,
) -> Any:
    """``UPDATE tasks SET … WHERE task_id = :p_task_id [AND status IN :p_expected]``.

    Args:
        tasks: the tasks table.
        fields: the columns set from ``p_<column>`` parameters (``updated_at`` always).
        compare_status: a compare-and-set: also ``SET prev_status = status, status =
            :p_status`` (in this order: MySQL evaluates SET left to right) and
            ``WHERE status IN :p_expected``.
        release_key: also ``SET active_key = NULL`` (FAILED/REJECTED release the key).
        returning: columns for ``RETURNING``, or None where the engine lacks it.
    """
    c = tasks.c
    pairs: list[tuple[Any, Any]] = []
    where = [c.task_id == bindparam("p_task_id", type_=c.task_id.type)]
    if compare_status:
        pairs.append((c.prev_status, c.status))
        pairs.append((c.status, bindparam("p_status", type_=c.status.type)))
        where.append(c.status.in_(bindparam("p_expected", expanding=True)))
    pairs.append((c.updated_at, bindparam("p_updated_at", type_=c.updated_at.type)))
    if release_key:
        pairs.append((c.active_key, null()))
    pairs.extend((c[name], bindparam(f"p_{name}", type_=c[name].type)) for name in fields)
    stmt = update(tasks).where(*where).ordered_values(*pairs)
    if returning is not None:
        stmt = stmt.returning(*returning)
    return stmt
