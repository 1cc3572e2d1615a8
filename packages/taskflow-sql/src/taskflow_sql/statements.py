"""Statements built once per shape and reused, so SQLAlchemy compiles each only once.

Building an ``UPDATE`` with literal values on every call costs more Python time than
running it; these builders return statements with named bind parameters (``p_*``), cached
by shape, and the callers pass the values at execution time.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Table,
    bindparam,
    case,
    delete,
    func,
    literal,
    literal_column,
    null,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql import psycopg2
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from fastapi_taskflow.models import ACTIVE_STATUSES, TaskStatus

__all__ = [
    "ACTIVE",
    "PENDING",
    "enqueue_statement",
    "owner_value",
    "pg_claim",
    "pg_create",
    "pg_transition",
    "take_upsert",
    "task_change",
]


@lru_cache(maxsize=1024)
def task_change(
    tasks: Table,
    fields: tuple[str, ...],
    *,
    compare_status: bool,
    release_key: bool,
    returning: tuple[Any, ...] | None,
    owner_rule: str = "keep",
    take_key: bool = False,
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
        owner_rule: how ``active_owner`` follows: ``keep`` (untouched), ``clear`` (NULL:
            the task leaves the active statuses), ``follow`` (= the owner: it is or
            stays active) or ``case`` (= the new owner if the task is active).
        take_key: also ``SET active_key = :p_active_key`` (the hash of the task's
            idempotency key: the task holds it again; the UNIQUE index refuses the
            UPDATE when another task holds it).
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
    elif take_key:
        pairs.append((c.active_key, bindparam("p_active_key", type_=c.active_key.type)))
    pairs.extend((c[name], bindparam(f"p_{name}", type_=c[name].type)) for name in fields)
    if owner_rule != "keep":
        pairs.append((c.active_owner, owner_value(tasks, fields, owner_rule)))
    stmt = update(tasks).where(*where).ordered_values(*pairs)
    if returning is not None:
        stmt = stmt.returning(*returning)
    return stmt


def owner_value(tasks: Table, fields: tuple[str, ...], rule: str) -> Any:
    """The value ``active_owner`` gets under ``rule`` (see :func:`task_change`)."""
    c = tasks.c
    owner = bindparam("p_owner", type_=c.owner.type) if "owner" in fields else c.owner
    if rule == "clear":
        return null()
    if rule == "follow":
        return owner
    return case((c.status.in_(ACTIVE), owner), else_=null())


ACTIVE = tuple(sorted(status.value for status in ACTIVE_STATUSES))
"""The active statuses' values, sorted."""

PENDING = TaskStatus.PENDING.value
"""The status a claim hands over (see ``Backend.claim``)."""


def _counter_upsert(counters: Table, rows: Any) -> Any:
    """``INSERT INTO counters <rows> ON CONFLICT DO UPDATE SET n = n + excluded.n``."""
    stmt = pg_insert(counters).from_select(["func_name", "status", "slot", "n"], rows)
    return stmt.on_conflict_do_update(
        index_elements=[counters.c.func_name, counters.c.status, counters.c.slot],
        set_={"n": counters.c.n + stmt.excluded.n},
    )


@lru_cache(maxsize=1024)
def pg_transition(
    tasks: Table,
    counters: Table,
    fields: tuple[str, ...],
    *,
    release_key: bool,
    returning: tuple[Any, ...],
    owner_rule: str,
) -> Any:
    """A whole compare-and-set transition as one PostgreSQL statement.

    ``WITH u AS (UPDATE … RETURNING …), c AS (INSERT INTO counters … ON CONFLICT DO
    UPDATE) SELECT … FROM u``: the task row and its two counter rows change atomically
    in one round trip, without BEGIN/COMMIT (the statement is its own transaction). The
    counter rows are locked in status order, as :func:`taskflow_sql.dialect.add_counts`
    does (same function and slot), so concurrent transitions cannot deadlock on them.
    """
    change = task_change(
        tasks,
        fields,
        compare_status=True,
        release_key=release_key,
        returning=returning,
        owner_rule=owner_rule,
    )
    u = change.cte("u")
    slot = bindparam("p_slot", type_=counters.c.slot.type)
    moved = u.c.prev_status != u.c.status
    old = select(
        u.c.func_name,
        u.c.prev_status.label("status"),
        slot.label("slot"),
        literal(-1, counters.c.n.type).label("n"),
    ).where(moved)
    new = select(
        u.c.func_name,
        u.c.status.label("status"),
        slot.label("slot"),
        literal(1, counters.c.n.type).label("n"),
    ).where(moved)
    rows = union_all(old, new).order_by(literal_column("status"))
    counted = _counter_upsert(counters, rows).cte("c")
    return select(*(u.c[column.name] for column in returning)).add_cte(counted)


