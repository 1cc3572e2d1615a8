"""The memory backend's finished order: the cap drops the task that finished longest
ago, in constant time per task, and ids that left it leave nothing behind."""

from __future__ import annotations

from taskflow_memory.finished import CHECK_EVERY, FinishedOrder


def test_the_oldest_finish_comes_first_and_a_new_finish_moves_an_id_to_the_end() -> None:
    order = FinishedOrder()
    for task_id in ("a", "b", "c"):
        order.add(task_id)
    assert order.oldest() == "a"
    order.add("a")  # ran again and finished again
    assert order.oldest() == "b" and len(order) == 3
    order.discard("b")  # moved out of a terminal status, or deleted
    assert order.oldest() == "c" and "b" not in order
    order.discard("c")
    order.discard("a")
    assert order.oldest() is None and len(order) == 0


def test_places_left_behind_do_not_pile_up() -> None:
    order = FinishedOrder()
    order.add("kept")
    for n in range(100_000):  # finished, then purged before any cap was reached
        order.add(f"t{n}")
        order.discard(f"t{n}")
    for _ in range(1_000):  # finished again and again
        order.add("again")
    assert len(order) == 2
    assert len(order._ids) == len(order._marks) <= 2 * len(order) + 2 * CHECK_EVERY
    assert order.oldest() == "kept"
    order.discard("kept")
    assert order.oldest() == "again"
