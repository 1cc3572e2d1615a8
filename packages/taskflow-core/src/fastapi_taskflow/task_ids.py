"""Task ids: time-ordered version-7 UUIDs (RFC 9562), made in batches.

A task's id is the primary key of its row in a SQL store. Random ids (version 4) land
anywhere in that key's B-tree, so every insert touches a different page: with a
million rows, SQLite's inserts and commits cost about 2.5 times as much as with ids
that grow over time (every new key at the right edge of the index, a batch of them on
a page or two). A version-7 UUID starts with the Unix time in milliseconds, so the ids
of one process grow, and those of several processes grow together.

Layout (RFC 9562, section 5.7): 48 bits of milliseconds, the version (7), 12 bits
``rand_a`` used as a counter within the millisecond (section 6.2, method 1: its high 4
bits number the batch, its low 8 bits the id within it), the variant (``10``) and 62
random bits from ``os.urandom``. The ids one thread takes are strictly increasing: a
batch made within the millisecond of the previous one continues its counter, and when
a millisecond's 16 batches are used up (4,096 ids), or the clock went back, the next
batch takes the following millisecond. Ids of different processes are told apart by
their random bits. A batch serves for at most a second (``FRESH_FOR``), so the time in
an id is the time it was taken, to within a second.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

__all__ = ["new_task_id"]


def new_task_id() -> str:
    """Return a new task id: a version-7 UUID in its canonical string form, later than
    every id this thread took before, whose time is at most :data:`FRESH_FOR` seconds
    before now (later than now only after the clock went back, or when more than 4,096
    ids were made within a millisecond).

    Ids are made :data:`BATCH` at a time (one ``os.urandom`` call and a few slice
    assignments in C for the whole batch); taking one is a ``next()`` on a list
    iterator, unless the batch is older than :data:`FRESH_FOR`. A forked child starts
    a batch of its own.
    """
    if _monotonic_ns() > _stale_at:
        _refill()
    task_id = next(_ids, None)
    while task_id is None:
        _refill()
        task_id = next(_ids, None)
    return task_id


BATCH = 256
"""Ids made at once: the low 8 bits of ``rand_a``."""

FRESH_FOR = 1.0
"""Seconds a batch is used for: an id taken later comes from a new batch, so the time
an id carries is never much older than the id (a quiet process would otherwise hand
out an hour-old batch's ids)."""

_BATCHES_PER_MS = 16
"""Batches one millisecond holds: the high 4 bits of ``rand_a``."""

_CANONICAL = 37
"""Characters per id in a batch: the 36 of the canonical form and a separator."""

_HEX_PLACES = tuple(h + (h >= 8) + (h >= 12) + (h >= 16) + (h >= 20) for h in range(32))
"""Where each of the 32 hex digits of a UUID goes in its canonical form (the other four
places hold dashes)."""

_TIME_DIGITS = 12
"""Hex digits 0-11: the milliseconds."""
_VERSION_DIGIT, _BATCH_DIGIT, _VARIANT_DIGIT = 12, 13, 16
_INDEX_DIGITS = (14, 15)
"""Hex digits 14-15: the id's place in its batch (digit 13 numbers the batch)."""
_RANDOM_DIGITS = 16
"""Hex digits 16-31: the variant's digit, then 62 random bits."""

_TO_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
"""A random hex digit to the RFC 9562 variant digit (``10xx`` in binary)."""

_INDEX_COLUMNS = tuple(
    "".join(f"{index:02x}"[place] for index in range(BATCH)).encode() for place in range(2)
)
"""For each of the two index digits, that digit of every id of a batch, in order."""


def _uuid7_strings(millisecond: int, batch: int) -> list[str]:
    """The :data:`BATCH` ids of batch ``batch`` (0-15) of ``millisecond``, in increasing
    order, built a digit place at a time over the whole batch (slice assignments in C,
    no per-id Python work)."""
    count = BATCH
    stamp = f"{millisecond:012x}".encode()
    noise = os.urandom(8 * count).hex().encode()
    text = bytearray(b"-" * (_CANONICAL * count))
    for digit, place in enumerate(_HEX_PLACES):
        if digit < _TIME_DIGITS:
            column = stamp[digit : digit + 1] * count
        elif digit == _VERSION_DIGIT:
            column = b"7" * count
        elif digit == _BATCH_DIGIT:
            column = b"%x" % batch * count
        elif digit in _INDEX_DIGITS:
            column = _INDEX_COLUMNS[digit - _INDEX_DIGITS[0]]
        else:
            column = noise[digit - _RANDOM_DIGITS :: 16]
            if digit == _VARIANT_DIGIT:
                column = column.translate(_TO_VARIANT)
        text[place::_CANONICAL] = column
    text[_CANONICAL - 1 :: _CANONICAL] = b" " * count
    return text.decode().split()


_last = (-1, _BATCHES_PER_MS - 1)
"""The millisecond and batch number of the last batch made."""
_lock = threading.Lock()


def _next_batch(now: int) -> tuple[int, int]:
    """The millisecond and batch number of the batch after the last one, at ``now``
    (milliseconds): ``now``'s first batch, or the last one's successor when ``now``
    is not later (the same millisecond, or the clock went back)."""
    millisecond, batch = _last
    if now > millisecond:
        return now, 0
    if batch + 1 < _BATCHES_PER_MS:
        return millisecond, batch + 1
    return millisecond + 1, 0


def _refill() -> None:
    """A new batch of ids, made and put in place under a lock, so batches replace each
    other in increasing order. Taking an id (``next()`` on a list iterator) is atomic:
    threads never share one, and the ids one thread takes are strictly increasing;
    two threads refilling at once only waste a batch."""
    global _ids, _last, _stale_at
    with _lock:
        _last = _next_batch(_time_ns() // 1_000_000)
        _ids = iter(_uuid7_strings(*_last))
        _stale_at = _monotonic_ns() + int(FRESH_FOR * 1e9)


def _forget_in_child() -> None:
    """In a forked child: a batch of its own, and a lock no thread of the parent holds
    (one refilling at the fork would have left the child's copy locked for good)."""
    global _ids, _lock
    _ids = iter(())
    _lock = threading.Lock()


_time_ns = time.time_ns
"""The wall clock an id's time is read from."""
_monotonic_ns = time.monotonic_ns
"""The clock a batch's age is measured on (cheaper to read than the wall clock, and
unmoved when the wall clock is set)."""
_ids: Iterator[str] = iter(())
_stale_at = 0
"""When the current batch is stale (``_monotonic_ns()``)."""
os.register_at_fork(after_in_child=_forget_in_child)
