"""Process memory after many tasks through the memory backend, with retention set.

Runs ``--small`` and then ``--large`` no-op tasks (each size in a fresh process) through
``TaskManager(retention=...)`` on the memory backend, and prints the resident set size
(RSS) after each, once retention has had time to purge. With retention the large run
should stay within 20 % of the small one (issue 9: before retention, 100k tasks took
RSS from 43 to 314 MB).

    python benchmarks/memory_growth.py                     # 10k vs 100k, default cap
    python benchmarks/memory_growth.py --url 'memory://?max_records=none'  # retention only
    python benchmarks/memory_growth.py --retention 0      # the record cap only
    python benchmarks/memory_growth.py --retention 0 --url 'memory://?max_records=none'  # neither

Not a test: the figures depend on the machine; the script exits 1 when the large run
exceeds the small one by more than ``--tolerance``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from datetime import timedelta


def rss_mb() -> float:
    """This process's resident set size in MB (Linux ``/proc``)."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


async def run(tasks: int, url: str, retention: float) -> dict[str, float]:
    from fastapi_taskflow import TaskManager

    keep = timedelta(seconds=retention) if retention > 0 else None
    tm = TaskManager(url, retention=keep)

    finished = 0
    target = 0
    batch_done = asyncio.Event()

    @tm.task(name="noop")
    async def noop(n: int) -> None:
        nonlocal finished
        finished += 1
        if finished >= target:
            batch_done.set()

    started = time.perf_counter()
    async with tm:
        batch = 1000
        for first in range(0, tasks, batch):
            target = min(first + batch, tasks)
            batch_done.clear()
            for n in range(first, target):
                tm.add_task(noop, n)
            await batch_done.wait()  # the batch ran: go on
        elapsed = time.perf_counter() - started
        await asyncio.sleep(min(retention * 2 + 1.5, 5))  # let retention purge
        gc.collect()
        stats = await tm.store.astats()
        return {
            "tasks": tasks,
            "rss_mb": round(rss_mb(), 1),
            "records_kept": stats.total,
            "seconds": round(elapsed, 1),
        }


def child(tasks: int, url: str, retention: float) -> dict[str, float]:
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            str(tasks),
            "--url",
            url,
            "--retention",
            str(retention),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--url", default="memory://")
    parser.add_argument("--retention", type=float, default=1.0, help="seconds; 0: None")
    parser.add_argument("--tolerance", type=float, default=0.20)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(asyncio.run(run(args.child, args.url, args.retention))))
        return 0
    small = child(args.small, args.url, args.retention)
    large = child(args.large, args.url, args.retention)
    growth = large["rss_mb"] / small["rss_mb"] - 1
    print(f"backend {args.url}, retention {args.retention:g}s")
    for result in (small, large):
        print(
            f"  {result['tasks']:>7} tasks: RSS {result['rss_mb']:7.1f} MB, "
            f"{result['records_kept']} records kept, {result['seconds']}s"
        )
    verdict = "within" if growth <= args.tolerance else "OVER"
    print(f"  growth {growth:+.1%} ({verdict} the {args.tolerance:.0%} budget)")
    return 0 if growth <= args.tolerance else 1


if __name__ == "__main__":
    sys.exit(main())