@lru_cache(maxsize=256)
def pg_create(tasks: Table, counters: Table, n: int) -> Any:
    """Insert ``n`` task rows and count them, as one PostgreSQL statement.

    Parameters ``p<i>_<column>`` for every row, and ``p_slot``. ``ON CONFLICT DO
    NOTHING`` skips a row whose id or active idempotency key is taken; the statement
    returns the ids it inserted, and the counters grow by exactly those rows.
    """
    names = [column.name for column in tasks.c]
    rows = [
        {name: bindparam(f"p{i}_{name}", type_=tasks.c[name].type) for name in names}
        for i in range(n)
    ]
    inserted = (
        pg_insert(tasks)
        .values(rows)
        .on_conflict_do_nothing()
        .returning(tasks.c.task_id, tasks.c.func_name, tasks.c.status)
        .cte("i")
    )
    slot = bindparam("p_slot", type_=counters.c.slot.type)
    grouped = (
        select(
            inserted.c.func_name,
            inserted.c.status,
            slot.label("slot"),
            func.count().label("n"),
        )
        .group_by(inserted.c.func_name, inserted.c.status)
        .order_by(inserted.c.func_name, inserted.c.status)
    )
    counted = _counter_upsert(counters, grouped).cte("c")
    stmt = select(inserted.c.task_id).add_cte(counted)
    # SQLAlchemy does not cache the compiled form of a multi-row VALUES; a textual
    # statement (compiled here once per row count, typed binds) it does.
    dialect = psycopg2.dialect(paramstyle="named")  # type: ignore[no-untyped-call]
    sql = str(stmt.compile(dialect=dialect))
    binds = [
        bindparam(f"p{i}_{name}", type_=tasks.c[name].type) for i in range(n) for name in names
    ]
    binds.append(bindparam("p_slot", type_=counters.c.slot.type))
    return text(sql).bindparams(*binds).columns(tasks.c.task_id)


@lru_cache(maxsize=64)
def enqueue_statement(kind: str, queue: Table) -> Any:
    """Put one task on a queue, replacing its entry, as one statement (SQLite, PostgreSQL).

    The replaced entry gets a new ``id``, so it goes to the back of its priority and due
    time, as a fresh enqueue would. SQLite: ``INSERT OR REPLACE`` (deletes the row that
    conflicts on ``(queue, task_id)``, inserts a new one). PostgreSQL: ``INSERT … ON
    CONFLICT (queue, task_id) DO UPDATE SET id = nextval(<id sequence>), …``.
    """
    c = queue.c
    values = {
        "queue": bindparam("queue", type_=c.queue.type),
        "task_id": bindparam("task_id", type_=c.task_id.type),
        "neg_priority": bindparam("neg_priority", type_=c.neg_priority.type),
        "due_at": bindparam("due_at", type_=c.due_at.type),
    }
    if kind == "sqlite":
        return sqlite_insert(queue).values(values).prefix_with("OR REPLACE")
    stmt = pg_insert(queue).values(values)
    name = (f'"{queue.schema}".' if queue.schema else "") + f'"{queue.name}"'
    sequence = func.nextval(func.pg_get_serial_sequence(literal(name), literal("id")))
    return stmt.on_conflict_do_update(
        index_elements=[c.queue, c.task_id],
        set_={
            "id": sequence,
            "neg_priority": stmt.excluded.neg_priority,
            "due_at": stmt.excluded.due_at,
        },
    )


@lru_cache(maxsize=64)
def pg_claim(queue: Table, tasks: Table) -> Any:
    """A whole claim as one PostgreSQL statement.

    ``WITH picked AS (SELECT … FROM queue WHERE queue = :q AND due_at <= :now ORDER BY
    neg_priority, due_at, id LIMIT :n FOR UPDATE SKIP LOCKED), gone AS (DELETE FROM
    queue USING picked … RETURNING …), handed AS (UPDATE tasks SET owner = :owner,
    active_owner = :owner FROM gone WHERE … AND status = 'pending')
    SELECT task_id, neg_priority FROM gone ORDER BY neg_priority, due_at, id``.
    """
    q = queue.c
    picked = (
        select(q.id)
        .where(
            q.queue == bindparam("p_queue", type_=q.queue.type),
            q.due_at <= bindparam("p_now", type_=q.due_at.type),
        )
        .order_by(q.neg_priority, q.due_at, q.id)
        .limit(bindparam("p_limit", type_=q.neg_priority.type))
        .with_for_update(skip_locked=True)
        .cte("picked")
    )
    gone = (
        delete(queue)
        .where(q.id == picked.c.id)
        .returning(q.id, q.task_id, q.neg_priority, q.due_at)
        .cte("gone")
    )
    owner = bindparam("p_owner", type_=tasks.c.owner.type)
    handed = (
        update(tasks)
        .where(tasks.c.task_id == gone.c.task_id, tasks.c.status == PENDING)
        .values(owner=owner, active_owner=owner)
        .cte("handed")
    )
    return (
        select(gone.c.task_id, gone.c.neg_priority)
        .add_cte(handed)
        .order_by(gone.c.neg_priority, gone.c.due_at, gone.c.id)
    )


@lru_cache(maxsize=64)
def take_upsert(kind: str, table: Table, key: str) -> Any:
    """Take or extend the row ``:p_name`` for ``:p_owner`` unless another owner's is live.

    ``INSERT … ON CONFLICT (key) DO UPDATE SET owner, expires_at WHERE owner = :p_owner
    OR expires_at <= :p_now RETURNING key`` (PostgreSQL, SQLite): a row comes back when
    the lock was inserted, extended or taken over, none when a live one is another's.
    The conflict path locks the row and evaluates the condition on its latest version.
    """
    maker = pg_insert if kind == "postgresql" else sqlite_insert
    c = table.c
    stmt = maker(table).values(
        {
            key: bindparam("p_name", type_=c[key].type),
            "owner": bindparam("p_owner", type_=c.owner.type),
            "expires_at": bindparam("p_expires", type_=c.expires_at.type),
        }
    )
    return stmt.on_conflict_do_update(
        index_elements=[c[key]],
        set_={"owner": stmt.excluded.owner, "expires_at": stmt.excluded.expires_at},
        where=or_(
            c.owner == stmt.excluded.owner,
            c.expires_at <= bindparam("p_now", type_=c.expires_at.type),
        ),
    ).returning(c[key])
