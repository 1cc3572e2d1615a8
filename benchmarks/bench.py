"""``nox -s bench``: the scenarios of issue 10 for three implementations in one run.

Implementations: plain FastAPI ``BackgroundTasks`` (the floor), taskflow (this checkout)
and the competitor, fastapi-taskflow 0.12.1, installed by the nox session into a
virtualenv of its own. Each implementation runs in an interpreter of its own
(``bench_worker.py``); rounds alternate the order of the implementations so drift on a
shared machine cancels, and every figure is the median of the rounds (an in-process
case runs ``--repeats`` times per round, interleaved, and the round keeps the best).
It prints one table of ratios and writes ``benchmarks/results/latest.json``.

    python benchmarks/bench.py [--rounds 3] [--only s1,s3] [--backends memory,sqlite]
        [--competitor-python PATH] [--rows 1000,1000000] [--s1-tasks 20000] ...

Scenario groups (``--only``): s1, s1_def, s1_cap, s2, s3, e, e_stored, s1_sqlite, get,
idem, rss.

``--before-path`` adds a fourth implementation, "before": taskflow imported from other
source folders (an older commit's ``packages/*/src``), run with taskflow's scenarios in
the same rounds, so a change is reported before → after from one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
IMPLS = ("plain", "taskflow", "competitor", "before")
GROUPS = ("s1", "s1_def", "s1_cap", "s2", "s3", "e", "e_stored", "s1_sqlite", "get", "idem", "rss")
BACKENDS = ("memory", "sqlite", "redis", "postgres", "mysql")
E_TARGETS = {"sqlite": 10_000, "redis": 10_000, "postgres": 5_000, "mysql": 3_000}

Results = dict[str, dict[str, float | None]]


@dataclass
class Case:
    """One row of the table: a scenario and how each implementation runs it."""

    key: str
    label: str
    unit: str
    runs: dict[str, tuple[str, dict[str, Any]]]
    target: str = "–"
    met: Callable[[Results], bool | None] = field(default=lambda r: None)
    once: bool = False  # a fresh process, one round (RSS)

    @property
    def in_process(self) -> bool:
        """Timed in CPU seconds of one process (everything on ``memory`` but RSS): the
        cases repeated within a round, after the machine settles."""
        return not self.once and (
            self.key in ("s1", "s1_def", "s1_cap", "s3") or self.key.endswith("_memory")
        )

    @property
    def lower_is_better(self) -> bool:
        """A time or a size (µs/task, ms, MiB), not a rate (req/s, tasks/s)."""
        return not self.unit.endswith("/s")

    def __post_init__(self) -> None:
        if "taskflow" in self.runs:  # the older taskflow runs what this one runs
            self.runs.setdefault("before", self.runs["taskflow"])


def _tf(results: Results, key: str) -> float | None:
    return results.get(key, {}).get("taskflow")


def _both(results: Results, key: str, other: str) -> tuple[float, float] | None:
    ours, theirs = _tf(results, key), results.get(key, {}).get(other)
    return (ours, theirs) if ours is not None and theirs is not None else None


def cases(args: argparse.Namespace) -> list[Case]:
    only = set(args.only.split(",")) if args.only else set(GROUPS)
    backends = [b for b in args.backends.split(",") if b]
    rows = [int(r) for r in args.rows.split(",") if r]
    out: list[Case] = []
    s1 = {"tasks": args.s1_tasks}
    if "s1" in only:
        out.append(
            Case(
                "s1",
                f"S1 {args.s1_tasks:,} no-op async tasks in one container (memory)",
                "µs/task",
                {i: ("s1", s1) for i in IMPLS},
                "≤ 3× plain",
                lambda r: (p[0] <= 3 * p[1]) if (p := _both(r, "s1", "plain")) else None,
            )
        )
    if "s1_def" in only:
        params = {"tasks": args.s1_def_tasks, "sync": True}
        out.append(
            Case(
                "s1_def",
                f"S1 {args.s1_def_tasks:,} no-op `def` tasks in one container (memory)",
                "µs/task",
                {i: ("s1", params) for i in IMPLS},
            )
        )
    if "s1_cap" in only:
        params = {"tasks": args.s1_tasks, "per_container": 10}
        out.append(
            Case(
                "s1_cap",
                f"S1 {args.s1_tasks:,} tasks, 10 to a container, on a memory store at its cap",
                "µs/task",
                {i: ("s1_cap", params) for i in ("plain", "taskflow")},
            )
        )
    if "s2" in only:
        for backend in backends:
            durable = backend != "memory"
            n = args.s2_durable_requests if durable else args.s2_requests
            params: dict[str, Any] = {"requests": n, "inflight": args.inflight}
            if durable:
                out.append(
                    Case(
                        f"s2_{backend}",
                        f"S2 {n:,} POSTs, {args.inflight} in flight ({backend})",
                        "req/s",
                        {"taskflow": ("s2", {**params, "backend": backend})},
                        "≥ 0.8× S2 memory",
                        lambda r, k=f"s2_{backend}": (
                            (p[0] >= 0.8 * p[1])
                            if (p := _pair(_tf(r, k), _tf(r, "s2_memory")))
                            else None
                        ),
                    )
                )
            else:
                out.append(
                    Case(
                        "s2_memory",
                        f"S2 {n:,} POSTs, {args.inflight} in flight, httpx ASGITransport (memory)",
                        "req/s",
                        {i: ("s2", params) for i in IMPLS},
                        "≥ 0.9× plain",
                        lambda r: (
                            (p[0] >= 0.9 * p[1]) if (p := _both(r, "s2_memory", "plain")) else None
                        ),
                    )
                )
    if "s3" in only:
        out.append(
            Case(
                "s3",
                f"S3 {args.s3_tasks:,} tasks failing twice then succeeding (retries=2, delay=0)",
                "µs/task",
                {i: ("s3", {"tasks": args.s3_tasks}) for i in IMPLS},
                "≤ 1/10 of competitor",
                lambda r: (p[0] * 10 <= p[1]) if (p := _both(r, "s3", "competitor")) else None,
            )
        )
    if "e" in only:
        for backend in backends:
            n = args.e_durable_tasks if backend != "memory" else args.e_tasks
            params = {"tasks": n, "concurrency": 50}
            runs = {"taskflow": ("e", {**params, "backend": backend})}
            if backend == "memory":
                runs.update({"plain": ("e", params), "competitor": ("e", params)})
            goal = E_TARGETS.get(backend)
            out.append(
                Case(
                    f"e_{backend}",
                    f"E {n:,} tasks, 50 requests in flight, one task each, no HTTP ({backend})",
                    "tasks/s",
                    runs,
                    f"≥ {goal:,}" if goal else "–",
                    (lambda r, k=f"e_{backend}", g=goal: (v >= g) if (v := _tf(r, k)) else None)
                    if goal
                    else (lambda r: None),
                )
            )
    if "e_stored" in only:
        for backend in [b for b in args.e_stored_backends.split(",") if b]:
            n, stored = args.e_durable_tasks, args.e_stored_rows
            params = {"tasks": n, "concurrency": 50, "backend": backend, "stored": stored}
            out.append(
                Case(
                    f"e_stored_{backend}",
                    f"E {n:,} tasks as above, on a store already holding {stored:,} "
                    f"finished tasks ({backend})",
                    "tasks/s",
                    {"taskflow": ("e", params)},
                )
            )
    if "s1_sqlite" in only:
        n = args.s1_sqlite_tasks
        out.append(
            Case(
                "s1_sqlite",
                f"S1 on SQLite, {n:,} tasks of one container (competitor: its snapshots)",
                "µs/task",
                {
                    "taskflow": ("s1", {"tasks": n, "backend": "sqlite"}),
                    "competitor": ("s1", {"tasks": n, "backend": "sqlite"}),
                },
                "faster than competitor",
                lambda r: (p[0] < p[1]) if (p := _both(r, "s1_sqlite", "competitor")) else None,
            )
        )
    for kind in ("get", "idem"):
        if kind not in only:
            continue
        for backend in [b for b in args.get_backends.split(",") if b]:
            for n in rows:
                key = f"{kind}_{backend}_{n}"
                runs = {"taskflow": (kind, {"rows": n, "backend": backend})}
                if kind == "get":
                    label = f"`store.get(id)` with {n:,} rows ({backend})"
                    target = "≤ 0.3 ms"
                    met = _at_most(key, 0.3)
                else:
                    label = (
                        f"idempotent `add_task` (new key) with {n:,} rows ({backend}; "
                        "competitor: its in-memory store)"
                    )
                    runs["competitor"] = ("idem", {"rows": n})
                    first = f"idem_{backend}_{rows[0]}"
                    target = f"≤ 2× at {rows[0]:,} rows" if n != rows[0] else "–"
                    met = _within_twice(key, first) if n != rows[0] else _no_target
                out.append(Case(key, label, "ms", runs, target, met))
    if "rss" in only:
        n = args.rss_tasks
        out.append(
            Case(
                "rss",
                f"RSS growth after {n:,} finished tasks (memory)",
                "MiB",
                {i: ("rss", {"tasks": n}) for i in IMPLS},
                once=True,
            )
        )
    return out


def _better(case: Case, kept: dict[str, Any] | None, answer: dict[str, Any]) -> dict[str, Any]:
    """The better of two answers of one implementation in one round (the lower time,
    the higher rate; an error only when there is nothing else)."""
    if kept is None or "value" not in answer:
        return answer  # the first answer, or a failure (the round reports it)
    if case.lower_is_better:
        return answer if answer["value"] < kept["value"] else kept
    return answer if answer["value"] > kept["value"] else kept


def _no_target(results: Results) -> bool | None:
    return None


def _at_most(key: str, limit: float) -> Callable[[Results], bool | None]:
    def met(results: Results) -> bool | None:
        value = _tf(results, key)
        return None if value is None else value <= limit

    return met


def _within_twice(key: str, base: str) -> Callable[[Results], bool | None]:
    def met(results: Results) -> bool | None:
        pair = _pair(_tf(results, key), _tf(results, base))
        return None if pair is None else pair[0] <= 2 * pair[1]

    return met


def _pair(a: float | None, b: float | None) -> tuple[float, float] | None:
    return (a, b) if a is not None and b is not None else None


class Worker:
    """An implementation's interpreter, answering one scenario at a time."""

    def __init__(self, impl: str, python: str, path: str = "") -> None:
        self.impl = impl
        RESULTS.mkdir(exist_ok=True)
        self.log = open(RESULTS / f"worker-{impl}.log", "a")  # noqa: SIM115
        env = dict(os.environ)
        if path:
            # not PYTHONPATH: the worker puts these folders where this checkout's are in
            # sys.path, so every worker has as many entries (an import that fails, as
            # httpx's of sniffio per request, walks them all)
            env["BENCH_TASKFLOW_SOURCES"] = path
        self.proc = subprocess.Popen(
            [python, str(HERE / "bench_worker.py"), "taskflow" if impl == "before" else impl],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=str(HERE.parent),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def run(self, scenario: str, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"scenario": scenario, "params": params}) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                self.proc.kill()
                return {"error": f"no answer within {timeout:.0f} s"}
            if line is None:
                return {"error": f"worker exited ({self.proc.wait()}); see {self.log.name}"}
            if line.startswith("@@result "):
                return dict(json.loads(line[len("@@result ") :]))

    def close(self) -> None:
        if self.proc.stdin is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def _cpu_busy(window: float) -> float:
    """The share of the machine's CPU time that was busy over the next ``window``
    seconds (all processes, from ``/proc/stat``); 0.0 where there is no ``/proc``."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    try:
        busy_before, total_before = sample()
        time.sleep(window)
        busy_after, total_after = sample()
    except OSError:
        return 0.0
    return (busy_after - busy_before) / max(total_after - total_before, 1)


def settle(limit: float, timeout: float) -> float:
    """Wait until the machine is at most ``limit`` busy (the database servers done with
    what the previous scenario left them: checkpoints, purges, autovacuum), or
    ``timeout`` seconds passed; return the last busy share seen."""
    deadline = time.monotonic() + timeout
    while True:
        busy = _cpu_busy(0.25)
        if busy <= limit or time.monotonic() >= deadline:
            return busy


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "–"


def table(selected: list[Case], results: Results, *, before: bool = False) -> str:
    """The Markdown table; ``before`` adds the older taskflow and taskflow/before."""
    extra_head, extra_rule = (
        (" before | taskflow/before |", " ---: | ---: |") if before else ("", "")
    )
    lines = [
        "| scenario | unit | plain | taskflow | competitor |" + extra_head + " taskflow/plain "
        "| competitor/plain | taskflow/competitor | target | met |",
        "| --- | --- | ---: | ---: | ---: |" + extra_rule + " ---: | ---: | ---: | --- | --- |",
    ]
    for case in selected:
        r = results.get(case.key, {})
        p, t, c, b = r.get("plain"), r.get("taskflow"), r.get("competitor"), r.get("before")
        met = case.met(results)
        verdict = "–" if met is None else ("met" if met else "**missed**")
        older = f" {_fmt(b)} | {_ratio(t, b)} |" if before else ""
        lines.append(
            f"| {case.label} | {case.unit} | {_fmt(p)} | {_fmt(t)} | {_fmt(c)} |{older} "
            f"{_ratio(t, p)} | {_ratio(c, p)} | {_ratio(t, c)} | {case.target} | {verdict} |"
        )
    return "\n".join(lines)


def hardware() -> dict[str, str]:
    info = {
        "cpus": str(os.cpu_count()),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        import fastapi

        info["fastapi"] = fastapi.__version__
    except ImportError:
        pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="in-process (memory) cases: runs per implementation and round, interleaved; "
        "the round keeps each implementation's best (as timeit does)",
    )
    parser.add_argument(
        "--settle-busy",
        type=float,
        default=0.15,
        help="before an in-process case, wait until the machine's CPUs are at most this "
        "busy (0-1) ...",
    )
    parser.add_argument("--settle-timeout", type=float, default=15.0, help="... or this long")
    parser.add_argument("--only", default="", help=f"comma-separated groups: {','.join(GROUPS)}")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="for S2 and E")
    parser.add_argument("--get-backends", default="sqlite,postgres", help="for get and idem")
    parser.add_argument("--rows", default="1000,100000", help="row counts for get and idem")
    parser.add_argument("--s1-tasks", type=int, default=20_000)
    parser.add_argument("--s1-def-tasks", type=int, default=5_000)
    parser.add_argument("--s2-requests", type=int, default=5_000)
    parser.add_argument("--s2-durable-requests", type=int, default=2_000)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--s3-tasks", type=int, default=20_000)
    parser.add_argument("--e-tasks", type=int, default=5_000)
    parser.add_argument("--e-durable-tasks", type=int, default=5_000)
    parser.add_argument("--e-stored-backends", default="sqlite", help="for e_stored (SQL backends)")
    parser.add_argument(
        "--e-stored-rows",
        type=int,
        default=1_000_000,
        help="e_stored: finished tasks in the store before E runs on it",
    )
    parser.add_argument("--s1-sqlite-tasks", type=int, default=500)
    parser.add_argument("--rss-tasks", type=int, default=1_000_000)
    parser.add_argument(
        "--clock",
        choices=["auto", "wall"],
        default="auto",
        help="auto: in-process (memory) scenarios in CPU time of their process, the rest "
        "in wall time; wall: everything in wall time (use on an idle machine)",
    )
    parser.add_argument("--timeout", type=float, default=600, help="seconds per scenario")
    parser.add_argument(
        "--competitor-python",
        default=os.environ.get("BENCH_COMPETITOR_PYTHON", ""),
        help="interpreter with fastapi-taskflow==0.12.1 installed (nox sets it up)",
    )
    parser.add_argument(
        "--taskflow-path",
        default="",
        help="import taskflow from these source folders (os.pathsep-separated) instead of "
        "this checkout, e.g. an older commit's packages/*/src to compare before and after",
    )
    parser.add_argument(
        "--before-path",
        default="",
        help="also run taskflow from these source folders (os.pathsep-separated), as the "
        "'before' column: an older commit's packages/*/src, measured in the same rounds",
    )
    parser.add_argument("--json", default=str(RESULTS / "latest.json"))
    args = parser.parse_args()

    os.environ["BENCH_CLOCK"] = args.clock  # the workers inherit it
    pythons = {"plain": sys.executable, "taskflow": sys.executable}
    if args.competitor_python:
        pythons["competitor"] = args.competitor_python
    else:
        print("no --competitor-python: the competitor column stays empty", file=sys.stderr)
    if args.before_path:
        pythons["before"] = sys.executable
    selected = cases(args)
    samples: dict[str, dict[str, list[float]]] = {c.key: {} for c in selected}
    errors: dict[str, dict[str, str]] = {}

    def record(case: Case, impl: str, answer: dict[str, Any]) -> None:
        if "value" in answer:
            samples[case.key].setdefault(impl, []).append(float(answer["value"]))
            print(f"  {case.key:22} {impl:10} {answer['value']:12.3f} {case.unit}", flush=True)
        else:
            errors.setdefault(case.key, {})[impl] = answer["error"]
            print(f"  {case.key:22} {impl:10} failed: {answer['error']}", flush=True)

    started = time.monotonic()
    paths = {"taskflow": args.taskflow_path, "before": args.before_path}
    workers = {impl: Worker(impl, python, paths.get(impl, "")) for impl, python in pythons.items()}
    try:
        for round_no in range(args.rounds):
            print(f"round {round_no + 1} of {args.rounds}", flush=True)
            active = [i for i in IMPLS if i in workers]
            turn = round_no % len(active)
            order = active[turn:] + active[:turn]
            for case in selected:
                if case.once:
                    continue
                # a service missing here fails every round: don't wait for it again
                if (
                    errors.get(case.key)
                    and round_no
                    and set(errors[case.key]) >= set(case.runs) & set(workers)
                ):
                    continue
                repeats = 1
                if case.in_process:
                    repeats = args.repeats
                    busy = settle(args.settle_busy, args.settle_timeout)
                    if busy > args.settle_busy:
                        print(f"  (machine still {busy:.0%} busy after settling)", flush=True)
                best: dict[str, dict[str, Any]] = {}
                for _ in range(repeats):  # interleaved: impl A, B, C, then A, B, C again
                    for impl in order:
                        if impl not in case.runs or errors.get(case.key, {}).get(impl):
                            continue
                        if impl in best and "value" not in best[impl]:
                            continue  # it failed this round: reported once, below
                        scenario, params = case.runs[impl]
                        answer = workers[impl].run(scenario, params, args.timeout)
                        best[impl] = _better(case, best.get(impl), answer)
                for impl in order:
                    if impl in best:
                        record(case, impl, best[impl])
    finally:
        for worker in workers.values():
            worker.close()
    for case in [c for c in selected if c.once]:
        for impl in [i for i in IMPLS if i in case.runs and i in pythons]:
            # a fresh process: nothing else in its heap
            worker = Worker(impl, pythons[impl], paths.get(impl, ""))
            try:
                scenario, params = case.runs[impl]
                record(case, impl, worker.run(scenario, params, args.timeout))
            finally:
                worker.close()

    results: Results = {
        c.key: {
            i: (statistics.median(samples[c.key][i]) if samples[c.key].get(i) else None)
            for i in IMPLS
        }
        for c in selected
    }
    text = table(selected, results, before="before" in pythons)
    print()
    print(text)
    info = hardware()
    elapsed = time.monotonic() - started
    print(
        f"\n{info.get('cpu', '?')}, {info['cpus']} CPUs, Python {info['python']}, "
        f"FastAPI {info.get('fastapi', '?')}; median of {args.rounds} rounds (in-process: "
        f"best of {args.repeats} each); {elapsed:.0f} s; "
        + (
            "in-process scenarios in CPU time, the rest in wall time"
            if args.clock == "auto"
            else "wall time"
        )
    )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "hardware": info,
                "rounds": args.rounds,
                "clock": args.clock,
                "taskflow_path": args.taskflow_path,
                "before_path": args.before_path,
                "arguments": vars(args),
                "seconds": round(elapsed, 1),
                "cases": [
                    {
                        "key": c.key,
                        "label": c.label,
                        "unit": c.unit,
                        "target": c.target,
                        "met": c.met(results),
                        "median": results[c.key],
                        "samples": samples[c.key],
                        "errors": errors.get(c.key, {}),
                    }
                    for c in selected
                ],
                "table": text,
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
